"""Observe ``flock(2)`` locks from outside, so tests wait for a state instead of sleeping.

``/proc/locks`` lists every lock with its holder's pid and the file's device and inode, and lists the
processes blocked waiting for one with ``->``: a test can see that a collector closed the admission
gate, or that a writer is queued behind it, the moment it happens.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path

POLL_SECONDS = 0.01
ATTEMPTS = 6000  # one minute of polls at most, on a slow machine


def _device(path: Path) -> str:
    info = path.stat()
    return f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"


def waiters(path: Path) -> int:
    """How many processes (or threads) are blocked in ``flock`` on ``path`` now."""
    device = _device(path)
    with open("/proc/locks") as handle:
        lines = [line.split() for line in handle.read().splitlines()]
    # "1: -> FLOCK  ADVISORY  READ  4242 08:01:1234 0 EOF"
    return sum(1 for f in lines if len(f) >= 7 and f[1] == "->" and f[2] == "FLOCK" and f[6] == device)


def held_exclusively(path: Path) -> bool:
    """Whether another open file holds ``path`` with ``LOCK_EX`` (a shared probe is refused)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's own lock, if it got one
    return False


def wait_until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(ATTEMPTS):
        if condition():
            return
        time.sleep(POLL_SECONDS)
    raise AssertionError(f"never happened: {what}")
