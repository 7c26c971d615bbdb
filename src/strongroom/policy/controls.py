"""The Audit Manager controls Strongroom evaluates: their AWS names, input parameters and defaults; frameworks.

Pure: the loader checks a configuration's frameworks here, the apply stores :meth:`Framework.as_dict`, and
``services/compliance`` evaluates :class:`Framework` records. Parameter names and values are AWS's
(``requiredRetentionDays``, ``recoveryPointAgeUnit``...), kept as strings as AWS keeps them; a control
names the parameters it knows, and anything else is refused (docs/compliance.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from strongroom.errors import ConfigError
from strongroom.policy.principals import is_principal_arn

PROTECTED_BY_PLAN = "BACKUP_RESOURCES_PROTECTED_BY_BACKUP_PLAN"
PLAN_FREQUENCY_AND_RETENTION = "BACKUP_PLAN_MIN_FREQUENCY_AND_MIN_RETENTION_CHECK"
POINT_MIN_RETENTION = "BACKUP_RECOVERY_POINT_MINIMUM_RETENTION_CHECK"
POINT_ENCRYPTED = "BACKUP_RECOVERY_POINT_ENCRYPTED"
MANUAL_DELETION_DISABLED = "BACKUP_RECOVERY_POINT_MANUAL_DELETION_DISABLED"
PROTECTED_BY_VAULT_LOCK = "BACKUP_RESOURCES_PROTECTED_BY_BACKUP_VAULT_LOCK"
LAST_RECOVERY_POINT = "BACKUP_LAST_RECOVERY_POINT_CREATED"
PROTECTED_BY_CROSS_ACCOUNT = "BACKUP_RESOURCES_PROTECTED_BY_CROSS_ACCOUNT"
RESTORE_TIME = "RESTORE_TIME_FOR_RESOURCES_MEET_TARGET"

UNITS = ("hours", "days")
ACCOUNT_ID = re.compile(r"^\d{12}$")
Check = Callable[[str], str | None]  # a value -> why it is wrong, or None


def _whole(low: int, high: int) -> Check:
    def check(value: str) -> str | None:
        if not value.isdigit() or not low <= int(value) <= high:
            return f"must be a whole number from {low} to {high}"
        return None

    return check


def _unit(value: str) -> str | None:
    return None if value in UNITS else f"must be one of {', '.join(UNITS)}"


def _listed(valid: Callable[[str], bool], what: str) -> Check:
    def check(value: str) -> str | None:
        bad = [item for item in _split(value) if not valid(item)]
        return f"'{bad[0]}' is not {what}" if bad else None

    return check


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


@dataclass(frozen=True)
class Parameter:
    check: Check
    default: str | None = None  # None: optional, no default


DAYS = _whole(1, 36500)
PARAMETERS: dict[str, dict[str, Parameter]] = {
    PROTECTED_BY_PLAN: {},
    PLAN_FREQUENCY_AND_RETENTION: {
        "requiredFrequencyUnit": Parameter(_unit, "days"),
        "requiredFrequencyValue": Parameter(_whole(1, 24 * 31), "1"),
        "requiredRetentionDays": Parameter(DAYS, "35"),
    },
    POINT_MIN_RETENTION: {"requiredRetentionDays": Parameter(DAYS, "35")},
    POINT_ENCRYPTED: {},
    MANUAL_DELETION_DISABLED: {
        "principalArnList": Parameter(_listed(is_principal_arn, "a principal ARN (arn:strongroom:iam::ACCOUNT:...)"))
    },
    PROTECTED_BY_VAULT_LOCK: {"minRetentionDays": Parameter(DAYS), "maxRetentionDays": Parameter(DAYS)},
    LAST_RECOVERY_POINT: {
        "recoveryPointAgeUnit": Parameter(_unit, "days"),
        "recoveryPointAgeValue": Parameter(_whole(1, 24 * 366), "1"),
    },
    PROTECTED_BY_CROSS_ACCOUNT: {
        "crossAccountList": Parameter(_listed(lambda v: bool(ACCOUNT_ID.match(v)), "a 12-digit account id"))
    },
    RESTORE_TIME: {"maxRestoreTime": Parameter(_whole(1, 60 * 24 * 366), "720")},  # minutes
}
CONTROL_NAMES = tuple(PARAMETERS)
# The controls evaluated per backup plan (AWS evaluates AWS::Backup::BackupPlan); the others per resource.
PLAN_CONTROLS = frozenset({PLAN_FREQUENCY_AND_RETENTION})


@dataclass(frozen=True)
class Scope:
    """AWS's ControlScope: ids, types and tags, each a further limit when given (tags all ANDed)."""

    resource_ids: tuple[str, ...] = ()
    resource_types: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()

    def covers(self, resource_id: str, resource_type: str, tags: dict[str, str]) -> bool:
        return (
            (not self.resource_ids or resource_id in self.resource_ids)
            and (not self.resource_types or resource_type in self.resource_types)
            and all(tags.get(key) == value for key, value in self.tags)
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "compliance_resource_ids": list(self.resource_ids),
            "compliance_resource_types": list(self.resource_types),
            "tags": dict(self.tags),
        }

    @classmethod
    def of(cls, data: dict[str, Any]) -> Scope:
        return cls(
            tuple(data.get("compliance_resource_ids") or ()),
            tuple(data.get("compliance_resource_types") or ()),
            tuple(sorted((data.get("tags") or {}).items())),
        )


@dataclass(frozen=True)
class Control:
    name: str
    parameters: dict[str, str] = field(default_factory=dict)  # as given; defaults come from :meth:`value`
    scope: Scope = Scope()

    def value(self, name: str) -> str | None:
        given = self.parameters.get(name)
        return given if given is not None else PARAMETERS[self.name][name].default

    def number(self, name: str) -> int | None:
        value = self.value(name)
        return int(value) if value is not None else None

    def listed(self, name: str) -> list[str]:
        value = self.value(name)
        return _split(value) if value else []

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "input_parameters": dict(self.parameters), "scope": self.scope.as_dict()}

    @classmethod
    def of(cls, data: dict[str, Any]) -> Control:
        return cls(data["name"], dict(data.get("input_parameters") or {}), Scope.of(data.get("scope") or {}))


@dataclass(frozen=True)
class Framework:
    name: str
    description: str
    controls: tuple[Control, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"description": self.description, "controls": [c.as_dict() for c in self.controls]}

    @classmethod
    def of(cls, name: str, data: dict[str, Any]) -> Framework:
        return cls(name, data.get("description") or "", tuple(Control.of(c) for c in data.get("controls") or []))


def check_control(name: str, parameters: dict[str, str]) -> list[str]:
    """Why this control cannot be evaluated as given (unknown name, unknown or invalid parameters); [] if it can."""
    if name not in PARAMETERS:
        return [f"unknown control '{name}'; known: {', '.join(CONTROL_NAMES)}"]
    known = PARAMETERS[name]
    problems = []
    for key, value in parameters.items():
        if key not in known:
            allowed = ", ".join(known) or "none"
            problems.append(f"{name} has no input parameter '{key}' (its parameters: {allowed})")
            continue
        why = known[key].check(value)
        if why:
            problems.append(f"{name} input parameter {key} = '{value}' {why}")
    return problems


def checked_control(name: str, parameters: dict[str, str], scope: Scope) -> Control:
    problems = check_control(name, parameters)
    if problems:
        raise ConfigError(problems[0])
    return Control(name, parameters, scope)
