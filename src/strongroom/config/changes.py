"""What an apply would change: a loaded configuration compared with a snapshot of the account.

Pure: the caller (services/apply.py) reads the account into :class:`CurrentState`, and decides which
changes the vault policy or lock refuses. The order of the changes is the order apply makes them:
vaults are created (and adopted) first, then their locks and policies (each judged by the vault's
current policy and lock), resources, the destination,
backup plans, vault deletions, and outputs last.

Only what ``apply`` created (``managed``) is ever deleted; something made by hand that the config
names is adopted (from then on managed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from strongroom.config.loader import LoadedConfig
from strongroom.model import Resource, VaultLockRecord, VaultRecord

CREATE, UPDATE, DELETE = "create", "update", "delete"
VAULT, POLICY, LOCK, RESOURCE = "vault", "access_policy", "vault_lock", "resource"
DESTINATION, BACKUP_PLAN, OUTPUT = "destination", "backup_plan", "output"
RESTORE_TESTING_PLAN = "restore_testing_plan"
FRAMEWORK, REPORT_PLAN = "framework", "report_plan"
ADOPT = "adopt: made by hand, managed by this configuration from now on"
SENSITIVE = "(sensitive)"
MIN_MASKED_LENGTH = 3  # shorter values (a flag, a small number) would mask unrelated text
LOCK_FIELDS = ("min_retention_days", "max_retention_days", "changeable_for_days")


@dataclass(frozen=True)
class Change:
    action: str  # create | update | delete
    kind: str  # vault | access_policy | vault_lock | resource | destination | backup_plan | output
    name: str
    before: Any = None
    after: Any = None
    details: tuple[str, ...] = ()
    refused: str | None = None  # why the vault's policy or lock refuses it
    refused_code: str | None = None  # the error code (errors.py) of the refusal

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "type": self.kind,
            "name": self.name,
            "before": self.before,
            "after": self.after,
            "details": list(self.details),
            "refused": self.refused,
            "refused_code": self.refused_code,
        }


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]
    warnings: tuple[str, ...] = ()

    @property
    def refused(self) -> tuple[Change, ...]:
        return tuple(change for change in self.changes if change.refused)

    def count(self, action: str) -> int:
        return sum(change.action == action and not change.refused for change in self.changes)

    def summary(self) -> dict[str, int]:
        return {
            "create": self.count(CREATE),
            "update": self.count(UPDATE),
            "delete": self.count(DELETE),
            "refused": len(self.refused),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "changes": [c.as_dict() for c in self.changes],
            "summary": self.summary(),
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class CurrentState:
    vaults: dict[str, VaultRecord] = field(default_factory=dict)
    resources: dict[str, Resource] = field(default_factory=dict)
    destination: dict[str, Any] | None = None
    backup_plans: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    restore_testing_plans: dict[str, Any] = field(default_factory=dict)
    frameworks: dict[str, Any] = field(default_factory=dict)
    report_plans: dict[str, Any] = field(default_factory=dict)


def compute_changes(loaded: LoadedConfig, current: CurrentState) -> list[Change]:
    changes = _vault_changes(loaded, current)
    changes += _resource_changes(loaded, current)
    changes += _setting_changes(
        DESTINATION,
        {"default": current.destination} if current.destination else {},
        {"default": _destination(loaded)} if loaded.config.destination else {},
    )
    changes += _setting_changes(BACKUP_PLAN, current.backup_plans, loaded.stored_backup_plans())
    changes += _setting_changes(
        RESTORE_TESTING_PLAN, current.restore_testing_plans, loaded.stored_restore_testing_plans()
    )
    changes += _setting_changes(FRAMEWORK, current.frameworks, loaded.stored_frameworks())
    changes += _setting_changes(REPORT_PLAN, current.report_plans, loaded.report_plans)
    changes += [
        Change(DELETE, VAULT, name, before=_vault_view(record))
        for name, record in current.vaults.items()
        if record.managed and name not in loaded.config.vaults
    ]
    changes += _output_changes(current.outputs, loaded.outputs)
    return [mask(change, loaded.sensitive_values) for change in changes]


def desired_lock(loaded: LoadedConfig, vault: str) -> dict[str, Any] | None:
    lock = loaded.config.vaults[vault].lock
    return None if lock is None else dict(zip(LOCK_FIELDS, lock.numbers(), strict=True))


# Vaults, their policies and locks ---------------------------------------------------------------
def _vault_changes(loaded: LoadedConfig, current: CurrentState) -> list[Change]:
    vaults: list[Change] = []
    policies: list[Change] = []
    locks: list[Change] = []
    for name in loaded.config.vaults:
        record = current.vaults.get(name)
        store = loaded.config.vaults[name].store
        if record is None:
            after = {"backup_vault_name": name, "store": store or "(the account home)"}
            vaults.append(Change(CREATE, VAULT, name, after=after, details=(f"store = {after['store']}",)))
        elif store is not None and store != record.store_url:
            vaults.append(_moved_store(record, store))
        elif not record.managed:
            vaults.append(Change(UPDATE, VAULT, name, before=_vault_view(record), details=(ADOPT,)))
        before_policy = record.access_policy if record else None
        policies += _pair_change(POLICY, name, before_policy, loaded.policies[name], _policy_details)
        before_lock = _lock_numbers(record.lock) if record and record.lock else None
        locks += _pair_change(LOCK, name, before_lock, desired_lock(loaded, name), _diff)
    return vaults + locks + policies


def _moved_store(record: VaultRecord, store: str) -> Change:
    before = _vault_view(record)
    return Change(
        UPDATE,
        VAULT,
        record.name,
        before=before,
        after={**before, "store": store},
        details=(f"store: {record.store_url} -> {store}",),
        refused=f"vault '{record.name}' lives in {record.store_url}: a vault's store is set when it is created",
        refused_code="CONFIG",
    )


def _pair_change(kind: str, name: str, before: Any, after: Any, details: Any) -> list[Change]:
    if _canonical(before) == _canonical(after):
        return []
    if before is None:
        shown = _policy_details({}, after) if kind == POLICY else _attributes(after)
        return [Change(CREATE, kind, name, after=after, details=tuple(shown))]
    if after is None:
        return [Change(DELETE, kind, name, before=before)]
    return [Change(UPDATE, kind, name, before=before, after=after, details=tuple(details(before, after)))]


def _policy_details(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    def sids(document: dict[str, Any]) -> list[str]:
        statements = document.get("Statement")
        statements = [statements] if isinstance(statements, dict) else statements or []
        return [s.get("Sid") or f"Statement[{i}]" for i, s in enumerate(statements) if isinstance(s, dict)]

    old, new = sids(before), sids(after)
    if old == new:
        return [f"statements {', '.join(new)} changed"]
    return [f"statements {', '.join(old) or 'none'} -> {', '.join(new) or 'none'}"]


def _lock_numbers(lock: VaultLockRecord) -> dict[str, Any]:
    return {name: getattr(lock, name) for name in LOCK_FIELDS}


def _vault_view(record: VaultRecord) -> dict[str, Any]:
    return {
        "backup_vault_name": record.name,
        "backup_vault_arn": record.arn,
        "store": record.store_url,
        "managed_by_config": record.managed,
    }


# Resources ---------------------------------------------------------------------------------------
def _resource_changes(loaded: LoadedConfig, current: CurrentState) -> list[Change]:
    changes = []
    for resource_id, config in loaded.config.resources.items():
        after = {"type": config.type, "settings": loaded.resource_settings[resource_id], "tags": dict(config.tags)}
        existing = current.resources.get(resource_id)
        if existing is None:
            changes.append(Change(CREATE, RESOURCE, resource_id, after=after, details=tuple(_attributes(after))))
            continue
        before = {"type": existing.type, "settings": existing.settings, "tags": existing.tags}
        details = _diff(before, after)
        if not existing.managed:
            details.insert(0, ADOPT)
        if details:
            changes.append(Change(UPDATE, RESOURCE, resource_id, before=before, after=after, details=tuple(details)))
    for resource_id, existing in current.resources.items():
        if existing.managed and resource_id not in loaded.config.resources:
            before = {"type": existing.type, "settings": existing.settings, "tags": existing.tags}
            changes.append(Change(DELETE, RESOURCE, resource_id, before=before))
    return changes


# Account settings: destination, backup plans, outputs ----------------------------------------------
def _destination(loaded: LoadedConfig) -> dict[str, Any]:
    destination = loaded.config.destination
    assert destination is not None
    return {"vault_arn": destination.vault_arn, "account": destination.account}


def _setting_changes(kind: str, before: dict[str, Any], after: dict[str, Any]) -> list[Change]:
    changes = []
    for name in [*after, *(n for n in before if n not in after)]:
        changes += _pair_change(kind, name, before.get(name), after.get(name), _diff)
    return changes


def _output_changes(before: dict[str, Any], after: dict[str, Any]) -> list[Change]:
    changes = _setting_changes(OUTPUT, before, after)
    changes = [
        replace(c, details=tuple(line for line in c.details if line.startswith("value"))) if c.action == CREATE else c
        for c in changes
    ]
    return [_masked_output(change) for change in changes]


def _masked_output(change: Change) -> Change:
    sensitive = any(isinstance(v, dict) and v.get("sensitive") for v in (change.before, change.after))
    if not sensitive:
        return change
    hide = lambda v: {**v, "value": SENSITIVE} if isinstance(v, dict) else v  # noqa: E731
    details = tuple(line for line in change.details if not line.startswith("value"))
    if len(details) != len(change.details):
        details = (f"value = {SENSITIVE}" if change.action == CREATE else f"value changed {SENSITIVE}", *details)
    return replace(change, before=hide(change.before), after=hide(change.after), details=details)


# Details and masking ----------------------------------------------------------------------------
def _diff(before: Any, after: Any, prefix: str = "") -> list[str]:
    """``path: old -> new`` for each leaf that differs."""
    if isinstance(before, dict) and isinstance(after, dict):
        lines = []
        for key in [*before, *(k for k in after if k not in before)]:
            path = f"{prefix}.{key}" if prefix else str(key)
            lines += _diff(before.get(key, _ABSENT), after.get(key, _ABSENT), path)
        return lines
    if isinstance(before, list) and isinstance(after, list) and before and after:
        lines = []
        for index in range(max(len(before), len(after))):
            old = before[index] if index < len(before) else _ABSENT
            lines += _diff(old, after[index] if index < len(after) else _ABSENT, f"{prefix}[{index}]")
        return lines
    if _canonical(before) == _canonical(after):
        return []
    return [f"{prefix}: {_show(before)} -> {_show(after)}"]


def _attributes(value: Any, prefix: str = "") -> list[str]:
    """``path = value`` for each leaf of something new."""
    if isinstance(value, dict) and value:
        lines = []
        for key, item in value.items():
            lines += _attributes(item, f"{prefix}.{key}" if prefix else str(key))
        return lines
    if isinstance(value, list) and value:
        return [line for index, item in enumerate(value) for line in _attributes(item, f"{prefix}[{index}]")]
    return [f"{prefix} = {_show(value)}"] if prefix and value is not None else []


class _Absent:
    def __repr__(self) -> str:
        return "(none)"


_ABSENT = _Absent()


def _show(value: Any) -> str:
    return "(none)" if value is _ABSENT else json.dumps(value, sort_keys=True, default=str)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def mask(change: Change, secrets: frozenset[str]) -> Change:
    """Hide values of sensitive variables wherever they appear in a change."""
    secrets = frozenset(secret for secret in secrets if len(secret) >= MIN_MASKED_LENGTH)
    if not secrets:
        return change
    return replace(
        change,
        before=_masked(change.before, secrets),
        after=_masked(change.after, secrets),
        details=tuple(_masked(line, secrets) for line in change.details),
    )


def _masked(value: Any, secrets: frozenset[str]) -> Any:
    if isinstance(value, str):
        for secret in sorted(secrets, key=len, reverse=True):
            value = value.replace(secret, SENSITIVE)
        return value
    if isinstance(value, dict):
        return {key: _masked(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked(item, secrets) for item in value]
    if isinstance(value, int | float) and not isinstance(value, bool) and str(value) in secrets:
        return SENSITIVE
    return value
