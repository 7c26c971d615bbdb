"""Evaluating the applied frameworks now: verdicts stored in the catalog, a change of verdict is an event.

The daemon calls :func:`evaluate_all` on every tick, ``frameworks describe`` on demand; both store the same
rows (``compliance_evaluations``: the last verdict per framework, control and subject, with the time it last
changed). A verdict that differs from the stored one, or a first verdict that is NON_COMPLIANT, raises
RESOURCE_COMPLIANCE_CHANGED (``state`` = the new status) on every vault whose notifications list that event.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from strongroom.catalog.compliance_records import ComplianceStatus, Evaluation
from strongroom.services.account import SETTING_FRAMEWORKS, Account
from strongroom.services.compliance.evaluate import control_status, evaluate_framework
from strongroom.services.compliance.snapshot import applied_frameworks, take_snapshot
from strongroom.services.notifications.outbox import deliver_now, queue_safely

EVENT = "RESOURCE_COMPLIANCE_CHANGED"
_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Change:
    before: Evaluation | None
    after: Evaluation


def evaluate_all(account: Account, now: datetime) -> list[Change]:
    """Evaluate every applied framework at ``now``, store the verdicts, raise an event per change."""
    previous = {_key(e): e for e in account.catalog.list_evaluations()}
    if not previous and not account.catalog.get_setting(SETTING_FRAMEWORKS):
        return []  # nothing to evaluate, nothing to forget
    view = take_snapshot(account, now)
    fresh = [e for framework in view.frameworks.values() for e in evaluate_framework(view, framework)]
    kept, changes = [], []
    for evaluation in fresh:
        before = previous.get(_key(evaluation))
        if before is not None and before.status == evaluation.status:
            evaluation = replace(evaluation, changed_at=before.changed_at)
        elif before is not None or evaluation.status == ComplianceStatus.NON_COMPLIANT:
            changes.append(Change(before, evaluation))
        kept.append(evaluation)
    account.catalog.store_evaluations(sorted(view.frameworks), kept)
    for change in changes:
        _announce(account, change)
    return changes


def _key(e: Evaluation) -> tuple[str, str, str]:
    return e.framework, e.control, e.resource_id


def _announce(account: Account, change: Change) -> None:
    after = change.after
    payload: dict[str, Any] = {
        "state": after.status.value,
        "previous_state": change.before.status.value if change.before else None,
        "framework_name": after.framework,
        "control_name": after.control,
        "resource_id": after.resource_id,
        "resource_type": after.resource_type,
        "reason": after.reason,
        "last_evaluation_time": after.evaluated_at,
        "event_time": after.evaluated_at,
    }
    for vault in account.catalog.list_vaults():
        if vault.notifications and EVENT in vault.notifications.get("events", []):
            try:
                deliver_now(account, queue_safely(account, vault.name, EVENT, payload))
            except Exception as exc:  # an evaluation never fails for a notification
                _LOG.warning("could not notify %s on vault %s: %s", EVENT, vault.name, type(exc).__name__)


def framework_view(account: Account, name: str) -> dict[str, Any]:
    """What ``frameworks describe`` shows: each control's status, parameters, scope, and its verdict per subject."""
    framework = applied_frameworks(account)[name]
    stored = account.catalog.list_evaluations(name)
    controls = []
    for control in framework.controls:
        rows = [e for e in stored if e.control == control.name]
        controls.append(
            {
                "control_name": control.name,
                "control_compliance_status": control_status(rows).value,
                "input_parameters": control.parameters,
                "control_scope": control.scope.as_dict(),
                "num_resources_compliant": sum(e.status == ComplianceStatus.COMPLIANT for e in rows),
                "num_resources_non_compliant": sum(e.status == ComplianceStatus.NON_COMPLIANT for e in rows),
                "resources": [e.as_dict() for e in rows],
            }
        )
    return {
        "framework_name": name,
        "framework_description": framework.description,
        "framework_status": _framework_status(controls),
        "controls": controls,
    }


def _framework_status(controls: list[dict[str, Any]]) -> str:
    bad = any(c["control_compliance_status"] == ComplianceStatus.NON_COMPLIANT for c in controls)
    return ComplianceStatus.NON_COMPLIANT.value if bad else ComplianceStatus.COMPLIANT.value
