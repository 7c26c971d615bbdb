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

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from strongroom.errors import BusyError
from strongroom.fsutil import FileLock, holders
from strongroom.services.account import Account


def writers_lock_path(account: Account, vault_name: str) -> Path:
    return account.locks_dir / f"vault-{quote(vault_name, safe='')}.writers"


def admission_lock_path(account: Account, vault_name: str) -> Path:
    return account.locks_dir / f"vault-{quote(vault_name, safe='')}.gc"


class WriterHold:
    """A writer's shared hold of the vault's writers lock, until :meth:`release` (or the ``with`` block's end)."""

    def __init__(self, lock: FileLock) -> None:
        self._lock = lock

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> WriterHold:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextmanager
def hold_writer(account: Account, vault_name: str) -> Iterator[None]:
    """Hold the vault's writers lock (shared) for the whole of a write; waits while a collector waits or deletes."""
    lock = _enter(account, vault_name, blocking=True)
    assert lock is not None
    with WriterHold(lock):
        yield


def try_hold_writer(account: Account, vault_name: str) -> WriterHold:
    """Hold the vault's writers lock now, or raise BusyError at once while a collector holds the admission gate
    (for the API server, whose event loop must never block on a lock)."""
    lock = _enter(account, vault_name, blocking=False)
    if lock is None:
        raise BusyError(
            f"garbage collection of vault '{vault_name}' is running; no new writer may start now",
            hint="Try again in a minute",
        )
    return WriterHold(lock)


@contextmanager
def exclusive_writers_lock(account: Account, vault_name: str, wait_seconds: float) -> Iterator[bool]:
    """Yield True holding the writers lock exclusively (no writer in flight), or False after ``wait_seconds``.

    While it waits it holds the admission gate: writers that were not in flight when it asked wait for it.
    """
    with (
        FileLock(admission_lock_path(account, vault_name)) as gate,
        FileLock(writers_lock_path(account, vault_name)) as writers,
    ):
        deadline = time.monotonic() + max(wait_seconds, 0)
        yield gate.acquire(timeout=wait_seconds) and writers.acquire(timeout=deadline - time.monotonic())


def _enter(account: Account, vault_name: str, *, blocking: bool) -> FileLock | None:
    """Pass the admission gate (shared, for an instant), then take the writers lock shared; None when the gate
    is closed and ``blocking`` is False. Past the gate the writers lock is free of collectors at once: a
    collector holds it only while it holds the gate."""
    with FileLock(admission_lock_path(account, vault_name)) as gate:
        if not (gate.acquire(shared=True) if blocking else gate.try_acquire(shared=True)):
            return None
        writers = FileLock(writers_lock_path(account, vault_name))
        writers.acquire(shared=True)
        return writers


def active_writers(account: Account, vault_name: str) -> int | None:
    """How many writers hold the vault's lock now (from /proc/locks); None where that cannot be known."""
    return holders(writers_lock_path(account, vault_name), shared=True)
