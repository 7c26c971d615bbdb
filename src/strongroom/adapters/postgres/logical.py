"""``postgres``: one PostgreSQL database, backed up logically with ``pg_dump`` and restored with ``pg_restore``.

Backup streams ``pg_dump --format=custom --compress=0`` straight into the recovery point's ``dump``
stream (no temporary file; uncompressed so that unchanged rows deduplicate between backups).

Restore goes into a *new* database given by ``request.target`` (``postgresql://user@host:port/newdb``):
it is created (``TEMPLATE template0`` with exactly the point's encoding, locale provider and locale, or
``encoding`` / ``locale`` options; a server that cannot hold them is refused, :class:`TargetLocaleError`)
when absent, and given the database's own owner, settings, comment and ACL from the archive
(``dump_database``); an existing database must hold no user objects unless ``allow_non_empty``.
Existence is checked, and the database created, through the target server's ``postgres`` maintenance database.
With ``jobs`` > 1 (option ``jobs``; by default ``min(4, cpus)`` unless one table holds 80% of the data)
the dump is first written to a file in
the job's temporary directory, because parallel ``pg_restore`` needs a seekable file; with
``jobs=1`` it is piped into ``pg_restore``. A failed restore drops the database it created.

Owners and privileges are restored: a restore must not widen access. Without them every object
would belong to the restoring (often super)user — a ``SECURITY DEFINER`` function would then run as
it — and a ``REVOKE … FROM PUBLIC`` would be lost, so PostgreSQL's defaults (anyone may execute a
function) would apply. Before any database is created, the roles the dump names (owners, grantees,
policy roles: its table of contents, ``adapters/postgres/dump_roles.py``) are looked up on the target
server; missing ones refuse the restore (:class:`TargetRolesMissingError`). Options ``no_owners`` /
``no_privileges`` (``restore start --no-owners/--no-privileges``, the runbook step's fields of the
same names; both built by ``dump_roles.ownership_options``) drop them explicitly. ``create_roles``
creates the missing ones from the point's ``roles`` stream (``roles.py``), ``role_map`` gives what the
dump gives one role to an existing other (the table of contents rewritten as it streams).

Passwords never appear in a DSN or in argv: they come from ``ctx.environment`` (``PGPASSWORD``,
``PGPASSFILE``) or the process environment.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import sql

from strongroom.adapters.base import (
    BackupContext,
    Endpoint,
    ResourceAdapter,
    ResourceSpec,
    RestoreContext,
    RestoreForecast,
    RestoreRequest,
    RestoreResult,
    RunbookRestore,
    register_adapter,
)
from strongroom.adapters.postgres.dump_database import (
    LOCALE_KEYS,
    DatabaseProperties,
    acl_statements,
    database_properties,
    owner_statement,
    property_statements,
)
from strongroom.adapters.postgres.dump_format import TocEntry, add_data_offsets, read_toc, rewrite_toc
from strongroom.adapters.postgres.dump_roles import (
    ACL_ENTRIES,
    Ownership,
    RoleNeeds,
    map_statement_roles,
    ownership_options,
    role_needs,
)
from strongroom.adapters.postgres.roles import MAX_STREAM as MAX_ROLES_STREAM
from strongroom.adapters.postgres.roles import STREAM as ROLES_STREAM
from strongroom.adapters.postgres.roles import (
    CreatedRoles,
    RoleDefinitions,
    create_roles,
    existing_roles,
    read_definitions,
)
from strongroom.adapters.postgres.tools import (
    PgDsn,
    ToolProcess,
    connect,
    describe_failure,
    dsn_settings,
    find_tool,
    first_meaningful_line,
    parse_dsn,
    tool_environment,
    tool_version,
)
from strongroom.errors import (
    ConfigError,
    IntegrityError,
    SourceError,
    TargetError,
    TargetLocaleError,
    TargetNotEmptyError,
    TargetRolesMissingError,
)
from strongroom.vault.reader import RecoveryPointReader

COPY_BUFFER = 1 << 20
RESTORE_HINT = "fix the cause above, then restore again into a new database"
SERVER_INFO = """
SELECT current_setting('server_version'), current_setting('server_version_num')::int, current_database(),
       current_user, pg_encoding_to_char(d.encoding), d.datcollate, d.datctype
