"""The report of a run: the recovery point used, RPO (the data's age at the incident), RTO (wall time
of the run, and per step), and every change made."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from strongroom.catalog.dr_records import DrStep
from strongroom.model import iso, now
from strongroom.services.account import Account


def build_report(account: Account, run_id: str, *, cleanup: list[str]) -> dict[str, Any]:
    run = account.catalog.get_dr_run(run_id)
    steps = account.catalog.list_dr_steps(run_id)
    selected = next((s.outputs for s in steps if s.type == "select_recovery_point" and s.outputs), None)
    restored = next((s.outputs for s in steps if s.type == "restore" and s.outputs), None)
    incident = _at(run.incident_time)
    finished = _at(run.completed_at) if run.completed_at else now()
    report: dict[str, Any] = {
        "run_id": run_id,
        "runbook": run.runbook_name,
        "runbook_file": run.runbook.get("file"),
        "rehearsal": run.rehearsal,
        "state": run.state.value,
        "error": run.error,
        "incident_time": run.incident_time,
        "started_at": run.created_at,
        "completed_at": run.completed_at,
        "recovery_point": _point(selected, restored),
        "rpo_seconds": _seconds(incident - _at(selected["creation_date"])) if selected else None,
        "rto_seconds": _seconds(finished - _at(run.created_at)),
        "steps_seconds": round(sum(s.duration_seconds or 0 for s in steps), 3),
        "restored": _restored(restored),
        "steps": [_step(s) for s in steps],
        "changes": [change for s in steps for change in (s.changes or [])],
        "cleanup": cleanup,
        "report_time": iso(now()),
    }
    return report


def _point(selected: dict[str, Any] | None, restored: dict[str, Any] | None) -> dict[str, Any] | None:
    if not selected:
        return None
    point = {
        key: selected.get(key)
        for key in ("recovery_point_arn", "creation_date", "resource_id", "resource_type", "vault", "account")
    }
    for key in ("restore_time", "base_recovery_point_arn"):  # a continuous point, restored to a second
        if selected.get(key):
            point[key] = selected[key]
    if restored and restored.get("copied_back"):
        point["copied_back_as"] = restored.get("recovery_point_arn")
    return point


def _restored(restored: dict[str, Any] | None) -> dict[str, Any] | None:
    if not restored:
        return None
    keys = (
        "identifier",
        "resource_type",
        "host",
        "port",
        "dbname",
        "data_directory",
        "stop_command",
        "disabled_on_restore",
    )
    return {key: restored.get(key) for key in keys if restored.get(key) is not None}


def _step(row: DrStep) -> dict[str, Any]:
    return {
        "name": row.name,
        "type": row.type,
        "state": row.state.value,
        "attempts": row.attempts,
        "started_at": row.started_at,
        "completed_at": row.completed_at,
        "duration_seconds": row.duration_seconds,
        "changes": row.changes or [],
        "error": row.error,
    }


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _seconds(delta: Any) -> float:
    return round(delta.total_seconds(), 3)
