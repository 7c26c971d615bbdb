"""Loading an account configuration: YAML → variables → references → typed models → cross-checks.

Every problem becomes one located line (``file:line: dotted.path: message``); all problems of a stage
are reported together in one ConfigError, so a user fixes a file in one pass.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from strongroom.adapters.base import adapter_types, get_adapter
from strongroom.config import restore_testing
from strongroom.config.schema import (
    AccountConfig,
    BackupPlanConfig,
    DefaultDestinationPolicy,
    FrameworkConfig,
    LockConfig,
    RuleConfig,
    VariableConfig,
)
from strongroom.config.source import Path_, SourceMap, raise_problems, read_yaml
from strongroom.config.variables import AccountIdentity, Interpolator, VariableValues, resolve_variables
from strongroom.errors import StrongroomError
from strongroom.model import CONTINUOUS_MAX_DAYS, DEFAULT_VAULT, now, tag_problem
from strongroom.plans.records import BackupPlan, BackupRule
from strongroom.plans.schedule import parse_schedule
from strongroom.policy import controls as audit
from strongroom.policy.document import PolicyDocument, default_destination_policy
from strongroom.policy.lock import VaultLock
from strongroom.policy.principals import is_principal_arn

DEFAULT_DESTINATION_KEY = "default_destination"
_VARIABLES = TypeAdapter(dict[str, VariableConfig])
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class LoadedConfig:
    """A valid configuration with every reference resolved, ready to be compared with an account."""

    config: AccountConfig
    source: SourceMap
    identity: AccountIdentity
    policies: dict[str, dict[str, Any] | None]  # vault -> normalised policy document
    resource_settings: dict[str, dict[str, Any]]  # resource -> settings as its adapter normalised them
    backup_plans: dict[str, BackupPlan]  # plan -> as the scheduler fires it
    outputs: dict[str, dict[str, Any]]  # name -> {"value", "description", "sensitive"}
    frameworks: dict[str, audit.Framework] = field(default_factory=dict)
    report_plans: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> ReportPlanConfig as JSON
    sensitive_values: frozenset[str] = frozenset()
    warnings: tuple[str, ...] = ()

    def where(self, path: Path_) -> str:
        return self.source.where(path)

    def stored_restore_testing_plans(self) -> dict[str, dict[str, Any]]:
        """The restore testing plans as the catalog setting ``restore_testing_plans`` stores them (JSON)."""
        plans = self.config.restore_testing_plans
        backup_plans = dict(self.config.backup_plans)
        return {
            name: restore_testing.resolved(plan, backup_plans).model_dump(mode="json") for name, plan in plans.items()
        }

    def stored_backup_plans(self) -> dict[str, dict[str, Any]]:
        """The plans as the catalog setting ``backup_plans`` stores them (JSON)."""
        return {name: plan.as_dict() for name, plan in self.backup_plans.items()}

    def stored_frameworks(self) -> dict[str, dict[str, Any]]:
        """The frameworks as the catalog setting ``frameworks`` stores them (JSON)."""
        return {name: framework.as_dict() for name, framework in self.frameworks.items()}


@dataclass
class _Checks:
    source: SourceMap
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, path: Path_, message: str) -> None:
        self.problems.append(self.source.problem(path, message))

    def located(self, path: Path_, error: StrongroomError, *, names_field: bool = False) -> None:
        """An error from another module; ``names_field``: its message already says which field."""
        if names_field:
            self.problems.append(f"{self.source.where(path)}: {error.one_line()}")
        else:
            self.add(path, error.one_line())


def load_config(
    path: Path,
    *,
    identity: AccountIdentity,
    cli_vars: Sequence[str] = (),
    var_files: Sequence[Path] = (),
) -> LoadedConfig:
    """Read, resolve and validate the account configuration at ``path``; ConfigError on any problem."""
    data, source = read_yaml(path)
    data = _top_mapping(data, source)
    values = variables(data, source, list(cli_vars), list(var_files))
    interpolator = Interpolator(values, identity, set(_mapping(data.get("vaults"))), source)
    resolved = {key: interpolator.resolve(value, (str(key),)) for key, value in data.items() if key != "variables"}
    raise_problems(interpolator.problems)
    config = _validate(AccountConfig, {**resolved, "variables": data.get("variables") or {}}, source)
    checks = _Checks(source)
    policies = {name: _policy(name, vault.access_policy, checks) for name, vault in config.vaults.items()}
    for name, vault in config.vaults.items():
        if vault.lock is not None:
            _check_lock(("vaults", name, "lock"), vault.lock, checks)
    settings = {
        rid: _settings(rid, resource.type, resource.settings, checks) for rid, resource in config.resources.items()
    }
    backup_plans = _backup_plans(config, identity, checks)
    restore_testing.check_plans(
        dict(config.restore_testing_plans),
        dict(config.backup_plans),
        adapter_types(),
        set(config.vaults) | set(identity.vault_names),
        checks.add,
    )
    _unused_restore_testing_fields(config, checks)
    frameworks = _frameworks(config, checks)
    _check_report_plans(config, frameworks, checks)
    raise_problems(checks.problems)
    return LoadedConfig(
        config=config,
        source=source,
        identity=identity,
        policies=policies,
        resource_settings=settings,
        backup_plans=backup_plans,
        outputs={name: output.model_dump(mode="json") for name, output in config.outputs.items()},
        frameworks=frameworks,
        report_plans={name: plan.model_dump(mode="json") for name, plan in config.report_plans.items()},
        sensitive_values=frozenset(interpolator.sensitive_values),
        warnings=tuple(checks.warnings),
    )


def validation_problems(exc: ValidationError, source: SourceMap, prefix: Path_ = ()) -> list[str]:
    problems = []
    for error in exc.errors(include_url=False):
        location = tuple(part for part in error["loc"] if part != "[key]")
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "string_type" and isinstance(error.get("input"), bool):
            message += f' (YAML reads {error["input"]} as a boolean; quote it: "{error["input"]}")'
        problems.append(source.problem((*prefix, *location), message))
    return problems


def _validate(model: type[M], data: Any, source: SourceMap, prefix: Path_ = ()) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise_problems(validation_problems(exc, source, prefix))
        raise  # unreachable: raise_problems raised


def _top_mapping(data: Any, source: SourceMap) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise_problems(
            [
                f"{source.file}:1: an account configuration is a mapping with keys such as vaults,"
                " resources and backup_plans"
            ]
        )
    return data


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def variables(data: dict[str, Any], source: SourceMap, cli_vars: list[str], var_files: list[Path]) -> VariableValues:
    try:
        declared = _VARIABLES.validate_python(data.get("variables") or {})
    except ValidationError as exc:
        raise_problems(validation_problems(exc, source, ("variables",)))
        raise
    problems: list[str] = []
    values = resolve_variables(declared, source, cli_vars, var_files, problems)
    raise_problems(problems)
    return values


# Cross-checks with the policy, lock and adapter modules ------------------------------------------
def _policy(vault: str, raw: dict[str, Any] | None, checks: _Checks) -> dict[str, Any] | None:
    if raw is None:
        return None
    path: Path_ = ("vaults", vault, "access_policy")
    document = _default_destination(path, raw, checks) if DEFAULT_DESTINATION_KEY in raw else raw
    if document is None:
        return None
    where = f"vaults.{vault}.access_policy"
    try:
        return PolicyDocument.parse(document, where=where).as_dict()
    except StrongroomError as exc:
        inside = _document_path(exc.message, where) if document is raw else ()
        checks.located((*path, *inside), exc, names_field=bool(inside))
        return None


def _document_path(message: str, where: str) -> Path_:
    """The path inside a policy document that PolicyDocument.parse named (``Statement[0].Effect``)."""
    match = re.match(re.escape(where) + r" ([A-Za-z0-9_.\[\]]+):", message)
    if not match:
        return ()
    return tuple(int(part) if part.isdigit() else part for part in re.findall(r"[^.\[\]]+", match[1]))


def _default_destination(path: Path_, raw: dict[str, Any], checks: _Checks) -> dict[str, Any] | None:
    if set(raw) != {DEFAULT_DESTINATION_KEY}:
        checks.add(path, f"{DEFAULT_DESTINATION_KEY} cannot be combined with other policy fields")
        return None
    inner: Path_ = (*path, DEFAULT_DESTINATION_KEY)
    try:
        spec = DefaultDestinationPolicy.model_validate(raw[DEFAULT_DESTINATION_KEY])
    except ValidationError as exc:
        checks.problems.extend(validation_problems(exc, checks.source, inner))
        return None
    bad = [index for index, arn in enumerate(spec.admin_principals) if not is_principal_arn(arn)]
    for index in bad:
        checks.add(
            (*inner, "admin_principals", index),
            f"'{spec.admin_principals[index]}' is not a principal ARN (arn:strongroom:iam::ACCOUNT:root or"
            " ...:user/NAME)",
        )
    if bad:
        return None
    return default_destination_policy(
        source_account_ids=list(spec.source_account_ids),
        source_vault_arns=list(spec.source_vault_arns),
        admin_principal_arns=list(spec.admin_principals),
    )


def _check_lock(path: Path_, lock: LockConfig, checks: _Checks) -> None:
    low, high, changeable = lock.numbers()
    try:
        VaultLock(min_retention_days=low, max_retention_days=high, changeable_for_days=changeable, created_at=now())
    except StrongroomError as exc:
        checks.located(path, exc)


def _settings(resource_id: str, type_name: str, settings: dict[str, Any], checks: _Checks) -> dict[str, Any]:
    try:
        adapter = get_adapter(type_name)
    except StrongroomError as exc:
        checks.located(("resources", resource_id, "type"), exc)
        return settings
    try:
        return adapter.validate_settings(dict(settings))
    except StrongroomError as exc:
        checks.located(("resources", resource_id, "settings"), exc)
        return settings


# Backup plans ---------------------------------------------------------------------------------
def _backup_plans(config: AccountConfig, identity: AccountIdentity, checks: _Checks) -> dict[str, BackupPlan]:
    known_vaults = set(config.vaults) | set(identity.vault_names)
    default_target = next(iter(config.vaults)) if len(config.vaults) == 1 else DEFAULT_VAULT
    plans = {}
    for name, plan in config.backup_plans.items():
        rules = tuple(
            _rule(("backup_plans", name, "rules", index), rule, config, known_vaults, default_target, checks)
            for index, rule in enumerate(plan.rules)
        )
        plans[name] = replace(BackupPlan.of({**plan.model_dump(mode="json"), "rules": []}), rules=rules)
        _plan_warnings(("backup_plans", name), plan, checks)
    return plans


def _rule(
    path: Path_,
    rule: RuleConfig,
    config: AccountConfig,
    known_vaults: set[str],
    default_target: str,
    checks: _Checks,
) -> BackupRule:
    target = rule.target_vault_name or default_target
    if target not in known_vaults:
        checks.add(
            (*path, "target_vault_name"), f"no vault '{target}' is declared under vaults or exists in the account"
        )
    if rule.copy_action is not None and config.destination is None:
        checks.add(
            (*path, "copy_action"),
            "copy_action copies to the account's destination vault, but no"
            " destination is configured; add destination.vault_arn or use copy_actions",
        )
    if rule.lifecycle.cold_storage_after is not None:
        checks.add(
            (*path, "lifecycle", "cold_storage_after"),
            f"rule '{rule.name}': cold_storage_after is not supported yet (Strongroom has no colder storage"
            " tier); remove it (lifecycle.delete_after still sets how long points are kept)",
        )
    tags_problem = tag_problem(rule.recovery_point_tags)
    if tags_problem:
        checks.add((*path, "recovery_point_tags"), f"rule '{rule.name}': {tags_problem}")
    vault = config.vaults.get(target)
    if vault is not None and vault.lock is not None:
        _check_rule_retention((*path, "lifecycle", "delete_after"), rule.lifecycle.delete_after, vault.lock, checks)
    return BackupRule.of({**rule.model_dump(mode="json"), "target_vault_name": target})


def _check_rule_retention(path: Path_, days: int | None, lock: LockConfig, checks: _Checks) -> None:
    low, high, changeable = lock.numbers()
    try:
        VaultLock(
            min_retention_days=low, max_retention_days=high, changeable_for_days=changeable, created_at=now()
        ).check_retention(days)
    except StrongroomError as exc:
        checks.located(path, exc)


def _unused_restore_testing_fields(config: AccountConfig, checks: _Checks) -> None:
    """The blueprint's restore testing fields of a backup plan act only through a selection naming the plan."""
    named = {s.backup_plan for p in config.restore_testing_plans.values() for s in p.selections.values()}
    for name, plan in config.backup_plans.items():
        if name not in named and (plan.restore_testing_overrides is not None or plan.validation_window_hours):
            where = checks.source.problem(("backup_plans", name), "")
            checks.warnings.append(
                f"{where}restore_testing_overrides and validation_window_hours are used by restore testing"
                f" selections with backup_plan: {name}, and none names this plan"
            )


