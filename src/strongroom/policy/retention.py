"""Retention rules, pure: when a recovery point's retention ends, what a vault lock lets it keep, what it shows.

Nothing here reads a clock or a catalog: callers pass ``now`` and the lock (services/vault_ops.py authorises,
then applies these rules, then acts). Dates are ISO 8601 strings as the catalog stores them; one without a
zone is UTC (docs/access-policy-and-lock.md has the rules as a table).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from strongroom.errors import RemoteError, UsageError
from strongroom.policy.lock import VaultLock

MAX_RETENTION_DAYS = 36500
# How far another account's clock may run ahead of ours: the window request signing allows (credentials.py).
CLOCK_SKEW = timedelta(seconds=300)
LOCK_FIELDS = (
    "locked",
    "lock_mode",
    "lock_state",
    "min_retention_days",
    "max_retention_days",
    "changeable_for_days",
    "lock_date",
)


def delete_at(arrival_date: str, delete_after_days: int | None) -> str | None:
    """When a recovery point's retention ends: its arrival (by this account's clock) plus the days; None keeps
    it forever."""
    if delete_after_days is None:
        return None
    return _iso(aware(datetime.fromisoformat(arrival_date)) + timedelta(days=delete_after_days))


def check_retention_days(delete_after_days: int | None) -> None:
    if delete_after_days is not None and not 1 <= delete_after_days <= MAX_RETENTION_DAYS:
        raise UsageError(
            f"a retention of {delete_after_days} days is out of range", hint=f"Give 1 to {MAX_RETENTION_DAYS} days"
        )


def new_point_retention(lock: VaultLock | None, arrival_date: str, delete_after_days: int | None) -> dict[str, Any]:
    """Retention fields of a recovery point arriving now, ``arrival_date`` by this account's own clock (never a
    date another account claims); RetentionError when the vault's ``lock`` forbids it. Counting from the arrival
    keeps the end within [arrival + the lock's min, arrival + its max] whatever the point says of itself."""
    if lock:
        lock.check_retention(delete_after_days)
    return {
        "delete_after_days": delete_after_days,
        "delete_at": delete_at(arrival_date, delete_after_days),
        "lock_applies": lock is not None,
        "arrival_date": arrival_date,
    }


def claimed_creation_date(claimed: datetime | str, arrival: datetime, who: str) -> str:
    """The creation date another account claims for a point it copies here, as information: refused when it lies
    in this account's future (beyond the clock skew request signing allows) or cannot be read."""
    try:
        moment = aware(claimed if isinstance(claimed, datetime) else datetime.fromisoformat(claimed))
    except (TypeError, ValueError):
        raise RemoteError(f"{who} sent a creation date that is not an ISO 8601 date and time: {claimed!r}") from None
    if moment - arrival > CLOCK_SKEW:
        raise RemoteError(
            f"{who} claims a creation date of {_iso(moment)}, later than this account's clock ({_iso(arrival)}) by "
            f"more than {CLOCK_SKEW.seconds} s: a recovery point cannot come from the future",
            hint="Check the sending machine's clock (NTP); a copy's time is always taken from the receiving account",
        )
    return _iso(moment) or ""


def retention_ended(point_delete_at: str | None, now: datetime) -> bool:
    return point_delete_at is not None and aware(datetime.fromisoformat(point_delete_at)) <= now


def governing_lock(lock: VaultLock | None, lock_applies: bool) -> VaultLock | None:
    """The vault's lock, if it governs the point (points stored before any lock are not governed)."""
    return lock if lock and lock_applies else None


def retention_of(
    delete_after_days: int | None, point_delete_at: str | None, governing: VaultLock | None, now: datetime
) -> dict[str, Any]:
    """What protects a recovery point now: its retention and whether (and in which mode) a lock governs it."""
    return {
        "delete_after_days": delete_after_days,
        "delete_at": point_delete_at,
        "retention_ended": retention_ended(point_delete_at, now),
        "locked_by": governing.mode if governing else None,
    }


def lock_fields(lock: VaultLock | None, now: datetime) -> dict[str, Any]:
    """The lock as ``vaults describe`` shows it (AWS DescribeBackupVault's Locked, Min/MaxRetentionDays, LockDate)."""
    if lock is None:
        return dict.fromkeys(LOCK_FIELDS) | {"locked": False, "lock_state": "UNLOCKED"}
    values = (
        True,
        lock.mode,
        lock.state(now),
        lock.min_retention_days,
        lock.max_retention_days,
        lock.changeable_for_days,
        _iso(lock.lock_date),
    )
    return dict(zip(LOCK_FIELDS, values, strict=True))


def shortens(current_days: int | None, delete_after_days: int | None) -> bool:
    """Would a retention of ``delete_after_days`` end sooner than ``current_days`` (None: forever)?"""
    if delete_after_days is None:
        return False
    return current_days is None or delete_after_days < current_days


def aware(moment: datetime) -> datetime:
    """Timestamps without a zone are UTC, as everywhere in the catalog."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