FROM pg_database d WHERE d.datname = current_database()
"""
TABLE_SIZES = """
SELECT coalesce(max(size), 0), coalesce(sum(size), 0), count(*)
FROM (SELECT pg_table_size(c.oid) AS size FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'm', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')) s
"""
ROW_COUNT_LIMIT_BYTES = 256 << 20  # databases up to this size of tables get exact row counts recorded
ROW_COUNT_TABLES_LIMIT = 1000
COUNTED_TABLES = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relrowsecurity AND has_table_privilege(c.oid, 'SELECT')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)'
ORDER BY 1, 2
"""
# Parallel pg_restore needs a seekable copy of the dump (written to scratch space first, its data
# offsets then filled in by dump_format), which costs about a tenth of the restore; it pays off when
# the work outside the largest table is larger than that: restore time with N jobs is at least the
# largest table's COPY and index builds. Measured in docs/performance.md.
PARALLEL_WHEN_LARGEST_TABLE_BELOW = 0.8
SYSTEM_SCHEMAS = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)'"
USER_OBJECTS = f"""
SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {SYSTEM_SCHEMAS})
     + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {SYSTEM_SCHEMAS})
     + (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE t.typtype IN ('e', 'd', 'r', 'm') AND {SYSTEM_SCHEMAS})
     + (SELECT count(*) FROM pg_namespace n WHERE n.nspname <> 'public' AND {SYSTEM_SCHEMAS})
     + (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql')
"""

MISSING_ROLES = """
SELECT r.name FROM unnest(%s::text[]) AS r(name)
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r.name) ORDER BY 1
"""
# ALTER … OWNER TO needs a superuser, or membership in the new owner (the SET option from PostgreSQL 16).
# pg_database_owner is whoever owns the database restored into: the restorer, for a database it creates.
OWNERS_OUT_OF_REACH = """
SELECT r.name FROM unnest(%s::text[]) AS r(name)
WHERE NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AND r.name <> 'pg_database_owner'
  AND NOT pg_has_role(r.name, CASE WHEN current_setting('server_version_num')::int >= 160000
                                   THEN 'SET' ELSE 'MEMBER' END)
ORDER BY 1
"""
PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_$]*")
LOCALE_NAME = re.compile(r"[A-Za-z0-9_.@=+-]{1,100}")