def _plan_warnings(path: Path_, plan: BackupPlanConfig, checks: _Checks) -> None:
    for index, rule in enumerate(plan.rules):
        where = checks.source.problem((*path, "rules", index), "")
        note = parse_schedule(rule.schedule, rule.schedule_expression_timezone).portability_note
        if note:
            checks.warnings.append(f"{where}{note}")
        if rule.enable_continuous_backup and (rule.lifecycle.delete_after or 0) > CONTINUOUS_MAX_DAYS:
            checks.warnings.append(
                f"{where}enable_continuous_backup: the continuous recovery point's window is at most"
                f" {CONTINUOUS_MAX_DAYS} days (as AWS Backup's); snapshots keep delete_after"
                f" ({rule.lifecycle.delete_after} days) but restore only to their own time after that (docs/pitr.md)"
            )


# Frameworks and report plans (docs/compliance.md) ---------------------------------------------------------
def _frameworks(config: AccountConfig, checks: _Checks) -> dict[str, audit.Framework]:
    wanted = dict(config.frameworks)
    for name, plan in config.backup_plans.items():
        if plan.create_framework:
            made = blueprint_framework_name(name)
            if made in wanted:
                checks.add(("backup_plans", name, "create_framework"), f"a framework '{made}' is also declared")
            wanted[made] = _blueprint_framework(name, plan, config)
    return {name: _framework(("frameworks", name), name, framework, checks) for name, framework in wanted.items()}


