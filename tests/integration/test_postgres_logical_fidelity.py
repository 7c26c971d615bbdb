"""A logical restore is faithful on the same server and on a fresh one: roles, database properties, locale.

The database is :func:`tests.support.pgfidelity.fidelity_database` (nothing in it shaped by Strongroom).
Cluster 1 is the session's ``pg_cluster``; cluster 2 is a fresh server without any of its roles, made
once for this module.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from strongroom.adapters import ResourceSpec, RestoreRequest
from strongroom.adapters.postgres.roles import STREAM as ROLES_STREAM
from strongroom.adapters.postgres.roles import RoleDefinitions
from strongroom.errors import ConfigError, TargetLocaleError, TargetRolesMissingError
from strongroom.vault import Vault
from strongroom.vault.manifest import Manifest, load_manifest
from strongroom.vault.reader import RecoveryPointReader
from strongroom.vault.writer import RecoveryPointWriter
from tests.support.pgcluster import PgCluster, backup_with_environment, traversable_tempdir
from tests.support.pgfidelity import FidelityRoles, fidelity_database, snapshot
from tests.support.vaults import backup, make_vault, restore

pytestmark = pytest.mark.postgres


class Source:
    def __init__(self, cluster: PgCluster, name: str, roles: FidelityRoles, vault: Vault, manifest: Manifest) -> None:
        self.cluster, self.name, self.roles, self.vault, self.manifest = cluster, name, roles, vault, manifest

    @property
    def point(self) -> str:
        return self.manifest.recovery_point_id


@pytest.fixture(scope="module")
def source(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    roles = FidelityRoles.new()
    name = f'fid "odd" db {secrets.token_hex(3)}'
    fidelity_database(pg_cluster, name, roles)
    base = tmp_path_factory.mktemp("fidelity")
    vault = make_vault(base / "vault")
    dsn = psycopg.conninfo.make_conninfo(host="127.0.0.1", port=pg_cluster.port, user="postgres", dbname=name)
    manifest, _ = backup(vault, ResourceSpec("fid", "postgres", {"dsn": dsn}), base / "tmp")
    try:
        yield Source(pg_cluster, name, roles, vault, manifest)
    finally:
        for database in pg_cluster.query("SELECT datname FROM pg_database WHERE datname LIKE 'fid%'"):
            pg_cluster.drop_database(database[0])
        for role in reversed(roles.all()):
            pg_cluster.drop_role(role)


@pytest.fixture(scope="module")
def fresh() -> Iterator[PgCluster]:
    """Cluster 2: a new server without the source's roles."""
    cluster = PgCluster.create(traversable_tempdir("strongroom-pg-fresh-"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


def target(cluster: PgCluster, name: str) -> str:
    return psycopg.conninfo.make_conninfo(host="127.0.0.1", port=cluster.port, user="postgres", dbname=name)


def restore_point(source: Source, tmp_path: Path, dsn: str, point: str | None = None, **options: object) -> dict:
    request = RestoreRequest(target=dsn, options=dict(options))
    return restore(source.vault, point or source.point, request, tmp_path / "rtmp", tmp_path / "home").details


def exists(cluster: PgCluster, name: str) -> bool:
    return bool(cluster.query("SELECT count(*) FROM pg_database WHERE datname = %s", (name,))[0][0])


def connects(cluster: PgCluster, role: str, dbname: str) -> bool:
    try:
        with cluster.connect(dbname, user=role):
            return True
    except psycopg.OperationalError as exc:
        assert "permission denied for database" in str(exc), exc
        return False


def test_a_same_server_restore_is_faithful_and_an_outsider_cannot_connect_to_the_copy(
    source: Source, tmp_path: Path
) -> None:
    cluster, roles = source.cluster, source.roles
    copy = f'fid copy "{secrets.token_hex(3)}"'
    assert not connects(cluster, roles.outsider, source.name)  # the original keeps outsiders out

    details = restore_point(source, tmp_path, target(cluster, copy))

    # The attacker: a role of the same server that the original refused. Before, the copy let it in.
    assert not connects(cluster, roles.outsider, copy)
    assert connects(cluster, roles.app, copy)
    assert snapshot(cluster, copy) == snapshot(cluster, source.name)
    with cluster.connect(copy, user=roles.app) as conn:  # the database's and the role's settings apply
        assert conn.execute("SHOW timezone").fetchone() == ("Pacific/Auckland",)
        assert conn.execute("SHOW work_mem").fetchone() == ("7MB",)
        assert conn.execute("SELECT count(*) FROM patients").fetchone() == (100,)  # search_path and the RLS policy
    assert details["database_properties"]["applied"] is True
    assert details["encoding_and_locale"] == {
        "ENCODING": "UTF8",
        "LOCALE_PROVIDER": "icu",
        "LC_COLLATE": "C.utf8",
        "LC_CTYPE": "C.utf8",
        "ICU_LOCALE": "en-GB",
    }
    assert details["roles_created"]["created"] == []


def test_the_point_carries_the_roles_it_needs_with_their_password_hashes(source: Source) -> None:
    manifest = source.manifest
    assert manifest.metadata["roles"] == {"stream": "roles", "count": 4, "passwords": "included"}
    with RecoveryPointReader(source.vault, manifest) as reader:
        definitions = RoleDefinitions.from_json(b"".join(reader.iter_stream(ROLES_STREAM)), "the point")
    roles = source.roles
    assert set(definitions.roles) == {roles.owner, roles.app, roles.reader, "postgres"}  # not the outsider
    hashes = dict(source.cluster.query("SELECT rolname, rolpassword FROM pg_authid WHERE rolname = %s", (roles.app,)))
    assert definitions.roles[roles.app].password == hashes[roles.app]
    assert roles.password not in str(definitions.to_json())
    assert (roles.reader, roles.app) in {(m.role, m.member) for m in definitions.memberships}


def test_a_fresh_server_without_the_roles_is_refused_with_a_hint_that_works(
    source: Source, fresh: PgCluster, tmp_path: Path
) -> None:
    roles = source.roles
    copy = "fid restored elsewhere"
    fresh.execute(sql.SQL("CREATE ROLE {} NOLOGIN CONNECTION LIMIT 3").format(sql.Identifier(roles.reader)))
    try:
        with pytest.raises(TargetRolesMissingError) as refused:
            restore_point(source, tmp_path, target(fresh, copy))
        assert "--create-roles" in refused.value.hint and "--role-map" in refused.value.hint
        assert roles.reader not in refused.value.message  # it exists there
        assert not exists(fresh, copy)

        details = restore_point(source, tmp_path, target(fresh, copy), create_roles=True)  # as the hint says

        assert snapshot(fresh, copy) == snapshot(source.cluster, source.name)
        created = details["roles_created"]
        assert sorted(created["created"]) == sorted([roles.owner, roles.app])
        assert created["login"] == [roles.app]
        assert created["powers_dropped"] == {roles.owner: ["CREATEDB", "BYPASSRLS"]}
        assert f"{roles.reader} to {roles.app}" in created["memberships_not_granted"]  # reader existed already
        assert f'role "{roles.owner}" created without CREATEDB, BYPASSRLS (server-wide powers)' in details["notes"]
        attributes = "SELECT rolname, rolcanlogin, rolcreatedb, rolbypassrls, rolconnlimit, rolpassword FROM pg_authid"
        on_fresh = {row[0]: row[1:] for row in fresh.query(attributes)}
        on_source = {row[0]: row[1:] for row in source.cluster.query(attributes)}
        assert on_fresh[roles.app] == on_source[roles.app]  # LOGIN, limit and the very password hash
        assert on_fresh[roles.owner][:3] == (False, False, False)  # NOLOGIN, no server-wide powers
        assert on_fresh[roles.reader][3] == 3  # an existing role is never altered
        assert roles.outsider not in on_fresh
        assert not fresh.query(
            "SELECT 1 FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = %s", (roles.app,)
        )
    finally:
        fresh.drop_database(copy)
        for role in (roles.app, roles.owner, roles.reader):
            fresh.drop_role(role)


def test_a_role_map_gives_owners_grants_policies_and_settings_to_existing_roles(
    source: Source, fresh: PgCluster, tmp_path: Path
) -> None:
    roles = source.roles
    mapped = {roles.owner: "New Owner", roles.app: "new_app", roles.reader: "new_reader", "postgres": "postgres"}
    for new in ("New Owner", "new_app", "new_reader"):
        fresh.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(new)))
    copy = "fid mapped"
    try:
        missing_map = {**mapped, roles.app: "nobody_here"}
        with pytest.raises(TargetRolesMissingError) as refused:
            restore_point(source, tmp_path, target(fresh, copy), role_map=missing_map)
        assert refused.value.message == f"--role-map maps to nobody_here, which 127.0.0.1:{fresh.port} lacks"
        assert not exists(fresh, copy)
        with pytest.raises(ConfigError, match="--role-map names not_in_dump, which the dump does not name"):
            restore_point(source, tmp_path, target(fresh, copy), role_map={"not_in_dump": "new_app"})

        details = restore_point(source, tmp_path, target(fresh, copy), role_map=mapped, jobs=2)

        assert snapshot(fresh, copy) == snapshot(source.cluster, source.name, mapped)
        assert details["roles_created"]["created"] == []
        assert fresh.query("SELECT datdba::regrole::text FROM pg_database WHERE datname = %s", (copy,)) == [
            ('"New Owner"',)
        ]
    finally:
        fresh.drop_database(copy)
        for role in ("New Owner", "new_app", "new_reader"):
            fresh.drop_role(role)


