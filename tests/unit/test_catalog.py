from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from strongroom.catalog import Catalog
from strongroom.catalog.migrations import MIGRATIONS
from strongroom.errors import AccountError, AlreadyExistsError, NotFoundError, UsageError
from strongroom.model import Arn, Job, JobState, JobType, RecoveryPoint, RecoveryPointStatus, Resource, VaultRecord


def test_migrations_are_applied_once_and_recorded(tmp_path: Path) -> None:
    Catalog(tmp_path / "c.db").close()
    catalog = Catalog(tmp_path / "c.db")
    assert catalog.schema_version == len(MIGRATIONS)
    catalog.close()


def test_a_newer_catalog_is_refused(tmp_path: Path) -> None:
    Catalog(tmp_path / "c.db").close()
    with sqlite3.connect(tmp_path / "c.db") as db:
        db.execute("INSERT INTO schema_migrations VALUES (?, 'later')", (len(MIGRATIONS) + 1,))
    with pytest.raises(AccountError, match="newer than this Strongroom knows"):
        Catalog(tmp_path / "c.db")


def test_records_round_trip(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    catalog.add_vault(VaultRecord("Default", "arn:v", "file:///v", "vid", "2026-11-25T00:00:00+00:00"))
    with pytest.raises(AlreadyExistsError):
        catalog.add_vault(VaultRecord("Default", "arn:v2", "file:///v", "vid", "t"))
    catalog.add_resource(Resource("db", "postgres", {"dsn": "postgresql://x@h/db"}, {"backup": "True"}, "t"))
    assert catalog.get_resource("db").tags == {"backup": "True"}
    job = Job("j1", JobType.BACKUP, JobState.CREATED, "db", "Default", None, "2026-11-25T00:00:00+00:00")
    catalog.add_job(job)
    catalog.update_job("j1", state=JobState.RUNNING, result={"a": 1})
    assert catalog.get_job("j1").state == JobState.RUNNING
    assert catalog.get_job("j1").result == {"a": 1}
    point = RecoveryPoint("rp1", "arn:rp1", "Default", "db", "postgres", RecoveryPointStatus.CREATING, "t1")
    catalog.add_recovery_point(point)
    catalog.update_recovery_point("rp1", status=RecoveryPointStatus.COMPLETED, metadata={"m": 2})
    assert catalog.get_recovery_point("arn:rp1").status == RecoveryPointStatus.COMPLETED
    assert [p.id for p in catalog.list_recovery_points(status=RecoveryPointStatus.COMPLETED)] == ["rp1"]
    with pytest.raises(NotFoundError):
        catalog.get_recovery_point("nope")
    catalog.close()


def test_arn_round_trip_and_rejection() -> None:
    arn = Arn("eu-west-2", "123456789012", "recovery-point", "abc")
    assert Arn.parse(str(arn)) == arn
    with pytest.raises(UsageError):
        Arn.parse("arn:aws:backup:eu-west-2:1:recovery-point:x")


class _KeyOnly:
    """A guard with a fixed key and no vault to mirror into: the row MACs by themselves."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    def read_key(self) -> bytes:
        return self.key

    def write_key(self) -> bytes:
        return self.key

    def mirror(self, vault_name: str, point_id: str | None) -> None:
        return None


def test_a_mac_binds_its_row_table_and_key(tmp_path: Path) -> None:
    from strongroom.errors import CatalogIntegrityError

    catalog = Catalog(tmp_path / "c.db")
    catalog.guard = _KeyOnly(b"k" * 32)
    catalog.add_vault(VaultRecord("Default", "arn:v", "file:///v", "vid", "t"))
    catalog.add_credential("KEYA", "arn:user/a", "t", None, counted_in="Default")
    catalog.add_credential("KEYB", "arn:user/b", "t", None, counted_in="Default")
    assert catalog.get_credential("KEYA").principal_arn == "arn:user/a"  # type: ignore[union-attr]
    with sqlite3.connect(tmp_path / "c.db") as db:  # B's principal and MAC onto A's row
        db.execute(
            "UPDATE credentials SET principal_arn = 'arn:user/b', mac = (SELECT mac FROM credentials "
            "WHERE key_id = 'KEYB') WHERE key_id = 'KEYA'"
        )
    db.close()
    with pytest.raises(CatalogIntegrityError, match="credential record 'KEYA' fails its MAC"):
        catalog.get_credential("KEYA")
    with pytest.raises(CatalogIntegrityError):
        catalog.revoke_credential("KEYA", "t", counted_in="Default")  # a change never signs an edited row
    assert catalog.get_credential("KEYB").principal_arn == "arn:user/b"  # type: ignore[union-attr]
    catalog.guard = _KeyOnly(b"x" * 32)  # another account's key: nothing verifies
    with pytest.raises(CatalogIntegrityError):
        catalog.get_vault("Default")
    catalog.close()
