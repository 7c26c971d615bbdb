"""The events of jobs and recovery points: which event a job raises, and the payload it carries.

A job raises its ``*_STARTED`` event when it starts and, when it ends, BACKUP_JOB_COMPLETED (with its
state), COPY_JOB_SUCCESSFUL or COPY_JOB_FAILED, or RESTORE_JOB_COMPLETED; a recovery point whose status or
retention changes raises RECOVERY_POINT_MODIFIED. Each is queued and delivered at once (outbox.py); none
of these functions raises.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from strongroom import model
from strongroom.errors import StrongroomError
from strongroom.model import Job, JobState, JobType, RecoveryPoint, iso
from strongroom.services.account import Account
from strongroom.services.notifications.outbox import deliver_now, queue_safely

STARTED_STATE = "RUNNING"
_LOG = logging.getLogger(__name__)
STARTED_EVENTS = {
    JobType.BACKUP: "BACKUP_JOB_STARTED",
    JobType.COPY: "COPY_JOB_STARTED",
    JobType.RESTORE: "RESTORE_JOB_STARTED",
}


def job_started(account: Account, job_id: str, **extra: Any) -> None:
    """Queue and deliver the job's *_STARTED event; never raises."""
    _job_event(account, job_id, extra, started=True)


def job_finished(account: Account, job_id: str, **extra: Any) -> None:
    """Queue and deliver the event of a finished job (BACKUP_JOB_COMPLETED with its state, COPY_JOB_SUCCESSFUL
    or COPY_JOB_FAILED, RESTORE_JOB_COMPLETED); nothing for a job still running; never raises."""
    _job_event(account, job_id, extra, started=False)


@contextmanager
def job_events(account: Account, job_id: str) -> Iterator[None]:
    """The job's started event now, its finished event when the block ends (whatever way it ends)."""
    job_started(account, job_id)
    try:
        yield
    finally:
        job_finished(account, job_id)


def _job_event(account: Account, job_id: str, extra: dict[str, Any], *, started: bool) -> None:
    try:
        job = account.catalog.get_job(job_id)
        event = STARTED_EVENTS[job.job_type] if started else _finished_event(job)
        if event is None or not job.vault_name:
            return
        payload = {**job_payload(account, job), **extra}
        if started:
            payload.update(state=STARTED_STATE, start_date=job.start_date or iso(model.now()))
        deliver_now(account, queue_safely(account, job.vault_name, event, payload))
    except Exception as exc:  # never fail the job
        _LOG.warning("could not notify about job %s: %s", job_id, type(exc).__name__)


def _finished_event(job: Job) -> str | None:
    if not job.state.finished:
        return None
    if job.job_type == JobType.COPY:
        return "COPY_JOB_SUCCESSFUL" if job.state == JobState.COMPLETED else "COPY_JOB_FAILED"
    return "BACKUP_JOB_COMPLETED" if job.job_type == JobType.BACKUP else "RESTORE_JOB_COMPLETED"


def job_payload(account: Account, job: Job) -> dict[str, Any]:
    described = job.as_dict()
    params, result = job.parameters, job.result
    payload = {
        key: described[key]
        for key in (
            "job_id",
            "job_type",
            "state",
            "resource_id",
            "recovery_point_arn",
            "creation_date",
            "start_date",
            "completion_date",
            "duration_seconds",
            "bytes_processed",
            "status_message",
        )
    }
    failed = job.state.finished and job.state != JobState.COMPLETED
    payload["error"] = job.status_message if failed else None
    payload["backup_plan_name"] = params.get("backup_plan_name") or params.get("plan_name")
    payload["rule_name"] = params.get("rule_name")
    payload.update(_point_fields(account, job.recovery_point_arn if job.job_type != JobType.RESTORE else None))
    payload["resource_type"] = payload.get("resource_type") or _resource_type(account, job)
    if job.job_type == JobType.COPY:
        payload.update(_copy_fields(params, result))
    if job.job_type == JobType.RESTORE:
        payload["source_recovery_point_arn"] = job.recovery_point_arn
        payload["restore_testing_plan_name"] = params.get("restore_testing_plan_name")
    return payload


def _point_fields(account: Account, arn: str | None) -> dict[str, Any]:
    if not arn:
        return {"source_bytes": None, "stored_bytes": None, "new_bytes": None}
    rp = account.catalog.get_recovery_point(arn)
    return {
        "resource_type": rp.resource_type,
        "source_bytes": rp.source_bytes,
        "stored_bytes": rp.stored_bytes,
        "new_bytes": rp.new_bytes,
        "recovery_point_status": rp.status.value,
    }


def _resource_type(account: Account, job: Job) -> str | None:
    try:
        if job.job_type == JobType.RESTORE and job.recovery_point_arn:
            return account.catalog.get_recovery_point(job.recovery_point_arn).resource_type
        return account.catalog.get_resource(job.resource_id or "").type
    except StrongroomError:
        return None


def _copy_fields(params: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    return {
        "direction": params.get("direction"),
        "source_recovery_point_arn": params.get("source_recovery_point_arn"),
        "source_backup_vault_arn": params.get("source_backup_vault_arn"),
        "destination_backup_vault_arn": params.get("destination_backup_vault_arn"),
        "destination_recovery_point_arn": result.get("destination_recovery_point_arn"),
        "bytes_transferred": result.get("bytes_transferred"),
        "bytes_on_wire": result.get("bytes_on_wire"),
    }


def recovery_point_modified(account: Account, recovery_point: str, change: str, **extra: Any) -> None:
    """Queue and deliver RECOVERY_POINT_MODIFIED (``state``: the point's status now); never raises."""
    try:
        rp = account.catalog.get_recovery_point(recovery_point)
        payload = {**_point_payload(rp), "change": change, **extra}
        deliver_now(account, queue_safely(account, rp.vault_name, "RECOVERY_POINT_MODIFIED", payload))
    except Exception as exc:  # never fail the operation
        _LOG.warning("could not notify about recovery point %s: %s", recovery_point, type(exc).__name__)


def _point_payload(rp: RecoveryPoint) -> dict[str, Any]:
    described = rp.as_dict()
    keys = (
        "recovery_point_arn",
        "resource_id",
        "resource_type",
        "status_message",
        "creation_date",
        "completion_date",
        "source_bytes",
        "stored_bytes",
        "new_bytes",
        "lifecycle",
        "calculated_lifecycle",
        "backup_job_id",
        "source_recovery_point_arn",
    )
    return {"state": rp.status.value, **{key: described[key] for key in keys}}