@register_adapter
class PostgresAdapter(ResourceAdapter):
    type_name = "postgres"
    description = "One PostgreSQL database, logical (pg_dump / pg_restore into a new database)"
    supports_runbooks = True

    def validate_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        return dsn_settings(self.type_name, settings)

    # Backup -------------------------------------------------------------------------------------
    def backup(self, resource: ResourceSpec, ctx: BackupContext) -> dict[str, Any]:
        dsn = parse_dsn(self.validate_settings(resource.settings)["dsn"])
        env = tool_environment(ctx.environment)
        pg_dump = find_tool("pg_dump", env)
        info = server_info(dsn, ctx.environment)
        argv: list[str | Path] = [pg_dump, "--format=custom", "--compress=0", "--no-password", f"--dbname={dsn.text}"]
        with counted_snapshot(dsn, ctx.environment, info) as (snapshot, row_counts):
            if snapshot:
                argv.append(f"--snapshot={snapshot}")
            with ToolProcess(argv, env=env, stdout=subprocess.PIPE) as tool:
                ctx.writer.store_stream("dump", tool.stdout)
                code = tool.wait()
        if row_counts is not None:
            info["row_counts"] = row_counts
        if code != 0:
            raise describe_failure(
                tool.stderr, dsn.where(ctx.environment), SourceError, action=f"pg_dump of {info['database']}"
            )
        roles = store_role_definitions(dsn, ctx)
        return {
            **info,
            "pg_dump_version": tool_version(pg_dump),
            "format": "custom",
            "compression": "none",
            "roles": roles,
        }

    # Restore ------------------------------------------------------------------------------------
    def restore(self, metadata: dict[str, Any], ctx: RestoreContext, request: RestoreRequest) -> RestoreResult:
        target = restore_target(request.target)
        jobs = restore_jobs(request.options, metadata)
        env = tool_environment(ctx.environment)
        pg_restore = find_tool("pg_restore", env)
        ownership = Ownership.from_options(request.options)
        locale = LocaleChoice.from_options(request.options)
        entries = archive_toc(ctx)
        new_database = not database_exists(target, ctx.environment)
        needs = None if entries is None else role_needs(entries, database_level=new_database)
        to_create = check_target_roles(target, needs, ownership, ctx)
        properties = database_properties(entries or []) if new_database else None
        options = creation_options(properties, metadata, locale)
        created = prepare_database(target, options, ctx.environment, request.allow_non_empty)
        roles = CreatedRoles()
        try:
            if to_create.names:
                roles = create_missing_roles(target, ctx.environment, to_create)
            if properties is not None:
                apply_database_properties(target, properties, ownership, ctx.environment)
            run_restore(pg_restore, target, ctx, env, jobs, ownership)
        except BaseException as exc:
            if created:
                drop_created_database(target, ctx.environment, exc)
            if roles.created:
                drop_created_roles(target, ctx.environment, roles.created, exc)
            raise
        details = {
            "database": target.dbname,
            "server": target.where(ctx.environment),
            "created": created,
            "jobs": jobs,
            "source_database": metadata.get("database"),
            "pg_restore_version": tool_version(pg_restore),
            "owners": "kept" if ownership.owners else "restoring user",
            "privileges": "kept" if ownership.privileges else "not restored",
            "roles_checked": needs is not None,
            "role_map": dict(ownership.role_map),
            "roles_created": roles.as_details(),
            "database_properties": database_properties_summary(properties, ownership),
            **locale_details(options, created),
        }
        details["notes"] = restore_notes(roles, properties)
        return RestoreResult(target=target.text, details=details)

    def restore_target_in_use(self, request: RestoreRequest, home: Path) -> str | None:
        target = restore_target(request.target)
        with connect(target, {}, TargetError, dbname="postgres") as conn:
            row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target.dbname,)).fetchone()
        return f"database {target.dbname} already exists on {target.where()}" if row else None

    def discard_restore(self, request: RestoreRequest, home: Path, details: dict[str, Any]) -> list[str]:
        target = restore_target(request.target)
        statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(target.dbname or ""))
        with connect(target, {}, TargetError, dbname="postgres") as conn:
            conn.execute(statement)
        return [f"dropped database {target.dbname} on {target.where()}"]

    # Runbooks -----------------------------------------------------------------------------------
    def forecast_restore(
        self, request: RestoreRequest, reader: RecoveryPointReader | None, metadata: dict[str, Any]
    ) -> RestoreForecast:
        from strongroom.adapters.postgres.forecast import logical_forecast  # it builds on this module

        return logical_forecast(request, reader)

    def runbook_restore_request(
        self, step: RunbookRestore, identifier: str, original: ResourceSpec | None
    ) -> RestoreRequest:
        options: dict[str, Any] = {"jobs": step.jobs} if step.jobs else {}
        # The app must find its tables as it left them: owners and grants come back unless the step drops them.
        options.update(
            ownership_options(
                no_owners=step.no_owners,
                no_privileges=step.no_privileges,
                create_roles=step.create_roles,
                role_map=step.role_map,
                encoding=step.encoding,
                locale=step.locale,
            )
        )
        return RestoreRequest(_database_on(step.target, original, identifier), identifier, None, False, options)

    def restored_endpoint(self, result: dict[str, Any]) -> Endpoint:
        target = parse_dsn(result["target"])
        return Endpoint(
            host=target.params.get("host", ""),
            port=int(target.params.get("port") or 5432),
            dsn=result["target"],
            dbname=target.dbname,
            login=target.user,
            extra={"database": target.dbname},
        )

    def restore_location(self, request: RestoreRequest, home: Path) -> dict[str, Any]:
        return {"database": request.target_identifier}


def _database_on(server: str | None, original: ResourceSpec | None, identifier: str) -> str:
    """The new database ``identifier`` on ``server``, or on the original's server."""
    if not server:
        server = (original.settings if original else {}).get("dsn")
        if not server:  # the original may be gone with its account
            raise ConfigError(
                "a postgres restore needs target: the DSN of the server to create the database on",
                hint="e.g. target: postgresql://postgres@db.internal:5432/postgres",
            )
    params = dict(parse_dsn(server, field="target").params)
    params["dbname"] = identifier
    return psycopg.conninfo.make_conninfo(**params)


@contextlib.contextmanager
def counted_snapshot(
    dsn: PgDsn, environment: Mapping[str, str], info: dict[str, Any]
) -> Iterator[tuple[str | None, dict[str, int] | None]]:
    """An exported snapshot for pg_dump and the exact row count of each table in it, for restore tests to
    compare with (docs/restore-testing.md); (None, None) for a database too large to count cheaply.

    Counting scans every table once, so only databases of at most ``ROW_COUNT_LIMIT_BYTES`` of tables are
    counted. Tables under row-level security are left out (the backup role may see fewer rows than pg_dump).
    """
    if info["table_bytes"] > ROW_COUNT_LIMIT_BYTES or info["tables"] > ROW_COUNT_TABLES_LIMIT:
        yield None, None
        return
    with connect(dsn, environment, SourceError) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        row = conn.execute("SELECT pg_export_snapshot()").fetchone()
        counts: dict[str, int] = {}
        for schema, table in conn.execute(COUNTED_TABLES).fetchall():
            query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
            counted = conn.execute(query).fetchone()
            counts[f"{schema}.{table}"] = int(counted[0]) if counted else 0
        yield (str(row[0]) if row else None), counts
        conn.execute("COMMIT")


