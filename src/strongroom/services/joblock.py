"""Liveness of jobs: a running job holds an exclusive lock on its lock file.

If the process dies (even by SIGKILL) the kernel drops the lock, so the next command that finds
the job CREATED or RUNNING with a free lock knows it is dead and marks it FAILED.
"""

from __future__ import annotations

import os
from pathlib import Path

from strongroom.fsutil import FileLock, is_held

ENV_LOCK_FD = "STRONGROOM_JOB_LOCK_FD"

__all__ = ["ENV_LOCK_FD", "JobLock", "is_held"]


class JobLock:
    """A job's exclusive lock (a :class:`~strongroom.fsutil.FileLock`); its ``fd`` is handed to the worker
    process that runs the job."""

    def __init__(self, lock: FileLock) -> None:
        self._lock = lock

    @property
    def fd(self) -> int:
        return self._lock.fd

    @classmethod
    def acquire(cls, path: Path) -> JobLock:
        lock = FileLock(path)
        lock.acquire()
        return cls(lock)

    @classmethod
    def try_acquire(cls, path: Path) -> JobLock | None:
        """The lock, or None at once when a live process holds it."""
        lock = FileLock(path)
        return cls(lock) if lock.try_acquire() else None

    @classmethod
    def inherited(cls) -> JobLock | None:
        """The lock a parent process handed down (services/job_runner.spawn_job)."""
        value = os.environ.pop(ENV_LOCK_FD, None)
        return cls(FileLock(Path(), int(value))) if value else None

    def release(self) -> None:
        self._lock.release()
