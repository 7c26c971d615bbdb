"""The report templates: their columns, with AWS Backup Audit Manager's names, and their rows (pure).

Job reports (BACKUP_JOB_REPORT, COPY_JOB_REPORT, RESTORE_JOB_REPORT) hold the jobs that finished within the
report's period and every job still active at its end, as AWS's do. Compliance reports hold the last
evaluations of the plan's frameworks (all of them when it names none).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from strongroom.catalog.compliance_records import ComplianceStatus, Evaluation
from strongroom.model import Job, JobState, JobType, Resource
from strongroom.policy.controls import Framework
from strongroom.services.restore_testing_records import restore_test_of

Row = dict[str, Any]

JOB_PERIOD = ("reportTimePeriodStart", "reportTimePeriodEnd", "accountId", "region")
COLUMNS: dict[str, tuple[str, ...]] = {
    "BACKUP_JOB_REPORT": (
        *JOB_PERIOD,
        "backupJobId",
        "jobStatus",
        "statusMessage",
        "resourceType",
        "resourceArn",
        "resourceName",
        "backupPlanName",
        "backupRuleName",
        "creationDate",
        "completionDate",
        "recoveryPointArn",
        "jobRunTime",
        "backupSizeInBytes",
        "backupVaultName",
        "backupVaultArn",
    ),
    "COPY_JOB_REPORT": (
        *JOB_PERIOD,
        "copyJobId",
        "jobStatus",
        "statusMessage",
        "resourceType",
        "resourceArn",
        "resourceName",
        "backupPlanName",
        "backupRuleName",
        "creationDate",
        "completionDate",
        "sourceRecoveryPointArn",
        "destinationRecoveryPointArn",
        "jobRunTime",
        "backupSizeInBytes",
        "sourceBackupVaultArn",
        "destinationBackupVaultArn",
    ),
    "RESTORE_JOB_REPORT": (
        *JOB_PERIOD,
        "restoreJobId",
        "jobStatus",
        "statusMessage",
        "resourceType",
        "resourceArn",
        "resourceName",
        "recoveryPointArn",
        "creationDate",
        "completionDate",
        "jobRunTime",
        "backupSizeInBytes",
        "validationStatus",
    ),
    "CONTROL_COMPLIANCE_REPORT": (
        "accountId",
        "region",
        "frameworkName",
        "frameworkDescription",
        "controlName",
        "controlComplianceStatus",
        "lastEvaluationTime",
        "numResourcesCompliant",
        "numResourcesNonCompliant",
        "controlScope",
        "controlParameters",
    ),
    "RESOURCE_COMPLIANCE_REPORT": (
        "accountId",
        "region",
        "frameworkName",
        "frameworkDescription",
        "controlName",
        "resourceName",
        "resourceId",
        "resourceType",
        "resourceComplianceStatus",
        "lastEvaluationTime",
        "complianceReason",  # Strongroom's: the evidence behind the verdict
    ),
}
JOB_TEMPLATES = {
    "BACKUP_JOB_REPORT": JobType.BACKUP,
    "COPY_JOB_REPORT": JobType.COPY,
    "RESTORE_JOB_REPORT": JobType.RESTORE,
}


@dataclass(frozen=True)
class ReportInput:
    """What one report reads, taken from the catalog by the caller."""

    account_id: str
    region: str
    period_start: datetime
    period_end: datetime
    jobs: Sequence[Job]
    resources: dict[str, Resource]
    vault_arns: dict[str, str]
    frameworks: dict[str, Framework]
    evaluations: Sequence[Evaluation]


def rows(template: str, data: ReportInput) -> list[Row]:
    if template in JOB_TEMPLATES:
        return _job_rows(template, data)
    if template == "CONTROL_COMPLIANCE_REPORT":
        return _control_rows(data)
    return _resource_rows(data)


# Jobs ----------------------------------------------------------------------------------------------------
def in_report(job: Job, start: datetime, end: datetime) -> bool:
    """Finished within [start, end), or still active at ``end`` (created before it)."""
    if job.state in (JobState.CREATED, JobState.RUNNING):
        return datetime.fromisoformat(job.creation_date) < end
    done = job.completion_date
    return done is not None and start <= datetime.fromisoformat(done) < end


def _job_rows(template: str, data: ReportInput) -> list[Row]:
    wanted = JOB_TEMPLATES[template]
    chosen = [j for j in data.jobs if j.job_type == wanted and in_report(j, data.period_start, data.period_end)]
    chosen.sort(key=lambda j: (j.creation_date, j.id))
    make: Callable[[Job, ReportInput], Row] = {
        JobType.BACKUP: _backup_row,
        JobType.COPY: _copy_row,
        JobType.RESTORE: _restore_row,
    }[wanted]
    return [{**_job_common(job, data), **make(job, data)} for job in chosen]


def _job_common(job: Job, data: ReportInput) -> Row:
    resource = data.resources.get(job.resource_id or "")
    resource_type = resource.type if resource else str(job.parameters.get("resource_type") or "")
    return {
        "reportTimePeriodStart": _stamp(data.period_start),
        "reportTimePeriodEnd": _stamp(data.period_end),
        "accountId": data.account_id,
        "region": data.region,
        "jobStatus": job.state.value,
        "statusMessage": job.status_message or "",
        "resourceType": resource_type,
        "resourceArn": resource_arn(data, job.resource_id) if job.resource_id else "",
        "resourceName": job.resource_id or "",
        "creationDate": job.creation_date,
        "completionDate": job.completion_date or "",
        "jobRunTime": _run_time(job),
        "backupSizeInBytes": job.bytes_processed,
    }


def resource_arn(data: ReportInput, resource_id: str | None) -> str:
    return f"arn:strongroom:backup:{data.region}:{data.account_id}:resource:{resource_id}"


def _backup_row(job: Job, data: ReportInput) -> Row:
    vault = job.vault_name or ""
    return {
        "backupJobId": job.id,
        "backupPlanName": str(job.parameters.get("backup_plan_name") or job.parameters.get("plan_name") or ""),
        "backupRuleName": str(job.parameters.get("rule_name") or ""),
        "recoveryPointArn": job.recovery_point_arn or "",
        "backupVaultName": vault,
        "backupVaultArn": data.vault_arns.get(vault, ""),
    }


def _copy_row(job: Job, data: ReportInput) -> Row:
    params = job.parameters
    return {
        "copyJobId": job.id,
        "backupPlanName": str(params.get("backup_plan_name") or params.get("plan_name") or ""),
        "backupRuleName": str(params.get("rule_name") or ""),
        "sourceRecoveryPointArn": str(params.get("source_recovery_point_arn") or ""),
        "destinationRecoveryPointArn": str(
            job.result.get("destination_recovery_point_arn") or job.recovery_point_arn or ""
        ),
        "sourceBackupVaultArn": str(params.get("source_backup_vault_arn") or _pushed_from(job, data)),
        "destinationBackupVaultArn": str(params.get("destination_backup_vault_arn") or ""),
    }


def _pushed_from(job: Job, data: ReportInput) -> str:
    """The source vault of a copy this account pushed, for jobs recorded before their parameters named it."""
    return data.vault_arns.get(job.vault_name or "", "") if job.parameters.get("direction") == "push" else ""


def _restore_row(job: Job, data: ReportInput) -> Row:
    """A restore test's validation status (PutRestoreValidationResult's) comes from its outcome; a plain
    restore job has none, as in AWS's report."""
    test = restore_test_of(job)
    outcome = test.outcome if test else None
    return {
        "restoreJobId": job.id,
        "recoveryPointArn": job.recovery_point_arn or "",
        "validationStatus": outcome.validation_status.value if outcome else "",
    }


