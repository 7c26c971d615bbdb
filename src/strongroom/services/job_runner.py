"""One way to run a BACKUP, COPY or RESTORE job, for the CLI and the scheduler alike.

A CREATED job is run either here (``execute_job``, in this process, with a progress callback) or in a
detached worker process (``spawn_job``: ``python -m strongroom.services.job_worker HOME JOB_ID``). The
worker inherits the job's lock as an open file descriptor (``STRONGROOM_JOB_LOCK_FD``) and the passphrase
in its environment, never in its arguments. A job's liveness is that lock (services/joblock.py): the
kernel drops it when the process running the job dies, so whoever started the job need not wait for it,
and a scheduler watches the jobs an earlier daemon spawned through the catalog and the lock only.

The scheduler picks one of two :class:`Runner` strategies over these two ways (``InProcessRunner`` for
simulations and tests that drive the clock, ``SpawningRunner`` for the daemon), and stops a job that
outlives its completion window with :func:`abort_job`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Protocol

from strongroom.errors import StrongroomError
from strongroom.model import Job, JobState, JobType, RecoveryPointStatus
from strongroom.services.account import ENV_PASSPHRASE, Account
from strongroom.services.backup import run_backup_job
from strongroom.services.copy import run_copy_job
from strongroom.services.dr.hookproc import live_group_members
from strongroom.services.joblock import ENV_LOCK_FD, JobLock, is_held
from strongroom.services.jobs import ProgressCallback, abort_reason_path, fail_job, job_temp_dir, lock_path
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


# Runners: how the scheduler runs the jobs it creates ------------------------------------------------
log = logging.getLogger("strongroom.scheduler")

POLL_SECONDS = 0.1


class Runner(Protocol):
    max_jobs: int | None  # jobs running at once; None: no limit (a synchronous runner runs one at a time anyway)

    def start(self, account: Account, job: Job, lock: JobLock) -> int | None:
        """Run a CREATED job whose lock the caller holds (handed over); the pid of a spawned process, if any."""
        ...

    def reap(self, wait: float = 0) -> None:
        """Collect the exit status of finished job processes (no zombies), waiting up to ``wait`` s for each."""
        ...


class InProcessRunner:
    """Runs each job to its end inside ``start``: for simulations and tests that drive the clock."""

    max_jobs: int | None = None

    def start(self, account: Account, job: Job, lock: JobLock) -> int | None:
        try:
            execute_job(account, job, lock)
        except StrongroomError as exc:  # the job records its own failure
            log.info("job %s failed: %s", job.id, exc.one_line())
        except Exception:  # the job is marked FAILED already; the daemon goes on
            log.exception("job %s failed", job.id)
        return None

    def reap(self, wait: float = 0) -> None:
        """Nothing to reap: ``start`` ran the job to its end."""


class SpawningRunner:
    """Hands each job and its lock to a detached worker process (``job_runner.spawn_job``), as ``backup start``
    does."""

    def __init__(self, max_jobs: int | None = 2) -> None:
        self.max_jobs = max_jobs
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, account: Account, job: Job, lock: JobLock) -> int | None:
        self.reap()
        child = spawn_job(account, job, lock)
        self._children[job.id] = child
        return child.pid

    def reap(self, wait: float = 0) -> None:
        for job_id, child in list(self._children.items()):
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(wait)
            if child.returncode is not None:
                del self._children[job_id]


def job_alive(account: Account, job_id: str) -> bool:
    return is_held(lock_path(account, job_id))


def wait_for_jobs(account: Account, job_ids: list[str], timeout: float) -> list[str]:
    """Wait up to ``timeout`` seconds for the jobs' processes to end; the ids still running then."""
    deadline = time.monotonic() + timeout
    alive = [job_id for job_id in job_ids if job_alive(account, job_id)]
    while alive and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        alive = [job_id for job_id in alive if job_alive(account, job_id)]
    return alive


def abort_job(account: Account, job: Job, pid: int | None, message: str) -> tuple[Job, bool]:
    """Stop a job's process if it still runs and have the job ABORTED with ``message`` (its recovery point
    PARTIAL). The process, given SIGTERM, winds the job up itself with that reason (and sends its event);
    True when it could not and this call marked the job."""
    reason = abort_reason_path(account, job.id)
    reason.parent.mkdir(parents=True, exist_ok=True)
    reason.write_text(message, encoding="utf-8")
    try:
        terminate(account, job.id, pid)
    finally:
        reason.unlink(missing_ok=True)
    job = account.catalog.get_job(job.id)
    if job.state.finished:
        return job, False
    fail_job(account, job, message, JobState.ABORTED)
    lock_path(account, job.id).unlink(missing_ok=True)
    shutil.rmtree(job_temp_dir(account, job.id), ignore_errors=True)
    return account.catalog.get_job(job.id), True


def terminate(account: Account, job_id: str, pid: int | None, timeout: float = 10) -> None:
    """Stop the process group running a job (SIGTERM, then SIGKILL), known by the pid the runner gave.

    The job's lock tells whether its process still lives, so a reused pid is never signalled.
    """
    if pid is None or not job_alive(account, job_id):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        if not wait_for_jobs(account, [job_id], timeout) and _group_ends(pid, timeout):
            return


def _group_ends(group: int, timeout: float) -> bool:
    """Wait until no live process is left in ``group`` (the worker winds its job up on SIGTERM, then exits)."""
    deadline = time.monotonic() + timeout
    while live_group_members(group):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True
