"""The ``postgres`` adapter against a real cluster: pg_dump into a vault, pg_restore into a new database."""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from psycopg import sql

from strongroom.adapters import ResourceSpec, RestoreRequest, get_adapter
from strongroom.adapters.postgres.tools import find_tool
from strongroom.errors import (
    ConfigError,
    SourceError,
    TargetError,
    TargetNotEmptyError,
    TargetRolesMissingError,
    ToolMissingError,
)
from strongroom.vault import Vault
from tests.support.pgcluster import (
    PgCluster,
    backup_with_environment,
    sample_database,
    schema_fingerprint,
    table_checksums,
)
from tests.support.vaults import backup, make_vault, restore

pytestmark = pytest.mark.postgres

MakeDatabase = Callable[..., str]


def spec_for(dsn: str) -> ResourceSpec:
    return ResourceSpec(id="app-db", type="postgres", settings={"dsn": dsn})


def restore_into(vault: Vault, rp_id: str, tmp_path: Path, target: str, **request: object) -> dict[str, object]:
    result = restore(vault, rp_id, RestoreRequest(target=target, **request), tmp_path / "rtmp", tmp_path / "home")  # type: ignore[arg-type]
    assert result.target == target
    return result.details


@pytest.fixture
def sample(pg_cluster: PgCluster, pg_databases: MakeDatabase) -> str:
    return sample_database(pg_cluster, pg_databases("sample", create=False))


def test_round_trip_restores_every_row_sequence_and_schema_object(
    pg_cluster: PgCluster, pg_databases: MakeDatabase, sample: str, vault: Vault, tmp_path: Path
) -> None:
    manifest, stats = backup(vault, spec_for(pg_cluster.dsn(sample)), tmp_path / "tmp")

    assert manifest.metadata["database"] == sample
    assert manifest.metadata["format"] == "custom"
    assert manifest.metadata["server_version"].startswith("1")
    assert manifest.metadata["pg_dump_version"]
    assert sum(stream.size for stream in manifest.streams.values()) == stats["source_bytes"]
    assert set(manifest.streams) == {"dump", "roles"} and manifest.streams["dump"].size > 100_000
    expected, expected_schema = table_checksums(pg_cluster, sample), schema_fingerprint(pg_cluster, sample)
    assert len([key for key in expected if key.startswith("sequence ")]) == 5

    for jobs in (1, 2):  # piped into pg_restore, and through a temporary file for a parallel restore
        copy = pg_databases(f"copy{jobs}", create=False)
        details = restore_into(
            vault, manifest.recovery_point_id, tmp_path, pg_cluster.dsn(copy), options={"jobs": jobs}
        )
        assert details["created"] is True and details["jobs"] == jobs and details["database"] == copy
        assert schema_fingerprint(pg_cluster, copy) == expected_schema
        assert table_checksums(pg_cluster, copy) == expected
    assert not list((tmp_path / "rtmp").iterdir()), "the temporary dump file was not removed"


def test_restore_refuses_a_non_empty_database_unless_allowed(
    pg_cluster: PgCluster, pg_databases: MakeDatabase, vault: Vault, tmp_path: Path
) -> None:
    source = pg_databases("src")
    pg_cluster.execute(
        "CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items VALUES (1, 'a')", dbname=source
    )
    manifest, _ = backup(vault, spec_for(pg_cluster.dsn(source)), tmp_path / "tmp")
    busy = pg_databases("busy")
    pg_cluster.execute("CREATE TABLE keep_me (x int); INSERT INTO keep_me VALUES (42)", dbname=busy)
    before = table_checksums(pg_cluster, busy)

    with pytest.raises(TargetNotEmptyError) as refused:
        restore_into(vault, manifest.recovery_point_id, tmp_path, pg_cluster.dsn(busy))
    assert refused.value.message == f"database {busy} on 127.0.0.1:{pg_cluster.port} is not empty (1 user object)"
    assert refused.value.hint == "restore into a new database name, or pass --allow-non-empty"
    assert table_checksums(pg_cluster, busy) == before

    details = restore_into(vault, manifest.recovery_point_id, tmp_path, pg_cluster.dsn(busy), allow_non_empty=True)
    assert details["created"] is False
    assert pg_cluster.query("SELECT x FROM keep_me", dbname=busy) == [(42,)]
    assert pg_cluster.query("SELECT id, name FROM items", dbname=busy) == [(1, "a")]

    with pytest.raises(TargetError) as clash:  # the same objects again: pg_restore's error, in one line
        restore_into(vault, manifest.recovery_point_id, tmp_path, pg_cluster.dsn(busy), allow_non_empty=True)
    assert "\n" not in clash.value.one_line()
    assert clash.value.message.startswith(f"pg_restore into database {busy} on 127.0.0.1:{pg_cluster.port} failed: ")
    assert 'relation "items" already exists' in clash.value.message


