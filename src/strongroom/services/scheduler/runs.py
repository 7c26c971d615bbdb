"""The schedule-run state machine and, inside a COPYING run, the copy-action state machine.

A run waits CREATED until its backup job starts (retried with backoff within the start window), EXPIRED
when the window ends first; a job still running at the end of the completion window is ABORTED; a completed
backup starts the rule's copy actions (``CopyAttempt``, each retried the same way within the completion
window). Every write is a compare-and-set on the run's state (and attempts) in the catalog, so two
schedulers never both start one run; ``ScheduleRun`` mirrors what was written.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from strongroom import model
from strongroom.errors import StrongroomError
from strongroom.model import Job, JobState, JobType, iso, new_id
from strongroom.plans.records import ACTIVE_RUN_STATES, CopyAttempt, CopyState, RunState, ScheduleRun
from strongroom.services import notifications
from strongroom.services.account import Account
from strongroom.services.backup import create_backup_job
from strongroom.services.copy import create_copy_job
from strongroom.services.job_runner import Runner, abort_job, job_alive
from strongroom.services.jobs import DEAD_JOB_MESSAGE, fail_job

log = logging.getLogger("strongroom.scheduler")

MAX_ATTEMPTS = 3  # a job is tried at most this often per run (copies: per copy action)
FIRST_RETRY = timedelta(minutes=5)  # doubled after each failed attempt


@dataclass
class Tally:
    """What one tick (or shutdown) did: counters for its report, and the errors it survived."""

    counts: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def reset(self) -> None:
        self.counts.clear()
        self.errors.clear()

    def guarded(self, what: str, action: Callable[..., Any], *args: Any) -> Any:
        try:
            return action(*args)
        except StrongroomError as exc:
            self.errors.append(f"{what}: {exc.one_line()}")
            log.warning("%s: %s", what, exc.one_line())
            return None


class RunMachine:
    """Advances the active runs of one account; ``hold_lease`` is asked before each job starts."""

    def __init__(self, account: Account, runner: Runner, tally: Tally, hold_lease: Callable[[datetime], bool]) -> None:
        self.account = account
        self.catalog = account.catalog
        self.runner = runner
        self.tally = tally
        self.hold_lease = hold_lease
        self.accepting = True  # False once the daemon stops: no job starts any more

    def advance(self) -> None:
        runs = self.catalog.list_schedule_runs(states=list(ACTIVE_RUN_STATES))
        for run in runs:
            if run.state == RunState.RUNNING:
                self.tally.guarded(_label(run), self._watch_backup, run)
            elif run.state == RunState.COPYING:
                self.tally.guarded(_label(run), self._advance_copies, run)
        for run in runs:
            if run.state == RunState.CREATED:
                self.tally.guarded(_label(run), self._created, run)

    def running_jobs(self) -> list[tuple[str, int | None]]:
        """(job id, pid) of every job the runs are waiting for."""
        jobs = []
        for run in self.catalog.list_schedule_runs(states=[RunState.RUNNING, RunState.COPYING]):
            if run.state == RunState.RUNNING and run.job_id:
                jobs.append((run.job_id, run.details.pid))
            jobs += [(c.job_id, c.pid) for c in run.copies if c.state == CopyState.RUNNING and c.job_id]
        return jobs

    def abort(self, job_id: str, pid: int | None, message: str) -> None:
        job, marked_here = abort_job(self.account, self.catalog.get_job(job_id), pid, message)
        if job.state != JobState.ABORTED:
            return  # it finished on its own meanwhile
        self.tally.counts["jobs_aborted"] += 1
        if marked_here:  # else the job's own process sent its finished event as it wound up
            notifications.job_finished(self.account, job.id)

    # The backup ------------------------------------------------------------------------------------------
    def _created(self, run: ScheduleRun) -> None:
        now = model.now()
        if now >= _at(run.start_window_ends):
            self._expire(run, now)
        elif self.accepting and (run.next_attempt_at is None or now >= _at(run.next_attempt_at)):
            self._start_backup(run, now)

    def _start_backup(self, run: ScheduleRun, now: datetime) -> None:
        if not self._has_capacity() or not self.hold_lease(now):
            return
        if not self._save(
            run,
            state=RunState.CREATED,
            attempts=run.attempts,
            new_state=RunState.RUNNING,
            new_attempts=run.attempts + 1,
            job_id=None,
        ):
            return  # another scheduler took it
        rule = run.rule
        try:
            job, lock = create_backup_job(
                self.account,
                run.resource_id,
                rule.target_vault_name or "",
                rule.delete_after_days,
                tags=dict(rule.recovery_point_tags),
            )
        except StrongroomError as exc:
            self._attempt_failed(run, exc.one_line(), job=None)
            return
        self.catalog.update_job(job.id, parameters={**job.parameters, **_plan_fields(run)})
        jobs = (*run.details.jobs, job.id)
        self._save(run, state=RunState.RUNNING, job_id=job.id, details=replace(run.details, jobs=jobs))
        self.tally.counts["jobs_started"] += 1
        pid = self.runner.start(self.account, job, lock)
        if pid is not None:
            self._save(run, state=RunState.RUNNING, details=replace(run.details, pid=pid))
        self._watch_backup(run)  # a synchronous runner has finished the job already

    def _watch_backup(self, run: ScheduleRun) -> None:
        if run.job_id is None:
            self._attempt_failed(run, "the scheduler stopped while it was starting the job", job=None)
            return
        job = self.catalog.get_job(run.job_id)
        if job.state == JobState.COMPLETED:
            self._backup_completed(run, job)
        elif job.state == JobState.ABORTED:
            self._finish(run, RunState.ABORTED, job.status_message)
        elif job.state.finished:
            self._attempt_failed(run, job.status_message or job.state.value, job=job)
        elif model.now() >= _at(run.completion_window_ends):
            self.abort(job.id, run.details.pid, _completion_message(run))
            self._finish(run, RunState.ABORTED, _completion_message(run))
        elif not job_alive(self.account, job.id):
            self._dead(job)
            self._attempt_failed(run, DEAD_JOB_MESSAGE, job=job)

    def _attempt_failed(self, run: ScheduleRun, message: str, *, job: Job | None) -> None:
        retry_at = model.now() + FIRST_RETRY * 2 ** max(run.attempts - 1, 0)
        if run.attempts < MAX_ATTEMPTS and retry_at < _at(run.start_window_ends):
            note = f"attempt {run.attempts} failed: {message}; next attempt at {iso(retry_at)}"
            if self._save(
                run,
                state=run.state,
                new_state=RunState.CREATED,
                next_attempt_at=iso(retry_at),
                details=replace(run.details, message=note),
            ):
                self.tally.counts["retries_scheduled"] += 1
            return
        self._finish(run, RunState.FAILED, f"failed after {run.attempts} attempts: {message}")
        if job is None:  # no job ran to say so
            self._notify(
                run.rule.target_vault_name,
                "BACKUP_JOB_COMPLETED",
                {**_run_payload(run), "state": JobState.FAILED.value, "status_message": message, "error": message},
            )

    def _backup_completed(self, run: ScheduleRun, job: Job) -> None:
        copies = tuple(CopyAttempt(c.destination_vault_arn, c.delete_after) for c in run.rule.copies)
        details = replace(run.details, recovery_point_arn=job.recovery_point_arn, copies=copies)
        self.tally.counts["backups_completed"] += 1
        if run.rule.enable_continuous_backup:
            self.tally.guarded(_label(run), self._keep_continuous_point, run, job)
        if not copies:
            self._save(run, state=RunState.RUNNING, new_state=RunState.COMPLETED, details=details)
        elif self._save(run, state=RunState.RUNNING, new_state=RunState.COPYING, details=details):
            self._advance_copies(run)

    def _keep_continuous_point(self, run: ScheduleRun, job: Job) -> None:
        from strongroom.services.pitr import ensure_continuous_point

        ensure_continuous_point(self.account, run.resource_id, job.vault_name or "", run.rule.delete_after_days)

    def _expire(self, run: ScheduleRun, now: datetime) -> None:
        rule = run.rule
        message = (
            f"not started within the start window of {rule.start_window} minutes (it ended at {run.start_window_ends})"
        )
        if run.details.message:
            message += f"; {run.details.message}"
        job = Job(
            new_id(),
            JobType.BACKUP,
            JobState.EXPIRED,
            run.resource_id,
            rule.target_vault_name,
            None,
            run.created_at,
            parameters={"delete_after_days": rule.delete_after_days, **_plan_fields(run)},
        )
        self.catalog.add_job(job)
        self.catalog.update_job(job.id, completion_date=iso(now), status_message=message)
        if self._save(
            run,
            state=RunState.CREATED,
            new_state=RunState.EXPIRED,
            job_id=job.id,
            details=replace(run.details, message=message),
        ):
            self.tally.counts["runs_expired"] += 1
            notifications.job_finished(self.account, job.id)

    def _finish(self, run: ScheduleRun, state: RunState, message: str | None) -> None:
        if self._save(run, state=run.state, new_state=state, details=replace(run.details, message=message)):
            self.tally.counts[f"runs_{state.value.lower()}"] += 1

    def _dead(self, job: Job) -> None:
        """A job whose process is gone without a word (killed, crashed): FAILED, as recover_dead_jobs does."""
        fail_job(self.account, job, DEAD_JOB_MESSAGE)
        notifications.job_finished(self.account, job.id)

    # Copy actions ---------------------------------------------------------------------------------------
    def _advance_copies(self, run: ScheduleRun) -> None:
        copies = run.copies
        for copy in copies:
            if copy.state == CopyState.RUNNING:
                self._watch_copy(run, copies, copy)
            elif copy.state == CopyState.CREATED and self.accepting:
                self._start_copy(run, copies, copy)
        if all(copy.state.final for copy in copies):
            self._save(run, state=RunState.COPYING, new_state=RunState.COMPLETED)

    def _start_copy(self, run: ScheduleRun, copies: list[CopyAttempt], copy: CopyAttempt) -> None:
        now = model.now()
        due = copy.next_attempt_at is None or now >= _at(copy.next_attempt_at)
        if not due or not self._has_capacity() or not self.hold_lease(now):
            return
        copy.attempts += 1
        try:
            job, lock = create_copy_job(
                self.account,
                run.details.recovery_point_arn or "",
                copy.destination_vault_arn or "",
                copy.delete_after_days,
            )
        except StrongroomError as exc:
            self._copy_failed(run, copies, copy, exc.one_line(), job=None)
            return
        self.catalog.update_job(job.id, parameters={**job.parameters, **_plan_fields(run)})
        copy.state, copy.job_id, copy.pid = CopyState.RUNNING, job.id, None
        self._save_copies(run, copies)
        self.tally.counts["copies_started"] += 1
        copy.pid = self.runner.start(self.account, job, lock)
        self._save_copies(run, copies)
        self._watch_copy(run, copies, copy)

    def _watch_copy(self, run: ScheduleRun, copies: list[CopyAttempt], copy: CopyAttempt) -> None:
        job = self.catalog.get_job(copy.job_id or "")
        if job.state == JobState.COMPLETED:
            copy.state, copy.message = CopyState.COMPLETED, None
            copy.destination_recovery_point_arn = job.result.get("destination_recovery_point_arn")
            self.tally.counts["copies_completed"] += 1
        elif job.state.finished:
            self._copy_failed(run, copies, copy, job.status_message or job.state.value, job=job)
        elif model.now() >= _at(run.completion_window_ends):
            self.abort(job.id, copy.pid, _completion_message(run))
            copy.state, copy.message = CopyState.ABORTED, _completion_message(run)
        elif not job_alive(self.account, job.id):
            self._dead(job)
            self._copy_failed(run, copies, copy, DEAD_JOB_MESSAGE, job=job)
        self._save_copies(run, copies)

    def _copy_failed(
        self, run: ScheduleRun, copies: list[CopyAttempt], copy: CopyAttempt, message: str, *, job: Job | None
    ) -> None:
        retry_at = model.now() + FIRST_RETRY * 2 ** max(copy.attempts - 1, 0)
        final = job is not None and job.state == JobState.ABORTED
        if not final and copy.attempts < MAX_ATTEMPTS and retry_at < _at(run.completion_window_ends):
            copy.state, copy.next_attempt_at = CopyState.CREATED, iso(retry_at)
            copy.message = f"attempt {copy.attempts} failed: {message}"
            self.tally.counts["copy_retries_scheduled"] += 1
        else:
            copy.state, copy.message = (CopyState.ABORTED if final else CopyState.FAILED), message
            self.tally.counts["copies_failed"] += 1
            if job is None:
                self._notify(
                    run.rule.target_vault_name,
                    "COPY_JOB_FAILED",
                    {
                        **_run_payload(run),
                        "job_type": JobType.COPY.value,
                        "state": JobState.FAILED.value,
                        "status_message": message,
                        "error": message,
                        "destination_backup_vault_arn": copy.destination_vault_arn,
                    },
                )
        self._save_copies(run, copies)

    # Helpers --------------------------------------------------------------------------------------------
    def _save_copies(self, run: ScheduleRun, copies: list[CopyAttempt]) -> None:
        self._save(run, state=RunState.COPYING, details=replace(run.details, copies=tuple(replace(c) for c in copies)))

    def _save(
        self,
        run: ScheduleRun,
        *,
        state: RunState,
        attempts: int | None = None,
        new_state: RunState | None = None,
        new_attempts: int | None = None,
        **fields: Any,
    ) -> bool:
        """Write ``fields`` to the run while it is still in ``state`` (and ``attempts``); mirror them in ``run``."""
        changes = dict(fields)
        if new_state is not None:
            changes["state"] = new_state
        if new_attempts is not None:
            changes["attempts"] = new_attempts
        if not self.catalog.update_schedule_run(run.key, expected_state=state, expected_attempts=attempts, **changes):
            return False
        for name, value in changes.items():
            setattr(run, name, value)
        return True

    def _has_capacity(self) -> bool:
        limit = self.runner.max_jobs
        return limit is None or len(self.running_jobs()) < limit

    def _notify(self, vault_name: str | None, event: str, payload: dict[str, Any]) -> None:
        if vault_name:
            notifications.notify(self.account, vault_name, event, payload)


def _label(run: ScheduleRun) -> str:
    return f"run {'/'.join(run.key)}"


def _completion_message(run: ScheduleRun) -> str:
    return (
        f"not completed within the completion window of {run.rule.completion_window} minutes"
        f" (it ended at {run.completion_window_ends})"
    )


def _plan_fields(run: ScheduleRun) -> dict[str, Any]:
    """What a scheduled job records of its origin (notifications show the plan and rule)."""
    return {"backup_plan_name": run.plan_name, "rule_name": run.rule_name, "scheduled_at": run.occurrence}


def _run_payload(run: ScheduleRun) -> dict[str, Any]:
    """A notification's fields when no job exists to describe (its start failed)."""
    return {
        "job_type": JobType.BACKUP.value,
        "resource_id": run.resource_id,
        "job_id": None,
        "error": None,
        **_plan_fields(run),
    }


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)