def old_point(source: Source) -> str:
    """The same dump as a point made before role definitions were recorded (no ``roles`` stream)."""
    manifest = load_manifest(source.vault, source.point)
    with (
        RecoveryPointReader(source.vault, manifest) as reader,
        RecoveryPointWriter(source.vault, secrets.token_hex(8)) as writer,
    ):
        with reader.open_stream("dump") as dump:
            writer.store_stream("dump", dump)
        metadata = {key: value for key, value in manifest.metadata.items() if key != "roles"}
        return writer.commit("fid", "postgres", metadata).recovery_point_id


def test_a_point_without_role_definitions_still_restores_and_create_roles_says_it_has_none(
    source: Source, fresh: PgCluster, tmp_path: Path
) -> None:
    point = old_point(source)
    copy = f"fid old {secrets.token_hex(3)}"
    restore_point(source, tmp_path, target(source.cluster, copy), point=point)
    assert snapshot(source.cluster, copy) == snapshot(source.cluster, source.name)

    with pytest.raises(TargetRolesMissingError) as refused:
        restore_point(source, tmp_path, target(fresh, "fid old"), point=point, create_roles=True)
    assert f"recovery point {point} carries no role definitions" in refused.value.message
    assert "--role-map" in refused.value.hint
    with pytest.raises(TargetRolesMissingError) as plain:
        restore_point(source, tmp_path, target(fresh, "fid old"), point=point)
    assert "--create-roles" not in plain.value.hint and "--role-map" in plain.value.hint
    assert not exists(fresh, "fid old")