def test_an_empty_existing_database_is_a_valid_target(
    pg_cluster: PgCluster, pg_databases: MakeDatabase, vault: Vault, tmp_path: Path
) -> None:
    source = pg_databases("src")
    pg_cluster.execute("CREATE TABLE t AS SELECT generate_series(1, 10) AS n", dbname=source)
    manifest, _ = backup(vault, spec_for(pg_cluster.dsn(source)), tmp_path / "tmp")
    empty = pg_databases("empty")
    details = restore_into(vault, manifest.recovery_point_id, tmp_path, pg_cluster.dsn(empty))
    assert details["created"] is False
    assert table_checksums(pg_cluster, empty) == table_checksums(pg_cluster, source)


def test_a_missing_owner_is_refused_before_a_database_exists_and_dropping_owners_is_explicit(
    pg_cluster: PgCluster, pg_databases: MakeDatabase, vault: Vault, tmp_path: Path
) -> None:
    owner = f"owner_{secrets.token_hex(3)}"
    pg_cluster.execute(f"CREATE ROLE {owner}")
    source = pg_databases("owned")
    pg_cluster.execute(f"CREATE TABLE t (n int); ALTER TABLE t OWNER TO {owner}", dbname=source)
    manifest, _ = backup(vault, spec_for(pg_cluster.dsn(source)), tmp_path / "tmp")
    pg_cluster.drop_database(source)
    pg_cluster.drop_role(owner)  # the role is gone, as on another server

    lost = pg_databases("lost", create=False)
    with pytest.raises(TargetRolesMissingError) as refused:
        restore_into(vault, manifest.recovery_point_id, tmp_path, pg_cluster.dsn(lost))
    assert refused.value.message == f"127.0.0.1:{pg_cluster.port} lacks the role the dump names: {owner} (owner)"
    assert refused.value.hint == (
        f"restore with --create-roles (from the recovery point's role definitions) or --role-map {owner}=EXISTING_ROLE,"
        " or create it on the target first (CREATE ROLE), or restore with --no-owners ('strongroom restore start "
        f"--help' says what that opens); runbook: create_roles: true, role_map: {{{owner}: EXISTING_ROLE}}, "
        "no_owners: true"
    )
    assert pg_cluster.query("SELECT count(*) FROM pg_database WHERE datname = %s", (lost,)) == [(0,)]

    fresh = pg_databases("fresh", create=False)
    details = restore_into(
        vault, manifest.recovery_point_id, tmp_path, pg_cluster.dsn(fresh), options={"no_owners": True}
    )
    assert (details["owners"], details["privileges"]) == ("restoring user", "kept")
    assert pg_cluster.query("SELECT tableowner FROM pg_tables WHERE tablename = 't'", dbname=fresh) == [("postgres",)]
    with pytest.raises(ConfigError, match="option 'no_owners' must be true or false"):
        restore_into(vault, manifest.recovery_point_id, tmp_path, pg_cluster.dsn(fresh), options={"no_owners": "yes"})


def test_a_policy_role_is_needed_whatever_the_options(
    pg_cluster: PgCluster, pg_databases: MakeDatabase, vault: Vault, tmp_path: Path
) -> None:
    """Row-level security names roles that no option drops: the hint says only what helps."""
    reader = f"Reader {secrets.token_hex(3)}"  # a name that must be quoted
    pg_cluster.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(reader)))
    source = pg_databases("rls")
    pg_cluster.execute(
        sql.SQL(
            "CREATE TABLE t (n int); ALTER TABLE t ENABLE ROW LEVEL SECURITY; "
            "CREATE POLICY mine ON t FOR SELECT TO {} USING (n > 0)"
        ).format(sql.Identifier(reader)),
        dbname=source,
    )
    manifest, _ = backup(vault, spec_for(pg_cluster.dsn(source)), tmp_path / "tmp")
    pg_cluster.drop_database(source)
    pg_cluster.drop_role(reader)

    target = pg_databases("rls_copy", create=False)
    for options in ({}, {"no_owners": True, "no_privileges": True}):
        with pytest.raises(TargetRolesMissingError) as refused:
            restore_into(vault, manifest.recovery_point_id, tmp_path, pg_cluster.dsn(target), options=options)
        assert refused.value.message.endswith(f'lacks the role the dump names: "{reader}" (policies)')
        assert refused.value.hint == (
            f"restore with --create-roles (from the recovery point's role definitions) or --role-map '{reader}"
            f"=EXISTING_ROLE', or create it on the target first (CREATE ROLE); runbook: create_roles: true, "
            f'role_map: {{"{reader}": EXISTING_ROLE}}'
        )
        assert pg_cluster.query("SELECT count(*) FROM pg_database WHERE datname = %s", (target,)) == [(0,)]


