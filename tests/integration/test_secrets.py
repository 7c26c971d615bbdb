"""The secret store through its service: sealed at rest, bound to its name and version, never listed."""

from __future__ import annotations

import json
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.errors import (
    AlreadyExistsError,
    ConfigError,
    IntegrityError,
    NotFoundError,
    UsageError,
    WrongPassphraseError,
)
from strongroom.services import secrets
from strongroom.services.account import Account, init_account, open_account
from tests.support.vaults import FAST_SCRYPT

PASSPHRASE = "secret store passphrase"
PASSWORD = "s3cr3t-Pa55word-7f1c"
RDS = {
    "engine": "postgres",
    "host": "127.0.0.1",
    "port": 5432,
    "username": "mavis",
    "password": PASSWORD,
    "dbname": "mavis",
}


@pytest.fixture
def account(tmp_path: Path) -> Iterator[Account]:
    opened = init_account(tmp_path / "home", PASSPHRASE, scrypt_params=FAST_SCRYPT)
    yield opened
    opened.close()


def swap_sealed_values(catalog: Path, first: str, second: str) -> None:
    """What an attacker with write access to the catalog (not the keys) can do: move sealed values around."""
    with sqlite3.connect(catalog) as db:
        sealed = dict(db.execute("SELECT name, sealed_value FROM secrets WHERE name IN (?, ?)", (first, second)))
        for name, other in ((first, second), (second, first)):
            db.execute("UPDATE secrets SET sealed_value = ? WHERE name = ?", (sealed[other], name))


def _execute(account: Account, sql: str, *args: str) -> None:
    with sqlite3.connect(account.home / "catalog.db") as db:
        db.execute(sql, args)


def test_round_trip_of_a_string_and_an_rds_object(account: Account) -> None:
    secrets.put_secret(account, "app/token", secrets.parse_value("plain string value"))
    secrets.put_secret(account, "mavis/prod/db", secrets.parse_value(json.dumps(RDS), rds=True))
    assert secrets.get_secret(account, "app/token") == "plain string value"
    assert secrets.get_secret(account, "mavis/prod/db") == RDS
    assert secrets.field_of(secrets.get_secret(account, "mavis/prod/db"), "password") == PASSWORD
    assert secrets.field_of(RDS, "port") == "5432"


def test_a_new_put_makes_a_version_and_keeps_the_previous_one(account: Account) -> None:
    first = secrets.put_secret(account, "db", "one")
    second = secrets.put_secret(account, "db", "two")
    assert (first["version"], second["version"], second["previous_version"]) == (1, 2, 1)
    assert second["created_at"] == first["created_at"] and second["updated_at"] >= first["updated_at"]
    assert secrets.get_secret(account, "db") == "two"
    assert secrets.get_secret(account, "db", previous=True) == "one"
    assert secrets.put_secret(account, "db", "three")["version"] == 3
    assert secrets.get_secret(account, "db", previous=True) == "two"


def test_list_never_holds_a_value(account: Account) -> None:
    secrets.put_secret(account, "mavis/prod/db", RDS)
    listed = secrets.list_secrets(account)
    assert [r["name"] for r in listed] == ["mavis/prod/db"]
    assert PASSWORD not in json.dumps(listed)
    assert not any("sealed" in key for key in listed[0])


def test_the_catalog_file_never_holds_the_plaintext(account: Account) -> None:
    secrets.put_secret(account, "mavis/prod/db", RDS)
    secrets.put_secret(account, "mavis/prod/db", {**RDS, "host": "db2"})
    account.close()
    stored = b"".join(p.read_bytes() for p in account.home.rglob("*") if p.is_file())
    assert PASSWORD.encode() not in stored
    assert b"mavis/prod/db" in stored  # the name is not secret


def test_a_sealed_value_moved_to_another_name_does_not_open(account: Account) -> None:
    secrets.put_secret(account, "a", "value of a")
    secrets.put_secret(account, "b", "value of b")
    swap_sealed_values(account.home / "catalog.db", "a", "b")
    for name in ("a", "b"):
        with pytest.raises(IntegrityError, match=f"secret '{name}'"):
            secrets.get_secret(account, name)


