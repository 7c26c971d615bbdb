"""What ``/healthz`` answers (docs/metrics.md): the catalog answers, every vault's store holds its config
object, and the scheduler, when this process runs one, ticked recently.

Check results carry names and short reasons only: never a store URL (it may hold credentials), a path, a
passphrase or an exception's text from a store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from strongroom.services.account import Account
from strongroom.services.metrics import last_tick
from strongroom.store.base import open_store
from strongroom.vault.vault import CONFIG_KEY

MIN_STALE_AFTER = timedelta(minutes=2)


class Status(StrEnum):
    OK = "ok"
    FAILING = "failing"


@dataclass(frozen=True)
class SchedulerWatch:
    """The scheduler this process runs: whether its thread lives and how often it ticks."""

    alive: Callable[[], bool]
    poll_seconds: float

    @property
    def stale_after(self) -> timedelta:
        """Three missed ticks, and never less than two minutes (a tick may take a while)."""
        return max(MIN_STALE_AFTER, timedelta(seconds=3 * self.poll_seconds))


@dataclass
class Health:
    checks: dict[str, dict[str, str]] = field(default_factory=dict)

    def record(self, name: str, ok: bool, detail: str) -> None:
        self.checks[name] = {"status": (Status.OK if ok else Status.FAILING).value, "detail": detail}

    @property
    def ok(self) -> bool:
        return all(check["status"] == Status.OK for check in self.checks.values())

    def as_dict(self) -> dict[str, Any]:
        return {"status": (Status.OK if self.ok else Status.FAILING).value, "checks": self.checks}


def check_health(account: Account, now: datetime, scheduler: SchedulerWatch | None) -> Health:
    health = Health()
    try:
        vaults = account.catalog.list_vaults()
        health.record("catalog", True, f"schema version {account.catalog.schema_version}")
    except Exception as exc:  # any failure to read is the finding
        health.record("catalog", False, f"the catalog does not answer ({type(exc).__name__})")
        return health
    for vault in vaults:
        health.record(f"vault:{vault.name}", *_store_reachable(vault.store_url))
    if scheduler is not None:
        health.record("scheduler", *_scheduler_ticking(account, now, scheduler))
    return health


def _store_reachable(store_url: str) -> tuple[bool, str]:
    try:
        size = open_store(store_url).head(CONFIG_KEY)
    except Exception as exc:  # unreachable in any way; the text may name the URL, so only its type is shown
        return False, f"the vault's store is unreachable ({type(exc).__name__})"
    if size is None:
        return False, "the vault's store has no config object"
    return True, "config object present"


def _scheduler_ticking(account: Account, now: datetime, watch: SchedulerWatch) -> tuple[bool, str]:
    if not watch.alive():
        return False, "the scheduler thread has stopped"
    ticked = last_tick(account)
    if ticked is None:
        return False, "no scheduler tick recorded (is another daemon holding the lease?)"
    age = now - ticked
    if age > watch.stale_after:
        return (
            False,
            f"last tick {age.total_seconds():.0f} s ago (stale after {watch.stale_after.total_seconds():.0f} s)",
        )
    return True, f"last tick {max(0.0, age.total_seconds()):.0f} s ago"
