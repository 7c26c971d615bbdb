"""The account's catalog: vaults, resources, jobs and recovery points (SQLite for one machine)."""

from strongroom.catalog.sqlite import Catalog

__all__ = ["Catalog"]
