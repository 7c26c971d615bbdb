"""Who is writing into a vault: a shared lock every writer holds, taken exclusively by the garbage collector.

Every backup job and every incoming copy session holds ``HOME/locks/vault-<name>.writers`` with a
shared ``flock(2)`` from before it reads the previous recovery point until its manifest is committed
(or it failed). The garbage collector takes the same file exclusively: once it has the lock no writer
is in flight, so no uncommitted recovery point can reference an object it is about to delete
(docs/lifecycle.md). The kernel drops the lock of a killed process, so a crash never blocks the vault.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from strongroom.services.account import Account

POLL_SECONDS = 0.05


def writers_lock_path(account: Account, vault_name: str) -> Path:
    return account.locks_dir / f"vault-{quote(vault_name, safe='')}.writers"


@contextmanager
def hold_writer(account: Account, vault_name: str) -> Iterator[None]:
    """Hold the vault's writers lock (shared) for the whole of a write; waits while a collector deletes."""
    fd = _open(writers_lock_path(account, vault_name))
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


@contextmanager
def exclusive_writers_lock(account: Account, vault_name: str, wait_seconds: float) -> Iterator[bool]:
    """Yield True holding the writers lock exclusively (no writer in flight), or False after ``wait_seconds``."""
    fd = _open(writers_lock_path(account, vault_name))
    try:
        yield _lock_within(fd, wait_seconds)
    finally:
        os.close(fd)


def active_writers(account: Account, vault_name: str) -> int | None:
    """How many writers hold the vault's lock now (from /proc/locks); None where that cannot be known."""
    try:
        info = writers_lock_path(account, vault_name).stat()
        with open("/proc/locks") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    device = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    return sum(1 for line in lines if _is_shared_holder(line, device))


def _is_shared_holder(line: str, device: str) -> bool:
    fields = line.split()
    # "1: FLOCK  ADVISORY  READ  4242 08:01:1234 0 EOF"; waiters are listed as "1: -> FLOCK ..."
    return len(fields) >= 6 and fields[1] == "FLOCK" and fields[3] == "READ" and fields[5] == device


def _lock_within(fd: int, wait_seconds: float) -> bool:
    deadline = time.monotonic() + max(wait_seconds, 0)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_SECONDS)


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