def server_info(dsn: PgDsn, environment: Mapping[str, str]) -> dict[str, Any]:
    """What the manifest records about the source (and what a restore needs to create the database)."""
    with connect(dsn, environment, SourceError) as conn:
        row = conn.execute(SERVER_INFO).fetchone()
        sizes = conn.execute(TABLE_SIZES).fetchone()
    assert row is not None and sizes is not None
    version, version_num, database, user, encoding, collate, ctype = row
    return {
        "largest_table_bytes": int(sizes[0]),
        "table_bytes": int(sizes[1]),
        "tables": int(sizes[2]),
        "server_version": version,
        "server_version_num": version_num,
        "database": database,
        "user": user,
        "server": dsn.where(environment),
        "encoding": encoding,
        "lc_collate": collate,
        "lc_ctype": ctype,
    }


def restore_target(target: str | None) -> PgDsn:
    if not target:
        raise ConfigError(
            "restoring a postgres recovery point needs a target DSN of a new database",
            hint="e.g. --target postgresql://user@host:5432/newdb",
        )
    dsn = parse_dsn(target, field="target")
    if not dsn.dbname:
        raise ConfigError("the target DSN names no database", hint="e.g. postgresql://user@host:5432/newdb")
    return dsn


def restore_jobs(options: Mapping[str, Any], metadata: Mapping[str, Any]) -> int:
    """``jobs`` as asked; by default parallel only where it helps: when no single table dominates."""
    jobs = options.get("jobs") or default_jobs(metadata)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"option 'jobs' must be a whole number of at least 1, not {jobs!r}", hint="e.g. jobs=4")
    return jobs


def default_jobs(metadata: Mapping[str, Any]) -> int:
    largest, total = metadata.get("largest_table_bytes"), metadata.get("table_bytes")
    known = isinstance(largest, int) and isinstance(total, int) and total > 0
    if not known or largest >= PARALLEL_WHEN_LARGEST_TABLE_BELOW * total:  # type: ignore[operator]
        return 1
    return min(4, os.cpu_count() or 1)


def database_exists(target: PgDsn, environment: Mapping[str, str]) -> bool:
    with connect(target, environment, TargetError, dbname="postgres") as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target.dbname,)).fetchone() is not None


def prepare_database(
    target: PgDsn, options: Mapping[str, str], environment: Mapping[str, str], allow_non_empty: bool
) -> bool:
    """Create the target database, or check that the existing one may be restored into. True if created."""
    name = target.dbname
    assert name is not None
    with connect(target, environment, TargetError, dbname="postgres") as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None
        if not exists:
            create_database(conn, name, options, target.where(environment))
            return True
    with connect(target, environment, TargetError) as conn:
        row = conn.execute(USER_OBJECTS).fetchone()
    objects = int(row[0]) if row else 0
    if objects and not allow_non_empty:
        plural = "" if objects == 1 else "s"
        raise TargetNotEmptyError(
            f"database {name} on {target.where(environment)} is not empty ({objects} user object{plural})",
            hint="restore into a new database name, or pass --allow-non-empty",
        )
    return False


@dataclass(frozen=True)
class LocaleChoice:
    """The operator's ``--encoding`` / ``--locale`` (options ``encoding`` / ``locale``), else the point's."""

    encoding: str | None = None
    locale: str | None = None  # a libc locale for LC_COLLATE and LC_CTYPE (the provider becomes libc)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> LocaleChoice:
        values = {}
        for name in ("encoding", "locale"):
            value = options.get(name)
            if value is not None and (not isinstance(value, str) or not LOCALE_NAME.fullmatch(value)):
                raise ConfigError(
                    f"option '{name}' must be an encoding or locale name, not {value!r}",
                    hint="e.g. --encoding UTF8 --locale en_GB.UTF-8 (see 'locale -a' on the target server)",
                )
            values[name] = value
        return cls(**values)


