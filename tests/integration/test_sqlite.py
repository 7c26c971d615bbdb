"""The sqlite adapter against real database files, with a real writer process running during backup."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from strongroom.adapters.base import ResourceSpec, RestoreRequest, get_adapter
from strongroom.errors import ConfigError, TargetError, TargetNotEmptyError
from strongroom.vault import Vault
from tests.support.vaults import backup, restore

PREFILL = 2000  # transactions before the writer starts: 2 rows of 512 bytes each, about 2.5 MB

# Every transaction adds a pair of rows and bumps the counter: a consistent copy holds whole pairs
# numbered 1..counter and nothing else.
WRITER = """
import os, random, sqlite3, sys
database, stop = sys.argv[1], sys.argv[2]
connection = sqlite3.connect(database, timeout=30, isolation_level=None)
rng = random.Random(1)
while not os.path.exists(stop):
    connection.execute("BEGIN IMMEDIATE")
    n = connection.execute("SELECT n FROM counter").fetchone()[0] + 1
    connection.execute("INSERT INTO pairs VALUES (?, 0, ?)", (n, rng.randbytes(512)))
    connection.execute("INSERT INTO pairs VALUES (?, 1, ?)", (n, rng.randbytes(512)))
    connection.execute("UPDATE counter SET n = ?", (n,))
    connection.execute("COMMIT")
connection.close()
"""


def make_database(path: Path, journal_mode: str, transactions: int = PREFILL) -> None:
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        assert connection.execute(f"PRAGMA journal_mode={journal_mode}").fetchone()[0] == journal_mode
        connection.execute("CREATE TABLE pairs (txn INTEGER, side INTEGER, payload BLOB, PRIMARY KEY (txn, side))")
        connection.execute("CREATE TABLE counter (n INTEGER NOT NULL)")
        connection.execute("BEGIN")
        connection.execute("INSERT INTO counter VALUES (?)", (transactions,))
        rows = ((txn, side, bytes(512)) for txn in range(1, transactions + 1) for side in (0, 1))
        connection.executemany("INSERT INTO pairs VALUES (?, ?, ?)", rows)
        connection.execute("COMMIT")
    finally:
        connection.close()


def counter(path: Path) -> int:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return connection.execute("SELECT n FROM counter").fetchone()[0]
    finally:
        connection.close()


def wait_for_counter(path: Path, at_least: int, writer: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 60
    while (value := counter(path)) < at_least:
        assert writer.poll() is None, "the writer process died"
        assert time.monotonic() < deadline, f"the writer reached only {value} of {at_least} transactions"
        time.sleep(0.01)
    return value


def consistent_transactions(path: Path) -> int:
    """Check the database is intact and holds whole transactions 1..n; return n."""
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        n = connection.execute("SELECT n FROM counter").fetchone()[0]
        query = "SELECT COUNT(*), COUNT(DISTINCT txn), MAX(txn) FROM pairs"
        rows, distinct, highest = connection.execute(query).fetchone()
    finally:
        connection.close()
    assert (rows, distinct, highest) == (2 * n, n, n)
    return n


def spec_for(path: Path) -> ResourceSpec:
    return ResourceSpec(id="app-db", type="sqlite", settings={"path": str(path)})


def restore_to(vault: Vault, rp_id: str, target: Path, tmp_path: Path, **request: Any) -> Any:
    return restore(vault, rp_id, RestoreRequest(target=str(target), **request), tmp_path / "restore-tmp", tmp_path)


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_backup_during_writes_restores_a_consistent_prefix(tmp_path: Path, vault: Vault, journal_mode: str) -> None:
    database = tmp_path / "app.db"
    make_database(database, journal_mode)
    stop = tmp_path / "stop-writing"
    command = [sys.executable, "-c", WRITER, str(database), str(stop)]
    with subprocess.Popen(command, stderr=subprocess.PIPE) as writer:
        try:
            wait_for_counter(database, PREFILL + 20, writer)
            manifest, _ = backup(vault, spec_for(database), tmp_path / "backup-tmp")
            wait_for_counter(database, counter(database) + 20, writer)  # it kept writing throughout
        finally:
            stop.touch()
            _, errors = writer.communicate(timeout=60)
    assert writer.returncode == 0, errors.decode()
    assert list((tmp_path / "backup-tmp").iterdir()) == []

    target = tmp_path / "restored" / "app.db"
    result = restore_to(vault, manifest.recovery_point_id, target, tmp_path)

    assert result.target == str(target)
    snapshot = consistent_transactions(target)
    assert PREFILL + 20 <= snapshot < counter(database)
    assert manifest.metadata["journal_mode"] == journal_mode
    assert manifest.metadata["page_count"] * manifest.metadata["page_size"] == target.stat().st_size
    assert sorted(p.name for p in target.parent.iterdir()) == ["app.db"]


def test_restore_keeps_the_file_mode_and_refuses_existing_targets(tmp_path: Path, vault: Vault) -> None:
    database = tmp_path / "small.db"
    make_database(database, "delete", transactions=10)
    database.chmod(0o640)
    manifest, _ = backup(vault, spec_for(database), tmp_path / "backup-tmp")
    rp_id = manifest.recovery_point_id

    with pytest.raises(TargetNotEmptyError, match="already exists") as caught:
        restore_to(vault, rp_id, database, tmp_path)
    assert "--allow-non-empty" in caught.value.hint

    target = tmp_path / "copy.db"
    target.write_bytes(b"an old file that may be replaced")
    restore_to(vault, rp_id, target, tmp_path, allow_non_empty=True)
    assert consistent_transactions(target) == 10
    assert target.stat().st_mode & 0o777 == 0o640

    Path(f"{target}-journal").write_bytes(b"a hot journal of some other database")
    with pytest.raises(TargetError, match="-journal file beside it"):
        restore_to(vault, rp_id, target, tmp_path, allow_non_empty=True)
    with pytest.raises(TargetError, match="is a directory"):
        restore_to(vault, rp_id, tmp_path, tmp_path, allow_non_empty=True)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "needs a 'path'"),
        ({"path": "relative.db"}, "is not absolute"),
        ({"path": "MISSING"}, "does not exist"),
        ({"path": "DIR"}, "is not a regular file"),
        ({"path": "TEXT"}, "is not a SQLite database"),
        ({"path": "EMPTY"}, "is not a SQLite database"),
        ({"path": "DB", "mode": "wal"}, "unknown sqlite setting 'mode'"),
    ],
)
def test_bad_settings_are_config_errors(tmp_path: Path, settings: dict[str, Any], message: str) -> None:
    (tmp_path / "notes.txt").write_text("SQLite format 2, honestly\n")
    (tmp_path / "empty.db").write_bytes(b"")
    make_database(tmp_path / "real.db", "delete", transactions=1)
    paths = {
        "MISSING": tmp_path / "missing.db",
        "DIR": tmp_path,
        "TEXT": tmp_path / "notes.txt",
        "EMPTY": tmp_path / "empty.db",
        "DB": tmp_path / "real.db",
    }
    settings = {key: str(paths.get(value, value)) if key == "path" else value for key, value in settings.items()}
    with pytest.raises(ConfigError, match=message):
        get_adapter("sqlite").validate_settings(settings)


def test_valid_settings_pass(tmp_path: Path) -> None:
    make_database(tmp_path / "real.db", "wal", transactions=1)
    assert get_adapter("sqlite").validate_settings({"path": str(tmp_path / "real.db")}) == {
        "path": str(tmp_path / "real.db")
    }
