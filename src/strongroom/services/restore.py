"""Restore jobs: a recovery point into something new (a database, a cluster, a path)."""

from __future__ import annotations

from typing import Any

from strongroom.adapters.base import RestoreContext, RestoreRequest, get_adapter
from strongroom.errors import UsageError
from strongroom.model import Job, JobType, RecoveryPointStatus
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
    with notifications.job_events(account, job.id), running(account, job, lock) as temp_dir:
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


def stream_size(account: Account, recovery_point: str) -> int:
    rp = account.catalog.get_recovery_point(recovery_point)
    return rp.source_bytes
