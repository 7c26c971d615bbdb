"""policy/retention.py: the retention rules, pure (``now`` is a parameter, no catalog)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from strongroom.errors import RemoteError, RetentionError, UsageError
from strongroom.policy import retention
from strongroom.policy.lock import VaultLock

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_retention_ends_days_after_arrival_and_naive_dates_are_utc() -> None:
    assert retention.delete_at("2026-03-01T12:00:00", 7) == "2026-03-08T12:00:00+00:00"
    assert retention.delete_at("2026-03-01T12:00:00+00:00", None) is None
    assert retention.retention_ended("2026-03-01T12:00:00", NOW)
    assert not retention.retention_ended("2026-03-01T12:00:01", NOW)
    assert not retention.retention_ended(None, NOW)


@pytest.mark.parametrize("days", [0, -1, retention.MAX_RETENTION_DAYS + 1])
def test_out_of_range_retentions_are_refused(days: int) -> None:
    with pytest.raises(UsageError, match="out of range"):
        retention.check_retention_days(days)


def test_a_lock_bounds_a_new_point_counted_from_its_arrival() -> None:
    lock = VaultLock(7, 30, None, NOW)
    fields = retention.new_point_retention(lock, "2026-03-01T12:00:00+00:00", 10)
    assert fields == {
        "delete_after_days": 10,
        "delete_at": "2026-03-11T12:00:00+00:00",
        "lock_applies": True,
        "arrival_date": "2026-03-01T12:00:00+00:00",
    }
    with pytest.raises(RetentionError):
        retention.new_point_retention(lock, "2026-03-01T12:00:00+00:00", 3)
    assert retention.new_point_retention(None, "2026-03-01T12:00:00+00:00", None)["lock_applies"] is False


def test_a_creation_date_from_the_future_is_refused() -> None:
    assert retention.claimed_creation_date("2026-03-01T12:04:00", NOW, "the source") == "2026-03-01T12:04:00+00:00"
    with pytest.raises(RemoteError, match="cannot come from the future"):
        retention.claimed_creation_date(NOW + retention.CLOCK_SKEW + timedelta(seconds=1), NOW, "the source")
    with pytest.raises(RemoteError, match="not an ISO 8601"):
        retention.claimed_creation_date("yesterday", NOW, "the source")


def test_lock_fields_and_what_protects_a_point() -> None:
    assert retention.lock_fields(None, NOW)["lock_state"] == "UNLOCKED"
    compliance = VaultLock(None, None, 3, NOW)
    assert retention.lock_fields(compliance, NOW)["lock_state"] == "COMPLIANCE_COOLING_OFF"
    assert retention.lock_fields(compliance, NOW + timedelta(days=3))["lock_state"] == "COMPLIANCE_IMMUTABLE"
    assert retention.governing_lock(compliance, lock_applies=False) is None
    shown = retention.retention_of(5, "2026-03-02T00:00:00+00:00", compliance, NOW)
    assert shown == {
        "delete_after_days": 5,
        "delete_at": "2026-03-02T00:00:00+00:00",
        "retention_ended": False,
        "locked_by": "compliance",
    }


@pytest.mark.parametrize(
    ("current", "new", "shorter"),
    [(None, 5, True), (10, 5, True), (5, 10, False), (5, None, False), (None, None, False)],
)
def test_what_shortens_a_retention(current: int | None, new: int | None, shorter: bool) -> None:
    assert retention.shortens(current, new) is shorter
