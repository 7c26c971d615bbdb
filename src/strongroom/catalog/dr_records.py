"""The catalog's records of disaster-recovery runs and their steps (tables ``dr_runs`` and ``dr_steps``).

A run stores the runbook it executes (``config/runbook.py``'s ``Runbook.as_dict``) so a resumed run
does the same steps even when the file changed; a step row holds its state, attempts, outputs (what
later steps read as ``${steps.NAME.FIELD}``), its checkpoint (where a resumed attempt restarts) and
the changes it made. ``services/dr/engine.py`` is the only writer; the catalog maps rows to these
records with ``catalog/records.record``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class DrState(StrEnum):
    PENDING = "PENDING"  # a step not started yet
    RUNNING = "RUNNING"  # a run or step under way, or interrupted (the lock tells: see engine._state)
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"  # a step whose ``when`` did not hold
    INTERRUPTED = "INTERRUPTED"  # shown, never stored: RUNNING with nobody holding the run's lock


@dataclass(frozen=True)
class DrRun:
    id: str
    runbook_name: str
    runbook: dict[str, Any]  # Runbook.as_dict() at the start of the run
    rehearsal: bool
    state: DrState
    incident_time: str
    created_at: str
    updated_at: str
    completed_at: str | None = None
    error: str | None = None
    report: dict[str, Any] | None = None  # kept once the run is COMPLETED (or a rehearsal FAILED)


@dataclass(frozen=True)
class DrStep:
    run_id: str
    position: int  # 0-based order in the runbook
    name: str
    type: str
    state: DrState = DrState.PENDING
    attempts: int = 0
    started_at: str | None = None
    completed_at: str | None = None
    duration_seconds: float | None = None
    outputs: dict[str, Any] | None = None
    checkpoint: dict[str, Any] | None = None
    changes: list[str] | None = None
    error: str | None = None
