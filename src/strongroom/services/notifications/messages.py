"""What people read of an event: its one-line summary (the title) and a few Markdown lines under it."""

from __future__ import annotations

from typing import Any

_TITLES = {
    "BACKUP_JOB_STARTED": "Backup job started",
    "BACKUP_JOB_COMPLETED": "Backup job {state}",
    "COPY_JOB_STARTED": "Copy job started",
    "COPY_JOB_SUCCESSFUL": "Copy job COMPLETED",
    "COPY_JOB_FAILED": "Copy job {state}",
    "RESTORE_JOB_STARTED": "Restore job started",
    "RESTORE_JOB_COMPLETED": "Restore job {state}",
    "RESTORE_JOB_FAILED": "Restore test {state}",
    "RESTORE_VALIDATION_COMPLETED": "Restore test validation {state}",
    "RECOVERY_POINT_MODIFIED": "Recovery point {state}",
    "RESOURCE_COMPLIANCE_CHANGED": "Now {state}",
}


def summary(payload: dict[str, Any]) -> str:
    """One line: what happened to which resource in which vault."""
    title = _TITLES.get(payload["event"], payload["event"]).format(state=payload.get("state") or "")
    resource = payload.get("resource_id") or "?"
    return f"{title}: {resource} in vault {payload['backup_vault_name']} (account {payload['account_id']})"


def message(payload: dict[str, Any]) -> str:
    """A few Markdown lines under the summary: error, job, plan, sizes, duration, recovery point."""
    lines = []
    if payload.get("control_name"):
        lines.append(f"**Control:** {payload['control_name']} of framework {payload.get('framework_name')}")
        lines.append(f"**Reason:** {payload.get('reason')}")
    if payload.get("error"):
        lines.append(f"**Error:** {payload['error']}")
    elif payload.get("change"):
        lines.append(f"**Change:** {payload['change']}")
    if payload.get("validation_status_message"):
        lines.append(f"**Validation:** {payload['validation_status_message']}")
    if payload.get("restore_testing_plan_name"):
        lines.append(f"**Restore testing plan:** {payload['restore_testing_plan_name']}")
    if payload.get("job_id"):
        lines.append(f"**Job:** `{payload['job_id']}` ({payload.get('job_type', '').lower()})")
    if payload.get("backup_plan_name") or payload.get("rule_name"):
        lines.append(f"**Plan:** {payload.get('backup_plan_name') or '?'}, rule {payload.get('rule_name') or '?'}")
    sizes = _sizes(payload)
    if sizes:
        lines.append(f"**Size:** {sizes}")
    if payload.get("duration_seconds") is not None:
        lines.append(f"**Duration:** {payload['duration_seconds']:g} s")
    arn = payload.get("destination_recovery_point_arn") or payload.get("recovery_point_arn")
    if arn:
        lines.append(f"**Recovery point:** `{arn}`")
    lines.append(f"**When:** {payload.get('completion_date') or payload.get('event_time')}")
    return "\n".join(lines)


def _sizes(payload: dict[str, Any]) -> str:
    if payload.get("source_bytes"):
        return (
            f"{_bytes(payload['source_bytes'])} read, {_bytes(payload.get('stored_bytes'))} stored, "
            f"{_bytes(payload.get('new_bytes'))} new"
        )
    if payload.get("bytes_transferred"):
        return f"{_bytes(payload['bytes_transferred'])} copied"
    return ""


def _bytes(count: int | None) -> str:
    value = float(count or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
