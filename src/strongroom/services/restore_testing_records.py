"""What a restore test records: an ordinary RESTORE job with two typed additions (docs/restore-testing.md).

A restore test is a restore job (``JobType.RESTORE``) like any other, so ``jobs list``, the RESTORE_JOB_REPORT
and the metrics see it; what makes it a test is stored beside the job's own fields:

- ``parameters["restore_testing"]``: a :class:`RestoreTestSpec`, written with the job, before the restore
  creates anything: the plan and selection, and the scratch target it restores into (so a run that dies
  leaves a record of what to remove);
- ``result["restore_testing"]``: a :class:`RestoreTestOutcome`, once the test ends: status, validation status
  and message, the measured restore time and whether the scratch target was removed.

``parameters["restore_testing_plan_name"]`` repeats the plan's name at the top, as AWS's restore job has it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from strongroom.adapters.base import RestoreRequest
from strongroom.model import Job, JobType

KEY = "restore_testing"
PLAN_NAME_KEY = "restore_testing_plan_name"


class RestoreTestStatus(StrEnum):
    SUCCESSFUL = "SUCCESSFUL"  # restored, and validation SUCCESSFUL or SKIPPED
    FAILED = "FAILED"  # the restore failed, or validation FAILED
    TIMED_OUT = "TIMED_OUT"  # validation did not finish within validation_window_hours


class ValidationStatus(StrEnum):
    SUCCESSFUL = "SUCCESSFUL"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"  # nothing to validate with, or the restore itself failed
    TIMED_OUT = "TIMED_OUT"


class CleanupState(StrEnum):
    PENDING = "PENDING"  # the scratch target may exist
    DONE = "DONE"  # removed (or never made)
    FAILED = "FAILED"  # removing it failed; the next run tries again


@dataclass(frozen=True)
class ScratchTarget:
    """Where a restore test restores to: recorded before the restore creates it."""

    resource_type: str
    identifier: str
    target: str | None = None
    port: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    directory: str | None = None  # directory and sqlite tests: the scratch directory removed afterwards

    def request(self) -> RestoreRequest:
        return RestoreRequest(self.target, self.identifier, self.port, False, dict(self.options))

    def as_dict(self) -> dict[str, Any]:
        return {
            "resource_type": self.resource_type,
            "identifier": self.identifier,
            "target": self.target,
            "port": self.port,
            "options": dict(self.options),
            "directory": self.directory,
        }

    @classmethod
    def of(cls, data: dict[str, Any]) -> ScratchTarget:
        return cls(
            data["resource_type"],
            data["identifier"],
            data.get("target"),
            data.get("port"),
            dict(data.get("options") or {}),
            data.get("directory"),
        )


@dataclass(frozen=True)
class RestoreTestSpec:
    plan_name: str
    selection_name: str
    scratch: ScratchTarget
    validation_window_hours: int
    scheduled_for: str | None = None  # the plan's occurrence; None when started by hand
    copied_back_recovery_point_arn: str | None = None  # a destination point copied here first, deleted after
    selected_recovery_point_arn: str | None = None  # the point chosen (in another account when copied back)

    def as_dict(self) -> dict[str, Any]:
        return {
            "plan_name": self.plan_name,
            "selection_name": self.selection_name,
            "scratch": self.scratch.as_dict(),
            "validation_window_hours": self.validation_window_hours,
            "scheduled_for": self.scheduled_for,
            "copied_back_recovery_point_arn": self.copied_back_recovery_point_arn,
            "selected_recovery_point_arn": self.selected_recovery_point_arn,
        }

    @classmethod
    def of(cls, data: dict[str, Any]) -> RestoreTestSpec:
        return cls(
            data["plan_name"],
            data["selection_name"],
            ScratchTarget.of(data["scratch"]),
            int(data["validation_window_hours"]),
            data.get("scheduled_for"),
            data.get("copied_back_recovery_point_arn"),
            data.get("selected_recovery_point_arn"),
        )


@dataclass(frozen=True)
class RestoreTestOutcome:
    status: RestoreTestStatus
    validation_status: ValidationStatus
    validation_status_message: str
    completed_at: str
    restore_seconds: float | None = None  # the restore job's start to end: the measured RTO
    cleanup: CleanupState = CleanupState.PENDING
    cleanup_message: str | None = None
    validations: list[dict[str, Any]] = field(default_factory=list)  # each check: kind, status, message

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "validation_status": self.validation_status.value,
            "validation_status_message": self.validation_status_message,
            "completed_at": self.completed_at,
            "restore_seconds": self.restore_seconds,
            "cleanup": self.cleanup.value,
            "cleanup_message": self.cleanup_message,
            "validations": list(self.validations),
        }

    @classmethod
    def of(cls, data: dict[str, Any]) -> RestoreTestOutcome:
        return cls(
            RestoreTestStatus(data["status"]),
            ValidationStatus(data["validation_status"]),
            data.get("validation_status_message") or "",
            data["completed_at"],
            data.get("restore_seconds"),
            CleanupState(data.get("cleanup") or CleanupState.PENDING),
            data.get("cleanup_message"),
            list(data.get("validations") or []),
        )


@dataclass(frozen=True)
class RestoreTest:
    """A restore job seen as a restore test."""

    job: Job
    spec: RestoreTestSpec
    outcome: RestoreTestOutcome | None  # None while it runs (or when its process died: the next run settles it)

    def as_dict(self) -> dict[str, Any]:
        described = self.job.as_dict()
        outcome = self.outcome.as_dict() if self.outcome else None
        return {
            "restore_job_id": self.job.id,
            "restore_testing_plan_name": self.spec.plan_name,
            "restore_testing_selection_name": self.spec.selection_name,
            "resource_id": self.job.resource_id,
            "resource_type": self.spec.scratch.resource_type,
            "recovery_point_arn": self.spec.selected_recovery_point_arn or self.job.recovery_point_arn,
            "backup_vault_name": self.job.vault_name,
            "state": self.job.state.value,
            "status": outcome["status"] if outcome else None,
            "validation_status": outcome["validation_status"] if outcome else None,
            "validation_status_message": outcome["validation_status_message"] if outcome else None,
            "restore_seconds": outcome["restore_seconds"] if outcome else None,
            "creation_date": self.job.creation_date,
            "completion_date": outcome["completed_at"] if outcome else None,
            "scheduled_for": self.spec.scheduled_for,
            "scratch": self.spec.scratch.as_dict(),
            "cleanup": outcome["cleanup"] if outcome else CleanupState.PENDING.value,
            "cleanup_message": outcome["cleanup_message"] if outcome else None,
            "validations": outcome["validations"] if outcome else [],
            "status_message": described["status_message"],
        }


def restore_test_of(job: Job) -> RestoreTest | None:
    """The restore test a job is, or None for any other job."""
    spec = job.parameters.get(KEY) if job.job_type == JobType.RESTORE else None
    if not isinstance(spec, dict):
        return None
    outcome = job.result.get(KEY)
    return RestoreTest(job, RestoreTestSpec.of(spec), RestoreTestOutcome.of(outcome) if outcome else None)
