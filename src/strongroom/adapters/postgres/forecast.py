"""What a dry run checks on a PostgreSQL restore's real target before the restore would run, so that the real
run does not stop half-way on something visible now (``ResourceAdapter.forecast_restore``).

For a logical (``postgres``) point restored onto a server: the restoring role may create databases
(superuser or ``CREATEDB``); the roles the point's dump names (owners, grantees, policy roles, read from
its table of contents when the point is in this account) exist on the server, or the restore creates them
(``create_roles``), after its ``role_map``; the dump's owners are within the restoring role's reach
(superuser, or member of them: ``ALTER … OWNER TO`` needs it). The databases and roles that will exist on
the restored target are predicted (``known_databases``, ``known_roles``) so that later runbook steps can
check the names they use. For a physical (``postgres-cluster``) point the databases are the point's own,
and a password file that lets nothing log in at the restored cluster's new port is reported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg

from strongroom.adapters.base import RestoreForecast, RestoreRequest
from strongroom.adapters.postgres.dump_format import read_toc
from strongroom.adapters.postgres.dump_roles import Ownership, RoleNeeds, role_needs
from strongroom.adapters.postgres.logical import (
    MISSING_ROLES,
    OWNERS_OUT_OF_REACH,
    ROLES_STREAM,
    display_roles,
    missing_roles_error,
    restore_target,
)
from strongroom.adapters.postgres.tools import connect
from strongroom.errors import StrongroomError, TargetError
from strongroom.vault.reader import RecoveryPointReader

RESTORER = """
SELECT current_user, rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user
"""


def logical_forecast(request: RestoreRequest, reader: RecoveryPointReader | None) -> RestoreForecast:
    """The dry run of a logical point's restore (``reader`` None: the point is not readable here yet)."""
    try:
        needs, has_definitions = point_role_needs(reader) if reader else (None, False)
        ownership = Ownership.from_options(request.options)
    except StrongroomError as exc:
        return RestoreForecast(problems=[f"cannot read the recovery point's roles: {exc.one_line()}"])
    return _logical_target(request, needs, ownership, has_definitions)


def cluster_forecast(request: RestoreRequest, metadata: Mapping[str, Any]) -> RestoreForecast:
    """The dry run of a physical point's restore: its databases, and whether its role can log in there."""
    databases = metadata.get("databases")
    forecast = RestoreForecast(databases=list(databases) if isinstance(databases, list) else None)
    login = metadata.get("user")
    problem = pgpass_problem(login, request.port) if isinstance(login, str) else None
    forecast.problems += [problem] if problem else []
    return forecast


def _logical_target(
    request: RestoreRequest, needs: RoleNeeds | None, ownership: Ownership, has_definitions: bool
) -> RestoreForecast:
    """The same ownership options as the real restore (``ownership_options``): mapped names are looked up."""
    target = restore_target(request.target)
    where = target.where()
    wanted_in_dump = sorted(needs.needed(owners=ownership.owners, privileges=ownership.privileges)) if needs else []
    wanted = sorted({ownership.mapped(name) for name in wanted_in_dump} | set(ownership.role_map.values()))
    owners = sorted({ownership.mapped(name) for name in needs.owners}) if needs and ownership.owners else []
    try:
        with connect(target, {}, TargetError, dbname="postgres") as conn:
            row = conn.execute(RESTORER).fetchone()
            databases = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datallowconn")]
            roles = [r[0] for r in conn.execute("SELECT rolname FROM pg_roles")]
            missing = [r[0] for r in conn.execute(MISSING_ROLES, (wanted,)).fetchall()]
            present = [name for name in owners if name not in missing]
            out_of_reach = [r[0] for r in conn.execute(OWNERS_OUT_OF_REACH, (present,)).fetchall()]
    except psycopg.Error as exc:
        return RestoreForecast(problems=[f"checking {where} failed: {_first_line(exc)}"])
    assert row is not None
    user, superuser, createdb, createrole = row
    facts = RestoreForecast(databases=[*databases, target.dbname or ""], roles=roles)
    if not (superuser or createdb):
        facts.problems.append(
            f"role {user} on {where} may not create databases, and the restore creates {target.dbname}:"
            f" give it CREATEDB (ALTER ROLE {display_roles([user])} CREATEDB) or restore as a superuser"
            " (the restore step's target: DSN)"
        )
    mapped_missing = sorted(set(ownership.role_map.values()) & set(missing))
    if mapped_missing:
        facts.problems.append(
            f"the restore step's role_map maps to {display_roles(mapped_missing)}, which {where} lacks"
        )
        missing = [name for name in missing if name not in mapped_missing]
    if missing and ownership.create_roles:
        facts.roles = [*roles, *missing]
        if not (superuser or createrole):
            facts.problems.append(
                f"role {user} on {where} may not create the roles the point names ({display_roles(missing)}):"
                " give it CREATEROLE or restore as a superuser"
            )
    elif missing and needs is not None:
        facts.problems.append(missing_roles_error(missing, needs, ownership, where, has_definitions).one_line())
    if out_of_reach:
        facts.problems.append(
            f"role {user} on {where} may not give objects to {display_roles(out_of_reach)}, which own them in the"
            f" dump (must be a member of them): restore as a superuser, GRANT {display_roles(out_of_reach)} TO"
            f" {display_roles([user])}, or set no_owners: true in the restore step"
        )
    return facts


def point_role_needs(reader: RecoveryPointReader) -> tuple[RoleNeeds | None, bool]:
    """The roles the point's dump names, and whether the point carries their definitions (``roles``)."""
    with reader.open_stream("dump") as stream:
        entries = read_toc(stream)
    has_definitions = ROLES_STREAM in reader.manifest.streams
    return (None if entries is None else role_needs(entries)), has_definitions


def pgpass_problem(user: str, port: int | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """A restored cluster keeps the source's roles and passwords and answers on 127.0.0.1 at a NEW port: a
    password file whose lines for ``user`` all name another port (or host) lets nothing log in there."""
    if environ.get("PGPASSWORD"):
        return None
    passfile = Path(environ.get("PGPASSFILE") or Path.home() / ".pgpass")
    try:
        lines = passfile.read_text().splitlines()
    except OSError:
        return None  # no password file: the server may trust the login, nothing to predict
    entries = [_pgpass_fields(line) for line in lines if line.strip() and not line.lstrip().startswith("#")]
    mine = [e for e in entries if len(e) == 5 and e[3] in ("*", user)]
    wanted_ports = {"*", str(port)} if port else {"*"}
    if not mine or any(e[0] in ("*", "127.0.0.1") and e[1] in wanted_ports for e in mine):
        return None
    return (
        f"{passfile} has lines for role {user} only for {', '.join(sorted({e[0] + ':' + e[1] for e in mine}))}; the"
        f" restored cluster keeps the source's passwords and answers on 127.0.0.1 at a new port: add"
        f" '127.0.0.1:*:*:{user}:PASSWORD' (or set PGPASSWORD) so that the later steps can log in"
    )


def _pgpass_fields(line: str) -> list[str]:
    """host:port:database:user:password, with libpq's \\: and \\\\ escapes."""
    fields: list[str] = []
    current, escaped = "", False
    for char in line:
        if escaped:
            current, escaped = current + char, False
        elif char == "\\":
            escaped = True
        elif char == ":" and len(fields) < 4:
            fields.append(current)
            current = ""
        else:
            current += char
    return [*fields, current]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