def test_a_restorer_that_may_not_give_objects_away_is_refused_and_a_failed_restore_drops_its_database(
    pg_cluster: PgCluster, pg_databases: MakeDatabase, vault: Vault, tmp_path: Path
) -> None:
    restorer = f"restorer_{secrets.token_hex(3)}"  # may create databases; not a superuser, a member of nobody
    pg_cluster.execute(f"CREATE ROLE {restorer} LOGIN CREATEDB")
    source = pg_databases("evt")
    pg_cluster.execute(
        "CREATE TABLE t (n int); CREATE FUNCTION noop() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$; "
        "CREATE EVENT TRIGGER watch ON ddl_command_start EXECUTE FUNCTION noop()",
        dbname=source,
    )
    manifest, _ = backup(vault, spec_for(pg_cluster.dsn(source)), tmp_path / "tmp")
    target = pg_databases("evt_copy", create=False)
    try:
        with pytest.raises(TargetError) as refused:
            restore_into(vault, manifest.recovery_point_id, tmp_path, pg_cluster.dsn(target, user=restorer))
        assert refused.value.message == (
            f"{restorer} on 127.0.0.1:{pg_cluster.port} may not give objects to postgres, which own them in the dump"
        )
        assert "--no-owners" in refused.value.hint
        assert pg_cluster.query("SELECT count(*) FROM pg_database WHERE datname = %s", (target,)) == [(0,)]

        # Without owners, pg_restore gets further and fails on the event trigger: the database it made goes.
        with pytest.raises(TargetError) as failed:
            restore_into(
                vault,
                manifest.recovery_point_id,
                tmp_path,
                pg_cluster.dsn(target, user=restorer),
                options={"no_owners": True},
            )
        assert failed.value.message.startswith(
            f"pg_restore into database {target} on 127.0.0.1:{pg_cluster.port} "
            "failed: permission denied to create event trigger"
        )
        assert pg_cluster.query("SELECT count(*) FROM pg_database WHERE datname = %s", (target,)) == [(0,)]
    finally:
        pg_cluster.drop_database(target)
        pg_cluster.drop_role(restorer)


def test_a_password_in_the_dsn_is_refused_without_echoing_it(
    pg_cluster: PgCluster, vault: Vault, tmp_path: Path
) -> None:
    secret = "s3cr3t-" + secrets.token_hex(4)
    dsns = [
        f"postgresql://postgres:{secret}@127.0.0.1:{pg_cluster.port}/postgres",
        f"postgresql://postgres@127.0.0.1:{pg_cluster.port}/postgres?password={secret}",
        f"host=127.0.0.1 port={pg_cluster.port} user=postgres password={secret}",
    ]
    for dsn in dsns:
        with pytest.raises(ConfigError) as refused:
            get_adapter("postgres").validate_settings({"dsn": dsn})
        assert refused.value.message == "'dsn' contains a password"
        assert "PGPASSWORD" in refused.value.hint and ".pgpass" in refused.value.hint
        assert secret not in refused.value.one_line()
        with pytest.raises(ConfigError):
            backup(vault, spec_for(dsn), tmp_path / "tmp")
    with pytest.raises(ConfigError, match="'target' contains a password"):
        get_adapter("postgres").restore({}, None, RestoreRequest(target=dsns[0]))  # type: ignore[arg-type]


def test_an_unreachable_server_is_a_clear_source_error(pg_bindir: Path, vault: Vault, tmp_path: Path) -> None:
    from tests.support.ports import free_port

    port = free_port()
    with pytest.raises(SourceError) as failed:
        backup(vault, spec_for(f"postgresql://postgres@127.0.0.1:{port}/postgres"), tmp_path / "tmp")
    assert failed.value.message == f"cannot connect to PostgreSQL at 127.0.0.1:{port}: connection refused"
    assert failed.value.hint


