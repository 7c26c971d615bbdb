"""Role definitions that travel with a logical recovery point, and creating the missing ones on restore.

At backup, the roles the database references are read from the source server's catalogs (not from
``pg_dumpall``, whose ``--roles-only`` output is SQL text for *every* role of the cluster: it would
have to be parsed to keep only these, and replaying SQL text carried by a recovery point would let a
forged point run any statement cluster-wide, e.g. ``ALTER ROLE postgres PASSWORD …``). Referenced
means: owners, grantees and policy roles (``pg_shdepend`` of this database, which also records the
database's own owner and ACL), roles with ``ALTER ROLE … IN DATABASE … SET`` here, the database
owner and the bootstrap superuser (whose ownership ``pg_shdepend`` does not record); predefined
``pg_*`` roles are on every server and are not recorded. Memberships whose member is one of them are
recorded too. Password hashes come along only when the backup role may read ``pg_authid`` (a
superuser, or a member of ``pg_read_all_data``); otherwise the stream says that passwords were not available.

The definitions are a JSON stream ``roles`` of the recovery point (encrypted like every stream; the
catalog's copy of the manifest metadata holds only their count and whether passwords came along).

At restore (``--create-roles``), a needed role missing on the target is created from its record with
``psycopg.sql`` composition (never from text): ``NOLOGIN`` unless its password hash came along;
``INHERIT``/``NOINHERIT``, connection limit and ``VALID UNTIL`` as recorded; never ``SUPERUSER``,
``CREATEDB``, ``CREATEROLE``, ``REPLICATION`` or ``BYPASSRLS`` (powers over the whole target server,
reported as dropped). An existing role is never altered. A membership is granted only between two
roles this restore created; others are reported.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import psycopg
from psycopg import sql

from strongroom.errors import IntegrityError

STREAM = "roles"
FORMAT = 1
MAX_STREAM = 16 << 20  # a forged point must not make a restore read gigabytes of "roles"
SERVER_POWERS = ("superuser", "createdb", "createrole", "replication", "bypassrls")

REFERENCED_ROLES = """
WITH db AS (SELECT oid, datdba FROM pg_database WHERE datname = current_database()),
referenced AS (
    SELECT s.refobjid AS oid FROM pg_shdepend s, db
     WHERE s.refclassid = 'pg_authid'::regclass
       AND (s.dbid = db.oid OR (s.dbid = 0 AND s.classid = 'pg_database'::regclass AND s.objid = db.oid))
    UNION SELECT datdba FROM db
    UNION SELECT setrole FROM pg_db_role_setting, db WHERE setdatabase = db.oid AND setrole <> 0
    UNION SELECT 10::oid
)
SELECT r.oid, r.rolname, r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin,
       r.rolreplication, r.rolbypassrls, r.rolconnlimit, r.rolvaliduntil::text
  FROM pg_roles r JOIN referenced USING (oid)
 WHERE r.rolname !~ '^pg_'
 ORDER BY r.rolname
"""
MEMBERSHIPS = """
SELECT g.rolname, m.rolname, am.admin_option
  FROM pg_auth_members am JOIN pg_roles g ON g.oid = am.roleid JOIN pg_roles m ON m.oid = am.member
 WHERE am.member = ANY(%s::oid[]) ORDER BY 1, 2
"""
CAN_READ_PASSWORDS = "SELECT has_table_privilege('pg_catalog.pg_authid', 'SELECT')"
PASSWORDS = "SELECT rolname, rolpassword FROM pg_catalog.pg_authid WHERE oid = ANY(%s::oid[])"
EXISTING = "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)"


class Passwords(StrEnum):
    INCLUDED = "included"  # the backup role could read pg_authid: hashes of roles that had one
    NOT_AVAILABLE = "not available"  # it could not: created roles are NOLOGIN


@dataclass(frozen=True)
class RoleDefinition:
    name: str
    login: bool = False
    inherit: bool = True
    superuser: bool = False
    createdb: bool = False
    createrole: bool = False
    replication: bool = False
    bypassrls: bool = False
    connection_limit: int = -1
    valid_until: str | None = None
    password: str | None = None  # the stored hash (SCRAM or md5), never a clear-text password

    def dropped_powers(self) -> list[str]:
        return [power.upper() for power in SERVER_POWERS if getattr(self, power)]


@dataclass(frozen=True)
class Membership:
    role: str  # the group
    member: str
    admin_option: bool = False


@dataclass
class RoleDefinitions:
    passwords: Passwords
    roles: dict[str, RoleDefinition] = field(default_factory=dict)
    memberships: list[Membership] = field(default_factory=list)

    def to_json(self) -> bytes:
        body = {
            "format": FORMAT,
            "passwords": self.passwords.value,
            "roles": [asdict(role) for role in self.roles.values()],
            "memberships": [asdict(membership) for membership in self.memberships],
        }
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> RoleDefinitions:
        try:
            body = json.loads(data)
            if body.get("format") != FORMAT:
                raise ValueError(f"format {body.get('format')!r}")
            roles = [RoleDefinition(**role) for role in body["roles"]]
            memberships = [Membership(**membership) for membership in body["memberships"]]
            return cls(Passwords(body["passwords"]), {role.name: role for role in roles}, memberships)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise IntegrityError(
                f"the role definitions of {where} cannot be read ({exc})",
                hint="restore with --role-map or create the roles on the target yourself",
            ) from None

    def summary(self) -> dict[str, Any]:
        """What the manifest's metadata (and so the catalog) says about them: no names, no hashes."""
        return {"stream": STREAM, "count": len(self.roles), "passwords": self.passwords.value}


