"""A framework's controls over their scopes: pure, from a snapshot to one evaluation per control and subject.

A control's scope picks the resources (ids, types, tags, all given limits applying); the backup-plan control's
scope picks plans by ``compliance_resource_ids`` (plans carry no type or tags here). The status of a control is
NON_COMPLIANT when any evaluated subject is, COMPLIANT otherwise (also when nothing was in scope, as AWS shows
a control without resources).
"""

from __future__ import annotations

from dataclasses import dataclass

from strongroom.catalog.compliance_records import ComplianceStatus, Evaluation
from strongroom.model import iso
from strongroom.policy.controls import Control, Framework
from strongroom.services.compliance.controls import PLAN_CONTROLS, RESOURCE_CONTROLS, Verdict
from strongroom.services.compliance.snapshot import CatalogSnapshot

PLAN_TYPE = "backup-plan"


@dataclass(frozen=True)
class Subject:
    resource_id: str
    resource_type: str
    verdict: Verdict


def evaluate_framework(view: CatalogSnapshot, framework: Framework) -> list[Evaluation]:
    moment = iso(view.now) or ""
    return [
        Evaluation(
            framework.name,
            control.name,
            s.resource_id,
            s.resource_type,
            s.verdict.status,
            s.verdict.reason,
            moment,
            moment,
        )
        for control in framework.controls
        for s in evaluate_control(view, control)
    ]


def evaluate_control(view: CatalogSnapshot, control: Control) -> list[Subject]:
    if control.name in PLAN_CONTROLS:
        check_plan = PLAN_CONTROLS[control.name]
        names = [n for n in sorted(view.plans) if not control.scope.resource_ids or n in control.scope.resource_ids]
        return [Subject(name, PLAN_TYPE, check_plan(view, control, name)) for name in names]
    check = RESOURCE_CONTROLS[control.name]
    found = []
    for resource in sorted(view.resources, key=lambda r: r.id):
        if not control.scope.covers(resource.id, resource.type, resource.tags):
            continue
        verdict = check(view, control, resource)
        if verdict is not None:
            found.append(Subject(resource.id, resource.type, verdict))
    return found


def control_status(evaluations: list[Evaluation]) -> ComplianceStatus:
    bad = any(e.status == ComplianceStatus.NON_COMPLIANT for e in evaluations)
    return ComplianceStatus.NON_COMPLIANT if bad else ComplianceStatus.COMPLIANT
