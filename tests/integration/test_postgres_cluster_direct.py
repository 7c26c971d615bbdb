"""postgres-cluster backups that read the data directory directly (``method: auto | direct``)."""

from __future__ import annotations

import random
import secrets
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from strongroom.adapters import ResourceSpec, RestoreRequest, get_adapter
from strongroom.adapters.postgres import tar
from strongroom.adapters.postgres.tools import find_tool, tool_environment
from strongroom.errors import ConfigError, SourceError
from strongroom.vault import Vault
from strongroom.vault.manifest import load_manifest
from strongroom.vault.reader import RecoveryPointReader
from tests.support.faulty_store import FaultyStore
from tests.support.pgcluster import Janitor, PgCluster, backup_with_environment, table_checksums
from tests.support.vaults import backup, restore

pytestmark = pytest.mark.postgres

ACCOUNTS = 20_000
TOTAL = ACCOUNTS * 1000


def spec(dsn: str, method: str | None = None) -> ResourceSpec:
    settings = {"dsn": dsn, **({"method": method} if method else {})}
    return ResourceSpec(id="app-cluster", type="postgres-cluster", settings=settings)


def restore_new(vault: Vault, rp_id: str, janitor: Janitor, workdir: Path, name: str) -> PgCluster:
    result = restore(vault, rp_id, RestoreRequest(target_identifier=name), workdir / "rtmp", workdir / "home")
    return janitor.adopt(result.details["data_directory"], result.details["port"])


def slots(cluster: PgCluster) -> list[Any]:
    return cluster.query("SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'strongroom%'")


def make_bank(cluster: PgCluster, dbname: str) -> None:
    cluster.execute(
        "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, note text NOT NULL);"
        f"INSERT INTO accounts SELECT n, 1000, repeat(md5(n::text), 8) FROM generate_series(1, {ACCOUNTS}) n;"
        "CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY, payload text);"
        "INSERT INTO scratch SELECT n, repeat('x', 500) FROM generate_series(1, 5000) n;"
        "CREATE EXTENSION amcheck",
        dbname=dbname,
    )


def test_auto_reads_a_local_cluster_directly_and_pg_verifybackup_accepts_the_result(
    pg_cluster: PgCluster, pg_databases: Callable[..., str], vault: Vault, tmp_path: Path
) -> None:
    dbname = pg_databases("direct")
    make_bank(pg_cluster, dbname)
    manifest, stats = backup(vault, spec(pg_cluster.dsn()), tmp_path / "tmp")
    metadata = manifest.metadata
    assert metadata["method"] == "direct" and metadata["data_directory"] == str(pg_cluster.data_dir)
    assert metadata["backup_label"]["label"] == "strongroom app-cluster" and metadata["wal_segments"] >= 1
    assert manifest.streams["base.tar"].size == metadata["tar_bytes"] == stats["source_bytes"]
    assert slots(pg_cluster) == []  # the temporary slot went with the session

    unpacked = tmp_path / "unpacked"
    with RecoveryPointReader(vault, manifest) as reader:
        members = tar.extract(reader.iter_stream("base.tar"), unpacked)
    verified = subprocess.run(
        [find_tool("pg_verifybackup", tool_environment({})), str(unpacked)], capture_output=True, text=True, check=False
    )
    assert verified.returncode == 0, verified.stderr  # every file, its size, and the WAL range parsed
    assert "postmaster.pid" not in members and members[-1] == "backup_manifest"
    assert not any(name.startswith(("pg_replslot/", "pg_stat_tmp/")) for name in members)
    oid = pg_cluster.query("SELECT oid FROM pg_database WHERE datname = %s", (dbname,))[0][0]
    scratch = pg_cluster.query("SELECT pg_relation_filenode('scratch')", dbname=dbname)[0][0]
    unlogged = [name for name in members if name.startswith(f"base/{oid}/{scratch}")]
    assert unlogged == [f"base/{oid}/{scratch}_init"]  # an unlogged table's data is never backed up