def blueprint_framework_name(plan_name: str) -> str:
    """The blueprint's name for a plan's framework: ``<prefix>-framework`` with dashes made underscores."""
    return re.sub(r"[^A-Za-z0-9_]", "_", f"{plan_name}_framework")


def _blueprint_framework(name: str, plan: BackupPlanConfig, config: AccountConfig) -> FrameworkConfig:
    """The controls of the blueprint's backup_framework.tf for this plan, with its scopes and parameters."""
    tags = {plan.selection_tag: plan.selection_tag_value, **{t.key: t.value for t in plan.selection_tags}}
    scope = {"compliance_resource_types": plan.compliance_resource_types, "tags": tags}
    days = str(_blueprint_retention(plan, config))
    controls: list[dict[str, Any]] = [
        {"name": audit.POINT_ENCRYPTED, "scope": {"tags": tags}},
        {
            "name": audit.POINT_MIN_RETENTION,
            "scope": {"tags": tags},
            "input_parameters": {"requiredRetentionDays": days},
        },
        {
            "name": audit.PLAN_FREQUENCY_AND_RETENTION,
            "scope": {"compliance_resource_ids": [name]},
            "input_parameters": {
                "requiredFrequencyUnit": "days",
                "requiredRetentionDays": days,
                "requiredFrequencyValue": "1",
            },
        },
        {"name": audit.PROTECTED_BY_PLAN, "scope": scope},
        {
            "name": audit.LAST_RECOVERY_POINT,
            "scope": scope,
            "input_parameters": {"recoveryPointAgeUnit": "days", "recoveryPointAgeValue": "1"},
        },
    ]
    return FrameworkConfig.model_validate({"description": f"{name} Backup Framework", "controls": controls})


