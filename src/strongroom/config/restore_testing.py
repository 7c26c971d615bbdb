"""The ``restore_testing_plans`` section of an account configuration (docs/restore-testing.md).

AWS Backup's RestoreTestingPlan (``schedule_expression``, ``schedule_expression_timezone``,
``start_window_hours``, ``recovery_point_selection``) with its RestoreTestingSelections under ``selections``
(``protected_resource_type``, ``protected_resource_arns``, ``protected_resource_conditions``,
``restore_metadata_overrides``, ``validation_window_hours``), plus what Strongroom validates a restored copy
with (``validation``). A selection may name a backup plan (``backup_plan``), as the NHS blueprint builds one
selection per ``backup_plan_config``: it then selects what that plan selects and takes the plan's
``restore_testing_overrides`` and ``validation_window_hours``.

This module is imported by ``schema.py`` (the models) and ``loader.py`` (:func:`check_plans`); it imports
neither, so it keeps its own small validators.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from strongroom.errors import ConfigError
from strongroom.plans.schedule import load_timezone, parse_schedule

ALGORITHMS = ("LATEST_WITHIN_WINDOW", "RANDOM_WITHIN_WINDOW")
RESOURCE_TAG_PREFIX = "aws:ResourceTag/"
MAX_WINDOW_DAYS = 365
MAX_HOURS = 168
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,50}$")

# restore_metadata_overrides / restore_testing_overrides keys each resource type takes, and their value kind.
OVERRIDES: dict[str, dict[str, type]] = {
    "postgres-cluster": {"port": int, "target": str, "trust_restored_config": bool},
    "postgres": {
        "target": str,
        "jobs": int,
        "no_owners": bool,
        "no_privileges": bool,
        "create_roles": bool,
        "role_map": str,
        "encoding": str,
        "locale": str,
    },
    "directory": {"target": str, "preserve_special": bool},
    "sqlite": {"target": str},
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _checked(check: Callable[[str], object]) -> AfterValidator:
    def run(value: str) -> str:
        try:
            check(value)
        except ConfigError as exc:
            raise ValueError(exc.message) from None
        return value

    return AfterValidator(run)


def _name(value: str) -> str:
    if not NAME.match(value):
        raise ValueError(f"'{value}' is not a valid name (1-50 letters, digits, ., _ and -)")
    return value


Name = Annotated[str, AfterValidator(_name)]
ScheduleExpression = Annotated[str, _checked(parse_schedule)]
TimezoneName = Annotated[str, _checked(load_timezone)]
Hours = Annotated[int, Field(ge=1, le=MAX_HOURS)]


class RecoveryPointSelection(_Strict):
    """AWS's RestoreTestingRecoveryPointSelection."""

    algorithm: Literal["LATEST_WITHIN_WINDOW", "RANDOM_WITHIN_WINDOW"] = "LATEST_WITHIN_WINDOW"
    # "*" (every vault of this account), vault names, or backup vault ARNs (this account's or another's:
    # a destination vault's points are copied back before the test, as DR does).
    include_vaults: Annotated[list[str], Field(min_length=1)]
    exclude_vaults: list[str] = []
    recovery_point_types: Annotated[list[Literal["SNAPSHOT", "CONTINUOUS"]], Field(min_length=1)] = ["SNAPSHOT"]
    selection_window_days: Annotated[int, Field(ge=1, le=MAX_WINDOW_DAYS)] = 30


class TagCondition(_Strict):
    key: str  # aws:ResourceTag/NAME, as the blueprint writes it
    value: str

    @property
    def tag(self) -> str:
        return self.key.removeprefix(RESOURCE_TAG_PREFIX)


class ResourceConditions(_Strict):
    """AWS's ProtectedResourceConditions: every condition must hold."""

    string_equals: list[TagCondition] = []
    string_not_equals: list[TagCondition] = []

    def holds(self, tags: dict[str, str]) -> bool:
        return all(tags.get(c.tag) == c.value for c in self.string_equals) and all(
            tags.get(c.tag) != c.value for c in self.string_not_equals
        )


class SqlValidation(_Strict):
    sql: str = Field(min_length=1)
    expect: Any


class HookValidation(_Strict):
    """A command (argv list) or an HTTP URL that reports a validation result (PutRestoreValidationResult)."""

    command: Annotated[list[str], Field(min_length=1)] | None = None
    url: str | None = None
    headers: dict[str, str] = {}

    @model_validator(mode="after")
    def _one(self) -> HookValidation:
        if (self.command is None) == (self.url is None):
            raise ValueError("a validation hook needs exactly one of command or url")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError("a validation hook's url must start with http:// or https://")
        return self


class ValidationConfig(_Strict):
    database: str | None = None  # postgres-cluster: the database the SQL checks run in (default: postgres)
    sql: list[SqlValidation] = []
    row_counts: bool = True  # compare the restored tables' rows with the counts the point recorded, if any
    hook: HookValidation | None = None


class RestoreTestingSelection(_Strict):
    """AWS's RestoreTestingSelection."""

    protected_resource_type: str
    protected_resource_arns: list[str] = ["*"]  # resource ids, or "*"
    protected_resource_conditions: ResourceConditions | None = None
    backup_plan: Name | None = None  # select what this backup plan selects, with its restore_testing_overrides
    restore_metadata_overrides: dict[str, str | int | bool] = {}
    validation_window_hours: Hours | None = None  # default: the backup plan's, else 1
    validation: ValidationConfig = ValidationConfig()


class RestoreTestingPlan(_Strict):
    """AWS's RestoreTestingPlan and its selections."""

    schedule_expression: ScheduleExpression
    schedule_expression_timezone: TimezoneName | None = None
    start_window_hours: Hours = 24
    recovery_point_selection: RecoveryPointSelection
    selections: dict[Name, RestoreTestingSelection] = {}


