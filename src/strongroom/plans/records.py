"""Typed records of backup plans and their schedule runs: what the loader stores, the scheduler fires and the
catalog keeps.

A ``BackupPlan`` is stored as the blueprint-shaped JSON of config/schema.py ``BackupPlanConfig`` (the
catalog setting ``backup_plans``); ``BackupPlan.of`` reads it (missing fields take the schema's
defaults) and ``as_dict`` writes it back unchanged. A ``ScheduleRun`` is a row of ``schedule_runs``; its
``details`` column holds a ``RunDetails``: the ``RuleSnapshot`` the run fired with, its last message and
jobs and, once the backup completed, one ``CopyAttempt`` per copy action. ``as_dict`` is the ``--json``
shape (docs/cli-json.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

DEFAULT_START_WINDOW = 60
DEFAULT_COMPLETION_WINDOW = 10080


class RunState(StrEnum):
    CREATED = "CREATED"  # waiting for its job to start (or for its next attempt) within the start window
    RUNNING = "RUNNING"  # its backup job runs
    COPYING = "COPYING"  # the backup completed; the rule's copy actions run
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"  # every attempt failed
    EXPIRED = "EXPIRED"  # not started within the start window
    ABORTED = "ABORTED"  # still running when its completion window ended, or stopped with the daemon
    MISSED = "MISSED"  # no scheduler ran in its start window, or a later occurrence of the rule ran instead
    SKIPPED = "SKIPPED"  # another rule of the plan, keeping its backup longer, fired for it at the same instant


ACTIVE_RUN_STATES = (RunState.CREATED, RunState.RUNNING, RunState.COPYING)


class CopyState(StrEnum):
    CREATED = "CREATED"  # waiting for its job to start (or for its next attempt)
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    ABORTED = "ABORTED"

    @property
    def final(self) -> bool:
        return self in (CopyState.COMPLETED, CopyState.FAILED, CopyState.ABORTED)


# Plans ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Lifecycle:
    delete_after: int | None = None  # days
    cold_storage_after: int | None = None  # days


@dataclass(frozen=True)
class CopyAction:
    """A copy of each new recovery point; ``destination_vault_arn`` None: the account's destination vault
    (the blueprint's single ``copy_action``)."""

    destination_vault_arn: str | None
    delete_after: int | None = None  # days


@dataclass(frozen=True)
class BackupRule:
    name: str
    schedule: str
    target_vault_name: str
    schedule_expression_timezone: str | None = None
    start_window: int = DEFAULT_START_WINDOW  # minutes
    completion_window: int = DEFAULT_COMPLETION_WINDOW  # minutes
    lifecycle: Lifecycle = Lifecycle()
    copy_actions: tuple[CopyAction, ...] = ()  # the destination copy (if any) first
    enable_continuous_backup: bool = False
    recovery_point_tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, data: dict[str, Any]) -> BackupRule:
        lifecycle = data.get("lifecycle") or {}
        single = data.get("copy_action")
        copies = [] if single is None else [CopyAction(None, single.get("delete_after"))]
        copies += [
            CopyAction(c["destination_vault_arn"], c.get("delete_after")) for c in data.get("copy_actions") or []
        ]
        return cls(
            name=data["name"],
            schedule=data["schedule"],
            target_vault_name=data["target_vault_name"],
            schedule_expression_timezone=data.get("schedule_expression_timezone"),
            start_window=data.get("start_window", DEFAULT_START_WINDOW),
            completion_window=data.get("completion_window", DEFAULT_COMPLETION_WINDOW),
            lifecycle=Lifecycle(lifecycle.get("delete_after"), lifecycle.get("cold_storage_after")),
            copy_actions=tuple(copies),
            enable_continuous_backup=data.get("enable_continuous_backup", False),
            recovery_point_tags=dict(data.get("recovery_point_tags") or {}),
        )

    def as_dict(self) -> dict[str, Any]:
        """The stored JSON: config/schema.py ``RuleConfig`` dumped, ``target_vault_name`` resolved."""
        single = next((c for c in self.copy_actions if c.destination_vault_arn is None), None)
        return {
            "name": self.name,
            "schedule": self.schedule,
            "schedule_expression_timezone": self.schedule_expression_timezone,
            "target_vault_name": self.target_vault_name,
            "start_window": self.start_window,
            "completion_window": self.completion_window,
            "lifecycle": {
                "delete_after": self.lifecycle.delete_after,
                "cold_storage_after": self.lifecycle.cold_storage_after,
            },
            "copy_action": None if single is None else {"delete_after": single.delete_after},
            "copy_actions": [
                {"destination_vault_arn": c.destination_vault_arn, "delete_after": c.delete_after}
                for c in self.copy_actions
                if c.destination_vault_arn is not None
            ],
            "enable_continuous_backup": self.enable_continuous_backup,
            "recovery_point_tags": dict(self.recovery_point_tags),
        }