def test_an_old_version_replayed_as_current_does_not_open(account: Account) -> None:
    secrets.put_secret(account, "a", "old")
    secrets.put_secret(account, "a", "new")
    _execute(account, "UPDATE secrets SET sealed_value = previous_sealed_value WHERE name = ?", "a")
    with pytest.raises(IntegrityError):
        secrets.get_secret(account, "a")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"port": "5432"}, "port"),
        ({"port": True}, "port"),
        ({"port": 70000}, "port"),
        ({"engine": "mysql"}, "engine"),
        ({"password": ""}, "password"),
        ({"host": None}, "host"),
    ],
)
def test_a_bad_rds_shape_is_refused_naming_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=f"'{field}'") as caught:
        secrets.parse_value(json.dumps({**RDS, **change}), rds=True)
    assert PASSWORD not in caught.value.one_line()


def test_rds_requires_every_field_and_a_json_object() -> None:
    missing = {k: v for k, v in RDS.items() if k != "dbname"}
    with pytest.raises(ConfigError, match="'dbname' is missing"):
        secrets.parse_value(json.dumps(missing), rds=True)
    with pytest.raises(ConfigError, match="not valid JSON"):
        secrets.parse_value(PASSWORD, rds=True)
    assert secrets.parse_value(json.dumps({**RDS, "dbClusterIdentifier": "c1"}), rds=True)["dbClusterIdentifier"]


def test_names_follow_the_aws_rule_and_are_not_echoed() -> None:
    for good in ("a", "mavis/prod/db", "x_+=.@-9", "n" * 512):
        assert secrets.check_name(good) == good
    for bad in ("", "with space", "n" * 513, "semi;colon"):
        with pytest.raises(UsageError) as caught:
            secrets.check_name(bad)
        assert bad not in caught.value.one_line() or not bad


def test_unknown_names(account: Account) -> None:
    with pytest.raises(NotFoundError, match="no secret named 'nope'"):
        secrets.get_secret(account, "nope")
    with pytest.raises(NotFoundError):
        secrets.delete_secret(account, "nope")
    secrets.put_secret(account, "once", "v")
    with pytest.raises(NotFoundError, match="no previous version"):
        secrets.get_secret(account, "once", previous=True)
    secrets.delete_secret(account, "once")
    assert secrets.list_secrets(account) == []


def test_export_writes_a_new_0600_file_and_refuses_to_overwrite(account: Account, tmp_path: Path) -> None:
    secrets.put_secret(account, "db", RDS)
    target = tmp_path / "app" / "db.json"
    target.parent.mkdir()
    shown = secrets.export_secret(account, "db", target)
    assert shown["file"] == str(target) and shown["version"] == 1
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert json.loads(target.read_text()) == RDS
    with pytest.raises(AlreadyExistsError):
        secrets.export_secret(account, "db", target)
    secrets.put_secret(account, "db", {**RDS, "host": "restored"})
    secrets.export_secret(account, "db", target, force=True)
    assert json.loads(target.read_text())["host"] == "restored"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["db.json"]  # no temporary file left


def test_a_wrong_passphrase_on_first_use_creates_no_account_key(account: Account) -> None:
    # The account key is made at init now (it signs the catalog): take this one back to before account keys.
    account.close()
    (account.home / "keys" / "account.key").unlink()
    (account.home / "keys" / "catalog.sealed").unlink()
    with sqlite3.connect(account.home / "catalog.db") as db:
        for table in ("vaults", "recovery_points", "credentials"):
            db.execute(f"UPDATE {table} SET mac = NULL")
    db.close()
    account = open_account(account.home, lambda: PASSPHRASE)
    wrong = open_account(account.home, lambda: "not the passphrase")
    try:
        with pytest.raises(WrongPassphraseError):
            secrets.put_secret(wrong, "db", "value")
        assert not (account.home / "keys" / "account.key").exists()
    finally:
        wrong.close()
    secrets.put_secret(account, "db", "value")
    wrong = open_account(account.home, lambda: "not the passphrase")
    try:
        with pytest.raises(WrongPassphraseError):
            secrets.get_secret(wrong, "db")
    finally:
        wrong.close()
