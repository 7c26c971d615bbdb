"""Vault locks with AWS Backup Vault Lock's semantics.

Setting ``changeable_for_days`` makes a lock *compliance* mode: it may be changed or removed during that
cooling-off period and never after its lock date. Without it the lock is *governance* mode: principals
named in the vault's access policy may change or bypass it. Either way a new recovery point's retention
must fall within [min_retention_days, max_retention_days] (docs/access-policy-and-lock.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from strongroom.errors import ConfigError, RetentionError
from strongroom.model import LockMode, VaultLockRecord

GOVERNANCE = LockMode.GOVERNANCE
COMPLIANCE = LockMode.COMPLIANCE
MAX_DAYS = 36500
MIN_CHANGEABLE_DAYS = 3
WHERE = "vault lock"


@dataclass(frozen=True)
class VaultLock:
    min_retention_days: int | None
    max_retention_days: int | None
    changeable_for_days: int | None  # set: compliance mode; None: governance mode
    created_at: datetime

    def __post_init__(self) -> None:
        _check_days("min_retention_days", self.min_retention_days, 1)
        _check_days("max_retention_days", self.max_retention_days, 1)
        _check_days("changeable_for_days", self.changeable_for_days, MIN_CHANGEABLE_DAYS)
        low, high = self.min_retention_days, self.max_retention_days
        if low is not None and high is not None and low > high:
            raise ConfigError(f"{WHERE} min_retention_days: {low} is more than max_retention_days ({high})")
        if not isinstance(self.created_at, datetime) or self.created_at.tzinfo is None:
            raise ConfigError(f"{WHERE} created_at: must be a date and time with a time zone")

    @property
    def mode(self) -> LockMode:
        return COMPLIANCE if self.changeable_for_days is not None else GOVERNANCE

    @property
    def lock_date(self) -> datetime | None:
        """When a compliance lock becomes immutable; None for governance mode."""
        if self.changeable_for_days is None:
            return None
        return self.created_at + timedelta(days=self.changeable_for_days)

    def immutable(self, now: datetime) -> bool:
        lock_date = self.lock_date
        return lock_date is not None and now >= lock_date

    def state(self, now: datetime) -> str:
        """GOVERNANCE, COMPLIANCE_COOLING_OFF (still removable) or COMPLIANCE_IMMUTABLE."""
        if self.mode == GOVERNANCE:
            return "GOVERNANCE"
        return "COMPLIANCE_IMMUTABLE" if self.immutable(now) else "COMPLIANCE_COOLING_OFF"

    def check_retention(self, delete_after_days: int | None) -> None:
        """Raise RetentionError (saying why) unless a new recovery point may keep this retention."""
        low, high = self.min_retention_days, self.max_retention_days
        hint = f"Choose a retention of {self.range_text()}"
        if delete_after_days is None:
            if high is not None:
                raise RetentionError(
                    f"a recovery point without retention (kept forever) breaks the vault lock's maximum retention "
                    f"of {high} days",
                    hint=hint,
                )
            return
        if low is not None and delete_after_days < low:
            raise RetentionError(
                f"a retention of {delete_after_days} days is shorter than the vault lock's minimum retention "
                f"of {low} days",
                hint=hint,
            )
        if high is not None and delete_after_days > high:
            raise RetentionError(
                f"a retention of {delete_after_days} days is longer than the vault lock's maximum retention "
                f"of {high} days",
                hint=hint,
            )

    def range_text(self) -> str:
        low, high = self.min_retention_days, self.max_retention_days
        if low is not None and high is not None:
            return f"{low} to {high} days"
        if low is not None:
            return f"at least {low} days"
        return f"at most {high} days" if high is not None else "any number of days"

    def record(self) -> VaultLockRecord:
        """The lock as the catalog stores it (``mode`` and ``lock_date`` written out for readers)."""
        lock_date = self.lock_date
        return VaultLockRecord(
            mode=self.mode,
            created_at=self.created_at.isoformat(),
            min_retention_days=self.min_retention_days,
            max_retention_days=self.max_retention_days,
            changeable_for_days=self.changeable_for_days,
            lock_date=lock_date.isoformat() if lock_date else None,
        )

    def as_dict(self) -> dict[str, Any]:
        return self.record().as_dict()

    @classmethod
    def from_record(cls, stored: VaultLockRecord) -> VaultLock:
        """The lock from its stored record (``mode`` and ``lock_date`` are derived, so ignored)."""
        return cls(
            stored.min_retention_days,
            stored.max_retention_days,
            stored.changeable_for_days,
            _created_at(stored.created_at),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VaultLock:
        """The lock from :meth:`as_dict`'s shape (``mode`` and ``lock_date`` are derived, so ignored)."""
        return cls(
            data.get("min_retention_days"),
            data.get("max_retention_days"),
            data.get("changeable_for_days"),
            _created_at(data.get("created_at")),
        )


def _created_at(text: Any) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{WHERE} created_at: missing or not an ISO 8601 date and time") from None


def _check_days(name: str, value: Any, lowest: int) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or not lowest <= value <= MAX_DAYS:
        raise ConfigError(f"{WHERE} {name}: must be a whole number of days from {lowest} to {MAX_DAYS}, not {value!r}")
