"""The ``postgres-cluster`` adapter: pg_basebackup of a real cluster into a vault, restored as a new running cluster."""

from __future__ import annotations

import io
import os
import secrets
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from strongroom.adapters import ResourceSpec, RestoreContext, RestoreRequest, get_adapter
from strongroom.adapters.postgres import cluster as postgres_cluster
from strongroom.errors import ConfigError, IntegrityError, SourceError, TargetError, TargetNotEmptyError
from strongroom.vault import Vault
from strongroom.vault.writer import RecoveryPointWriter
from tests.support.pgcluster import (
    Janitor,
    PgCluster,
    backup_with_environment,
    sample_database,
    table_checksums,
    traversable_tempdir,
)
from tests.support.ports import free_port
from tests.support.vaults import backup, restore

pytestmark = pytest.mark.postgres


def cluster_spec(dsn: str) -> ResourceSpec:
    return ResourceSpec(id="app-cluster", type="postgres-cluster", settings={"dsn": dsn})


def restore_cluster(
    vault: Vault, rp_id: str, home: Path, tmp_path: Path, janitor: Janitor | None = None, **request: Any
) -> dict[str, Any]:
    """Restore ``rp_id``; the janitor (when given) stops the new cluster when the test ends."""
    result = restore(vault, rp_id, RestoreRequest(**request), tmp_path / "rtmp", home)
    if janitor is not None:
        janitor.adopt(result.details["data_directory"], result.details["port"])
    assert result.target == request["target_identifier"]
    return result.details


