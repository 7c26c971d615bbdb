"""``plan`` and ``apply``: reconcile an account with its configuration file, idempotently.

The plan compares the loaded configuration with the catalog (config/changes.py) and marks each change
that the vault's access policy or lock would refuse, judged by the same rules as services/vault_ops.py
for the account's root principal. Apply makes nothing unless every change is allowed; policy and lock
changes and vault deletions go through vault_ops, so its checks stay the final word.

The whole apply holds the account's apply lock (the seed's DynamoDB lock table): an exclusive ``flock``
on ``HOME/locks/apply.lock``, whose content names the holder's pid and start time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from strongroom import model
from strongroom.catalog.records import Output
from strongroom.config.changes import (
    BACKUP_PLAN,
    CREATE,
    DELETE,
    DESTINATION,
    FRAMEWORK,
    LOCK,
    OUTPUT,
    POLICY,
    REPORT_PLAN,
    RESOURCE,
    RESTORE_TESTING_PLAN,
    UPDATE,
    VAULT,
    Change,
    CurrentState,
    Plan,
    compute_changes,
    desired_lock,
)
from strongroom.config.loader import LoadedConfig, load_config
from strongroom.config.variables import AccountIdentity
from strongroom.errors import ERRORS_BY_CODE, BusyError, StrongroomError
from strongroom.fsutil import FileLock
from strongroom.model import Resource, VaultRecord, iso
from strongroom.policy.principals import root_arn
from strongroom.services import vault_ops
from strongroom.services.account import (
    SETTING_BACKUP_PLANS,
    SETTING_DESTINATION,
    SETTING_DESTINATION_ACCOUNT,
    SETTING_FRAMEWORKS,
    SETTING_REPORT_PLANS,
    SETTING_RESTORE_TESTING_PLANS,
    Account,
)
from strongroom.services.notifications import plan as notifications_plan
from strongroom.services.restore_testing_headers import open_headers, seal_headers

APPLY_LOCK = "apply.lock"
Clock = Callable[[], datetime]
Approve = Callable[[Plan], bool]


@dataclass(frozen=True)
class ApplyResult:
    plan: Plan
    outputs: dict[str, Output]

    def as_dict(self) -> dict[str, Any]:
        return {**self.plan.as_dict(), "outputs": shown_outputs(self.outputs)}


# Loading and planning -----------------------------------------------------------------------------
def identity_of(account: Account) -> AccountIdentity:
    names = frozenset(record.name for record in account.catalog.list_vaults())
    return AccountIdentity(account.account_id, account.region, names)


def load(account: Account, path: Path, *, cli_vars: Sequence[str] = (), var_files: Sequence[Path] = ()) -> LoadedConfig:
    return load_config(path, identity=identity_of(account), cli_vars=cli_vars, var_files=var_files)


def current_state(account: Account) -> CurrentState:
    catalog = account.catalog
    arn = catalog.get_setting(SETTING_DESTINATION)
    destination = {"vault_arn": arn, "account": catalog.get_setting(SETTING_DESTINATION_ACCOUNT)} if arn else None
    return CurrentState(
        vaults={record.name: record for record in catalog.list_vaults()},
        resources={resource.id: resource for resource in catalog.list_resources()},
        destination=destination,
        backup_plans=catalog.get_setting(SETTING_BACKUP_PLANS, {}) or {},
        outputs={name: stored.as_dict() for name, stored in catalog.get_outputs().items()},
        restore_testing_plans=open_headers(account, catalog.get_setting(SETTING_RESTORE_TESTING_PLANS, {}) or {}),
        frameworks=catalog.get_setting(SETTING_FRAMEWORKS, {}) or {},
        report_plans=catalog.get_setting(SETTING_REPORT_PLANS, {}) or {},
    )


def make_plan(account: Account, loaded: LoadedConfig, *, clock: Clock = model.now) -> Plan:
    current = current_state(account)
    moment = clock()
    changes = [_judged(account, change, current, moment) for change in compute_changes(loaded, current)]
    changes += notifications_plan.planned_changes(account, loaded)  # after the vaults they belong to
    return Plan(tuple(changes), loaded.warnings)


def _judged(account: Account, change: Change, current: CurrentState, moment: datetime) -> Change:
    record = current.vaults.get(change.name) if change.kind in (VAULT, POLICY, LOCK) else None
    if record is None:
        return change
    try:
        _check_allowed(account, change, record, moment)
    except StrongroomError as exc:
        return replace(change, refused=exc.one_line(), refused_code=exc.code)
    return change


def _check_allowed(account: Account, change: Change, record: VaultRecord, moment: datetime) -> None:
    """Raise what services/vault_ops would raise for this change, without making it."""
    root = root_arn(account.account_id)
    if change.kind == POLICY:
        vault_ops.check_policy_change(account, root, record, removing=change.action == DELETE)
    elif change.kind == LOCK:
        vault_ops.check_lock_change(account, root, record, removing=change.action == DELETE, now=moment)
    elif change.kind == VAULT and change.action == DELETE:
        vault_ops.check_delete_vault(account, root, record, now=moment)


# Applying -----------------------------------------------------------------------------------------
def apply_config(
    account: Account,
    path: Path,
    *,
    cli_vars: Sequence[str] = (),
    var_files: Sequence[Path] = (),
    lock_timeout: float = 0,
    approve: Approve | None = None,
    clock: Clock = model.now,
) -> ApplyResult:
    """Load, plan and apply under the apply lock; ``approve`` (None: approved) sees the plan first."""
    with apply_lock(account, lock_timeout):
        loaded = load(account, path, cli_vars=cli_vars, var_files=var_files)
        plan = make_plan(account, loaded, clock=clock)
        refuse_if_any(plan)
        if plan.changes and approve is not None and not approve(plan):
            raise StrongroomError("apply cancelled; nothing was changed")
        for change in plan.changes:
            _execute(account, loaded, change, clock)
        return ApplyResult(plan, account.catalog.get_outputs())


def refuse_if_any(plan: Plan) -> None:
    if not plan.refused:
        return
    first = plan.refused[0]
    error = ERRORS_BY_CODE.get(first.refused_code or "", StrongroomError)
    more = f" (and {len(plan.refused) - 1} more refused)" if len(plan.refused) > 1 else ""
    raise error(
        f"nothing was changed: {first.action} {first.kind} '{first.name}' is refused{more}: {first.refused}", hint=""
    )


def _execute(account: Account, loaded: LoadedConfig, change: Change, clock: Clock) -> None:
    root = root_arn(account.account_id)
    if change.kind == VAULT:
        _execute_vault(account, loaded, change, root, clock)
    elif change.kind == LOCK:
        lock = desired_lock(loaded, change.name)
        if lock is None:
            vault_ops.delete_vault_lock(account, root, change.name, clock=clock)
        else:
            vault_ops.put_vault_lock(account, root, change.name, clock=clock, **lock)
    elif change.kind == POLICY:
        vault_ops.put_access_policy(account, root, change.name, loaded.policies[change.name])
    elif change.kind == RESOURCE:
        _execute_resource(account, loaded, change)
    elif change.kind == DESTINATION:
        destination = loaded.config.destination
        account.catalog.set_setting(SETTING_DESTINATION, destination.vault_arn if destination else None)
        account.catalog.set_setting(SETTING_DESTINATION_ACCOUNT, destination.account if destination else None)
    elif change.kind == BACKUP_PLAN:
        account.catalog.set_setting(SETTING_BACKUP_PLANS, loaded.stored_backup_plans() or None)
    elif change.kind == RESTORE_TESTING_PLAN:
        plans = seal_headers(account, loaded.stored_restore_testing_plans())
        account.catalog.set_setting(SETTING_RESTORE_TESTING_PLANS, plans or None)
    elif change.kind == FRAMEWORK:
        account.catalog.set_setting(SETTING_FRAMEWORKS, loaded.stored_frameworks() or None)
    elif change.kind == REPORT_PLAN:
        account.catalog.set_setting(SETTING_REPORT_PLANS, loaded.report_plans or None)
    elif change.kind == OUTPUT:
        account.catalog.set_outputs({name: Output.of(value) for name, value in loaded.outputs.items()})
    elif change.kind == notifications_plan.CHANGE_KIND:
        notifications_plan.apply_change(account, loaded, change.name)


def _execute_vault(account: Account, loaded: LoadedConfig, change: Change, root: str, clock: Clock) -> None:
    if change.action == CREATE:
        locked = desired_lock(loaded, change.name) is not None
        vault_ops.create_vault(account, change.name, store_url=loaded.config.vaults[change.name].store, locked=locked)
        account.catalog.update_vault(change.name, managed=True)
    elif change.action == UPDATE:
        account.catalog.update_vault(change.name, managed=True)
    else:
        vault_ops.delete_vault(account, root, change.name, clock=clock)


def _execute_resource(account: Account, loaded: LoadedConfig, change: Change) -> None:
    if change.action == DELETE:
        account.catalog.remove_resource(change.name)
        return
    config = loaded.config.resources[change.name]
    settings, tags = loaded.resource_settings[change.name], dict(config.tags)
    if change.action == CREATE:
        account.catalog.add_resource(
            Resource(change.name, config.type, settings, tags, iso(model.now()) or "", managed=True)
        )
    else:
        account.catalog.update_resource(change.name, type=config.type, settings=settings, tags=tags, managed=True)


# Outputs ------------------------------------------------------------------------------------------
def read_outputs(account: Account) -> dict[str, Output]:
    """The outputs of the last apply by name."""
    return account.catalog.get_outputs()


def shown_outputs(outputs: dict[str, Output]) -> dict[str, Any]:
    return {name: ("(sensitive)" if output.sensitive else output.value) for name, output in outputs.items()}


# The apply lock ------------------------------------------------------------------------------------
@contextmanager
def apply_lock(account: Account, timeout: float = 0) -> Iterator[None]:
    """Hold the account's apply lock; BusyError naming the holder if it is not free within ``timeout`` s."""
    path = account.locks_dir / APPLY_LOCK
    with FileLock(path) as lock:
        if not lock.acquire(timeout=timeout):
            raise _busy(path, account.home, timeout)
        holder = json.dumps({"pid": os.getpid(), "started_at": iso(model.now())}).encode()
        os.ftruncate(lock.fd, 0)
        os.pwrite(lock.fd, holder, 0)
        yield


def _busy(path: Path, home: Path, timeout: float) -> BusyError:
    holder = _holder(path)
    waited = f" (waited {timeout:g} s)" if timeout > 0 else ""
    return BusyError(
        f"another apply (pid {holder.get('pid', '?')}, started {holder.get('started_at', '?')}) holds the apply lock"
        f" of {home}{waited}",
        hint="Wait for it to finish, or pass --lock-timeout SECONDS to wait for the lock",
    )


def _holder(path: Path) -> dict[str, Any]:
    try:
        holder = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}