def creation_options(
    properties: DatabaseProperties | None, metadata: Mapping[str, Any], locale: LocaleChoice
) -> dict[str, str]:
    """``CREATE DATABASE`` options: the archive's own (its ``DATABASE`` entry), else the manifest's, then the
    operator's overrides. ``--locale`` sets a libc locale and drops an ICU one."""
    options = dict(properties.create) if properties is not None and properties.create else {}
    if not options:
        recorded = {"ENCODING": "encoding", "LC_COLLATE": "lc_collate", "LC_CTYPE": "lc_ctype"}
        options = {key: str(metadata[field]) for key, field in recorded.items() if metadata.get(field)}
    if "LOCALE" in options:  # pg_dump writes LOCALE when collate and ctype are the same
        options["LC_COLLATE"] = options["LC_CTYPE"] = options.pop("LOCALE")
    if locale.locale:
        for key in ("LOCALE_PROVIDER", "ICU_LOCALE", "ICU_RULES"):
            options.pop(key, None)
        options["LC_COLLATE"] = options["LC_CTYPE"] = locale.locale
    if locale.encoding:
        options["ENCODING"] = locale.encoding
    return {key: options[key] for key in LOCALE_KEYS if key in options}


def create_database(conn: psycopg.Connection[Any], name: str, options: Mapping[str, str], where: str) -> None:
    """CREATE DATABASE from template0 with exactly ``options``: a server that cannot hold them is refused
    (nothing is created, no data moves) rather than given a database that sorts or encodes differently."""
    clauses = [
        sql.SQL("{} {}").format(sql.SQL(key), sql.SQL(value) if key == "LOCALE_PROVIDER" else sql.Literal(value))
        for key, value in options.items()
        if key != "LOCALE_PROVIDER" or value in ("libc", "icu", "builtin")
    ]
    statement = sql.SQL("CREATE DATABASE {} TEMPLATE template0 {}").format(
        sql.Identifier(name), sql.SQL(" ").join(clauses)
    )
    try:
        conn.execute(statement)
    except (
        psycopg.errors.InvalidParameterValue,
        psycopg.errors.FeatureNotSupported,
        psycopg.errors.SyntaxError,
        psycopg.errors.UndefinedObject,
        psycopg.errors.ObjectNotInPrerequisiteState,
        psycopg.errors.WrongObjectType,
    ) as exc:
        wanted = ", ".join(f"{key} {value}" for key, value in options.items())
        raise TargetLocaleError(
            f"{where} cannot create database {name} with encoding and locale {wanted}: "
            f"{first_meaningful_line(str(exc))}",
            hint="restore onto a server that has them, or choose ones it has with --encoding / --locale "
            "(runbook: encoding, locale; 'locale -a' lists a server's locales)",
        ) from None
    except psycopg.Error as exc:
        raise describe_failure(
            str(exc), where, TargetError, action=f"creating database {name}", statement=True
        ) from None


def locale_details(options: Mapping[str, str], created: bool) -> dict[str, Any]:
    return {"encoding_and_locale": dict(options) if created else "kept the existing database's"}


def drop_created_database(target: PgDsn, environment: Mapping[str, str], cause: BaseException) -> None:
    """Remove the half-restored database this restore created; say so on the error if that fails."""
    statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(target.dbname or ""))
    try:
        with connect(target, environment, TargetError, dbname="postgres") as conn:
            conn.execute(statement)
    except (psycopg.Error, TargetError):
        if isinstance(cause, TargetError):
            cause.hint = f"{cause.hint}; the partly restored database {target.dbname} was left in place".lstrip("; ")


def drop_created_roles(target: PgDsn, environment: Mapping[str, str], names: list[str], cause: BaseException) -> None:
    """Remove the roles this restore created (after its database: they own nothing else)."""
    try:
        with connect(target, environment, TargetError, dbname="postgres") as conn:
            for name in names:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
    except (psycopg.Error, TargetError):
        if isinstance(cause, TargetError):
            left = display_roles(names)
            cause.hint = f"{cause.hint}; the roles it created were left in place: {left}".lstrip("; ")


# The dump's table of contents, the roles it needs and the database's own properties -------------


def archive_toc(ctx: RestoreContext) -> list[TocEntry] | None:
    """The dump's table of contents (read from the stream's front only).

    None for an archive whose table of contents this cannot read: the restore then goes on, and
    ``pg_restore --exit-on-error`` stops at the first missing role (the created database is dropped).
    """
    with ctx.reader.open_stream("dump") as stream:
        return read_toc(stream)


@dataclass(frozen=True)
class RolesToCreate:
    definitions: RoleDefinitions | None = None
    names: tuple[str, ...] = ()


