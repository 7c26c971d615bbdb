"""Vault locks: AWS Backup Vault Lock's modes, lock date, checks and retention range."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from strongroom.errors import ConfigError, RetentionError
from strongroom.policy.lock import VaultLock

T0 = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)


def lock(low: Any = None, high: Any = None, changeable: Any = None, created_at: Any = T0) -> VaultLock:
    return VaultLock(low, high, changeable, created_at)


def test_changeable_for_days_means_compliance_and_its_absence_governance() -> None:
    governance = lock(1, 60)
    assert governance.mode == "governance"
    assert governance.lock_date is None
    assert not governance.immutable(T0 + timedelta(days=10_000))
    assert governance.state(T0) == "GOVERNANCE"
    compliance = lock(1, 60, 3)
    assert compliance.mode == "compliance"
    assert compliance.lock_date == T0 + timedelta(days=3)


def test_a_compliance_lock_is_immutable_from_its_lock_date() -> None:
    compliance = lock(changeable=3)
    just_before = T0 + timedelta(days=3) - timedelta(seconds=1)
    assert not compliance.immutable(just_before)
    assert compliance.state(just_before) == "COMPLIANCE_COOLING_OFF"
    assert compliance.immutable(T0 + timedelta(days=3))
    assert compliance.state(T0 + timedelta(days=400)) == "COMPLIANCE_IMMUTABLE"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"low": 0}, "vault lock min_retention_days: must be a whole number of days from 1 to 36500, not 0"),
        ({"high": 36501}, "vault lock max_retention_days: must be a whole number of days from 1 to 36500, not 36501"),
        ({"changeable": 2}, "vault lock changeable_for_days: must be a whole number of days from 3 to 36500, not 2"),
        ({"changeable": 36501}, "vault lock changeable_for_days: must be a whole number of days from 3 to 36500"),
        ({"low": "7"}, "vault lock min_retention_days: must be a whole number of days from 1 to 36500, not '7'"),
        ({"high": True}, "vault lock max_retention_days: must be a whole number"),
        ({"low": 90, "high": 30}, "vault lock min_retention_days: 90 is more than max_retention_days (30)"),
        ({"created_at": datetime(2026, 1, 1)}, "vault lock created_at: must be a date and time with a time zone"),
    ],
)
def test_invalid_locks_name_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        lock(**fields)
    assert caught.value.message.startswith(message), caught.value.message


def test_the_extremes_are_valid() -> None:
    lock(1, 36500, 36500)
    lock(36500, 36500, 3)
    lock(7, 7)


@pytest.mark.parametrize(
    ("low", "high", "days", "reason", "hint"),
    [
        (
            7,
            30,
            3,
            "a retention of 3 days is shorter than the vault lock's minimum retention of 7 days",
            "Choose a retention of 7 to 30 days",
        ),
        (
            7,
            30,
            31,
            "a retention of 31 days is longer than the vault lock's maximum retention of 30 days",
            "Choose a retention of 7 to 30 days",
        ),
        (
            None,
            30,
            None,
            "a recovery point without retention (kept forever) breaks the vault lock's maximum retention of 30 days",
            "Choose a retention of at most 30 days",
        ),
        (
            7,
            None,
            6,
            "a retention of 6 days is shorter than the vault lock's minimum retention of 7 days",
            "Choose a retention of at least 7 days",
        ),
    ],
)
def test_retention_outside_the_range_is_refused_with_the_reason(
    low: int | None, high: int | None, days: int | None, reason: str, hint: str
) -> None:
    with pytest.raises(RetentionError) as caught:
        lock(low, high).check_retention(days)
    assert caught.value.message == reason
    assert caught.value.hint == hint
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("low", "high", "days"),
    [
        (7, 30, 7),
        (7, 30, 30),
        (7, None, None),
        (7, None, 36500),
        (None, None, None),
        (None, 30, 1),
    ],
)
def test_retention_inside_the_range_passes(low: int | None, high: int | None, days: int | None) -> None:
    lock(low, high, 3).check_retention(days)


def test_a_lock_round_trips_through_its_stored_shape() -> None:
    original = lock(1, 60, 3)
    stored = original.as_dict()
    assert stored == {
        "mode": "compliance",
        "min_retention_days": 1,
        "max_retention_days": 60,
        "changeable_for_days": 3,
        "created_at": "2026-11-25T07:00:00+00:00",
        "lock_date": "2026-11-28T07:00:00+00:00",
    }
    assert VaultLock.from_dict(stored) == original
    assert VaultLock.from_dict(lock().as_dict()) == lock()


def test_a_damaged_stored_lock_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="vault lock created_at: missing or not an ISO 8601 date and time"):
        VaultLock.from_dict({"min_retention_days": 1})
    with pytest.raises(ConfigError, match="vault lock max_retention_days"):
        VaultLock.from_dict({**lock().as_dict(), "max_retention_days": -1})