def test_round_trip_starts_a_new_cluster_with_the_same_data(
    pg_cluster: PgCluster,
    pg_databases: Callable[..., str],
    pg_workdir: Path,
    pg_janitor: Janitor,
    vault: Vault,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sample = sample_database(pg_cluster, pg_databases("phys", create=False))
    expected = table_checksums(pg_cluster, sample)
    manifest, stats = backup(vault, cluster_spec(pg_cluster.dsn()), tmp_path / "tmp")
    metadata, rp_id = manifest.metadata, manifest.recovery_point_id
    source_id = pg_cluster.query("SELECT system_identifier::text FROM pg_control_system()")[0][0]
    assert metadata["system_identifier"] == source_id
    assert metadata["server_major"] == metadata["server_version_num"] // 10000 == int(metadata["pg_version"])
    assert metadata["wal_segments"] >= 1 and metadata["backup_label"]["label"] == "strongroom app-cluster"
    assert manifest.streams["base.tar"].size == metadata["tar_bytes"] == stats["source_bytes"]
    pg_cluster.execute("UPDATE customers SET name = 'changed after the backup' WHERE id = 1", dbname=sample)

    home = pg_workdir / "home"
    ports = iter([pg_cluster.port])  # the first port picked is taken by the time the server starts: it picks again
    monkeypatch.setattr(postgres_cluster, "free_port", lambda: next(ports, None) or free_port())
    details = restore_cluster(vault, rp_id, home, tmp_path, pg_janitor, target_identifier="restored-1")
    restored = pg_janitor.clusters[-1]
    assert details["data_directory"] == str(home / "clusters" / "restored-1")
    assert details["dsn"] == f"postgresql://postgres@127.0.0.1:{details['port']}/postgres"
    assert details["port"] != pg_cluster.port and "Address already in use" in Path(details["log"]).read_text()
    assert "pg_ctl -D" in details["stop_command"] and details["stop_command"].endswith(" stop")

    with psycopg.connect(details["dsn"]) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.execute("SHOW archive_mode").fetchone() == ("off",)
        assert conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone() == (source_id,)
    assert table_checksums(restored, sample) == expected  # the change made after the backup is not there

    with pytest.raises(TargetNotEmptyError) as reused:
        restore_cluster(vault, rp_id, home, tmp_path, pg_janitor, target_identifier="restored-1")
    assert (
        reused.value.message == f"cluster identifier restored-1 is already in use at {home / 'clusters' / 'restored-1'}"
    )
    assert restored.query("SELECT count(*) FROM customers", dbname=sample) == [(2000,)]

    target = pg_workdir / "elsewhere" / "data"
    port = free_port()
    details = restore_cluster(
        vault, rp_id, home, tmp_path, pg_janitor, target_identifier="restored_2", target=str(target), port=port
    )
    second = pg_janitor.clusters[-1]
    assert details["data_directory"] == str(target) and details["port"] == port
    assert details["log"] == str(pg_workdir / "elsewhere" / "restored_2.log")
    assert second.query("SELECT count(*) FROM orders", dbname=sample) == [(5000,)]


@pytest.mark.parametrize("identifier", [None, "", "Upper", "../escape", "a b", "x" * 64])
def test_a_new_simple_identifier_is_required(identifier: str | None, pg_workdir: Path) -> None:
    ctx = RestoreContext(reader=None, temp_dir=pg_workdir, home=pg_workdir)  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as refused:
        get_adapter("postgres-cluster").restore({}, ctx, RestoreRequest(target_identifier=identifier))
    assert refused.value.message.startswith("a new cluster identifier is required")
    assert "lowercase letters, digits" in refused.value.hint
    assert not (pg_workdir / "clusters").exists()


def test_an_unreachable_cluster_is_a_clear_source_error(pg_bindir: Path, vault: Vault, tmp_path: Path) -> None:
    port = free_port()
    with pytest.raises(SourceError) as failed:
        backup(vault, cluster_spec(f"postgresql://postgres@127.0.0.1:{port}"), tmp_path / "tmp")
    assert failed.value.message == f"cannot connect to PostgreSQL at 127.0.0.1:{port}: connection refused"


def test_a_replication_password_travels_in_the_environment(
    pg_cluster: PgCluster, vault: Vault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    role, password = f"repl_{secrets.token_hex(3)}", secrets.token_hex(16)
    pg_cluster.create_role(role, password, replication=True)
    try:
        monkeypatch.delenv("PGPASSWORD", raising=False)
        spec = cluster_spec(pg_cluster.dsn("postgres", user=role))
        with pytest.raises(SourceError, match="asks for a password and none was given"):
            backup(vault, spec, tmp_path / "tmp")
        manifest = backup_with_environment(vault, spec, tmp_path / "tmp", {"PGPASSWORD": password})
        assert manifest.metadata["user"] == role and manifest.metadata["wal_segments"] >= 1
    finally:
        pg_cluster.drop_role(role)


def forged_recovery_point(vault: Vault, members: list[tuple[tarfile.TarInfo, bytes]]) -> str:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for info, data in members:
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    rp_id = secrets.token_hex(8)
    with RecoveryPointWriter(vault, rp_id) as writer:
        writer.store_stream("base.tar", io.BytesIO(buffer.getvalue()))
        writer.commit("forged", "postgres-cluster", {"server_major": None, "user": "postgres"})
    return rp_id


@pytest.mark.parametrize("evil", ["../outside.txt", "/etc/strongroom-evil", "link"])
def test_a_tar_entry_escaping_the_data_directory_is_refused(
    evil: str, pg_bindir: Path, pg_workdir: Path, vault: Vault, tmp_path: Path
) -> None:
    evil_entry = tarfile.TarInfo(evil)
    if evil == "link":
        evil_entry.type, evil_entry.linkname = tarfile.SYMTYPE, "/etc/passwd"
    rp_id = forged_recovery_point(vault, [(tarfile.TarInfo("PG_VERSION"), b"15\n"), (evil_entry, b"boom")])
    home = pg_workdir / "home"
    with pytest.raises(IntegrityError) as refused:
        restore_cluster(vault, rp_id, home, tmp_path, target_identifier="forged")
    assert refused.value.message == f"the recovery point's base.tar holds an unsafe entry '{evil}'"
    assert not (home / "clusters" / "forged").exists()
    assert not (home / "clusters" / "outside.txt").exists() and not Path("/etc/strongroom-evil").exists()


def test_a_port_in_use_is_refused_before_anything_is_written(
    pg_cluster: PgCluster, pg_workdir: Path, vault: Vault, tmp_path: Path
) -> None:
    rp_id = forged_recovery_point(vault, [(tarfile.TarInfo("PG_VERSION"), b"15\n")])
    home = pg_workdir / "home"
    with pytest.raises(TargetError) as refused:
        restore_cluster(vault, rp_id, home, tmp_path, target_identifier="busy-port", port=pg_cluster.port)
    assert refused.value.message == f"port {pg_cluster.port} on 127.0.0.1 is already in use"
    assert not (home / "clusters").exists()


def test_a_cluster_with_extra_tablespaces_is_refused_clearly(pg_bindir: Path, vault: Vault, tmp_path: Path) -> None:
    cluster = PgCluster.create(traversable_tempdir("strongroom-pg-ts-"))
    try:
        cluster.start()
        location = cluster.data_dir.parent / "tablespace"
        location.mkdir()
        if cluster.user is not None:
            os.chown(location, cluster.user.uid, cluster.user.gid)
        cluster.execute(f"CREATE TABLESPACE extra LOCATION '{location}'")
        with pytest.raises(SourceError) as refused:
            backup(vault, cluster_spec(cluster.dsn()), tmp_path / "tmp")
    finally:
        cluster.destroy()
    assert refused.value.message == "pg_basebackup failed: can only write single tablespace to stdout, database has 2"
    assert "extra tablespaces" in refused.value.hint


def test_a_cluster_that_does_not_start_is_removed_and_its_log_kept(
    pg_bindir: Path, pg_workdir: Path, vault: Vault, tmp_path: Path
) -> None:
    files = {"PG_VERSION": b"15\n", "global/pg_control": b"\0" * 8192, "backup_label": b"LABEL: forged\n"}
    rp_id = forged_recovery_point(vault, [(tarfile.TarInfo(name), data) for name, data in files.items()])
    home = pg_workdir / "home"
    with pytest.raises(TargetError) as failed:
        restore_cluster(vault, rp_id, home, tmp_path, target_identifier="broken")
    log = home / "clusters" / "broken.log"
    assert failed.value.message == "starting cluster broken failed: database files are incompatible with server"
    assert failed.value.hint == f"see {log}"
    assert log.is_file() and "FATAL" in log.read_text()
    assert not (home / "clusters" / "broken").exists() and not (home / "clusters" / "broken.sockets").exists()