def test_a_missing_pg_dump_is_named(
    pg_cluster: PgCluster, vault: Vault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "no-tools"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("STRONGROOM_PG_BINDIR", str(empty))
    with pytest.raises(ToolMissingError) as missing:
        backup(vault, spec_for(pg_cluster.dsn()), tmp_path / "tmp")
    assert missing.value.message == "pg_dump not found"
    assert missing.value.hint.startswith("install PostgreSQL client tools, e.g. apt-get install -y postgresql")


def test_a_second_backup_after_a_small_change_stores_few_new_bytes(
    pg_cluster: PgCluster, pg_database: str, tmp_path: Path
) -> None:
    vault = make_vault(tmp_path / "vault", average_chunk=64 * 1024)
    columns = " || ".join(f"md5((i * {k})::text)" for k in range(1, 9))
    pg_cluster.execute(
        f"CREATE TABLE bulk (id int PRIMARY KEY, payload text NOT NULL);"
        f"INSERT INTO bulk SELECT i, {columns} FROM generate_series(1, 20000) AS i",
        dbname=pg_database,
    )
    spec = spec_for(pg_cluster.dsn(pg_database))
    first, first_stats = backup(vault, spec, tmp_path / "tmp")
    pg_cluster.execute(
        f"INSERT INTO bulk SELECT i, {columns} FROM generate_series(20001, 20200) AS i;"
        "UPDATE bulk SET payload = upper(payload) WHERE id BETWEEN 9000 AND 9199",
        dbname=pg_database,
    )
    second, second_stats = backup(vault, spec, tmp_path / "tmp", previous=first.recovery_point_id)

    assert first_stats["source_bytes"] > 4_000_000
    assert second_stats["new_bytes"] <= 0.10 * first_stats["stored_bytes"], (first_stats, second_stats)
    assert second.streams["dump"].size > first.streams["dump"].size


# The password travels in the environment only --------------------------------------------------


@pytest.fixture
def password_role(pg_cluster: PgCluster) -> Iterator[tuple[str, str]]:
    name, password = f"pw_{secrets.token_hex(3)}", "pw-" + secrets.token_hex(12)
    pg_cluster.create_role(name, password, read_all=True)
    yield name, password
    pg_cluster.drop_role(name)


def recording_pg_dump(directory: Path, log: Path) -> Path:
    """A pg_dump that logs its argv (and whether PGPASSWORD is set) to ``log``, then runs the real one."""
    real = find_tool("pg_dump")
    directory.mkdir()
    script = directory / "pg_dump"
    script.write_text(
        "#!/bin/sh\n"
        f"printf 'argv: %s\\n' \"$0\" \"$@\" >> '{log}'\n"
        f"if [ -n \"$PGPASSWORD\" ]; then echo 'env: PGPASSWORD set' >> '{log}'; fi\n"
        f"exec '{real}' \"$@\"\n"
    )
    script.chmod(0o755)
    return directory


def scan_process_arguments(needle: str, stop: threading.Event, hits: list[str]) -> None:
    """Look at every process's argv until ``stop``; note any that contains ``needle``."""
    while not stop.is_set():
        for entry in Path("/proc").iterdir():
            try:
                argv = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if needle.encode() in argv:
                hits.append(argv.decode(errors="replace"))
        stop.wait(0.002)


def test_a_password_given_in_the_environment_never_reaches_process_arguments(
    pg_cluster: PgCluster,
    sample: str,
    password_role: tuple[str, str],
    vault: Vault,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    role, password = password_role
    monkeypatch.delenv("PGPASSWORD", raising=False)
    log = tmp_path / "argv.log"
    monkeypatch.setenv("STRONGROOM_PG_BINDIR", str(recording_pg_dump(tmp_path / "bin", log)))
    spec = spec_for(pg_cluster.dsn(sample, user=role))

    with pytest.raises(SourceError) as refused:  # proof that the server really asks this role for a password
        backup(vault, spec, tmp_path / "tmp")
    assert refused.value.message == f"PostgreSQL at 127.0.0.1:{pg_cluster.port} asks for a password and none was given"

    stop, hits = threading.Event(), []
    scanner = threading.Thread(target=scan_process_arguments, args=(password, stop, hits))
    scanner.start()
    try:
        manifest = backup_with_environment(vault, spec, tmp_path / "tmp", {"PGPASSWORD": password})
    finally:
        stop.set()
        scanner.join()

    recorded = log.read_text()
    assert "--format=custom" in recorded and "env: PGPASSWORD set" in recorded
    assert password not in recorded
    assert hits == []
    assert password not in json.dumps(manifest.metadata)
    assert manifest.metadata["user"] == role
    assert os.environ.get("PGPASSWORD") is None