def _blueprint_retention(plan: BackupPlanConfig, config: AccountConfig) -> int:
    """The blueprint passes vault_lock_min_retention_days; without a lock, the plan's shortest retention."""
    for rule in plan.rules:
        vault = config.vaults.get(rule.target_vault_name or "")
        if vault is not None and vault.lock is not None and vault.lock.min_retention_days:
            return vault.lock.min_retention_days
    kept = [rule.lifecycle.delete_after for rule in plan.rules if rule.lifecycle.delete_after]
    return min(kept) if kept else 35


def _framework(path: Path_, name: str, framework: FrameworkConfig, checks: _Checks) -> audit.Framework:
    names = [control.name for control in framework.controls]
    for twice in sorted({n for n in names if names.count(n) > 1}):
        checks.add((*path, "controls"), f"control {twice} appears more than once; a framework has each control once")
    controls = []
    for index, control in enumerate(framework.controls):
        where: Path_ = (*path, "controls", index)
        parameters = control.parameters()
        for problem in audit.check_control(control.name, parameters):
            checks.add(
                (*where, "name") if problem.startswith("unknown control") else (*where, "input_parameters"), problem
            )
        for position, type_name in enumerate(control.scope.compliance_resource_types):
            try:
                get_adapter(type_name)
            except StrongroomError as exc:
                checks.add(
                    (*where, "scope", "compliance_resource_types", position),
                    f"{exc.one_line()} (a scope of an unknown type would match nothing)",
                )
        scope = audit.Scope.of(control.scope.model_dump(mode="json"))
        controls.append(audit.Control(control.name, parameters, scope))
    return audit.Framework(name, framework.description, tuple(controls))


def _check_report_plans(config: AccountConfig, frameworks: dict[str, audit.Framework], checks: _Checks) -> None:
    for name, plan in config.report_plans.items():
        setting = plan.report_setting
        for index, arn in enumerate(setting.framework_arns):
            if arn.rsplit("/", 1)[-1].rsplit(":", 1)[-1] not in frameworks:
                checks.add(
                    ("report_plans", name, "report_setting", "framework_arns", index),
                    f"no framework '{arn}' is declared (frameworks, or a backup plan's create_framework)",
                )
        compliance = setting.report_template in ("CONTROL_COMPLIANCE_REPORT", "RESOURCE_COMPLIANCE_REPORT")
        if setting.framework_arns and not compliance:
            checks.add(
                ("report_plans", name, "report_setting", "framework_arns"),
                f"{setting.report_template} takes no frameworks (only the compliance report templates do)",
            )
        count = setting.number_of_frameworks
        if count is not None and count != len(setting.framework_arns):
            checks.add(
                ("report_plans", name, "report_setting", "number_of_frameworks"),
                f"is {count} but framework_arns lists {len(setting.framework_arns)}",
            )