@dataclass(frozen=True)
class BackupPlan:
    selection_tag: str | None
    enable: bool = True
    selection_tag_value: str = "True"
    selection_tags: tuple[tuple[str, str], ...] = ()  # (key, value), all required
    compliance_resource_types: tuple[str, ...] = ()
    rules: tuple[BackupRule, ...] = ()

    @classmethod
    def of(cls, data: dict[str, Any]) -> BackupPlan:
        value = data.get("selection_tag_value")
        return cls(
            selection_tag=data.get("selection_tag"),
            enable=data.get("enable", True),
            selection_tag_value="True" if value is None else value,
            selection_tags=tuple((t["key"], t["value"]) for t in data.get("selection_tags") or []),
            compliance_resource_types=tuple(data.get("compliance_resource_types") or ()),
            rules=tuple(BackupRule.of(rule) for rule in data.get("rules") or []),
        )

    def as_dict(self) -> dict[str, Any]:
        """The stored JSON: config/schema.py ``BackupPlanConfig`` dumped, with the rules' ``as_dict``."""
        return {
            "enable": self.enable,
            "selection_tag": self.selection_tag,
            "selection_tag_value": self.selection_tag_value,
            "selection_tags": [{"key": key, "value": value} for key, value in self.selection_tags],
            "compliance_resource_types": list(self.compliance_resource_types),
            "rules": [rule.as_dict() for rule in self.rules],
        }

    def selection_view(self) -> dict[str, Any]:
        """The selection fields as ``plans describe`` shows them."""
        stored = self.as_dict()
        return {
            key: stored[key]
            for key in ("selection_tag", "selection_tag_value", "selection_tags", "compliance_resource_types")
        }


# Runs -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RuleSnapshot:
    """What a run needs from its rule, as the rule said when it fired (a later apply does not change it);
    every copy action's destination resolved."""

    target_vault_name: str | None
    delete_after_days: int | None
    start_window: int | None
    completion_window: int | None
    copies: tuple[CopyAction, ...] = ()
    recovery_point_tags: dict[str, str] = field(default_factory=dict)
    enable_continuous_backup: bool = False  # postgres-cluster: keep the continuous recovery point (docs/pitr.md)

    @classmethod
    def of(cls, data: dict[str, Any]) -> RuleSnapshot:
        return cls(
            data.get("target_vault_name"),
            data.get("delete_after_days"),
            data.get("start_window"),
            data.get("completion_window"),
            tuple(CopyAction(c["destination_vault_arn"], c.get("delete_after_days")) for c in data.get("copies") or []),
            dict(data.get("recovery_point_tags") or {}),
            bool(data.get("enable_continuous_backup")),
        )

    def as_dict(self) -> dict[str, Any]:
        continuous = {"enable_continuous_backup": True} if self.enable_continuous_backup else {}
        return {
            **continuous,
            "target_vault_name": self.target_vault_name,
            "delete_after_days": self.delete_after_days,
            "start_window": self.start_window,
            "completion_window": self.completion_window,
            "copies": [
                {"destination_vault_arn": c.destination_vault_arn, "delete_after_days": c.delete_after}
                for c in self.copies
            ],
            "recovery_point_tags": dict(self.recovery_point_tags),
        }


@dataclass
class CopyAttempt:
    """One copy action of a run whose backup completed; updated in place by the run's copy state machine."""

    destination_vault_arn: str | None
    delete_after_days: int | None
    state: CopyState = CopyState.CREATED
    job_id: str | None = None
    attempts: int = 0
    next_attempt_at: str | None = None
    message: str | None = None
    pid: int | None = None
    destination_recovery_point_arn: str | None = None

    @classmethod
    def of(cls, data: dict[str, Any]) -> CopyAttempt:
        return cls(
            data["destination_vault_arn"],
            data.get("delete_after_days"),
            CopyState(data["state"]),
            data.get("job_id"),
            data.get("attempts", 0),
            data.get("next_attempt_at"),
            data.get("message"),
            data.get("pid"),
            data.get("destination_recovery_point_arn"),
        )

    def as_dict(self) -> dict[str, Any]:
        """The stored and shown shape: ``pid`` once a job was created, the copy's point once it completed."""
        shown: dict[str, Any] = {
            "destination_vault_arn": self.destination_vault_arn,
            "delete_after_days": self.delete_after_days,
            "state": self.state.value,
            "job_id": self.job_id,
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at,
            "message": self.message,
        }
        if self.job_id is not None:
            shown["pid"] = self.pid
        if self.state == CopyState.COMPLETED:
            shown["destination_recovery_point_arn"] = self.destination_recovery_point_arn
        return shown