def _run_time(job: Job) -> str:
    start, end = job.start_date or job.creation_date, job.completion_date
    if not end:
        return ""
    seconds = max(0, round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()))
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _stamp(moment: datetime) -> str:
    return moment.isoformat()


# Compliance ---------------------------------------------------------------------------------------------
def _control_rows(data: ReportInput) -> list[Row]:
    found = []
    for name in sorted(data.frameworks):
        framework = data.frameworks[name]
        for control in framework.controls:
            mine = [e for e in data.evaluations if e.framework == name and e.control == control.name]
            bad = sum(e.status == ComplianceStatus.NON_COMPLIANT for e in mine)
            found.append(
                {
                    "accountId": data.account_id,
                    "region": data.region,
                    "frameworkName": name,
                    "frameworkDescription": framework.description,
                    "controlName": control.name,
                    "controlComplianceStatus": (
                        ComplianceStatus.NON_COMPLIANT if bad else ComplianceStatus.COMPLIANT
                    ).value,
                    "lastEvaluationTime": max((e.evaluated_at for e in mine), default=""),
                    "numResourcesCompliant": len(mine) - bad,
                    "numResourcesNonCompliant": bad,
                    "controlScope": json.dumps(control.scope.as_dict(), sort_keys=True),
                    "controlParameters": json.dumps(control.parameters, sort_keys=True),
                }
            )
    return found


def _resource_rows(data: ReportInput) -> list[Row]:
    return [
        {
            "accountId": data.account_id,
            "region": data.region,
            "frameworkName": e.framework,
            "frameworkDescription": data.frameworks[e.framework].description,
            "controlName": e.control,
            "resourceName": e.resource_id,
            "resourceId": e.resource_id,
            "resourceType": e.resource_type,
            "resourceComplianceStatus": e.status.value,
            "lastEvaluationTime": e.evaluated_at,
            "complianceReason": e.reason,
        }
        for e in data.evaluations
        if e.framework in data.frameworks
    ]
