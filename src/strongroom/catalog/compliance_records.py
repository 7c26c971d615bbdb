"""The catalog's records of framework evaluations and report jobs (tables ``compliance_evaluations``, ``report_jobs``).

An evaluation is the last verdict of one control of one framework on one resource (a protected resource, or a
backup plan for the plan controls), with the reason a person reads and when the verdict last changed. A report
job is one run of a report plan (AWS's ``ReportJob``): what it covered, where its files went, how it ended.
``services/compliance/`` and ``services/reports/`` are the only writers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class ComplianceStatus(StrEnum):
    COMPLIANT = "COMPLIANT"
    NON_COMPLIANT = "NON_COMPLIANT"


@dataclass(frozen=True)
class Evaluation:
    framework: str
    control: str
    resource_id: str
    resource_type: str
    status: ComplianceStatus
    reason: str
    evaluated_at: str
    changed_at: str  # when the status became what it is

    def as_dict(self) -> dict[str, Any]:
        return {
            "framework_name": self.framework,
            "control_name": self.control,
            "resource_id": self.resource_id,
            "resource_type": self.resource_type,
            "compliance_status": self.status.value,
            "reason": self.reason,
            "last_evaluation_time": self.evaluated_at,
            "status_changed_at": self.changed_at,
        }


class ReportJobState(StrEnum):
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


@dataclass(frozen=True)
class ReportJob:
    id: str
    report_plan_name: str
    report_template: str
    state: ReportJobState
    creation_time: str
    period_start: str
    period_end: str
    trigger: str  # SCHEDULED or ON_DEMAND
    destination: str  # the store URL the files went to (never credentials: store URLs refuse them)
    completion_time: str | None = None
    status_message: str | None = None
    keys: list[str] = field(default_factory=list)  # the files written, relative to the destination

    def as_dict(self) -> dict[str, Any]:
        return {
            "report_job_id": self.id,
            "report_plan_name": self.report_plan_name,
            "report_template": self.report_template,
            "status": self.state.value,
            "status_message": self.status_message,
            "trigger": self.trigger,
            "creation_time": self.creation_time,
            "completion_time": self.completion_time,
            "report_time_period_start": self.period_start,
            "report_time_period_end": self.period_end,
            "report_destination": {"store": self.destination, "keys": list(self.keys)},
        }