def point_role_definitions(ctx: RestoreContext) -> RoleDefinitions | None:
    """The role definitions the recovery point carries; None for a point made before they were recorded."""
    if ROLES_STREAM not in ctx.reader.manifest.streams:
        return None
    if ctx.reader.stream_ref(ROLES_STREAM).size > MAX_ROLES_STREAM:
        raise IntegrityError(
            f"the role definitions of recovery point {ctx.reader.manifest.recovery_point_id} are too large"
        )
    data = b"".join(ctx.reader.iter_stream(ROLES_STREAM))
    return RoleDefinitions.from_json(data, f"recovery point {ctx.reader.manifest.recovery_point_id}")


def check_target_roles(
    target: PgDsn, needs: RoleNeeds | None, ownership: Ownership, ctx: RestoreContext
) -> RolesToCreate:
    """Refuse, before anything is created, a restore whose owners, grants, policies or settings name roles
    the target server lacks (after ``role_map``, and beyond what ``create_roles`` may create), or whose
    owners the restoring role may not give objects to. What ``create_roles`` will create."""
    if needs is None:
        if ownership.role_map:
            raise ConfigError(
                "--role-map needs the dump's table of contents, and this archive's cannot be read",
                hint="restore without --role-map, with the roles created on the target first",
            )
        return RolesToCreate()
    named = needs.owners | needs.privileges | needs.policies | needs.settings
    unknown = sorted(set(ownership.role_map) - named)
    if unknown:
        raise ConfigError(
            f"--role-map names {display_roles(unknown)}, which the dump does not name",
            hint="map roles the dump names (owners, grantees, policy roles); a refused restore lists the missing ones",
        )
    wanted = needs.needed(owners=ownership.owners, privileges=ownership.privileges)
    if not wanted and not ownership.role_map:
        return RolesToCreate()
    where = target.where(ctx.environment)
    try:
        with connect(target, ctx.environment, TargetError, dbname="postgres") as conn:
            existing = existing_roles(
                conn, {ownership.mapped(name) for name in wanted} | set(ownership.role_map.values())
            )
            mapped_missing = sorted(set(ownership.role_map.values()) - existing)
            if mapped_missing:
                raise TargetRolesMissingError(
                    f"--role-map maps to {display_roles(mapped_missing)}, which {where} lacks",
                    hint="map to roles that exist on the target (SELECT rolname FROM pg_roles), or create them first",
                )
            missing = sorted(name for name in wanted if ownership.mapped(name) not in existing)
            to_create = plan_created_roles(missing, ownership, ctx)
            missing = [name for name in missing if name not in to_create.names]
            if missing:
                raise missing_roles_error(missing, needs, ownership, where, ROLES_STREAM in ctx.reader.manifest.streams)
            owners = (
                sorted({ownership.mapped(name) for name in needs.owners} - set(to_create.names))
                if ownership.owners
                else []
            )
            out_of_reach = [row[0] for row in conn.execute(OWNERS_OUT_OF_REACH, (owners,)).fetchall()]
            user = conn.execute("SELECT current_user").fetchone()
    except psycopg.Error as exc:
        action = "checking the dump's roles"
        raise describe_failure(str(exc), where, TargetError, action=action, statement=True) from None
    if out_of_reach:
        restorer = user[0] if user else "the restoring role"
        raise TargetError(
            f"{restorer} on {where} may not give objects to {display_roles(out_of_reach)}, which own them in the dump",
            hint=f"restore as a superuser or as a member of those roles, or pass --no-owners ({restorer} then owns "
            "everything)",
        )
    return to_create


def plan_created_roles(missing: list[str], ownership: Ownership, ctx: RestoreContext) -> RolesToCreate:
    """The missing roles ``create_roles`` will create: those the point has a definition of."""
    if not missing or not ownership.create_roles:
        return RolesToCreate()
    definitions = point_role_definitions(ctx)
    if definitions is None:
        raise TargetRolesMissingError(
            f"--create-roles: recovery point {ctx.reader.manifest.recovery_point_id} carries no role definitions "
            f"(it was made before Strongroom recorded them), and the target lacks {display_roles(missing)}",
            hint="create the roles on the target first (CREATE ROLE), or map them to existing ones: --role-map OLD=NEW",
        )
    return RolesToCreate(definitions, tuple(name for name in missing if name in definitions.roles))


def create_missing_roles(target: PgDsn, environment: Mapping[str, str], plan: RolesToCreate) -> CreatedRoles:
    assert plan.definitions is not None
    where = target.where(environment)
    try:
        with connect(target, environment, TargetError, dbname="postgres") as conn:
            return create_roles(conn, plan.definitions, plan.names)
    except psycopg.Error as exc:
        action = f"creating roles {display_roles(list(plan.names))}"
        error = describe_failure(str(exc), where, TargetError, action=action, statement=True)
        error.hint = "restore as a superuser or a role with CREATEROLE, or create the roles first (CREATE ROLE)"
        raise error from None


