"""Strongroom: encrypted, deduplicated, immutable backups and disaster recovery."""

__version__ = "0.1.0"
