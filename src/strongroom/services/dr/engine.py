"""Runs of a runbook: started, executed step by step with every step's state persisted, resumed after a
crash or a failure without repeating finished steps, rehearsed against scratch names and cleaned up.

A run holds ``locks/dr-RUN.lock`` while a process executes it; a run left RUNNING with a free lock
was interrupted (killed, crashed, power cut) and ``resume`` continues it. A step that was RUNNING when
its process died runs again from its checkpoint: each handler converges (a restore discards the
half-restored target it owned and restores again; a secret is not written twice; a backup is not
taken twice). Fault points ``dr.before:STEP`` and ``dr.after:STEP`` let crash tests kill a run there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from strongroom.catalog.dr_records import DrRun, DrState, DrStep
from strongroom.config.runbook import Runbook, RunbookStep, StepModel
from strongroom.errors import BusyError, StrongroomError, UsageError
from strongroom.faults import fault_point
from strongroom.model import iso, new_id, now
from strongroom.services.account import Account
from strongroom.services.dr.context import StepContext, resolve_runtime
from strongroom.services.dr.report import build_report
from strongroom.services.dr.steps import HANDLERS
from strongroom.services.joblock import JobLock, is_held

RUNNING, COMPLETED, FAILED, SKIPPED = DrState.RUNNING, DrState.COMPLETED, DrState.FAILED, DrState.SKIPPED
DRY_RUN_ID = "dryrun00"


def start_run(
    account: Account, runbook: Runbook, *, rehearsal: bool = False, incident_time: datetime | None = None
) -> str:
    """Record a new run (every step PENDING); execute it with :func:`execute`."""
    run_id = new_id()
    moment = iso(now()) or ""
    run = DrRun(
        id=run_id,
        runbook_name=runbook.name,
        runbook=runbook.as_dict(),
        rehearsal=rehearsal,
        state=RUNNING,
        incident_time=iso(incident_time) or moment,
        created_at=moment,
        updated_at=moment,
    )
    steps = [DrStep(run_id, index, step.name, step.type) for index, step in enumerate(runbook.steps)]
    account.catalog.add_dr_run(run, steps)
    return run_id


Observer = Callable[[str, DrStep], None]  # ("start" | "done" | "skip", the step's row)


def execute(account: Account, run_id: str, observer: Observer | None = None) -> dict[str, Any]:
    """Run every step not yet finished, in order; the report. A failing step stops the run (resumable)."""
    lock = JobLock.try_acquire(lock_path(account, run_id))
    if lock is None:
        raise BusyError(
            f"disaster-recovery run {run_id} is being executed by another process",
            hint="wait for it, or stop that process first",
        )
    try:
        run = account.catalog.get_dr_run(run_id)
        _check_resumable(run)
        account.catalog.update_dr_run(run_id, state=RUNNING, error=None, updated_at=iso(now()))
        try:
            _execute_steps(account, run, observer or (lambda event, row: None))
        except StrongroomError as exc:
            _fail(account, run, exc)
            raise
        finish = _clean_up(account, run) if run.rehearsal else []
        account.catalog.update_dr_run(run_id, state=COMPLETED, completed_at=iso(now()), updated_at=iso(now()))
        report = build_report(account, run_id, cleanup=finish)
        account.catalog.update_dr_run(run_id, report=report)
        return report
    finally:
        lock.release()


def dry_run(
    account: Account, runbook: Runbook, *, rehearsal: bool = False, incident_time: datetime | None = None
) -> dict[str, Any]:
    """What a run would do, step by step, with the problems visible now; changes nothing."""
    incident = incident_time or now()
    earlier: list[dict[str, Any]] = []
    entries = []
    for index, record in enumerate(runbook.steps):
        entry: dict[str, Any] = {"position": index + 1, "name": record.name, "type": record.type}
        if not record.enabled:
            entries.append({**entry, "action": f"skip (when: {_when(record)})", "problems": []})
            continue
        outputs = {e["name"]: e["outputs"] for e in earlier}
        resolved = _resolved(record, outputs, {"id": DRY_RUN_ID, "rehearsal": rehearsal, "dry_run": True})
        ctx = StepContext(account, DRY_RUN_ID, rehearsal, resolved, earlier, dry_run=True, incident_time=incident)
        try:
            text, predicted, problems = HANDLERS[record.type].describe(ctx)
        except StrongroomError as exc:
            text, predicted, problems = f"{record.type}", {}, [exc.one_line()]
        entries.append({**entry, "action": text, "problems": problems})
        earlier.append({"name": record.name, "type": record.type, "outputs": predicted})
    count = sum(len(e["problems"]) for e in entries)
    return {
        "runbook": runbook.name,
        "file": runbook.file,
        "rehearsal": rehearsal,
        "variables": runbook.variables,
        "steps": entries,
        "problems": count,
    }


def list_runs(account: Account) -> list[dict[str, Any]]:
    return [_summary(account, run) for run in account.catalog.list_dr_runs()]


def describe_run(account: Account, run_id: str) -> dict[str, Any]:
    run = account.catalog.get_dr_run(run_id)
    if run.state == COMPLETED and run.report:
        return {**run.report, "state": COMPLETED.value}
    report = build_report(account, run_id, cleanup=[])
    return {**report, "state": _state(account, run)}


def lock_path(account: Account, run_id: str) -> Path:
    return account.locks_dir / f"dr-{run_id}.lock"


# Executing ----------------------------------------------------------------------------------------
def _check_resumable(run: DrRun) -> None:
    if run.state == COMPLETED:
        raise UsageError(
            f"disaster-recovery run {run.id} is already COMPLETED", hint="see its report with 'strongroom dr describe'"
        )
    if run.rehearsal and run.state == FAILED:
        raise UsageError(
            f"rehearsal {run.id} failed and was cleaned up; it cannot be resumed",
            hint="fix the cause and run 'strongroom dr rehearse' again",
        )


def _execute_steps(account: Account, run: DrRun, observer: Observer) -> None:
    runbook = Runbook.of(run.runbook)
    for row in account.catalog.list_dr_steps(run.id):
        if row.state in (COMPLETED, SKIPPED):
            continue
        record = runbook.steps[row.position]
        if not record.enabled:
            account.catalog.update_dr_step(
                run.id, row.position, state=SKIPPED, changes=[f"skipped: when {_when(record)} does not hold"]
            )
            observer("skip", row)
            continue
        fault_point(f"dr.before:{row.name}")
        observer("start", row)
        _run_step(account, run, row, record)
        observer("done", account.catalog.get_dr_step(run.id, row.position))
        fault_point(f"dr.after:{row.name}")


def _run_step(account: Account, run: DrRun, row: DrStep, record: RunbookStep) -> None:
    run_id, position = run.id, row.position
    earlier = _earlier(account, run_id, position)
    outputs = {e["name"]: e["outputs"] for e in earlier if e["outputs"] is not None}
    resolved = _resolved(record, outputs, {"id": run_id, "rehearsal": run.rehearsal})
    checkpoint = dict(row.checkpoint or {})
    ctx = StepContext(
        account,
        run_id,
        run.rehearsal,
        resolved,
        earlier,
        checkpoint=checkpoint,
        changes=list(checkpoint.get("changes") or []),
        save_checkpoint=lambda checkpoint: account.catalog.update_dr_step(run_id, position, checkpoint=checkpoint),
        incident_time=datetime.fromisoformat(run.incident_time),
    )
    account.catalog.update_dr_step(
        run_id, position, state=RUNNING, attempts=row.attempts + 1, started_at=iso(now()), error=None
    )
    started = time.monotonic()
    try:
        result = HANDLERS[record.type].run(ctx)
    except StrongroomError as exc:
        account.catalog.update_dr_step(
            run_id,
            position,
            state=FAILED,
            error=exc.one_line(),
            changes=list(dict.fromkeys(ctx.changes)),
            duration_seconds=round(time.monotonic() - started, 3),
        )
        exc.message = f"step '{row.name}' ({row.type}) failed: {exc.message}"
        raise
    account.catalog.update_dr_step(
        run_id,
        position,
        state=COMPLETED,
        completed_at=iso(now()),
        outputs=result,
        changes=list(dict.fromkeys(ctx.changes)),
        duration_seconds=round(time.monotonic() - started, 3),
    )


def _earlier(account: Account, run_id: str, position: int) -> list[dict[str, Any]]:
    return [
        {"name": r.name, "type": r.type, "state": r.state.value, "outputs": r.outputs if r.state == COMPLETED else None}
        for r in account.catalog.list_dr_steps(run_id)
        if r.position < position
    ]


def _fail(account: Account, run: DrRun, exc: StrongroomError) -> None:
    if run.rehearsal:
        cleanup = _clean_up(account, run)
        exc.hint = "the rehearsal cleaned up after itself; fix the cause and rehearse again"
        account.catalog.update_dr_run(
            run.id, state=FAILED, error=exc.one_line(), updated_at=iso(now()), completed_at=iso(now())
        )
        account.catalog.update_dr_run(run.id, report=build_report(account, run.id, cleanup=cleanup))
        return
    if "dr resume" not in exc.hint:
        exc.hint = (
            f"{exc.hint.rstrip('.') + '; then ' if exc.hint else 'fix the cause, then '}"
            f"run 'strongroom dr resume {run.id}' (finished steps are not repeated)"
        )
    account.catalog.update_dr_run(run.id, state=FAILED, error=exc.one_line(), updated_at=iso(now()))


def _clean_up(account: Account, run: DrRun) -> list[str]:
    """Undo a rehearsal: every finished step's clean-up, last step first. Failures are reported, not raised."""
    runbook = Runbook.of(run.runbook)
    done: list[str] = []
    rows = account.catalog.list_dr_steps(run.id)
    for row in reversed(rows):
        if row.state not in (COMPLETED, RUNNING, FAILED):
            continue
        earlier = _earlier(account, run.id, row.position)
        known = {e["name"]: e["outputs"] for e in earlier if e["outputs"] is not None}
        fields = _resolved(runbook.steps[row.position], known, {"id": run.id, "rehearsal": True, "dry_run": True})
        ctx = StepContext(account, run.id, True, fields, earlier, checkpoint=dict(row.checkpoint or {}))
        outputs = row.outputs or _partial_outputs(row)
        try:
            done += HANDLERS[row.type].clean_up(ctx, outputs)
        except StrongroomError as exc:
            done.append(f"could not clean up step {row.name}: {exc.one_line()}")
    return done


