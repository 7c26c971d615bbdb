"""How the scheduler runs the jobs it creates: in its own process, or each in a detached process, both
through services/job_runner.py as the CLI does.

A job's liveness is its lock (services/joblock.py): whoever runs the job holds ``locks/job-ID.lock``, and
the kernel drops it when that process dies. The scheduler watches jobs through the catalog and the lock
only, so it keeps watching the jobs an earlier daemon spawned.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from typing import Protocol

from strongroom.errors import StrongroomError
from strongroom.model import Job, JobState
from strongroom.services.account import Account
from strongroom.services.job_runner import execute_job, spawn_job
from strongroom.services.joblock import JobLock, is_held
from strongroom.services.jobs import fail_job, job_temp_dir, lock_path

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


def abort_job(account: Account, job: Job, pid: int | None, message: str) -> Job:
    """Stop a job's process if it still runs, then mark the job ABORTED (its recovery point PARTIAL)."""
    terminate(account, job.id, pid)
    job = account.catalog.get_job(job.id)
    if not job.state.finished:
        fail_job(account, job, message, JobState.ABORTED)
        lock_path(account, job.id).unlink(missing_ok=True)
        shutil.rmtree(job_temp_dir(account, job.id), ignore_errors=True)
    return account.catalog.get_job(job.id)


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
        if not wait_for_jobs(account, [job_id], timeout):
            return
