"""The controls, pure: a hand-made catalog snapshot in, a verdict and its evidence out (docs/compliance.md)."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from strongroom.catalog.compliance_records import ComplianceStatus
from strongroom.model import (
    Job,
    JobState,
    JobType,
    LockMode,
    RecoveryPoint,
    RecoveryPointStatus,
    Resource,
    VaultLockRecord,
    VaultRecord,
)
from strongroom.plans.records import BackupPlan
from strongroom.policy import controls as audit
from strongroom.policy.controls import Control, Framework, Scope
from strongroom.services.compliance.evaluate import evaluate_control, evaluate_framework
from strongroom.services.compliance.snapshot import CatalogSnapshot
from strongroom.services.metrics import Measured, RtoSource, last_copies
from strongroom.services.reports.render import render

ACCOUNT, OTHER = "111111111111", "222222222222"
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
ROOT = f"arn:strongroom:iam::{ACCOUNT}:root"
COMPLIANT, NON_COMPLIANT = ComplianceStatus.COMPLIANT, ComplianceStatus.NON_COMPLIANT
DENY_DELETES_EXCEPT_ROOT = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Deny",
            "Principal": "*",
            "Action": ["backup:DeleteRecoveryPoint"],
            "Resource": "*",
            "Condition": {"ArnNotLike": {"aws:PrincipalArn": [ROOT]}},
        }
    ],
}


def vault(name: str, *, mode: LockMode | None = None, policy: dict[str, Any] | None = None, **lock: Any) -> VaultRecord:
    record = None
    if mode is not None:
        record = VaultLockRecord(
            mode,
            (NOW - timedelta(days=30)).isoformat(),
            changeable_for_days=lock.get("changeable_for_days"),
            min_retention_days=lock.get("min_retention_days"),
            max_retention_days=lock.get("max_retention_days"),
        )
    arn = f"arn:strongroom:backup:local:{ACCOUNT}:backup-vault:{name}"
    return VaultRecord(name, arn, "file:///x", "v-" + name, NOW.isoformat(), policy, record)


def point(resource: str, vault_name: str, age: timedelta, days: int | None = 35, locked: bool = True) -> RecoveryPoint:
    done = (NOW - age).isoformat()
    ident = f"{resource}-{vault_name}-{int(age.total_seconds())}"
    arn = f"arn:strongroom:backup:local:{ACCOUNT}:recovery-point:{ident}"
    return RecoveryPoint(
        ident,
        arn,
        vault_name,
        resource,
        "directory",
        RecoveryPointStatus.COMPLETED,
        done,
        done,
        delete_after_days=days,
        lock_applies=locked,
    )


def snapshot(**given: Any) -> CatalogSnapshot:
    jobs = tuple(given.get("jobs", ()))
    values: dict[str, Any] = {
        "now": NOW,
        "account_id": ACCOUNT,
        "region": "local",
        "resources": (Resource("app", "directory", {}, {"BackupSource": "True"}, NOW.isoformat()),),
        "vaults": {},
        "points": (),
        "jobs": jobs,
        "plans": {},
        "frameworks": {},
        "copies": last_copies(jobs),
        "rto": {},
    }
    values.update({k: v for k, v in given.items() if k != "jobs"})
    return CatalogSnapshot(**values)


def verdict(view: CatalogSnapshot, name: str, **parameters: str) -> tuple[ComplianceStatus, str] | None:
    found = evaluate_control(view, Control(name, parameters, Scope()))
    return (found[0].verdict.status, found[0].verdict.reason) if found else None


@pytest.mark.parametrize(
    ("lock", "status", "why"),
    [
        ({"mode": LockMode.GOVERNANCE}, NON_COMPLIANT, "locked in governance mode"),
        ({"mode": LockMode.COMPLIANCE, "changeable_for_days": 40}, NON_COMPLIANT, "still in its cooling-off period"),
        ({"mode": LockMode.COMPLIANCE, "changeable_for_days": 3}, COMPLIANT, "locked in compliance mode"),
        ({}, NON_COMPLIANT, "which has no vault lock"),
    ],
)
def test_vault_lock_control_requires_an_immutable_compliance_lock(
    lock: dict[str, Any], status: ComplianceStatus, why: str
) -> None:
    view = snapshot(vaults={"v": vault("v", **lock)}, points=(point("app", "v", timedelta(hours=2)),))
    found = verdict(view, audit.PROTECTED_BY_VAULT_LOCK)
    assert found is not None and found[0] == status and why in found[1], found


def test_vault_lock_bounds_and_points_stored_before_the_lock() -> None:
    locked = vault("v", mode=LockMode.COMPLIANCE, changeable_for_days=3, min_retention_days=7, max_retention_days=90)
    view = snapshot(vaults={"v": locked}, points=(point("app", "v", timedelta(hours=2)),))
    assert verdict(view, audit.PROTECTED_BY_VAULT_LOCK, minRetentionDays="7", maxRetentionDays="90")[0] == COMPLIANT  # type: ignore[index]
    status, reason = verdict(view, audit.PROTECTED_BY_VAULT_LOCK, minRetentionDays="30")  # type: ignore[misc]
    assert status == NON_COMPLIANT and "under minRetentionDays (30)" in reason
    before = snapshot(vaults={"v": locked}, points=(point("app", "v", timedelta(hours=2), locked=False),))
    assert "stored before the vault was locked" in verdict(before, audit.PROTECTED_BY_VAULT_LOCK)[1]  # type: ignore[index]


def test_last_recovery_point_is_a_dead_mans_switch() -> None:
    fresh = snapshot(vaults={"v": vault("v")}, points=(point("app", "v", timedelta(hours=23, minutes=59)),))
    stale = snapshot(vaults={"v": vault("v")}, points=(point("app", "v", timedelta(hours=24, minutes=1)),))
    assert verdict(fresh, audit.LAST_RECOVERY_POINT)[0] == COMPLIANT  # type: ignore[index]
    status, reason = verdict(stale, audit.LAST_RECOVERY_POINT)  # type: ignore[misc]
    assert status == NON_COMPLIANT and reason.startswith("no recovery point in the last 1 day: newest recovery point")
    assert verdict(fresh, audit.LAST_RECOVERY_POINT, recoveryPointAgeUnit="hours", recoveryPointAgeValue="6")[0] == (
        NON_COMPLIANT
    )
    none = snapshot()
    assert verdict(none, audit.LAST_RECOVERY_POINT) == (NON_COMPLIANT, "no COMPLETED recovery point")


def test_manual_deletion_control_follows_the_policy_evaluation() -> None:
    points = (point("app", "v", timedelta(hours=1)),)
    guarded = snapshot(vaults={"v": vault("v", policy=DENY_DELETES_EXCEPT_ROOT)}, points=points)
    assert verdict(guarded, audit.MANUAL_DELETION_DISABLED, principalArnList=ROOT)[0] == COMPLIANT  # type: ignore[index]
    status, reason = verdict(guarded, audit.MANUAL_DELETION_DISABLED)  # type: ignore[misc]
    assert status == NON_COMPLIANT and f"{ROOT} may delete" in reason  # root is exempted but not listed
    # A Deny that names one user leaves every other principal of the account free to delete.
    narrow = {
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": {"AWS": [f"arn:strongroom:iam::{ACCOUNT}:user/ops"]},
                "Action": "backup:DeleteRecoveryPoint",
                "Resource": "*",
            }
        ]
    }
    leaky = snapshot(vaults={"v": vault("v", policy=narrow)}, points=points)
    status, reason = verdict(leaky, audit.MANUAL_DELETION_DISABLED, principalArnList=ROOT)  # type: ignore[misc]
    assert status == NON_COMPLIANT and f"a principal of account {ACCOUNT} may delete" in reason
    no_policy = snapshot(vaults={"v": vault("v")}, points=points)
    assert verdict(no_policy, audit.MANUAL_DELETION_DISABLED, principalArnList=ROOT)[0] == NON_COMPLIANT  # type: ignore[index]
    assert verdict(snapshot(), audit.MANUAL_DELETION_DISABLED) is None  # no point: nothing to evaluate


def test_plan_frequency_and_retention() -> None:
    def plan(schedule: str, days: int | None, enable: bool = True) -> BackupPlan:
        rule = {"name": "r", "schedule": schedule, "target_vault_name": "v", "lifecycle": {"delete_after": days}}
        return BackupPlan.of({"selection_tag": "BackupSource", "enable": enable, "rules": [rule]})

    plans = {
        "twice-daily": plan("cron(0 7,19 * * ? *)", 60),
        "weekly": plan("cron(0 1 ? * SUN *)", 60),
        "short": plan("cron(0 7 * * ? *)", 14),
        "off": plan("cron(0 7 * * ? *)", 60, enable=False),
    }
    control = Control(audit.PLAN_FREQUENCY_AND_RETENTION, {"requiredRetentionDays": "30"}, Scope())
    found = {s.resource_id: s.verdict for s in evaluate_control(snapshot(plans=plans), control)}
    assert found["twice-daily"] == replace(found["twice-daily"], status=COMPLIANT)
    assert "backs up at least every 12 h and keeps points 60 days" in found["twice-daily"].reason
    assert {name: v.status for name, v in found.items()} == {
        "twice-daily": COMPLIANT,
        "weekly": NON_COMPLIANT,
        "short": NON_COMPLIANT,
        "off": NON_COMPLIANT,
    }
    hourly = Control(
        audit.PLAN_FREQUENCY_AND_RETENTION, {"requiredFrequencyUnit": "hours", "requiredFrequencyValue": "6"}
    )
    assert evaluate_control(snapshot(plans=plans), hourly)[-1].verdict.status == NON_COMPLIANT


def test_cross_account_restore_time_and_scope() -> None:
    copy = Job(
        "c1",
        JobType.COPY,
        JobState.COMPLETED,
        "app",
        "v",
        None,
        NOW.isoformat(),
        NOW.isoformat(),
        NOW.isoformat(),
        parameters={
            "direction": "push",
            "destination_backup_vault_arn": f"arn:strongroom:backup:local:{OTHER}:backup-vault:d",
        },
    )
    view = snapshot(jobs=(copy,), rto={"app": Measured("app", RtoSource.RESTORE_JOB, NOW.isoformat(), 90.0)})
    assert verdict(view, audit.PROTECTED_BY_CROSS_ACCOUNT)[0] == COMPLIANT  # type: ignore[index]
    assert verdict(view, audit.PROTECTED_BY_CROSS_ACCOUNT, crossAccountList="333333333333")[0] == NON_COMPLIANT  # type: ignore[index]
    assert verdict(view, audit.RESTORE_TIME, maxRestoreTime="2")[0] == COMPLIANT  # type: ignore[index]
    status, reason = verdict(view, audit.RESTORE_TIME, maxRestoreTime="1")  # type: ignore[misc]
    assert status == NON_COMPLIANT and "took 90.0 s, over maxRestoreTime of 1 min" in reason
    out_of_scope = Framework("f", "", (Control(audit.RESTORE_TIME, {}, Scope(tags=(("BackupSource", "False"),))),))
    assert evaluate_framework(view, out_of_scope) == []


def test_a_csv_cell_a_spreadsheet_would_run_is_defused() -> None:
    text = render("CSV", ("a", "b"), [{"a": '=HYPERLINK("http://evil")', "b": "-12.5"}]).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows == [{"a": '\'=HYPERLINK("http://evil")', "b": "-12.5"}]