def read_definitions(conn: psycopg.Connection[Any]) -> RoleDefinitions:
    """The definitions of the roles the connected database references."""
    rows = conn.execute(REFERENCED_ROLES).fetchall()
    oids = [row[0] for row in rows]
    readable = bool((conn.execute(CAN_READ_PASSWORDS).fetchone() or [False])[0])
    hashes: dict[str, str | None] = {}
    if readable:
        hashes = dict(conn.execute(PASSWORDS, (oids,)).fetchall())
    roles = {}
    for _oid, name, superuser, inherit, createrole, createdb, login, replication, bypassrls, limit, until in rows:
        roles[name] = RoleDefinition(
            name,
            login,
            inherit,
            superuser,
            createdb,
            createrole,
            replication,
            bypassrls,
            limit,
            until,
            hashes.get(name),
        )
    memberships = [Membership(*row) for row in conn.execute(MEMBERSHIPS, (oids,)).fetchall()]
    return RoleDefinitions(Passwords.INCLUDED if readable else Passwords.NOT_AVAILABLE, roles, memberships)


@dataclass
class CreatedRoles:
    """What ``--create-roles`` did, for the job result (names only: never a password)."""

    created: list[str] = field(default_factory=list)
    login: list[str] = field(default_factory=list)  # created with LOGIN and their recorded password hash
    powers_dropped: dict[str, list[str]] = field(default_factory=dict)
    memberships_granted: list[str] = field(default_factory=list)
    memberships_not_granted: list[str] = field(default_factory=list)

    def as_details(self) -> dict[str, Any]:
        return asdict(self)


def create_roles(conn: psycopg.Connection[Any], definitions: RoleDefinitions, names: Iterable[str]) -> CreatedRoles:
    """Create each of ``names`` (missing on the target, recorded in ``definitions``), then the memberships
    among the roles created. Runs in one transaction: all of them or none."""
    done = CreatedRoles()
    wanted = sorted(set(names))
    with conn.transaction():
        if _superuser(conn):  # keep the password hashes out of the server's log
            conn.execute("SET LOCAL log_statement = 'none'")
        for name in wanted:
            role = definitions.roles[name]
            conn.execute(create_role_statement(role))
            done.created.append(name)
            if role.password is not None and role.login:
                done.login.append(name)
            if role.dropped_powers():
                done.powers_dropped[name] = role.dropped_powers()
        created = set(done.created)
        for membership in definitions.memberships:
            text = f"{membership.role} to {membership.member}"
            if membership.member not in created:
                continue
            if membership.role not in created:
                done.memberships_not_granted.append(text)
                continue
            admin = sql.SQL(" WITH ADMIN OPTION" if membership.admin_option else "")
            conn.execute(
                sql.SQL("GRANT {} TO {}{}").format(
                    sql.Identifier(membership.role), sql.Identifier(membership.member), admin
                )
            )
            done.memberships_granted.append(text)
    return done


def _superuser(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    return bool(row and row[0])


def create_role_statement(role: RoleDefinition) -> sql.Composed:
    parts: list[sql.Composable] = [sql.SQL("CREATE ROLE {}").format(sql.Identifier(role.name))]
    parts.append(sql.SQL("LOGIN" if role.password is not None and role.login else "NOLOGIN"))
    parts.append(sql.SQL("INHERIT" if role.inherit else "NOINHERIT"))
    if role.connection_limit != -1:
        parts.append(sql.SQL("CONNECTION LIMIT {}").format(sql.Literal(int(role.connection_limit))))
    if role.valid_until is not None:
        parts.append(sql.SQL("VALID UNTIL {}").format(sql.Literal(role.valid_until)))
    if role.password is not None:
        parts.append(sql.SQL("PASSWORD {}").format(sql.Literal(role.password)))
    return sql.SQL(" ").join(parts)


def existing_roles(conn: psycopg.Connection[Any], names: Iterable[str]) -> set[str]:
    return {row[0] for row in conn.execute(EXISTING, (sorted(set(names)),)).fetchall()}
