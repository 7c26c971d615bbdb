"""The account HTTP API (FastAPI): authenticates every request and calls the services as its principal."""
