"""What retention a locked S3 vault's objects get: the mode mapping, retain-until dates and the horizon of a
point kept forever (services/object_lock.py; docs/storage.md, "Object Lock is the vault lock")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from strongroom.policy.lock import VaultLock
from strongroom.services.object_lock import horizon_days, point_retention, s3_mode
from strongroom.store.base import LockMode, Retention, covers

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def _lock(low: int | None = 1, high: int | None = None, changeable: int | None = None) -> VaultLock:
    return VaultLock(low, high, changeable, NOW - timedelta(days=10))


def test_governance_and_a_cooling_off_compliance_lock_write_governance() -> None:
    assert s3_mode(_lock(), NOW) == LockMode.GOVERNANCE
    assert s3_mode(_lock(changeable=30), NOW) == LockMode.GOVERNANCE  # still removable: S3 must not outlast it
    assert s3_mode(_lock(changeable=3), NOW) == LockMode.COMPLIANCE  # immutable since 7 days


def test_a_point_is_retained_until_its_delete_at_and_not_after_it_ended() -> None:
    delete_at = (NOW + timedelta(days=7)).isoformat()
    assert point_retention(_lock(), delete_at, NOW) == Retention(LockMode.GOVERNANCE, NOW + timedelta(days=7))
    assert point_retention(_lock(), (NOW - timedelta(seconds=1)).isoformat(), NOW) is None
    assert point_retention(_lock(), NOW.isoformat(), NOW) is None  # the boundary: ended exactly now


def test_a_point_kept_forever_gets_the_horizon() -> None:
    assert horizon_days(_lock(low=1)) == 30
    assert horizon_days(_lock(low=90)) == 90
    assert horizon_days(_lock(low=1, high=400)) == 400
    kept = point_retention(_lock(low=90), None, NOW)
    assert kept == Retention(LockMode.GOVERNANCE, NOW + timedelta(days=90))


def test_covering_needs_the_date_and_the_mode() -> None:
    wanted = Retention(LockMode.COMPLIANCE, NOW)
    assert not covers(None, wanted)
    assert not covers(Retention(LockMode.GOVERNANCE, NOW + timedelta(days=1)), wanted)
    assert not covers(Retention(LockMode.COMPLIANCE, NOW - timedelta(seconds=1)), wanted)
    assert covers(Retention(LockMode.COMPLIANCE, NOW), wanted)
    assert covers(Retention(LockMode.COMPLIANCE, NOW), Retention(LockMode.GOVERNANCE, NOW))