def apply_database_properties(
    target: PgDsn, properties: DatabaseProperties, ownership: Ownership, environment: Mapping[str, str]
) -> None:
    """The database's owner, settings, comment and ACL, on the new database, before any of its content."""
    name = target.dbname or ""
    statements = []
    owner = owner_statement(properties, name, ownership.role_map) if ownership.owners else None
    if owner is not None:
        statements.append(owner)
    statements += property_statements(properties, name, ownership.role_map)
    if ownership.privileges:
        statements += acl_statements(properties, name, ownership.role_map)
    where = target.where(environment)
    try:
        with connect(target, environment, TargetError, dbname="postgres") as conn:
            for statement in statements:
                conn.execute(statement)
    except psycopg.Error as exc:
        raise describe_failure(
            str(exc), where, TargetError, action=f"applying the properties of database {name}", statement=True
        ) from None


def restore_notes(roles: CreatedRoles, properties: DatabaseProperties | None) -> list[str]:
    """What the operator should know about a restore, one line each (``restore start`` prints them)."""
    notes = []
    if roles.created:
        nologin = [name for name in roles.created if name not in roles.login]
        notes.append(
            f"created roles {display_roles(roles.created)}"
            + (f" ({display_roles(nologin)} NOLOGIN: no password came with the point)" if nologin else "")
        )
    for name, powers in roles.powers_dropped.items():
        notes.append(f"role {display_roles([name])} created without {', '.join(powers)} (server-wide powers)")
    if roles.memberships_not_granted:
        notes.append(f"memberships not granted (an existing role): {', '.join(roles.memberships_not_granted)}")
    for skipped in properties.skipped if properties is not None else []:
        notes.append(f"not applied to the new database: {skipped}")
    return notes


def database_properties_summary(properties: DatabaseProperties | None, ownership: Ownership) -> dict[str, Any]:
    if properties is None:
        return {"applied": False, "why": "restored into an existing database: its own properties are kept"}
    return {
        "applied": True,
        "owner": (ownership.mapped(properties.owner) if ownership.owners else "restoring user")
        if properties.owner
        else None,
        "settings": len(properties.settings),
        "comment": properties.comment is not None,
        "grants": len(properties.grants) if ownership.privileges else "not restored",
        "skipped": properties.skipped,
    }


def missing_roles_error(
    missing: list[str], needs: RoleNeeds, ownership: Ownership, where: str, has_definitions: bool
) -> TargetRolesMissingError:
    uses = {"owner": needs.owners, "grants": needs.privileges, "policies": needs.policies, "settings": needs.settings}
    named = [
        f"{display_roles([name])} ({', '.join(use for use, roles in uses.items() if name in roles)})"
        for name in missing
    ]
    plural = "s" if len(missing) > 1 else ""
    them = "them" if plural else "it"
    first = missing[0]
    cli_map = shlex.quote(f"{first}=EXISTING_ROLE")
    runbook_map = f"role_map: {{{first if PLAIN_NAME.fullmatch(first) else json.dumps(first)}: EXISTING_ROLE}}"
    if has_definitions and not ownership.create_roles:
        hint = f"restore with --create-roles (from the recovery point's role definitions) or --role-map {cli_map}"
        fields = ["create_roles: true", runbook_map]
    else:
        hint = f"restore with --role-map {cli_map}"
        fields = [runbook_map]
        if ownership.create_roles:
            hint = f"the recovery point has no definition of {them}: {hint}"
    hint += f", or create {them} on the target first (CREATE ROLE)"
    dropping = options_without(missing, needs, ownership)
    if dropping:
        fields += [f"{flag[2:].replace('-', '_')}: true" for flag in dropping]
        too = " too" if ownership.cli_flags() else ""
        hint += f", or restore with {' '.join(dropping)}{too} ('strongroom restore start --help' says what that opens)"
    hint += f"; runbook: {', '.join(fields)}"
    return TargetRolesMissingError(f"{where} lacks the role{plural} the dump names: {', '.join(named)}", hint=hint)


