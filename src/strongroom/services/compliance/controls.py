"""One pure function per control: what it finds about one subject in a catalog snapshot, and why.

A subject is a resource (most controls) or a backup plan (BACKUP_PLAN_MIN_FREQUENCY_AND_MIN_RETENTION_CHECK,
as AWS evaluates backup plans). Point-based controls (encrypted, minimum retention, manual deletion disabled)
have nothing to say about a resource without a COMPLETED point, as AWS evaluates recovery points: they
return None, and no verdict is recorded. The reason is the evidence a person reads: it names the point, the
vault, the plan or the measurement the verdict rests on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from itertools import islice, pairwise

from strongroom.catalog.compliance_records import ComplianceStatus
from strongroom.errors import StrongroomError
from strongroom.model import LockMode, RecoveryPoint, Resource
from strongroom.plans.records import BackupPlan, BackupRule
from strongroom.plans.schedule import parse_schedule
from strongroom.plans.selection import selects
from strongroom.policy import controls as audit
from strongroom.policy.controls import Control
from strongroom.policy.document import AccessRequest, PolicyDocument, authorize
from strongroom.policy.lock import VaultLock
from strongroom.policy.principals import root_arn, user_arn
from strongroom.services.compliance.snapshot import CatalogSnapshot

COMPLIANT, NON_COMPLIANT = ComplianceStatus.COMPLIANT, ComplianceStatus.NON_COMPLIANT
DELETE_ACTION = "backup:DeleteRecoveryPoint"
PROBE_USER = "any-user"  # stands for every principal of the account that the policy does not name
FREQUENCY_HORIZON = timedelta(days=400)  # how far ahead a schedule's gaps are measured (a yearly rule shows)
MAX_FIRES = 5000


@dataclass(frozen=True)
class Verdict:
    status: ComplianceStatus
    reason: str


def _ok(reason: str) -> Verdict:
    return Verdict(COMPLIANT, reason)


def _not(reason: str) -> Verdict:
    return Verdict(NON_COMPLIANT, reason)


def _ago(now: datetime, moment: str | None) -> str:
    if not moment:
        return "never"
    seconds = max(0, int((now - datetime.fromisoformat(moment)).total_seconds()))
    return f"{seconds // 3600} h {seconds % 3600 // 60} min ago"


def _unit(unit: str, value: int) -> timedelta:
    return timedelta(hours=value) if unit == "hours" else timedelta(days=value)


def _span(unit: str, value: int) -> str:
    return f"{value} {unit[:-1] if value == 1 else unit}"


# Resources -------------------------------------------------------------------------------------------
def protected_by_plan(view: CatalogSnapshot, control: Control, resource: Resource) -> Verdict:
    plans = sorted(
        name for name, plan in view.plans.items() if plan.rules and selects(plan, resource.type, resource.tags)
    )
    if plans:
        return _ok(f"selected by backup plan {', '.join(plans)}")
    if any(plan.rules and not plan.enable and _would_select(plan, resource) for plan in view.plans.values()):
        return _not("only a disabled backup plan selects it (enable: false)")
    return _not("no enabled backup plan with a rule selects it (check its tags against the plans' selection_tag)")


def _would_select(plan: BackupPlan, resource: Resource) -> bool:
    return selects(replace(plan, enable=True), resource.type, resource.tags)


def point_min_retention(view: CatalogSnapshot, control: Control, resource: Resource) -> Verdict | None:
    points = view.completed_points(resource.id)
    if not points:
        return None
    required = control.number("requiredRetentionDays") or 0
    short = [p for p in points if p.delete_after_days is not None and p.delete_after_days < required]
    if short:
        first = short[0]
        return _not(
            f"{len(short)} of {len(points)} recovery points kept less than {required} days"
            f" (e.g. {first.id} in vault {first.vault_name}: {first.delete_after_days} days)"
        )
    return _ok(f"all {len(points)} recovery points kept at least {required} days")


def point_encrypted(view: CatalogSnapshot, control: Control, resource: Resource) -> Verdict | None:
    points = view.completed_points(resource.id)
    if not points:
        return None
    # Every chunk and manifest a Strongroom vault stores is AES-256-GCM under the vault's keys (vault-format.md);
    # a point outside a known vault of this account is not one this account can vouch for.
    strays = [p for p in points if p.vault_name not in view.vaults]
    if strays:
        return _not(f"recovery point {strays[0].id} is in vault {strays[0].vault_name}, unknown to this account")
    vaults = sorted({p.vault_name for p in points})
    return _ok(f"all {len(points)} recovery points encrypted (AES-256-GCM, keys of vault {', '.join(vaults)})")


def manual_deletion_disabled(view: CatalogSnapshot, control: Control, resource: Resource) -> Verdict | None:
    points = view.completed_points(resource.id)
    if not points:
        return None
    allowed = set(control.listed("principalArnList"))
    probes = [p for p in (root_arn(view.account_id), user_arn(view.account_id, PROBE_USER)) if p not in allowed]
    for vault_name in sorted({p.vault_name for p in points}):
        point = next(p for p in points if p.vault_name == vault_name)
        who = _may_delete(view, vault_name, point, probes)
        if who:
            return _not(
                f"vault {vault_name}: {who} may delete its recovery points (no Deny of {DELETE_ACTION} in the"
                " vault's access policy covers it, and it is not in principalArnList)"
            )
    vaults = ", ".join(sorted({p.vault_name for p in points}))
    return _ok(f"the access policy of vault {vaults} denies {DELETE_ACTION} to every principal not in principalArnList")


def _may_delete(view: CatalogSnapshot, vault_name: str, point: RecoveryPoint, probes: list[str]) -> str | None:
    raw = view.vaults[vault_name].access_policy
    document = PolicyDocument.parse(raw) if raw else None
    for principal in probes:
        request = AccessRequest(principal, DELETE_ACTION, point.arn)
        try:
            authorize(document, request, owner_account_id=view.account_id)
        except StrongroomError:
            continue
        return principal if not principal.endswith(f"/{PROBE_USER}") else f"a principal of account {view.account_id}"
    return None


def protected_by_vault_lock(view: CatalogSnapshot, control: Control, resource: Resource) -> Verdict:
    points = view.completed_points(resource.id)
    if not points:
        return _not("no COMPLETED recovery point")
    newest = points[-1]
    record = view.vaults.get(newest.vault_name)
    where = f"newest recovery point {newest.id} is in vault {newest.vault_name}"
    if record is None or record.lock is None:
        return _not(f"{where}, which has no vault lock")
    lock = VaultLock.from_record(record.lock)
    if lock.mode == LockMode.GOVERNANCE:
        return _not(
            f"{where}, locked in governance mode: principals the vault's policy allows can remove the lock or"
            " delete points; the control requires compliance mode"
        )
    if not lock.immutable(view.now):
        return _not(f"{where}, locked in compliance mode but still in its cooling-off period until {lock.lock_date}")
    if not newest.lock_applies:
        return _not(f"{where}, but it was stored before the vault was locked")
    low, high = control.number("minRetentionDays"), control.number("maxRetentionDays")
    if low is not None and (lock.min_retention_days or 0) < low:
        return _not(
            f"{where}, whose lock's min_retention_days ({lock.min_retention_days}) is under minRetentionDays ({low})"
        )
    if high is not None and (lock.max_retention_days is None or lock.max_retention_days > high):
        return _not(
            f"{where}, whose lock's max_retention_days ({lock.max_retention_days}) exceeds maxRetentionDays ({high})"
        )
    return _ok(f"{where}, locked in compliance mode ({lock.range_text()}), immutable since {lock.lock_date}")


def last_recovery_point(view: CatalogSnapshot, control: Control, resource: Resource) -> Verdict:
    unit, value = control.value("recoveryPointAgeUnit") or "days", control.number("recoveryPointAgeValue") or 1
    limit = _unit(unit, value)
    points = view.completed_points(resource.id)
    if not points:
        return _not("no COMPLETED recovery point")
    newest = points[-1]
    completed = datetime.fromisoformat(newest.completion_date or "")
    age = _ago(view.now, newest.completion_date)
    said = f"newest recovery point {newest.id} completed {newest.completion_date} ({age})"
    if view.now - completed > limit:
        return _not(f"no recovery point in the last {_span(unit, value)}: {said}")
    return _ok(f"{said}, within {_span(unit, value)}")


def protected_by_cross_account(view: CatalogSnapshot, control: Control, resource: Resource) -> Verdict:
    accounts = set(control.listed("crossAccountList"))
    copies = [
        (account, vault, job)
        for (rid, account, vault), job in view.copies.items()
        if rid == resource.id and account != view.account_id and (not accounts or account in accounts)
    ]
    if not copies:
        wanted = f" in account {', '.join(sorted(accounts))}" if accounts else ""
        return _not(f"no COMPLETED copy to a vault of another account{wanted}")
    account, vault, job = max(copies, key=lambda c: c[2].completion_date or "")
    return _ok(f"copied to vault {vault} of account {account} (newest copy completed {job.completion_date})")


def restore_time(view: CatalogSnapshot, control: Control, resource: Resource) -> Verdict:
    target = control.number("maxRestoreTime") or 0
    measured = view.rto.get(resource.id)
    if measured is None:
        return _not("never restored: no restore job, restore test or DR run measured its restore time")
    said = f"last restore ({measured.source.value}, ended {measured.ended_at}) took {measured.seconds:.1f} s"
    if measured.seconds > target * 60:
        return _not(f"{said}, over maxRestoreTime of {target} min")
    return _ok(f"{said}, within maxRestoreTime of {target} min")


# Backup plans ----------------------------------------------------------------------------------------
def plan_frequency_and_retention(view: CatalogSnapshot, control: Control, plan_name: str) -> Verdict:
    plan = view.plans[plan_name]
    unit, value = control.value("requiredFrequencyUnit") or "days", control.number("requiredFrequencyValue") or 1
    required_days = control.number("requiredRetentionDays") or 0
    wanted = _unit(unit, value)
    if not plan.enable:
        return _not("the plan is disabled (enable: false)")
    best: tuple[timedelta, BackupRule] | None = None
    for rule in plan.rules:
        if rule.lifecycle.delete_after is not None and rule.lifecycle.delete_after < required_days:
            continue
        gap = _longest_gap(rule, view.now)
        if gap is not None and gap <= wanted and (best is None or gap < best[0]):
            best = (gap, rule)
    if best is None:
        return _not(
            f"no rule backs up at least every {_span(unit, value)} and keeps points at least {required_days} days"
        )
    gap, rule = best
    kept = "forever" if rule.lifecycle.delete_after is None else f"{rule.lifecycle.delete_after} days"
    return _ok(f"rule {rule.name} ({rule.schedule}) backs up at least every {_hours(gap)} and keeps points {kept}")


def _hours(gap: timedelta) -> str:
    hours = gap.total_seconds() / 3600
    return f"{hours:g} h"


def _longest_gap(rule: BackupRule, now: datetime) -> timedelta | None:
    """The longest time between two fire times over the next FREQUENCY_HORIZON; None if it fires under twice."""
    return _gap(rule.schedule, rule.schedule_expression_timezone, now.date())


@lru_cache(maxsize=256)
def _gap(expression: str, timezone: str | None, day: date) -> timedelta | None:
    # Counted from the day's start, so one computation serves every evaluation of the day (the daemon ticks often).
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    try:
        fires = parse_schedule(expression, timezone).fire_times(start)
    except StrongroomError:
        return None
    times = [t for t in islice(fires, MAX_FIRES) if t <= start + FREQUENCY_HORIZON]
    if len(times) < 2:
        return None
    return max(later - earlier for earlier, later in pairwise(times))


ResourceCheck = Callable[[CatalogSnapshot, Control, Resource], Verdict | None]
RESOURCE_CONTROLS: dict[str, ResourceCheck] = {
    audit.PROTECTED_BY_PLAN: protected_by_plan,
    audit.POINT_MIN_RETENTION: point_min_retention,
    audit.POINT_ENCRYPTED: point_encrypted,
    audit.MANUAL_DELETION_DISABLED: manual_deletion_disabled,
    audit.PROTECTED_BY_VAULT_LOCK: protected_by_vault_lock,
    audit.LAST_RECOVERY_POINT: last_recovery_point,
    audit.PROTECTED_BY_CROSS_ACCOUNT: protected_by_cross_account,
    audit.RESTORE_TIME: restore_time,
}
PLAN_CONTROLS = {audit.PLAN_FREQUENCY_AND_RETENTION: plan_frequency_and_retention}
