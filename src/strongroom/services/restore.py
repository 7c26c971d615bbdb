"""Restore jobs: a recovery point into something new (a database, a cluster, a path)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from strongroom.adapters.base import RestoreContext, RestoreRequest, get_adapter
from strongroom.errors import UsageError
from strongroom.fsutil import write_durably
from strongroom.model import Job, JobType, RecoveryPoint, RecoveryPointStatus
from strongroom.policy.principals import root_arn
from strongroom.services import notifications, vault_ops
from strongroom.services.account import Account
from strongroom.services.joblock import JobLock
from strongroom.services.jobs import ProgressCallback, complete_job, create_job, running
from strongroom.vault.manifest import load_manifest
from strongroom.vault.reader import RecoveryPointReader


def create_restore_job(
    account: Account,
    recovery_point: str,
    request: RestoreRequest,
    principal_arn: str | None = None,
    extra_parameters: dict[str, Any] | None = None,
) -> tuple[Job, JobLock]:
    """A CREATED restore job, authorised as StartRestoreJob (the local CLI acts as the account's root);
    ``extra_parameters`` are recorded with it (a restore test's, services/restore_testing_records.py)."""
    rp = account.catalog.get_recovery_point(recovery_point)
    vault = account.catalog.get_vault(rp.vault_name)
    vault_ops.authorize_action(account, principal_arn or root_arn(account.account_id), "StartRestoreJob", vault)
    if rp.status != RecoveryPointStatus.COMPLETED:
        raise UsageError(
            f"recovery point {rp.arn} is {rp.status.value}, not COMPLETED, and cannot be restored",
            hint="Pick a COMPLETED one from 'strongroom recovery-points list'",
        )
    if not request.target and not request.target_identifier:
        raise UsageError("a restore needs --target or --target-identifier")
    account.vault(rp.vault_name)  # unlock now: a wrong passphrase fails before any job exists
    if rp.metadata.get("continuous") and not request.options.get("recovery"):
        raise UsageError(
            f"recovery point {rp.id} is a continuous recovery point: it restores to a point in time",
            hint="give --restore-time ISO, --lsn, --xid, --name or --latest (docs/pitr.md)",
        )
    if request.options.get("recovery"):
        rp, request = plan_point_in_time(account, rp, request)
    parameters: dict[str, Any] = {
        "target": request.target,
        "target_identifier": request.target_identifier,
        "port": request.port,
        "allow_non_empty": request.allow_non_empty,
        "options": request.options,
        **(extra_parameters or {}),
    }
    return create_job(
        account,
        JobType.RESTORE,
        resource_id=rp.resource_id,
        vault_name=rp.vault_name,
        recovery_point_arn=rp.arn,
        parameters=parameters,
    )


def run_restore_job(
    account: Account, job_id: str, lock: JobLock | None = None, progress: ProgressCallback | None = None
) -> Job:
    job = account.catalog.get_job(job_id)
    rp = account.catalog.get_recovery_point(job.recovery_point_arn or "")
    params = job.parameters
    request = RestoreRequest(
        target=params.get("target"),
        target_identifier=params.get("target_identifier"),
        port=params.get("port"),
        allow_non_empty=bool(params.get("allow_non_empty")),
        options=params.get("options") or {},
    )
    with (
        notifications.job_events(account, job.id),
        running(account, job, lock) as temp_dir,
        wal_credential(account, rp, request) as request,
    ):
        vault = account.vault(rp.vault_name)
        manifest = load_manifest(vault, rp.id)
        with RecoveryPointReader(vault, manifest) as reader:
            context = RestoreContext(
                reader=reader,
                temp_dir=temp_dir,
                home=account.home,
                progress=progress,
                from_copy=rp.source_recovery_point_arn is not None,
            )
            result = get_adapter(manifest.resource_type).restore(manifest.metadata, context, request)
        complete_job(
            account,
            job.id,
            bytes_processed=sum(stream.size for stream in manifest.streams.values()),
            result={"target": result.target, **result.details},
        )
    return account.catalog.get_job(job.id)


def plan_point_in_time(
    account: Account, rp: RecoveryPoint, request: RestoreRequest
) -> tuple[RecoveryPoint, RestoreRequest]:
    """The base backup a point-in-time restore starts from; refused (RecoveryWindowError) outside the window."""
    from strongroom.services.pitr import RecoveryTarget, check_reachable, grant_wal, plan_recovery

    wanted = request.options["recovery"]  # from restore start, or a runbook's continuous selection: checked again
    target = RecoveryTarget.of_options(wanted)
    store_url = account.catalog.get_vault(rp.vault_name).store_url
    check_reachable(store_url, request.options.get("os_user"))
    grant_wal(store_url, str(rp.metadata.get("system_identifier") or ""), request.options.get("os_user"))
    plan = plan_recovery(account, rp, target)
    recovery = {**target.as_options(), "requested_recovery_point": rp.arn, "window": plan.window.describe()}
    return plan.base, replace(request, options={**request.options, "recovery": recovery})


@contextmanager
def wal_credential(account: Account, rp: RecoveryPoint, request: RestoreRequest) -> Iterator[RestoreRequest]:
    """For a point-in-time restore, a WAL credential file beside the new cluster for its restore_command
    (that cluster's WAL keys only), removed when the restore ends; the request names it."""
    if not request.options.get("recovery"):
        yield request
        return
    from strongroom.services.pitr import wal_command
    from strongroom.services.wal_archive import WalCredential
    from strongroom.vault.wal import WalKeys

    adapter = get_adapter(rp.resource_type)
    data_dir = Path(adapter.restore_location(request, account.home)["data_directory"])
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    path = data_dir.parent / f".{data_dir.name}.wal-credential.json"
    keys = WalKeys.derive(account.vault(rp.vault_name).keys, str(rp.metadata.get("system_identifier")))
    from strongroom.services.object_lock import wal_lock_rule

    rule = wal_lock_rule(account, rp.vault_name)  # the new timeline's history file is pushed under the lock too
    store_url = account.catalog.get_vault(rp.vault_name).store_url
    credential = WalCredential(rp.resource_id, rp.vault_name, store_url, keys, None,
                               str(rule[0]) if rule else None, rule[1] if rule else None)  # fmt: skip
    write_durably(path, credential.to_json(), mode=0o600)
    spool = data_dir.parent / f".{data_dir.name}.wal-spool"  # WAL prefetched for restore_command
    remove_spool(spool)
    spool.mkdir(mode=0o700)
    recovery = {**request.options["recovery"], "credential_file": str(path), "wal_command": wal_command(),
                "wal_spool": str(spool)}  # fmt: skip
    try:
        yield replace(request, options={**request.options, "recovery": recovery})
    finally:
        path.unlink(missing_ok=True)
        remove_spool(spool)


def remove_spool(spool: Path) -> None:
    """Stop the restore's WAL prefetcher and remove its spool (a link in its place: only the link)."""
    from strongroom.adapters.postgres.recovery import stop_prefetch

    for _ in range(3):  # a prefetcher started meanwhile may write into it as it goes: stop it, remove again
        if spool.is_symlink() or spool.is_file():
            spool.unlink()
        elif spool.exists():
            stop_prefetch(spool)
            shutil.rmtree(spool, ignore_errors=True)
        else:
            return


def stream_size(account: Account, recovery_point: str) -> int:
    rp = account.catalog.get_recovery_point(recovery_point)
    return rp.source_bytes
