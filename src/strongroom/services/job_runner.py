"""One way to run a BACKUP, COPY or RESTORE job, for the CLI and the scheduler alike.

A CREATED job is run either here (``execute_job``, in this process, with a progress callback) or in a
detached worker process (``spawn_job``: ``python -m strongroom.services.job_worker HOME JOB_ID``). The
worker inherits the job's lock as an open file descriptor (``STRONGROOM_JOB_LOCK_FD``) and the passphrase
in its environment, never in its arguments. A job's liveness is that lock (services/joblock.py), so
whoever started the job need not wait for it.
"""

from __future__ import annotations

import os
import subprocess
import sys

from strongroom.errors import StrongroomError
from strongroom.model import Job, JobType, RecoveryPointStatus
from strongroom.services.account import ENV_PASSPHRASE, Account
from strongroom.services.backup import run_backup_job
from strongroom.services.copy import run_copy_job
from strongroom.services.joblock import ENV_LOCK_FD, JobLock
from strongroom.services.jobs import ProgressCallback, job_temp_dir
from strongroom.services.restore import run_restore_job

WORKER_MODULE = "strongroom.services.job_worker"


def execute_job(account: Account, job: Job, lock: JobLock | None, progress: ProgressCallback | None = None) -> Job:
    """Run a CREATED job to its end in this process; the finished job (a failure raises, recorded)."""
    if job.job_type == JobType.BACKUP:
        return run_backup_job(account, job.id, lock, progress)
    if job.job_type == JobType.COPY:
        return run_copy_job(account, job.id, lock, progress)
    return run_restore_job(account, job.id, lock, progress)


def spawn_job(account: Account, job: Job, lock: JobLock) -> subprocess.Popen[bytes]:
    """Hand a CREATED job and its lock (released here) to a detached worker process, logging to
    ``tmp/job-ID.log``; the lock keeps the job alive in the catalog's eyes."""
    environment = {**os.environ, ENV_LOCK_FD: str(lock.fd), ENV_PASSPHRASE: account.passphrase()}
    log_dir = job_temp_dir(account, job.id).parent
    log_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", WORKER_MODULE, str(account.home), job.id]
    try:
        with open(log_dir / f"job-{job.id}.log", "ab") as job_log:
            return subprocess.Popen(
                command,
                env=environment,
                pass_fds=[lock.fd],
                stdin=subprocess.DEVNULL,
                stdout=job_log,
                stderr=job_log,
                start_new_session=True,
            )
    finally:
        lock.release()


def expected_bytes(account: Account, job: Job) -> int | None:
    """How many bytes the job will read, for a progress bar: a restore's or a copy's point size, or the last
    backup's size as the estimate for this one; None when unknown."""
    if job.job_type == JobType.RESTORE and job.recovery_point_arn:
        return account.catalog.get_recovery_point(job.recovery_point_arn).source_bytes
    if job.job_type == JobType.COPY:
        try:
            return account.catalog.get_recovery_point(job.parameters["source_recovery_point_arn"]).source_bytes
        except StrongroomError:
            return None  # a copy back: the size is the other account's to tell
    completed = account.catalog.list_recovery_points(
        resource_id=job.resource_id, vault_name=job.vault_name, status=RecoveryPointStatus.COMPLETED
    )
    return completed[-1].source_bytes if completed else None