def test_writes_during_a_direct_backup_restore_to_a_consistent_cluster(
    pg_cluster: PgCluster,
    pg_databases: Callable[..., str],
    pg_janitor: Janitor,
    pg_workdir: Path,
    vault: Vault,
    tmp_path: Path,
) -> None:
    """Transfers between accounts run while the files are read: the restored cluster holds a state
    where money was neither made nor lost, with every index matching its table."""
    dbname = pg_databases("busy")
    make_bank(pg_cluster, dbname)
    stop, done = threading.Event(), []

    def transfer() -> None:
        rng = random.Random(5)
        with psycopg.connect(pg_cluster.dsn(dbname), autocommit=True) as conn:
            while not stop.is_set():
                a, b, amount = rng.randint(1, ACCOUNTS), rng.randint(1, ACCOUNTS), rng.randint(1, 50)
                with conn.transaction():
                    conn.execute("UPDATE accounts SET balance = balance - %s WHERE id = %s", (amount, a))
                    conn.execute("UPDATE accounts SET balance = balance + %s WHERE id = %s", (amount, b))
                done.append(1)

    writer = threading.Thread(target=transfer)
    writer.start()
    try:
        while len(done) < 200:
            stop.wait(0.01)
        before = len(done)
        manifest, _ = backup(vault, spec(pg_cluster.dsn(), "direct"), tmp_path / "tmp")
        during = len(done) - before
    finally:
        stop.set()
        writer.join()
    assert manifest.metadata["method"] == "direct" and during > 0

    restored = restore_new(vault, manifest.recovery_point_id, pg_janitor, pg_workdir, "busy-restored")
    [(total, count)] = restored.query("SELECT sum(balance), count(*) FROM accounts", dbname=dbname)
    assert (total, count) == (TOTAL, ACCOUNTS)
    restored.query("SELECT bt_index_check('accounts_pkey', true)", dbname=dbname)  # raises on a torn index
    assert restored.query("SELECT count(*) FROM scratch", dbname=dbname) == [(0,)]  # unlogged: empty after restore
    moved = restored.query("SELECT count(*) FROM accounts WHERE balance <> 1000", dbname=dbname)[0][0]
    assert moved > 0  # transfers from before the backup are there


def test_pg_basebackup_method_restores_the_same_data(
    pg_cluster: PgCluster,
    pg_databases: Callable[..., str],
    pg_janitor: Janitor,
    pg_workdir: Path,
    vault: Vault,
    tmp_path: Path,
) -> None:
    dbname = pg_databases("viabb")
    make_bank(pg_cluster, dbname)
    expected = table_checksums(pg_cluster, dbname)["accounts"]
    manifest, _ = backup(vault, spec(pg_cluster.dsn(), "pg_basebackup"), tmp_path / "tmp")
    assert manifest.metadata["method"] == "pg_basebackup"
    assert manifest.metadata["direct_unavailable"] == "method: pg_basebackup"
    restored = restore_new(vault, manifest.recovery_point_id, pg_janitor, pg_workdir, "via-basebackup")
    assert table_checksums(restored, dbname)["accounts"] == expected
    assert restored.query("SELECT count(*) FROM scratch", dbname=dbname) == [(0,)]


def test_direct_is_refused_clearly_and_auto_falls_back_when_the_role_may_not(
    pg_cluster: PgCluster, vault: Vault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    role, password = f"repl_{secrets.token_hex(3)}", secrets.token_hex(16)
    pg_cluster.create_role(role, password, replication=True)
    try:
        dsn = pg_cluster.dsn("postgres", user=role)
        with pytest.raises(SourceError) as refused:
            backup_with_environment(vault, spec(dsn, "direct"), tmp_path / "tmp", {"PGPASSWORD": password})
        fallback = backup_with_environment(vault, spec(dsn), tmp_path / "tmp", {"PGPASSWORD": password})
    finally:
        pg_cluster.drop_role(role)
    assert refused.value.message == (
        "cannot back up app-cluster directly: the role may not execute pg_backup_start and pg_backup_stop"
    )
    assert fallback.metadata["method"] == "pg_basebackup"
    assert fallback.metadata["direct_unavailable"] == "the role may not execute pg_backup_start and pg_backup_stop"


def test_a_direct_backup_that_fails_midway_leaves_the_server_as_it_was(
    pg_cluster: PgCluster, vault: Vault, tmp_path: Path
) -> None:
    store = FaultyStore(vault.store)
    store.fail_put(after=0, error=OSError(28, "No space left on device"))  # the vault's disk is full
    with pytest.raises(OSError, match="No space left"):
        backup(Vault.open(store, "test-passphrase"), spec(pg_cluster.dsn(), "direct"), tmp_path / "tmp")
    assert slots(pg_cluster) == []
    assert pg_cluster.query("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'strongroom'") == [(0,)]
    manifest, _ = backup(vault, spec(pg_cluster.dsn(), "direct"), tmp_path / "tmp")  # no backup left in progress
    assert load_manifest(vault, manifest.recovery_point_id).metadata["method"] == "direct"


@pytest.mark.parametrize("method", ["fast", "", 3])
def test_an_unknown_method_is_a_config_error(method: Any) -> None:
    with pytest.raises(ConfigError) as refused:
        get_adapter("postgres-cluster").validate_settings({"dsn": "postgresql://u@h/db", "method": method})
    assert refused.value.message == f"unknown method '{method}' for postgres-cluster"
    assert refused.value.hint == "choose one of auto, direct, pg_basebackup"
