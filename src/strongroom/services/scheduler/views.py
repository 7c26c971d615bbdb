"""What ``strongroom plans`` shows: the applied plans with their next runs, the daemon's lease, the runs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from strongroom import model
from strongroom.errors import NotFoundError
from strongroom.model import iso
from strongroom.plans.firing import rule_snapshot
from strongroom.plans.records import BackupPlan, BackupRule, ScheduleRun
from strongroom.plans.schedule import parse_schedule
from strongroom.plans.selection import selects
from strongroom.services.account import SETTING_BACKUP_PLANS, SETTING_DESTINATION, Account

LEASE_NAME = "scheduler"


def applied_plans(account: Account) -> dict[str, BackupPlan]:
    """The plans the last apply stored, by name."""
    stored = account.catalog.get_setting(SETTING_BACKUP_PLANS, {}) or {}
    return {name: BackupPlan.of(plan) for name, plan in stored.items()}


def describe_plans(account: Account, now: datetime | None = None) -> dict[str, Any]:
    moment = now or model.now()
    plans = [describe_plan(account, name, moment) for name in sorted(applied_plans(account))]
    return {"backup_plans": plans, "scheduler": scheduler_status(account, moment)}


def describe_plan(account: Account, name: str, now: datetime | None = None) -> dict[str, Any]:
    plans = applied_plans(account)
    if name not in plans:
        raise NotFoundError(
            f"no backup plan named '{name}' is applied", hint="List the plans with 'strongroom plans list'"
        )
    plan, moment = plans[name], now or model.now()
    destination = account.catalog.get_setting(SETTING_DESTINATION)
    cursors = account.catalog.scheduler_cursors(name)
    rules = [_describe_rule(rule, destination, moment, cursors.get((name, rule.name))) for rule in plan.rules]
    upcoming = [rule["next_run"] for rule in rules if rule["next_run"]] if plan.enable else []
    return {
        "backup_plan_name": name,
        "enable": plan.enable,
        "selection": plan.selection_view(),
        "selected_resources": [r.id for r in account.catalog.list_resources() if selects(plan, r.type, r.tags)],
        "next_run": min(upcoming) if upcoming else None,
        "rules": rules,
    }


def _describe_rule(rule: BackupRule, destination: str | None, now: datetime, cursor: str | None) -> dict[str, Any]:
    snapshot = rule_snapshot(rule, destination)
    schedule = parse_schedule(rule.schedule, rule.schedule_expression_timezone)
    upcoming = next(iter(schedule.fire_times(now)), None)
    return {
        "rule_name": rule.name,
        "schedule_expression": schedule.expression,
        "schedule_expression_timezone": schedule.timezone,
        "portable": schedule.portable,
        "target_backup_vault_name": snapshot.target_vault_name,
        "start_window_minutes": rule.start_window,
        "completion_window_minutes": rule.completion_window,
        "lifecycle": {
            "delete_after_days": snapshot.delete_after_days,
            "move_to_cold_storage_after_days": rule.lifecycle.cold_storage_after,
        },
        "copy_actions": [
            {
                "destination_backup_vault_arn": c.destination_vault_arn,
                "lifecycle": {"delete_after_days": c.delete_after},
            }
            for c in snapshot.copies
        ],
        "recovery_point_tags": dict(rule.recovery_point_tags),
        "enable_continuous_backup": rule.enable_continuous_backup,
        "next_run": iso(upcoming),
        "considered_until": cursor,
    }


def scheduler_status(account: Account, now: datetime | None = None) -> dict[str, Any]:
    lease = account.catalog.get_lease(LEASE_NAME)
    live = lease is not None and datetime.fromisoformat(lease.expires_at) > (now or model.now())
    return {
        "lease_holder": lease.holder if live and lease else None,
        "lease_expires_at": lease.expires_at if live and lease else None,
    }


def list_runs(
    account: Account, *, plan_name: str | None = None, states: Sequence[str] | None = None, limit: int | None = 50
) -> list[ScheduleRun]:
    """The newest schedule runs first."""
    return account.catalog.list_schedule_runs(states=states, plan_name=plan_name, limit=limit, newest_first=True)
