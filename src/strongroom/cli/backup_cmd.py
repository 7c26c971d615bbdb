"""``strongroom backup start``, ``strongroom restore start`` and the hidden job runner."""

from __future__ import annotations

import os
import subprocess
import sys

import typer

from strongroom.adapters.base import RestoreRequest
from strongroom.adapters.postgres.dump_roles import ownership_options
from strongroom.cli import context, output
from strongroom.cli.context import ENV_PASSPHRASE
from strongroom.errors import StrongroomError
from strongroom.model import Job, JobType, RecoveryPointStatus
from strongroom.services.account import DEFAULT_VAULT, Account
from strongroom.services.backup import create_backup_job, run_backup_job
from strongroom.services.copy import run_copy_job
from strongroom.services.joblock import ENV_LOCK_FD, JobLock
from strongroom.services.jobs import job_temp_dir
from strongroom.services.restore import create_restore_job, run_restore_job

NO_OWNERS_HELP = (
    "postgres: do not restore owners. Every object becomes owned by the restoring role: SECURITY DEFINER "
    "functions then run with its rights (a superuser's, if it is one), and the original owners lose control of them."
)
NO_PRIVILEGES_HELP = (
    "postgres: do not restore GRANTs and REVOKEs. Roles lose the access they were granted, and every REVOKE "
    "from PUBLIC is lost, so PostgreSQL's defaults apply: anyone who can connect may EXECUTE every function "
    "and use every type."
)

