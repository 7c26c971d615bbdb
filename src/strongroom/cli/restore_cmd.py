"""``strongroom restore start``."""

from __future__ import annotations

import typer

from strongroom.adapters.base import RestoreRequest
from strongroom.adapters.postgres.dump_roles import ownership_options, parse_role_map
from strongroom.cli import context
from strongroom.cli.job_output import report, run_or_spawn
from strongroom.services.restore import create_restore_job

NO_OWNERS_HELP = (
    "postgres: do not restore owners. Every object becomes owned by the restoring role: SECURITY DEFINER "
    "functions then run with its rights (a superuser's, if it is one), and the original owners lose control of them."
)
NO_PRIVILEGES_HELP = (
    "postgres: do not restore GRANTs and REVOKEs. Roles lose the access they were granted, and every REVOKE "
    "from PUBLIC is lost, so PostgreSQL's defaults apply: anyone who can connect may EXECUTE every function "
    "and use every type."
)
CREATE_ROLES_HELP = (
    "postgres: create the roles the dump needs and the target lacks, from the definitions the recovery point "
    "carries: NOLOGIN unless their password hash came along, never SUPERUSER, CREATEDB, CREATEROLE, REPLICATION "
    "or BYPASSRLS; an existing role is never changed."
)
ROLE_MAP_HELP = (
    "postgres: OLD=NEW (repeatable): what the dump gives role OLD (ownership, grants, policies, settings) goes to "
    "the existing role NEW of the target server."
)
ENCODING_HELP = "postgres: encoding of the new database (default: the recovery point's)."
LOCALE_HELP = "postgres: libc locale (LC_COLLATE and LC_CTYPE) of the new database (default: the recovery point's)."

restore_app = typer.Typer(help="Restore jobs.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(restore_app, name="restore")


@restore_app.command("start")
def restore_start(
    ctx: typer.Context,
    recovery_point: str = typer.Option(..., "--recovery-point", help="ARN of a COMPLETED recovery point."),
    target: str | None = typer.Option(None, "--target", help="New database URI or new path."),
    target_identifier: str | None = typer.Option(None, "--target-identifier", help="New cluster identifier."),
    port: int | None = typer.Option(None, "--port", help="Port of a restored cluster."),
    allow_non_empty: bool = typer.Option(False, "--allow-non-empty", help="Restore into a non-empty target."),
    jobs: int | None = typer.Option(None, "--jobs", help="Parallel pg_restore jobs (postgres)."),
    no_owners: bool = typer.Option(False, "--no-owners", help=NO_OWNERS_HELP),
    no_privileges: bool = typer.Option(False, "--no-privileges", help=NO_PRIVILEGES_HELP),
    create_roles: bool = typer.Option(False, "--create-roles", help=CREATE_ROLES_HELP),
    role_map: list[str] = typer.Option([], "--role-map", metavar="OLD=NEW", help=ROLE_MAP_HELP),
    encoding: str | None = typer.Option(None, "--encoding", help=ENCODING_HELP),
    locale: str | None = typer.Option(None, "--locale", help=LOCALE_HELP),
    trust_restored_config: bool = typer.Option(
        False,
        "--trust-restored-config",
        help="postgres-cluster: start the restored server with the backup's configuration as it is. By default"
        " settings that run commands or load code (*_command, *_preload_libraries, archive_*, include*, files"
        " outside the data directory) are disabled and a data directory holding a program is refused; with this"
        " option whoever wrote the backup runs code as the postgres OS user here. Only for a trusted source.",
    ),
    preserve_special: bool = typer.Option(
        False,
        "--preserve-special",
        help="Keep set-user-ID/set-group-ID bits of files from a copied recovery point (directory): "
        "whoever can run such a file acts as its owner, so only for points you trust.",
    ),
    restore_time: str | None = typer.Option(
        None,
        "--restore-time",
        help="postgres-cluster: replay archived WAL up to this time (ISO 8601; UTC unless "
        "an offset is given), then promote. The base backup is the newest one finished by then (docs/pitr.md).",
    ),
    lsn: str | None = typer.Option(None, "--lsn", help="postgres-cluster: replay WAL up to this LSN (e.g. 0/3000060)."),
    xid: str | None = typer.Option(None, "--xid", help="postgres-cluster: replay WAL up to this transaction id."),
    restore_point_name: str | None = typer.Option(
        None, "--name", help="postgres-cluster: replay WAL up to this named restore point (pg_create_restore_point)."
    ),
    latest: bool = typer.Option(False, "--latest", help="postgres-cluster: replay all archived WAL, then promote."),
    timeline: str | None = typer.Option(
        None,
        "--timeline",
        help="postgres-cluster, with a target: the timeline to follow (a number or 'latest'; "
        "default: the base backup's).",
    ),
    wait: bool = typer.Option(False, "--wait", help="Run in the foreground and wait for the result."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Restore a recovery point into a NEW database, cluster or path.

    postgres: owners and privileges (GRANT/REVOKE) are restored as they were, and the database's own \
settings, comment, owner and CONNECT/TEMP grants; a dump that names roles the target server lacks is \
refused before anything is created (exit 5) unless --create-roles or --role-map provides them.
    """
    options: dict[str, object] = {"jobs": jobs} if jobs else {}
    options.update(
        ownership_options(
            no_owners=no_owners,
            no_privileges=no_privileges,
            create_roles=create_roles,
            role_map=parse_role_map(role_map),
            encoding=encoding,
            locale=locale,
        )
    )
    if trust_restored_config:
        options["trust_restored_config"] = True
    if preserve_special:
        options["preserve_special"] = True
    from strongroom.services.pitr import RecoveryTarget  # PostgreSQL's tools: loaded only by a restore

    recovery = RecoveryTarget.parse(
        time=restore_time, lsn=lsn, xid=xid, name=restore_point_name, latest=latest, timeline=timeline
    )
    if recovery is not None:
        options["recovery"] = recovery.as_options()
    request = RestoreRequest(target, target_identifier, port, allow_non_empty, options)
    with context.account(ctx) as account:
        job, lock = create_restore_job(account, recovery_point, request)
        finished = run_or_spawn(account, job, lock, wait, json_output, "Restoring")
    report(finished, json_output)
