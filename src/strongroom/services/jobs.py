"""Job bookkeeping shared by every job kind: creation with its lock, states, completion, and recovery
after a crash."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any

from strongroom.errors import StrongroomError
from strongroom.model import Job, JobState, JobType, RecoveryPointStatus, iso, new_id, now
from strongroom.services import notifications
from strongroom.services.account import Account
from strongroom.services.joblock import JobLock, is_held
from strongroom.vault.manifest import Manifest

DEAD_JOB_MESSAGE = "the process running this job stopped before it finished (killed or crashed)"


def lock_path(account: Account, job_id: str) -> Path:
    return account.locks_dir / f"job-{job_id}.lock"


def create_job(
    account: Account,
    job_type: JobType,
    *,
    resource_id: str | None,
    vault_name: str,
    parameters: dict[str, Any],
    recovery_point_arn: str | None = None,
    running_since: datetime | None = None,
) -> tuple[Job, JobLock]:
    """Record a new job and hold its lock (hand the lock to whoever runs the job).

    CREATED, or RUNNING from ``running_since`` for a job its creator runs at once (an incoming copy).
    The lock is taken before the job is recorded, so no other process ever sees the job without one.
    """
    created = running_since or now()
    job = Job(
        new_id(),
        job_type,
        JobState.RUNNING if running_since else JobState.CREATED,
        resource_id,
        vault_name,
        recovery_point_arn,
        iso(created) or "",
        start_date=iso(running_since),
        parameters=parameters,
    )
    path = lock_path(account, job.id)
    lock = JobLock.acquire(path)
    try:
        account.catalog.add_job(job)
    except BaseException:
        lock.release()
        path.unlink(missing_ok=True)
        raise
    return job, lock


def complete_recovery_point(
    account: Account,
    rp_id: str,
    manifest: Manifest,
    *,
    source_bytes: int,
    stored_bytes: int,
    new_bytes: int,
    metadata: dict[str, Any],
    job_id: str | None = None,
    bytes_processed: int = 0,
    result: dict[str, Any] | None = None,
) -> None:
    """Mark a recovery point COMPLETED once its manifest is durable in the vault (never before).

    With ``job_id`` its job is marked COMPLETED in the same transaction (``bytes_processed``, ``result``):
    a crash between the two never leaves a COMPLETED point whose job the dead-job sweep then calls FAILED.
    """
    point_fields = {
        "status": RecoveryPointStatus.COMPLETED,
        "completion_date": manifest.completed_at,
        "source_bytes": source_bytes,
        "stored_bytes": stored_bytes,
        "new_bytes": new_bytes,
        "metadata": metadata,
    }
    if job_id is None:
        account.catalog.update_recovery_point(rp_id, **point_fields)
        return
    job_fields = _completed_job_fields(bytes_processed, result or {})
    account.catalog.update_point_and_job(rp_id, point_fields, job_id, job_fields)


def complete_job(account: Account, job_id: str, *, bytes_processed: int, result: dict[str, Any]) -> None:
    """Mark a job COMPLETED with what it did (the ``result`` shown by ``jobs describe``)."""
    account.catalog.update_job(job_id, **_completed_job_fields(bytes_processed, result))


def _completed_job_fields(bytes_processed: int, result: dict[str, Any]) -> dict[str, Any]:
    return {
        "state": JobState.COMPLETED,
        "completion_date": iso(now()),
        "bytes_processed": bytes_processed,
        "result": result,
    }


def list_jobs(account: Account, *, state: JobState | None = None, job_type: JobType | None = None) -> list[Job]:
    """The account's jobs, oldest first."""
    return account.catalog.list_jobs(states=[state] if state else None, job_type=job_type)


def get_job(account: Account, job_id: str) -> Job:
    return account.catalog.get_job(job_id)


def recover_dead_jobs(account: Account) -> list[str]:
    """Mark every CREATED/RUNNING job whose process is gone as FAILED; returns their ids."""
    recovered = []
    for job in account.catalog.list_jobs(states=[JobState.CREATED, JobState.RUNNING]):
        path = lock_path(account, job.id)
        if is_held(path):
            continue
        fail_job(account, job, DEAD_JOB_MESSAGE)
        notifications.job_finished(account, job.id)  # the dead process could not say it failed
        path.unlink(missing_ok=True)
        shutil.rmtree(job_temp_dir(account, job.id), ignore_errors=True)
        recovered.append(job.id)
    return recovered


def fail_job(account: Account, job: Job, message: str, state: JobState = JobState.FAILED) -> None:
    """Finish a job unsuccessfully; its recovery point, if any, can never be COMPLETED."""
    # A backup's or an incoming copy's recovery point lives in this account; an outgoing copy has none here.
    if job.job_type in (JobType.BACKUP, JobType.COPY) and job.recovery_point_arn:
        rp = account.catalog.get_recovery_point(job.recovery_point_arn)
        if rp.status == RecoveryPointStatus.CREATING:
            # The catalog never said COMPLETED, so a manifest (written just before a crash) is withdrawn.
            with suppress(StrongroomError):
                account.vault(rp.vault_name).withdraw_manifest(rp.id)
            why = f"{job.job_type.value.lower()} job {job.id} failed: {message}"
            account.catalog.update_recovery_point(rp.id, status=RecoveryPointStatus.PARTIAL, status_message=why)
    account.catalog.update_job(job.id, state=state, status_message=message, completion_date=iso(now()))


def job_temp_dir(account: Account, job_id: str) -> Path:
    return account.tmp_dir / f"job-{job_id}"


def abort_reason_path(account: Account, job_id: str) -> Path:
    """Where whoever stops a job (the scheduler at its completion window) says why, before its SIGTERM: the
    job winds up with that reason instead of "interrupted by SIGTERM"."""
    return account.tmp_dir / f"job-{job_id}.abort-reason"


def abort_reason(account: Account, job_id: str) -> str | None:
    try:
        return abort_reason_path(account, job_id).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


@contextmanager
def running(account: Account, job: Job, lock: JobLock | None) -> Iterator[Path]:
    """Hold the job's lock, mark it RUNNING, give it a scratch dir, and fail it on any error."""
    own_lock = lock or JobLock.acquire(lock_path(account, job.id))
    temp_dir = job_temp_dir(account, job.id)
    temp_dir.mkdir(parents=True, exist_ok=True)
    account.catalog.update_job(job.id, state=JobState.RUNNING, start_date=iso(now()))
    try:
        yield temp_dir
    except StrongroomError as exc:
        fail_job(account, account.catalog.get_job(job.id), exc.one_line())
        raise
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM as the CLI raises it (strongroom/signals.py)
        message = abort_reason(account, job.id) or str(exc) or "interrupted by the user"
        fail_job(account, account.catalog.get_job(job.id), message, JobState.ABORTED)
        raise
    except Exception as exc:
        fail_job(account, account.catalog.get_job(job.id), f"internal error: {type(exc).__name__}: {exc}")
        raise
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
        lock_path(account, job.id).unlink(missing_ok=True)
        own_lock.release()


ProgressCallback = Callable[[int], None]
