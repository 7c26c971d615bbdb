"""Liveness of jobs: a running job holds an exclusive lock on its lock file.

If the process dies (even by SIGKILL) the kernel drops the lock, so the next command that finds
the job CREATED or RUNNING with a free lock knows it is dead and marks it FAILED.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

ENV_LOCK_FD = "STRONGROOM_JOB_LOCK_FD"


class JobLock:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def acquire(cls, path: Path) -> JobLock:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return cls(fd)

    @classmethod
    def try_acquire(cls, path: Path) -> JobLock | None:
        """The lock, or None at once when a live process holds it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return cls(fd)

    @classmethod
    def inherited(cls) -> JobLock | None:
        """The lock a parent process handed down (see services/backup.py: spawn)."""
        value = os.environ.pop(ENV_LOCK_FD, None)
        return cls(int(value)) if value else None

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def is_held(path: Path) -> bool:
    """True while some live process holds the lock at ``path``."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