def _partial_outputs(row: DrStep) -> dict[str, Any]:
    """What a step that did not finish may have made, from its checkpoint (a restore's target)."""
    checkpoint = row.checkpoint or {}
    return {"partial": True, **checkpoint}


# Describing ---------------------------------------------------------------------------------------
def _state(account: Account, run: DrRun) -> str:
    if run.state == RUNNING and not is_held(lock_path(account, run.id)):
        return DrState.INTERRUPTED.value
    return run.state.value


def _summary(account: Account, run: DrRun) -> dict[str, Any]:
    steps = account.catalog.list_dr_steps(run.id)
    current = next((s.name for s in steps if s.state not in (COMPLETED, SKIPPED)), None)
    return {
        "run_id": run.id,
        "runbook": run.runbook_name,
        "rehearsal": run.rehearsal,
        "state": _state(account, run),
        "created_at": run.created_at,
        "completed_at": run.completed_at,
        "current_step": current,
        "error": run.error,
    }


def _when(record: RunbookStep) -> str:
    return ", ".join(f"{key} = {value}" for key, value in record.fields.when.items())


def _resolved(record: RunbookStep, outputs: dict[str, Any], run: dict[str, Any]) -> StepModel:
    """The step's fields with ${steps.*} and ${run.*} substituted, for its handler."""
    resolved: StepModel = resolve_runtime(record.fields, outputs, run)
    return resolved
