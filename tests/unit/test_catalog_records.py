"""The catalog's row mapper (catalog/records.record) and the typed rows it gives back."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import pytest

from strongroom.catalog import Catalog
from strongroom.catalog.records import Credential, Output, RemoteAccount, SealedSecret, SecretInfo, record
from strongroom.errors import CatalogIntegrityError
from strongroom.model import LockMode, VaultLockRecord, VaultRecord
from strongroom.plans.records import CopyState, RunDetails, ScheduleRun
from strongroom.policy.lock import VaultLock


class Colour(StrEnum):
    RED = "RED"


@dataclass(frozen=True)
class Inner:
    colour: Colour
    size: int | None = None


@dataclass(frozen=True)
class Row:
    name: str
    flag: bool
    colour: Colour
    maybe: Colour | None
    inner: Inner | None
    data: dict[str, int] | None = None
    missing: str = "default"


def _row(**columns: object) -> sqlite3.Row:
    db = sqlite3.connect(":memory:")
    db.row_factory = sqlite3.Row
    names = ", ".join(f"? AS {name}" for name in columns)
    row: sqlite3.Row = db.execute(f"SELECT {names}", tuple(columns.values())).fetchone()
    return row


def test_a_row_maps_by_field_names_converting_booleans_enums_json_and_nested_records() -> None:
    row = _row(
        name="a", flag=1, colour="RED", maybe=None, inner='{"colour": "RED", "size": 3}', data='{"x": 1}', mac="zz"
    )
    mapped = record(Row, row, json_columns=("inner", "data"))
    assert mapped == Row("a", True, Colour.RED, None, Inner(Colour.RED, 3), {"x": 1})
    assert mapped.flag is True and type(mapped.colour) is Colour and type(mapped.inner) is Inner
    assert mapped.missing == "default"  # a column the row lacks keeps the field's default; ``mac`` is ignored


def test_an_empty_or_null_json_column_is_none_and_a_bad_enum_value_is_refused() -> None:
    assert record(Row, _row(name="a", flag=0, colour="RED", maybe=None, inner=None, data=""), ("inner", "data")) == Row(
        "a", False, Colour.RED, None, None, None
    )
    with pytest.raises(ValueError):
        record(Row, _row(name="a", flag=0, colour="BLUE", maybe=None, inner=None), ("inner",))


def test_a_vault_lock_is_stored_typed_and_shown_as_before(tmp_path: Path) -> None:
    lock = VaultLock.from_record(
        VaultLockRecord(LockMode.COMPLIANCE, "2026-01-01T00:00:00+00:00", 7, 30, changeable_for_days=3)
    )
    catalog = Catalog(tmp_path / "c.db")
    catalog.add_vault(VaultRecord("Default", "arn:v", "file:///v", "vid", "t", lock=lock.record()))
    stored = catalog.get_vault("Default").lock
    assert stored == lock.record() and stored is not None and type(stored.mode) is LockMode
    assert catalog.get_vault("Default").as_dict()["lock"] == {
        "mode": "compliance",
        "min_retention_days": 7,
        "max_retention_days": 30,
        "changeable_for_days": 3,
        "created_at": "2026-01-01T00:00:00+00:00",
        "lock_date": "2026-01-04T00:00:00+00:00",
    }
    catalog.update_vault("Default", lock=None)
    assert catalog.get_vault("Default").lock is None


def test_remote_accounts_secrets_outputs_and_credentials_come_back_typed(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    remote = RemoteAccount("dr", "222222222222", "https://h", "SRKEY", "c2VhbGVk", None, "t")
    catalog.put_remote_account(remote)
    assert catalog.get_remote_account("222222222222") == remote == catalog.list_remote_accounts()[0]
    assert "c2VhbGVk" not in repr(remote) and "sealed_secret" not in remote.describe()

    assert catalog.write_secret("db", "c2VhbGVkMQ==", 1, "t1") and catalog.write_secret("db", "c2VhbGVkMg==", 2, "t2")
    row = catalog.get_secret_row("db")
    assert row == SealedSecret(
        "db", 2, 1, "t1", "t2", sealed_value="c2VhbGVkMg==", previous_sealed_value="c2VhbGVkMQ=="
    )
    assert "c2VhbGVk" not in repr(row)
    assert catalog.list_secret_rows() == [SecretInfo("db", 2, 1, "t1", "t2")]
    assert set(row.as_dict()) == {"name", "version", "previous_version", "created_at", "updated_at"}

    catalog.set_outputs({"arn": Output("arn:x"), "pw": Output("s3cret", "the password", sensitive=True)})
    assert catalog.get_outputs() == {"arn": Output("arn:x"), "pw": Output("s3cret", "the password", True)}

    catalog.add_vault(VaultRecord("Default", "arn:v", "file:///v", "vid", "t"))
    catalog.add_credential("KEYA", "arn:user/a", "t", None, counted_in="Default")
    assert catalog.list_credentials() == [Credential("KEYA", "arn:user/a", "t")]


def test_the_mac_is_checked_before_a_credential_is_mapped(tmp_path: Path) -> None:
    class KeyOnly:
        def read_key(self) -> bytes:
            return b"k" * 32

        def write_key(self) -> bytes:
            return b"k" * 32

        def mirror(self, vault_name: str, point_id: str | None) -> None:
            pass

    catalog = Catalog(tmp_path / "c.db")
    catalog.guard = KeyOnly()
    catalog.add_vault(VaultRecord("Default", "arn:v", "file:///v", "vid", "t"))
    catalog.add_credential("KEYA", "arn:user/a", "t", None, counted_in="Default")
    with sqlite3.connect(tmp_path / "c.db") as db:
        db.execute("UPDATE credentials SET expires_at = NULL, revoked_at = NULL, principal_arn = 'arn:root'")
    db.close()
    with pytest.raises(CatalogIntegrityError, match="credential record 'KEYA' fails its MAC"):
        catalog.list_credentials()


def test_a_schedule_run_stored_before_details_were_typed_reads_back_with_the_same_json_shape(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    copy = {"destination_vault_arn": "arn:d", "delete_after_days": 7, "state": "COMPLETED", "job_id": "j2"}
    copy |= {"attempts": 1, "next_attempt_at": None, "message": None, "pid": 42, "destination_recovery_point_arn": "a"}
    old_details = {
        "rule": {"target_vault_name": "Default", "delete_after_days": 7, "start_window": 60, "completion_window": 90},
        "jobs": ["j1"],
        "pid": None,
        "message": None,
        "recovery_point_arn": "arn:rp",
        "copies": [copy],
    }
    run = ScheduleRun.of(
        {
            "plan_name": "p",
            "rule_name": "r",
            "occurrence": "2026-01-01T01:00:00+00:00",
            "resource_id": "db",
            "state": "CREATED",
            "job_id": None,
            "attempts": 0,
            "next_attempt_at": None,
            "start_window_ends": "2026-01-01T02:00:00+00:00",
            "completion_window_ends": "2026-01-01T03:00:00+00:00",
            "details": {},
            "created_at": "2026-01-01T01:00:00+00:00",
        }
    )
    assert catalog.record_occurrences("p", {"r": None}, "2026-01-01T01:00:00+00:00", [run])
    assert catalog.update_schedule_run(run.key, details=old_details)  # the JSON an older Strongroom wrote
    [stored] = catalog.list_schedule_runs()
    assert isinstance(stored.details, RunDetails) and stored.details.jobs == ("j1",)
    assert stored.rule.target_vault_name == "Default" and stored.copies[0].state == CopyState.COMPLETED
    shown = stored.as_dict()
    assert (shown["recovery_point_arn"], shown["status_message"], shown["copy_jobs"]) == ("arn:rp", None, [copy])