def options_without(missing: list[str], needs: RoleNeeds, ownership: Ownership) -> list[str]:
    """The fewest of --no-owners / --no-privileges that make the missing roles unneeded ([] if none do)."""
    choices = [
        (["--no-owners"], Ownership(owners=False, privileges=ownership.privileges)),
        (["--no-privileges"], Ownership(owners=ownership.owners, privileges=False)),
        (["--no-owners", "--no-privileges"], Ownership(owners=False, privileges=False)),
    ]
    for flags, choice in choices:
        if not set(missing) & needs.needed(owners=choice.owners, privileges=choice.privileges):
            return [flag for flag in flags if flag not in ownership.cli_flags()]
    return []


def display_roles(names: list[str]) -> str:
    """Role names as SQL would write them: plain names bare, others double-quoted."""
    return ", ".join(name if PLAIN_NAME.fullmatch(name) else '"' + name.replace('"', '""') + '"' for name in names)


def restore_arguments(pg_restore: Path, target: PgDsn, jobs: int, ownership: Ownership) -> list[str | Path]:
    argv: list[str | Path] = [pg_restore, "--exit-on-error", "--no-password", f"--dbname={target.text}"]
    argv.extend(ownership.pg_restore_flags())
    if jobs > 1:
        argv.append(f"--jobs={jobs}")
    return argv


def run_restore(
    pg_restore: Path, target: PgDsn, ctx: RestoreContext, env: dict[str, str], jobs: int, ownership: Ownership
) -> None:
    argv = restore_arguments(pg_restore, target, jobs, ownership)
    with ctx.reader.open_stream("dump") as dump:
        stream = mapped_archive(dump, ownership.role_map) if ownership.role_map else dump
        if jobs > 1:
            code, stderr = restore_from_file(argv, stream, ctx, env)
        else:
            code, stderr = restore_from_pipe(argv, stream, ctx, env)
    if code != 0:
        where = target.where(ctx.environment)
        action = f"pg_restore into database {target.dbname} on {where}"
        raise describe_failure(stderr, where, TargetError, action=action, hint=RESTORE_HINT)


def mapped_archive(dump: IO[bytes], role_map: Mapping[str, str]) -> IO[bytes]:
    """The dump with ``role_map`` applied to its table of contents: owners, and the roles its GRANTs,
    REVOKEs, default privileges and policies name (``dump_roles.map_statement_roles``)."""

    def definition(desc: str, text: str) -> str:
        return map_statement_roles(text, role_map) if desc in ACL_ENTRIES or desc == "POLICY" else text

    try:
        raw = rewrite_toc(dump, lambda owner: role_map.get(owner, owner), definition)
    except ValueError as exc:
        raise TargetError(
            f"--role-map cannot be applied: the dump's table of contents cannot be read ({exc})"
        ) from None
    return io.BufferedReader(raw, COPY_BUFFER)


def store_role_definitions(dsn: PgDsn, ctx: BackupContext) -> dict[str, Any]:
    """Record the definitions of the roles the database references as the point's ``roles`` stream."""
    with connect(dsn, ctx.environment, SourceError) as conn:
        definitions = read_definitions(conn)
    builder = ctx.writer.stream()
    builder.write_bytes(definitions.to_json())
    ctx.writer.add_stream(ROLES_STREAM, builder)
    return definitions.summary()


def restore_from_file(
    argv: list[str | Path], stream: IO[bytes], ctx: RestoreContext, env: dict[str, str]
) -> tuple[int, str]:
    """Parallel pg_restore needs a seekable file: write the dump into the job's temporary directory first."""
    handle, name = tempfile.mkstemp(prefix="pg_restore-", suffix=".dump", dir=ctx.temp_dir)
    path = Path(name)
    try:
        with os.fdopen(handle, "w+b") as file:
            copy_stream(stream, file, ctx)
            add_data_offsets(file)  # else every parallel worker scans the copy for its table's data
        with ToolProcess([*argv, path], env=env) as tool:
            code = tool.wait()
        return code, tool.stderr
    finally:
        path.unlink(missing_ok=True)


def restore_from_pipe(
    argv: list[str | Path], stream: IO[bytes], ctx: RestoreContext, env: dict[str, str]
) -> tuple[int, str]:
    with ToolProcess(argv, env=env, stdin=subprocess.PIPE) as tool:
        with contextlib.suppress(BrokenPipeError):  # pg_restore stopped reading: its exit status says why
            copy_stream(stream, tool.stdin, ctx)
        code = tool.wait()
    return code, tool.stderr


def copy_stream(source: IO[bytes], destination: IO[bytes], ctx: RestoreContext) -> None:
    if ctx.progress is None:
        shutil.copyfileobj(source, destination, COPY_BUFFER)
        return
    while piece := source.read(COPY_BUFFER):
        destination.write(piece)
        ctx.progress(len(piece))
