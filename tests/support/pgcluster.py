"""Throwaway PostgreSQL clusters for tests (filled in by the postgres adapter work)."""