backup_app = typer.Typer(help="Backup jobs.", no_args_is_help=True)
restore_app = typer.Typer(help="Restore jobs.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(backup_app, name="backup")
    app.add_typer(restore_app, name="restore")
    app.command("run-job", hidden=True)(run_job)


@backup_app.command("start")
def backup_start(
    ctx: typer.Context,
    resource: str = typer.Option(..., "--resource", help="Id of a registered resource."),
    vault: str = typer.Option(DEFAULT_VAULT, "--vault", help="Backup vault name or ARN."),
    delete_after: int | None = typer.Option(
        None, "--delete-after", help="Days to keep the recovery point, counted from its creation (default: forever)."
    ),
    wait: bool = typer.Option(False, "--wait", help="Run in the foreground and wait for the result."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Start a backup job of a resource into a vault."""
    with context.account(ctx) as account:
        job, lock = create_backup_job(account, resource, vault, delete_after)
        finished = run_or_spawn(ctx, account, job, lock, wait, json_output, "Backing up")
    report(finished, json_output)


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
    trust_restored_config: bool = typer.Option(
        False,
        "--trust-restored-config",
        help="postgres-cluster: start the restored server with the backup's configuration as it is. By default"
        " settings that run commands or load code (*_command, *_preload_libraries, archive_*, include*, files"
        " outside the data directory) are disabled and a data directory holding a program is refused; with this"
        " option whoever wrote the backup runs code as the postgres OS user here. Only for a trusted source.",
    ),
    preserve_special: bool = typer.Option(
        False, "--preserve-special",
        help="Keep set-user-ID/set-group-ID bits of files from a copied recovery point (directory): "
        "whoever can run such a file acts as its owner, so only for points you trust.",
    ),
    wait: bool = typer.Option(False, "--wait", help="Run in the foreground and wait for the result."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Restore a recovery point into a NEW database, cluster or path.

    postgres: owners and privileges (GRANT/REVOKE) are restored as they were; a dump that names roles \
the target server lacks is refused before anything is created (exit 5).
    """
    options: dict[str, object] = {"jobs": jobs} if jobs else {}
    options.update(ownership_options(no_owners=no_owners, no_privileges=no_privileges))
    if trust_restored_config:
        options["trust_restored_config"] = True
    if preserve_special:
        options["preserve_special"] = True
    request = RestoreRequest(target, target_identifier, port, allow_non_empty, options)
    with context.account(ctx) as account:
        job, lock = create_restore_job(account, recovery_point, request)
        finished = run_or_spawn(ctx, account, job, lock, wait, json_output, "Restoring")
    report(finished, json_output)


def run_job(ctx: typer.Context, job_id: str) -> None:
    """Run a CREATED job in this process (used by commands started without --wait)."""
    lock = JobLock.inherited()
    with context.account(ctx) as account:
        _execute(account, account.catalog.get_job(job_id), lock, None)


def run_or_spawn(
    ctx: typer.Context, account: Account, job: Job, lock: JobLock, wait: bool, json_output: bool, verb: str
) -> Job:
    if not wait:
        _spawn(ctx, account, job, lock)
        return account.catalog.get_job(job.id)
    total = _expected_bytes(account, job)
    with output.progress_bar(verb, total, enabled=not json_output) as progress:
        return _execute(account, job, lock, progress)


def _expected_bytes(account: Account, job: Job) -> int | None:
    """The bar's total: a restore's size, or the last backup's size as the estimate for this one."""
    if job.job_type == JobType.RESTORE and job.recovery_point_arn:
        return account.catalog.get_recovery_point(job.recovery_point_arn).source_bytes
    if job.job_type == JobType.COPY:
        return _copy_size(account, job)
    completed = account.catalog.list_recovery_points(
        resource_id=job.resource_id, vault_name=job.vault_name, status=RecoveryPointStatus.COMPLETED
    )
    return completed[-1].source_bytes if completed else None


def _copy_size(account: Account, job: Job) -> int | None:
    try:
        return account.catalog.get_recovery_point(job.parameters["source_recovery_point_arn"]).source_bytes
    except StrongroomError:
        return None  # a copy back: the size is the other account's to tell


def _execute(account: Account, job: Job, lock: JobLock | None, progress) -> Job:  # type: ignore[no-untyped-def]
    if job.job_type == JobType.BACKUP:
        return run_backup_job(account, job.id, lock, progress)
    if job.job_type == JobType.COPY:
        return run_copy_job(account, job.id, lock, progress)
    return run_restore_job(account, job.id, lock, progress)


def _spawn(ctx: typer.Context, account: Account, job: Job, lock: JobLock) -> None:
    """Hand the job and its lock to a detached process; the lock keeps it alive in the catalog's eyes."""
    environment = dict(os.environ)
    environment[ENV_LOCK_FD] = str(lock.fd)
    environment[ENV_PASSPHRASE] = context.state(ctx).passphrase()
    log_dir = job_temp_dir(account, job.id).parent
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"job-{job.id}.log", "ab") as log:
        subprocess.Popen(
            [sys.executable, "-m", "strongroom.cli.main", "--home", str(account.home), "run-job", job.id],
            env=environment,
            pass_fds=[lock.fd],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    lock.release()


def report(job: Job, json_output: bool) -> None:
    data = job.as_dict()
    if json_output:
        output.emit_json(data)
        return
    if job.job_type == JobType.BACKUP:
        if job.state.finished:
            result = job.result
            output.console.print(
                f"Backup job {job.id} {job.state.value}: {output.human_bytes(result.get('source_bytes'))} read, "
                f"{output.human_bytes(result.get('new_bytes'))} added to the vault"
            )
            output.console.print(f"Recovery point: {job.recovery_point_arn}")
        else:
            output.console.print(f"Backup job {job.id} started; follow it with 'strongroom jobs describe {job.id}'")
    elif job.job_type == JobType.COPY:
        _report_copy(job)
    elif job.state.finished:
        output.console.print(f"Restore job {job.id} {job.state.value}: restored to {job.result.get('target')}")
        for entry in job.result.get("disabled_on_restore") or []:
            output.console.print(f"  disabled on restore: {entry}", markup=False)
        for note in job.result.get("notes") or []:
            output.console.print(f"  note: {note}", markup=False)
        if job.result.get("setid_bits_dropped"):
            output.console.print(f"{job.result['setid_bits_dropped']} files lost set-user-ID/set-group-ID bits "
                                 "(the recovery point is a copy); pass --preserve-special to keep them")
    else:
        output.console.print(f"Restore job {job.id} started; follow it with 'strongroom jobs describe {job.id}'")


def _report_copy(job: Job) -> None:
    if not job.state.finished:
        output.console.print(f"Copy job {job.id} started; follow it with 'strongroom jobs describe {job.id}'")
        return
    result = job.result
    output.console.print(
        f"Copy job {job.id} {job.state.value}: {output.human_bytes(result.get('bytes_transferred'))} copied, "
        f"{output.human_bytes(result.get('bytes_on_wire'))} on the wire"
    )
    output.console.print(f"Copy: {result.get('destination_recovery_point_arn')}")
