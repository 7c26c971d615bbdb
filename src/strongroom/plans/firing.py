"""Firing rules, pure: a rule's occurrences since its cursor become schedule runs (no catalog, no clock).

For each rule, the occurrences in ``(since, now]`` are taken; the newest runs if its start window is still
open, every other one is MISSED (at most ``MISSED_KEPT`` of them are recorded, older ones only counted).
When two rules of a plan fire at the same instant, the one keeping its backup longest runs and the others
are SKIPPED for it. Each firing becomes one run per selected resource, carrying a ``RuleSnapshot`` so a
later apply does not change what an occurrence does. docs/scheduler.md tells the whole story.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from strongroom.plans.records import BackupRule, CopyAction, RuleSnapshot, RunDetails, RunState, ScheduleRun
from strongroom.plans.schedule import Schedule

MISSED_KEPT = 100  # missed occurrences recorded per rule and tick; older ones are only counted


@dataclass(frozen=True)
class Firing:
    rule: BackupRule
    occurrence: datetime
    missed: str | None = None  # why it does not run


@dataclass(frozen=True)
class Firings:
    firings: list[Firing]
    not_recorded: int  # missed occurrences too old to be recorded


def rule_firings(rule: BackupRule, schedule: Schedule, since: datetime, now: datetime) -> Firings:
    """The firings of ``rule`` for its occurrences after ``since`` up to ``now``."""
    recent: deque[datetime] = deque(maxlen=MISSED_KEPT + 1)
    total = 0
    for moment in schedule.fire_times(since):
        if moment > now:
            break
        recent.append(moment)
        total += 1
    return Firings(classify(rule, list(recent), now), total - len(recent))


def classify(rule: BackupRule, occurrences: list[datetime], now: datetime) -> list[Firing]:
    """The newest occurrence runs if its start window is still open; every other one is missed."""
    if not occurrences:
        return []
    *older, newest = occurrences
    firings = [
        Firing(rule, moment, f"a later occurrence ({newest.isoformat()}) was due when the scheduler ran")
        for moment in older
    ]
    window_end = newest + timedelta(minutes=rule.start_window)
    missed = None if now < window_end else f"no scheduler ran before its start window ended at {window_end.isoformat()}"
    return [*firings, Firing(rule, newest, missed)]


def new_runs(
    plan_name: str, firings: list[Firing], resources: list[str], now: datetime, destination: str | None
) -> list[ScheduleRun]:
    """One run per firing and selected resource: CREATED, MISSED, or SKIPPED for a rule keeping longer."""
    winners: dict[datetime, BackupRule] = {}
    for firing in firings:
        best = winners.get(firing.occurrence)
        if firing.missed is None and (best is None or retention(firing.rule) > retention(best)):
            winners[firing.occurrence] = firing.rule
    return [
        _new_run(plan_name, firing, resource_id, winners.get(firing.occurrence), now, destination)
        for firing in firings
        for resource_id in resources
    ]


def _new_run(
    plan_name: str,
    firing: Firing,
    resource_id: str,
    winner: BackupRule | None,
    now: datetime,
    destination: str | None,
) -> ScheduleRun:
    rule, moment = firing.rule, firing.occurrence
    details = RunDetails(rule=rule_snapshot(rule, destination))
    if firing.missed is not None:
        state, details = RunState.MISSED, replace(details, message=f"missed: {firing.missed}")
    elif winner is not None and winner.name != rule.name:
        state = RunState.SKIPPED
        details = replace(
            details,
            message=f"rule {winner.name} of the plan fired for this resource at the same time"
            " and keeps its backup longer",
            covered_by_rule=winner.name,
        )
    else:
        state = RunState.CREATED
    return ScheduleRun(
        plan_name=plan_name,
        rule_name=rule.name,
        occurrence=moment.isoformat(),
        resource_id=resource_id,
        state=state,
        job_id=None,
        attempts=0,
        next_attempt_at=None,
        start_window_ends=(moment + timedelta(minutes=rule.start_window)).isoformat(),
        completion_window_ends=(moment + timedelta(minutes=rule.completion_window)).isoformat(),
        details=details,
        created_at=now.isoformat(),
    )


def rule_snapshot(rule: BackupRule, destination: str | None) -> RuleSnapshot:
    """What a run needs from its rule; the blueprint's single copy action goes to ``destination``."""
    copies = tuple(
        CopyAction(copy.destination_vault_arn or destination, copy.delete_after) for copy in rule.copy_actions
    )
    return RuleSnapshot(
        rule.target_vault_name,
        rule.lifecycle.delete_after,
        rule.start_window,
        rule.completion_window,
        copies,
        dict(rule.recovery_point_tags),
        rule.enable_continuous_backup,
    )


def retention(rule: BackupRule) -> float:
    """How long the rule keeps its backups (days; infinite without a lifecycle)."""
    days = rule.lifecycle.delete_after
    return math.inf if days is None else float(days)