RunKey = tuple[str, str, str, str]  # (plan, rule, occurrence, resource)


@dataclass(frozen=True)
class RunDetails:
    """What a run keeps beside its columns (the JSON ``details`` column): the rule as it fired, the last
    message, the backup jobs it started, the running job's pid, the backup's point and the copy actions."""

    rule: RuleSnapshot | None = None
    message: str | None = None
    jobs: tuple[str, ...] = ()  # every backup job of the run, one per attempt
    pid: int | None = None  # of the running backup job's worker, when it runs in its own process
    recovery_point_arn: str | None = None  # once the backup completed
    copies: tuple[CopyAttempt, ...] = ()
    covered_by_rule: str | None = None  # SKIPPED: the rule whose backup of the same moment is kept longer

    @classmethod
    def of(cls, data: dict[str, Any]) -> RunDetails:
        return cls(
            rule=RuleSnapshot.of(data["rule"]) if data.get("rule") else None,
            message=data.get("message"),
            jobs=tuple(data.get("jobs") or ()),
            pid=data.get("pid"),
            recovery_point_arn=data.get("recovery_point_arn"),
            copies=tuple(CopyAttempt.of(copy) for copy in data.get("copies") or ()),
            covered_by_rule=data.get("covered_by_rule"),
        )

    def as_dict(self) -> dict[str, Any]:
        """The stored shape: the fields that are set (``copies`` once the backup completed, even empty)."""
        stored: dict[str, Any] = {
            "rule": self.rule.as_dict() if self.rule else None,
            "message": self.message,
            "jobs": list(self.jobs),
            "pid": self.pid,
            "recovery_point_arn": self.recovery_point_arn,
            "copies": [copy.as_dict() for copy in self.copies],
            "covered_by_rule": self.covered_by_rule,
        }
        return {key: value for key, value in stored.items() if value is not None and value != []}


@dataclass
class ScheduleRun:
    """One occurrence of a rule for one resource (a row of ``schedule_runs``); the scheduler mirrors in it
    what it wrote to the catalog (see ``services/scheduler/runs.py``)."""

    plan_name: str
    rule_name: str
    occurrence: str
    resource_id: str
    state: RunState
    job_id: str | None
    attempts: int
    next_attempt_at: str | None
    start_window_ends: str
    completion_window_ends: str
    details: RunDetails
    created_at: str

    @classmethod
    def of(cls, row: dict[str, Any]) -> ScheduleRun:
        """The run from its stored columns (``details`` as the JSON object it is stored as)."""
        return cls(**{**row, "state": RunState(row["state"]), "details": RunDetails.of(row["details"])})

    @property
    def key(self) -> RunKey:
        return self.plan_name, self.rule_name, self.occurrence, self.resource_id

    @property
    def rule(self) -> RuleSnapshot:
        return self.details.rule or RuleSnapshot.of({})

    @property
    def copies(self) -> list[CopyAttempt]:
        """The copy actions, each a fresh object the copy state machine may change before it saves them."""
        return [replace(copy) for copy in self.details.copies]

    def columns(self) -> dict[str, Any]:
        """The row as the catalog stores it."""
        return {
            "plan_name": self.plan_name,
            "rule_name": self.rule_name,
            "occurrence": self.occurrence,
            "resource_id": self.resource_id,
            "state": self.state.value,
            "job_id": self.job_id,
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at,
            "start_window_ends": self.start_window_ends,
            "completion_window_ends": self.completion_window_ends,
            "details": self.details.as_dict(),
            "created_at": self.created_at,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "backup_plan_name": self.plan_name,
            "rule_name": self.rule_name,
            "scheduled_at": self.occurrence,
            "resource_id": self.resource_id,
            "state": self.state.value,
            "backup_job_id": self.job_id,
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at,
            "start_window_ends": self.start_window_ends,
            "completion_window_ends": self.completion_window_ends,
            "recovery_point_arn": self.details.recovery_point_arn,
            "status_message": self.details.message,
            "copy_jobs": [copy.as_dict() for copy in self.details.copies],
            "creation_date": self.created_at,
        }


@dataclass(frozen=True)
class Lease:
    """A named lease in the catalog (the scheduler's: one daemon per account acts)."""

    name: str
    holder: str
    expires_at: str