# Cross-checks (called by the loader, which locates each problem) -----------------------------------
Problem = Callable[[tuple[str | int, ...], str], None]


def parse_overrides(raw: str | dict[str, Any] | None) -> dict[str, Any]:
    """The blueprint's ``restore_testing_overrides``: a JSON object as a string (its Aurora shape) or a map."""
    if raw is None:
        return {}
    if isinstance(raw, dict):
        return dict(raw)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"restore_testing_overrides is not a JSON object: {exc.msg}") from None
    if not isinstance(value, dict):
        raise ValueError("restore_testing_overrides must be a JSON object of override names and values")
    return value


def override_problem(resource_type: str, overrides: dict[str, Any]) -> str | None:
    """Why ``overrides`` cannot apply to a restore of ``resource_type``; None when they can."""
    known = OVERRIDES.get(resource_type, {})
    for key, value in overrides.items():
        kind = known.get(key)
        if kind is None:
            names = ", ".join(sorted(known)) or "none"
            return f"'{key}' is not a restore override of {resource_type} resources (known: {names})"
        if coerce(kind, value) is None:
            return f"override '{key}' must be {kind.__name__}, not {value!r}"
    return None


def coerce(kind: type, value: Any) -> Any:
    """An override's value as ``kind`` (the blueprint's maps hold strings: "true", "5433"); None if it is not."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        return {"true": True, "false": False}.get(str(value).lower())
    if kind is int:
        if isinstance(value, bool):
            return None
        try:
            return int(value)
        except (TypeError, ValueError):
            return None
    return value if isinstance(value, str) else None


def check_plans(
    plans: dict[str, RestoreTestingPlan],
    backup_plans: dict[str, Any],
    resource_types: list[str],
    vault_names: set[str],
    problem: Problem,
) -> None:
    """What the models cannot say alone: types, backup plans and vaults that exist, overrides that apply."""
    for name, plan in plans.items():
        path: tuple[str | int, ...] = ("restore_testing_plans", name)
        selection = plan.recovery_point_selection
        if "CONTINUOUS" in selection.recovery_point_types:
            problem(
                (*path, "recovery_point_selection", "recovery_point_types"),
                "CONTINUOUS recovery points are not restore-tested yet; use [SNAPSHOT]",
            )
        for field in ("include_vaults", "exclude_vaults"):
            for index, vault in enumerate(getattr(selection, field)):
                if vault != "*" and not vault.startswith("arn:") and vault not in vault_names:
                    problem(
                        (*path, "recovery_point_selection", field, index),
                        f"no vault '{vault}' is declared under vaults or exists in the account"
                        ' (give a vault name, a backup vault ARN, or "*")',
                    )
        for selection_name, chosen in plan.selections.items():
            _check_selection((*path, "selections", selection_name), chosen, backup_plans, resource_types, problem)


def _check_selection(
    path: tuple[str | int, ...],
    selection: RestoreTestingSelection,
    backup_plans: dict[str, Any],
    resource_types: list[str],
    problem: Problem,
) -> None:
    if selection.protected_resource_type not in resource_types:
        problem(
            (*path, "protected_resource_type"),
            f"unknown resource type '{selection.protected_resource_type}' (known: {', '.join(resource_types)})",
        )
        return
    overrides = dict(selection.restore_metadata_overrides)
    if selection.backup_plan is not None:
        plan = backup_plans.get(selection.backup_plan)
        if plan is None:
            problem((*path, "backup_plan"), f"no backup plan '{selection.backup_plan}' is declared under backup_plans")
            return
        try:
            overrides = {**parse_overrides(plan.restore_testing_overrides), **overrides}
        except ValueError as exc:
            problem(("backup_plans", selection.backup_plan, "restore_testing_overrides"), str(exc))
            return
    reason = override_problem(selection.protected_resource_type, overrides)
    if reason:
        problem((*path, "restore_metadata_overrides"), reason)
    conditions = selection.protected_resource_conditions
    for field in ("string_equals", "string_not_equals"):
        for index, condition in enumerate(getattr(conditions, field) if conditions else []):
            if not condition.key.startswith(RESOURCE_TAG_PREFIX) or condition.key == RESOURCE_TAG_PREFIX:
                problem(
                    (*path, "protected_resource_conditions", field, index, "key"),
                    f"condition key '{condition.key}' must be {RESOURCE_TAG_PREFIX}TAG (a tag of the resource)",
                )


def resolved(plan: RestoreTestingPlan, backup_plans: dict[str, Any]) -> RestoreTestingPlan:
    """The plan as it is stored and run: a selection naming a backup plan gets that plan's selection tags as
    ``protected_resource_conditions`` (as the blueprint writes them) and its overrides and validation window."""
    selections = {}
    for name, selection in plan.selections.items():
        source = backup_plans.get(selection.backup_plan or "")
        if source is None:
            selections[name] = selection
            continue
        tags = [(source.selection_tag, source.selection_tag_value), *((t.key, t.value) for t in source.selection_tags)]
        extra = [TagCondition(key=RESOURCE_TAG_PREFIX + key, value=value) for key, value in tags]
        conditions = selection.protected_resource_conditions or ResourceConditions()
        selections[name] = selection.model_copy(
            update={
                "protected_resource_conditions": conditions.model_copy(
                    update={"string_equals": [*conditions.string_equals, *extra]}
                ),
                "restore_metadata_overrides": {
                    **parse_overrides(source.restore_testing_overrides),
                    **selection.restore_metadata_overrides,
                },
                "validation_window_hours": selection.validation_window_hours or source.validation_window_hours,
            }
        )
    return plan.model_copy(update={"selections": selections})
