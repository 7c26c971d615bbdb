"""Who is writing into a vault: a shared lock every writer holds, taken exclusively by the garbage collector.

Every backup job and every incoming copy session holds ``HOME/locks/vault-<name>.writers`` with a
shared ``flock(2)`` from before it reads the previous recovery point until its manifest is committed
(or it failed). The garbage collector takes the same file exclusively: once it has the lock no writer
is in flight, so no uncommitted recovery point can reference an object it is about to delete
(docs/lifecycle.md). The kernel drops the lock of a killed process, so a crash never blocks the vault.

``flock`` has no queue, so overlapping writers could keep the collector out for ever. A writer therefore
enters through an admission gate, ``HOME/locks/vault-<name>.gc``, held shared only for the instant of
entering; the collector holds it exclusively while it waits and while it deletes. Once the collector
asks, no new writer enters: it waits only for the writers already in flight, each bounded (a copy
session by its maximum lifetime, services/session_limits.py).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from strongroom.errors import BusyError
from strongroom.services.account import Account

POLL_SECONDS = 0.05


def writers_lock_path(account: Account, vault_name: str) -> Path:
    return account.locks_dir / f"vault-{quote(vault_name, safe='')}.writers"


def admission_lock_path(account: Account, vault_name: str) -> Path:
    return account.locks_dir / f"vault-{quote(vault_name, safe='')}.gc"


class WriterHold:
    """A writer's shared hold of the vault's writers lock, until :meth:`release` (or the ``with`` block's end)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> WriterHold:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextmanager
def hold_writer(account: Account, vault_name: str) -> Iterator[None]:
    """Hold the vault's writers lock (shared) for the whole of a write; waits while a collector waits or deletes."""
    fd = _enter(account, vault_name, blocking=True)
    assert fd is not None
    with WriterHold(fd):
        yield


def try_hold_writer(account: Account, vault_name: str) -> WriterHold:
    """Hold the vault's writers lock now, or raise BusyError at once while a collector holds the admission gate
    (for the API server, whose event loop must never block on a lock)."""
    fd = _enter(account, vault_name, blocking=False)
    if fd is None:
        raise BusyError(f"garbage collection of vault '{vault_name}' is running; no new writer may start now",
                        hint="Try again in a minute")
    return WriterHold(fd)


@contextmanager
def exclusive_writers_lock(account: Account, vault_name: str, wait_seconds: float) -> Iterator[bool]:
    """Yield True holding the writers lock exclusively (no writer in flight), or False after ``wait_seconds``.

    While it waits it holds the admission gate: writers that were not in flight when it asked wait for it.
    """
    gate = _open(admission_lock_path(account, vault_name))
    fd = _open(writers_lock_path(account, vault_name))
    try:
        deadline = time.monotonic() + max(wait_seconds, 0)
        yield _lock_within(gate, wait_seconds) and _lock_within(fd, deadline - time.monotonic())
    finally:
        os.close(fd)
        os.close(gate)


def _enter(account: Account, vault_name: str, *, blocking: bool) -> int | None:
    """Pass the admission gate (shared, for an instant), then take the writers lock shared; None when the gate
    is closed and ``blocking`` is False. Past the gate the writers lock is free of collectors at once: a
    collector holds it only while it holds the gate."""
    gate = _open(admission_lock_path(account, vault_name))
    try:
        try:
            fcntl.flock(gate, fcntl.LOCK_SH | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            return None
        fd = _open(writers_lock_path(account, vault_name))
        fcntl.flock(fd, fcntl.LOCK_SH)
        return fd
    finally:
        os.close(gate)


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