def test_a_target_that_cannot_hold_the_encoding_or_locale_is_refused_before_anything_is_created(
    source: Source, tmp_path: Path
) -> None:
    cluster = source.cluster
    for options, reason in (
        ({"locale": "xx_NOWHERE.UTF-8"}, 'invalid locale name: "xx_NOWHERE.UTF-8"'),
        ({"encoding": "LATIN1"}, 'encoding "LATIN1" does not match locale "C.utf8"'),
    ):
        copy = f"fid locale {secrets.token_hex(3)}"
        with pytest.raises(TargetLocaleError) as refused:
            restore_point(source, tmp_path, target(cluster, copy), **options)
        assert reason in refused.value.message
        assert "--encoding / --locale" in refused.value.hint
        assert "\n" not in refused.value.one_line()
        assert not exists(cluster, copy)

    copy = f"fid c locale {secrets.token_hex(3)}"
    details = restore_point(source, tmp_path, target(cluster, copy), locale="C", encoding="SQL_ASCII")
    assert details["encoding_and_locale"] == {"ENCODING": "SQL_ASCII", "LC_COLLATE": "C", "LC_CTYPE": "C"}
    assert cluster.query(
        "SELECT pg_encoding_to_char(encoding), datcollate, datlocprovider::text FROM pg_database WHERE datname = %s",
        (copy,),
    ) == [("SQL_ASCII", "C", "c")]
    with pytest.raises(ConfigError, match="option 'locale' must be an encoding or locale name"):
        restore_point(source, tmp_path, target(cluster, "fid bad"), locale="C'; DROP DATABASE x; --")


def test_a_backup_role_that_cannot_read_passwords_says_so_and_created_roles_cannot_log_in(
    pg_cluster: PgCluster, fresh: PgCluster, tmp_path: Path, pg_databases: Callable[..., str]
) -> None:
    suffix = secrets.token_hex(3)
    owner, reader, password = f"pw_owner_{suffix}", f"pw_reader_{suffix}", secrets.token_hex(12)
    pg_cluster.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'owner-secret'").format(sql.Identifier(owner)))
    pg_cluster.create_role(reader, password)  # not a superuser (nor pg_read_all_data): pg_authid is closed to it
    database = pg_databases("nopw")
    pg_cluster.execute(
        sql.SQL("CREATE TABLE t (n int); ALTER TABLE t OWNER TO {}; GRANT SELECT ON t TO {}").format(
            sql.Identifier(owner), sql.Identifier(reader)
        ),
        dbname=database,
    )
    vault = make_vault(tmp_path / "vault")
    dsn = psycopg.conninfo.make_conninfo(host="127.0.0.1", port=pg_cluster.port, user=reader, dbname=database)
    copy = f"nopw copy {suffix}"
    try:
        manifest = backup_with_environment(
            vault, ResourceSpec("nopw", "postgres", {"dsn": dsn}), tmp_path / "tmp", {"PGPASSWORD": password}
        )
        assert manifest.metadata["roles"]["passwords"] == "not available"
        with RecoveryPointReader(vault, manifest) as point:
            recorded = RoleDefinitions.from_json(b"".join(point.iter_stream(ROLES_STREAM)), "the point")
        assert recorded.roles[owner].login and recorded.roles[owner].password is None

        request = RestoreRequest(target=target(fresh, copy), options={"create_roles": True})
        details = restore(vault, manifest.recovery_point_id, request, tmp_path / "rtmp", tmp_path / "home").details
        created = details["roles_created"]
        assert created["created"] == sorted([owner, reader]) and created["login"] == []
        assert fresh.query("SELECT rolcanlogin, rolpassword IS NULL FROM pg_authid WHERE rolname = %s", (owner,)) == [
            (False, True)
        ]
        assert fresh.query("SELECT tableowner FROM pg_tables WHERE tablename = 't'", dbname=copy) == [(owner,)]
        assert created["memberships_not_granted"] == [f"strongroom_password_login to {reader}"]
    finally:
        fresh.drop_database(copy)
        fresh.drop_role(owner)
        fresh.drop_role(reader)
        pg_cluster.drop_database(database)
        pg_cluster.drop_role(owner)
        pg_cluster.drop_role(reader)
