"""Backup jobs: a resource's streams into a new recovery point of a vault."""

from __future__ import annotations

from typing import Any

from strongroom.adapters.base import BackupContext, ResourceSpec, get_adapter
from strongroom.errors import UsageError
from strongroom.model import Job, JobType, RecoveryPoint, RecoveryPointStatus, iso, new_id, now, tag_problem
from strongroom.services import notifications
from strongroom.services.account import DEFAULT_VAULT, Account
from strongroom.services.joblock import JobLock
from strongroom.services.jobs import ProgressCallback, complete_recovery_point, create_job, running
from strongroom.services.object_lock import new_point_retention as new_object_retention
from strongroom.services.recovery_points import latest_intact_reader
from strongroom.services.vault_ops import check_retention_days, new_point_retention
from strongroom.services.writers import hold_writer
from strongroom.vault.writer import RecoveryPointWriter


def create_backup_job(
    account: Account,
    resource_id: str,
    vault_name: str = DEFAULT_VAULT,
    delete_after_days: int | None = None,
    tags: dict[str, str] | None = None,
) -> tuple[Job, JobLock]:
    """Record a CREATED backup job and hold its lock (hand the lock to whoever runs the job).

    ``delete_after_days`` is the new recovery point's retention (None: kept until deleted); the vault
    lock's range is checked when the job runs, so a job outside it FAILS with the reason. ``tags`` are
    the new recovery point's tags (a plan rule's recovery_point_tags, or ``backup start --tag``).
    """
    account.catalog.get_resource(resource_id)
    check_retention_days(delete_after_days)
    problem = tag_problem(tags or {})
    if problem:
        raise UsageError(f"recovery point tags: {problem}")
    vault = account.catalog.get_vault(vault_name)
    account.vault(vault.name)  # unlock now: a wrong passphrase fails before any job exists
    parameters: dict[str, Any] = {} if delete_after_days is None else {"delete_after_days": delete_after_days}
    if tags:
        parameters["recovery_point_tags"] = dict(tags)
    return create_job(account, JobType.BACKUP, resource_id=resource_id, vault_name=vault.name, parameters=parameters)


def run_backup_job(
    account: Account, job_id: str, lock: JobLock | None = None, progress: ProgressCallback | None = None
) -> Job:
    job = account.catalog.get_job(job_id)
    resource = account.catalog.get_resource(job.resource_id or "")
    with (
        notifications.job_events(account, job.id),
        running(account, job, lock) as temp_dir,
        hold_writer(account, job.vault_name or DEFAULT_VAULT),
    ):
        vault = account.vault(job.vault_name or DEFAULT_VAULT)
        rp = _new_recovery_point(account, job, resource.type)
        spec = ResourceSpec(resource.id, resource.type, resource.settings, resource.tags)
        previous = latest_intact_reader(account, resource.id, job.vault_name or DEFAULT_VAULT)
        try:
            base = previous.manifest if previous else None
            retention = new_object_retention(account, job.vault_name or DEFAULT_VAULT, rp)
            with RecoveryPointWriter(vault, rp.id, progress, previous=base, retention=retention) as writer:
                context = BackupContext(writer=writer, temp_dir=temp_dir, previous=previous)
                if job.parameters.get("continuous"):  # the continuous point: no streams, its WAL is archived
                    from strongroom.services.pitr import continuous_metadata

                    metadata = continuous_metadata(
                        account, resource.id, job.vault_name or DEFAULT_VAULT, job.parameters
                    )
                else:
                    metadata = get_adapter(resource.type).backup(spec, context)
                manifest = writer.commit(resource.id, resource.type, metadata)
        finally:
            if previous:
                previous.close()
        stats = writer.stats
        complete_recovery_point(
            account,
            rp.id,
            manifest,
            source_bytes=stats.source_bytes,
            stored_bytes=stats.stored_bytes,
            new_bytes=stats.new_bytes,
            metadata=metadata,
            job_id=job.id,
            bytes_processed=stats.source_bytes,
            result={"recovery_point_arn": rp.arn, **stats.as_dict()},
        )
    return account.catalog.get_job(job.id)


def _new_recovery_point(account: Account, job: Job, resource_type: str) -> RecoveryPoint:
    """The CREATING recovery point, before any data is read; RetentionError when the vault lock refuses it."""
    rp_id = new_id()
    created = iso(now()) or ""
    vault = account.catalog.get_vault(job.vault_name or DEFAULT_VAULT)
    retention = new_point_retention(vault, created, job.parameters.get("delete_after_days"))
    rp = RecoveryPoint(
        id=rp_id,
        arn=account.recovery_point_arn(rp_id),
        vault_name=job.vault_name or DEFAULT_VAULT,
        resource_id=job.resource_id or "",
        resource_type=resource_type,
        status=RecoveryPointStatus.CREATING,
        creation_date=created,
        backup_job_id=job.id,
        tags=dict(job.parameters.get("recovery_point_tags") or {}),
        **retention,
    )
    account.catalog.add_recovery_point(rp, {"recovery_point_arn": rp.arn})
    return rp
