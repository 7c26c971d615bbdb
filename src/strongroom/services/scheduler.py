"""The scheduler: fires the rules of applied backup plans, runs and watches their jobs, and sweeps retention.

Every decision takes its time from ``model.now()``, so simulations drive weeks in seconds. One tick:

1. hold the account's scheduler lease (one daemon per account acts; another takes over when it lapses);
2. for each enabled plan and rule, the occurrences since the rule's cursor become schedule runs, one per
   resource the plan selects now, inserted with the cursor's move in one transaction: the runs' primary
   key makes every occurrence fire once, also across restarts and daemons;
3. runs wait CREATED until their job starts (retried with backoff within the start window), EXPIRED when
   the window ends first; a job still running at the end of the completion window is ABORTED; a
   completed backup starts the rule's copy actions;
4. the lifecycle sweep (garbage collection at most hourly) and the delivery of pending notifications.

docs/scheduler.md tells the whole story.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from strongroom import model
from strongroom.errors import ConfigError, NotFoundError, StrongroomError
from strongroom.model import Job, JobState, JobType, Resource, iso, new_id
from strongroom.plans.schedule import parse_schedule
from strongroom.plans.selection import selects
from strongroom.services import notifications
from strongroom.services.account import SETTING_BACKUP_PLANS, SETTING_DESTINATION, Account, open_account
from strongroom.services.backup import create_backup_job
from strongroom.services.copy import create_copy_job
from strongroom.services.jobs import DEAD_JOB_MESSAGE, fail_job
from strongroom.services.lifecycle import run_lifecycle_and_collect
from strongroom.services.runners import InProcessRunner, Runner, SpawningRunner, abort_job, job_alive, wait_for_jobs

log = logging.getLogger("strongroom.scheduler")

LEASE_NAME = "scheduler"
LEASE = timedelta(minutes=5)
MAX_ATTEMPTS = 3  # a job is tried at most this often per run (copies: per copy action)
FIRST_RETRY = timedelta(minutes=5)  # doubled after each failed attempt
GC_EVERY = timedelta(hours=1)
GC_WAIT_SECONDS = 5.0
MISSED_KEPT = 100  # missed occurrences recorded per rule and tick; older ones are only counted
STOP_GRACE_SECONDS = 60.0
REAP_SECONDS = 5.0  # at shutdown, how long each finished job's process may take to exit
SETTING_LAST_GC = "scheduler_last_gc"
NOTIFY_TIMEOUT_SECONDS = 10.0


class RunState(StrEnum):
    CREATED = "CREATED"  # waiting for its job to start (or for its next attempt) within the start window
    RUNNING = "RUNNING"  # its backup job runs
    COPYING = "COPYING"  # the backup completed; the rule's copy actions run
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"  # every attempt failed
    EXPIRED = "EXPIRED"  # not started within the start window
    ABORTED = "ABORTED"  # still running when its completion window ended, or stopped with the daemon
    MISSED = "MISSED"  # no scheduler ran in its start window, or a later occurrence of the rule ran instead
    SKIPPED = "SKIPPED"  # another rule of the plan, keeping its backup longer, fired for it at the same instant


ACTIVE = [RunState.CREATED.value, RunState.RUNNING.value, RunState.COPYING.value]
COPY_FINAL = ("COMPLETED", "FAILED", "ABORTED")


@dataclass
class Run:
    """One occurrence of a rule for one resource (a row of ``schedule_runs``)."""

    plan_name: str
    rule_name: str
    occurrence: str
    resource_id: str
    state: RunState
    job_id: str | None
    attempts: int
    next_attempt_at: str | None
    start_window_ends: str
    completion_window_ends: str
    details: dict[str, Any]
    created_at: str

    @classmethod
    def of(cls, row: dict[str, Any]) -> Run:
        return cls(**{**row, "state": RunState(row["state"])})

    @property
    def key(self) -> tuple[str, str, str, str]:
        return self.plan_name, self.rule_name, self.occurrence, self.resource_id

    @property
    def rule(self) -> dict[str, Any]:
        return dict(self.details.get("rule") or {})

    def as_dict(self) -> dict[str, Any]:
        return {
            "backup_plan_name": self.plan_name, "rule_name": self.rule_name, "scheduled_at": self.occurrence,
            "resource_id": self.resource_id, "state": self.state.value, "backup_job_id": self.job_id,
            "attempts": self.attempts, "next_attempt_at": self.next_attempt_at,
            "start_window_ends": self.start_window_ends, "completion_window_ends": self.completion_window_ends,
            "recovery_point_arn": self.details.get("recovery_point_arn"),
            "status_message": self.details.get("message"), "copy_jobs": self.details.get("copies", []),
            "creation_date": self.created_at,
        }


@dataclass(frozen=True)
class _Firing:
    rule: dict[str, Any]
    occurrence: datetime
    missed: str | None = None  # why it does not run


class Scheduler:
    def __init__(
        self, account: Account, *, holder: str | None = None, runner: Runner | None = None,
        stop_grace: float = STOP_GRACE_SECONDS,
    ) -> None:
        self.account = account
        self.catalog = account.catalog
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{new_id()[:8]}"
        self.runner: Runner = runner or InProcessRunner()
        self.stop_grace = stop_grace
        self.lease = LEASE
        self.lease_holder: str | None = None
        self._accepting = True
        self._counts: Counter[str] = Counter()
        self._errors: list[str] = []

    # The loop ----------------------------------------------------------------------------------------
    def tick(self) -> dict[str, Any]:
        """One pass at ``model.now()``: fire due rules, advance runs, sweep retention, send notifications."""
        now = model.now()
        self._counts, self._errors = Counter(), []
        report: dict[str, Any] = {"now": iso(now), "holder": self.holder}
        if not self._hold_lease(now):
            return {**report, "lease_holder": self.lease_holder, "acted": False}
        if self._accepting:
            self._guarded("firing", self._fire, now)
        self._advance()
        self.runner.reap()
        report["lifecycle"] = self._guarded("lifecycle sweep", self._sweep, now)
        report["notifications"] = self._guarded("notifications", self._deliver, now)
        return {**report, "lease_holder": self.holder, "acted": True, **self._counts, "errors": self._errors}

    def run(self, stop: threading.Event, poll_seconds: float = 30) -> None:
        """Tick every ``poll_seconds`` until ``stop`` is set, then shut down gracefully (see ``shutdown``)."""
        self.lease = max(LEASE, timedelta(seconds=4 * poll_seconds))
        log.info("scheduler %s started, ticking every %g s", self.holder, poll_seconds)
        try:
            while not stop.is_set():
                self._tick_logged()
                stop.wait(poll_seconds)
        finally:
            self.shutdown()

    def shutdown(self) -> dict[str, Any]:
        """Stop creating and starting jobs; wait up to ``stop_grace`` seconds for running ones, abort the
        rest (ABORTED, never left RUNNING), settle the runs and give up the lease."""
        self._accepting = False
        self._counts, self._errors = Counter(), []
        if self.lease_holder != self.holder or not self._hold_lease(model.now()):
            return {"acted": False}  # another daemon acts for the account: its jobs are its business
        running = self._running_jobs()
        left = set(wait_for_jobs(self.account, [job_id for job_id, _ in running], self.stop_grace))
        for job_id, pid in running:
            if job_id in left:
                self._abort(job_id, pid, "stopped with the scheduler daemon before it finished")
        self._advance()
        self.runner.reap(wait=REAP_SECONDS)
        self.catalog.release_lease(LEASE_NAME, self.holder)
        log.info("scheduler %s stopped (%d jobs aborted)", self.holder, len(left))
        return {"acted": True, "aborted": sorted(left), **self._counts}

    def _tick_logged(self) -> None:
        try:
            report = self.tick()
        except Exception:  # a daemon outlives one bad tick; the next one tries again
            log.exception("scheduler tick failed")
            return
        changes = {k: v for k, v in report.items() if isinstance(v, int) and not isinstance(v, bool) and v}
        if changes or report.get("errors"):
            log.info("tick at %s: %s %s", report["now"], changes, report.get("errors") or "")

    def _hold_lease(self, now: datetime) -> bool:
        lease = self.catalog.acquire_lease(LEASE_NAME, self.holder, now, now + self.lease)
        self.lease_holder = lease["holder"]
        return bool(lease["holder"] == self.holder)

    def _guarded(self, what: str, action: Callable[..., Any], *args: Any) -> Any:
        try:
            return action(*args)
        except StrongroomError as exc:
            self._errors.append(f"{what}: {exc.one_line()}")
            log.warning("%s: %s", what, exc.one_line())
            return None

    # Firing rules ---------------------------------------------------------------------------------------
    def _fire(self, now: datetime) -> None:
        plans = self.catalog.get_setting(SETTING_BACKUP_PLANS, {}) or {}
        resources = self.catalog.list_resources()
        active: set[tuple[str, str]] = set()
        for name, plan in sorted(plans.items()):
            if plan.get("enable", True):
                active |= {(name, rule["name"]) for rule in plan.get("rules") or []}
                self._fire_plan(name, plan, resources, now)
        self.catalog.keep_scheduler_cursors(active)

    def _fire_plan(self, name: str, plan: dict[str, Any], resources: list[Resource], now: datetime) -> None:
        cursors = self.catalog.scheduler_cursors(name)
        expected: dict[str, str | None] = {}
        firings: list[_Firing] = []
        for rule in plan.get("rules") or []:
            since = expected[rule["name"]] = cursors.get((name, rule["name"]))
            if since is not None:  # a rule seen for the first time starts from now: no back-fill
                firings += self._firings(name, rule, datetime.fromisoformat(since), now)
        selected = [r.id for r in resources if selects(plan, r.type, r.tags)]
        runs = _new_runs(name, firings, selected, now, self.catalog.get_setting(SETTING_DESTINATION))
        if self.catalog.record_occurrences(name, expected, iso(now) or "", runs):
            self._counts.update(f"runs_{run['state'].lower()}" for run in runs)

    def _firings(self, plan_name: str, rule: dict[str, Any], since: datetime, now: datetime) -> list[_Firing]:
        try:
            schedule = parse_schedule(rule["schedule"], rule.get("schedule_expression_timezone"))
        except ConfigError as exc:
            self._errors.append(f"plan {plan_name} rule {rule['name']}: {exc.one_line()}")
            return []
        recent: deque[datetime] = deque(maxlen=MISSED_KEPT + 1)
        total = 0
        for moment in schedule.fire_times(since):
            if moment > now:
                break
            recent.append(moment)
            total += 1
        self._counts["missed_not_recorded"] += total - len(recent)
        return _classify(rule, list(recent), now)

    # Advancing runs -------------------------------------------------------------------------------------
    def _advance(self) -> None:
        runs = [Run.of(row) for row in self.catalog.list_schedule_runs(states=ACTIVE)]
        for run in runs:
            if run.state == RunState.RUNNING:
                self._guarded(f"run {'/'.join(run.key)}", self._watch_backup, run)
            elif run.state == RunState.COPYING:
                self._guarded(f"run {'/'.join(run.key)}", self._advance_copies, run)
        for run in runs:
            if run.state == RunState.CREATED:
                self._guarded(f"run {'/'.join(run.key)}", self._created, run)

    def _created(self, run: Run) -> None:
        now = model.now()
        if now >= _at(run.start_window_ends):
            self._expire(run, now)
        elif self._accepting and (run.next_attempt_at is None or now >= _at(run.next_attempt_at)):
            self._start_backup(run, now)

    def _start_backup(self, run: Run, now: datetime) -> None:
        if not self._has_capacity() or not self._hold_lease(now):
            return
        if not self._save(run, state=RunState.CREATED, attempts=run.attempts, new_state=RunState.RUNNING,
                          new_attempts=run.attempts + 1, job_id=None):
            return  # another scheduler took it
        rule = run.rule
        try:
            job, lock = create_backup_job(self.account, run.resource_id, rule["target_vault_name"],
                                          rule.get("delete_after_days"))
        except StrongroomError as exc:
            self._attempt_failed(run, exc.one_line(), job=None)
            return
        self.catalog.update_job(job.id, parameters={**job.parameters, **_plan_fields(run)})
        jobs = [*run.details.get("jobs", []), job.id]
        self._save(run, state=RunState.RUNNING, job_id=job.id, details={**run.details, "jobs": jobs})
        self._counts["jobs_started"] += 1
        pid = self.runner.start(self.account, job, lock)
        if pid is not None:
            self._save(run, state=RunState.RUNNING, details={**run.details, "pid": pid})
        self._watch_backup(run)  # a synchronous runner has finished the job already

    def _watch_backup(self, run: Run) -> None:
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
            self._abort(job.id, run.details.get("pid"), _completion_message(run))
            self._finish(run, RunState.ABORTED, _completion_message(run))
        elif not job_alive(self.account, job.id):
            self._dead(job)
            self._attempt_failed(run, DEAD_JOB_MESSAGE, job=job)

    def _attempt_failed(self, run: Run, message: str, *, job: Job | None) -> None:
        retry_at = model.now() + FIRST_RETRY * 2 ** max(run.attempts - 1, 0)
        if run.attempts < MAX_ATTEMPTS and retry_at < _at(run.start_window_ends):
            note = f"attempt {run.attempts} failed: {message}; next attempt at {iso(retry_at)}"
            if self._save(run, state=run.state, new_state=RunState.CREATED, next_attempt_at=iso(retry_at),
                          details={**run.details, "message": note}):
                self._counts["retries_scheduled"] += 1
            return
        self._finish(run, RunState.FAILED, f"failed after {run.attempts} attempts: {message}")
        if job is None:  # no job ran to say so
            self._notify(run.rule.get("target_vault_name"), "BACKUP_JOB_COMPLETED",
                         {**_run_payload(run), "state": JobState.FAILED.value, "status_message": message,
                          "error": message})

    def _backup_completed(self, run: Run, job: Job) -> None:
        copies = [{**copy, "state": "CREATED", "job_id": None, "attempts": 0, "next_attempt_at": None,
                   "message": None} for copy in run.rule.get("copies", [])]
        details = {**run.details, "recovery_point_arn": job.recovery_point_arn, "copies": copies}
        self._counts["backups_completed"] += 1
        if not copies:
            self._save(run, state=RunState.RUNNING, new_state=RunState.COMPLETED, details=details)
        elif self._save(run, state=RunState.RUNNING, new_state=RunState.COPYING, details=details):
            self._advance_copies(run)

    def _expire(self, run: Run, now: datetime) -> None:
        rule = run.rule
        message = (f"not started within the start window of {rule.get('start_window')} minutes"
                   f" (it ended at {run.start_window_ends})")
        if run.details.get("message"):
            message += f"; {run.details['message']}"
        job = Job(new_id(), JobType.BACKUP, JobState.EXPIRED, run.resource_id, rule.get("target_vault_name"), None,
                  run.created_at, parameters={"delete_after_days": rule.get("delete_after_days"), **_plan_fields(run)})
        self.catalog.add_job(job)
        self.catalog.update_job(job.id, completion_date=iso(now), status_message=message)
        if self._save(run, state=RunState.CREATED, new_state=RunState.EXPIRED, job_id=job.id,
                      details={**run.details, "message": message}):
            self._counts["runs_expired"] += 1
            notifications.job_finished(self.account, job.id)

    def _finish(self, run: Run, state: RunState, message: str | None) -> None:
        if self._save(run, state=run.state, new_state=state, details={**run.details, "message": message}):
            self._counts[f"runs_{state.value.lower()}"] += 1

    def _dead(self, job: Job) -> None:
        """A job whose process is gone without a word (killed, crashed): FAILED, as recover_dead_jobs does."""
        fail_job(self.account, job, DEAD_JOB_MESSAGE)
        notifications.job_finished(self.account, job.id)

    def _abort(self, job_id: str, pid: int | None, message: str) -> None:
        job = abort_job(self.account, self.catalog.get_job(job_id), pid, message)
        if job.state != JobState.ABORTED:
            return  # it finished on its own meanwhile
        self._counts["jobs_aborted"] += 1
        notifications.job_finished(self.account, job.id)

    # Copy actions ---------------------------------------------------------------------------------------
    def _advance_copies(self, run: Run) -> None:
        for copy in run.details["copies"]:
            if copy["state"] == "RUNNING":
                self._watch_copy(run, copy)
            elif copy["state"] == "CREATED" and self._accepting:
                self._start_copy(run, copy)
        if all(copy["state"] in COPY_FINAL for copy in run.details["copies"]):
            self._save(run, state=RunState.COPYING, new_state=RunState.COMPLETED)

    def _start_copy(self, run: Run, copy: dict[str, Any]) -> None:
        now = model.now()
        due = copy["next_attempt_at"] is None or now >= _at(copy["next_attempt_at"])
        if not due or not self._has_capacity() or not self._hold_lease(now):
            return
        copy["attempts"] += 1
        try:
            job, lock = create_copy_job(self.account, run.details["recovery_point_arn"],
                                        copy["destination_vault_arn"], copy.get("delete_after_days"))
        except StrongroomError as exc:
            self._copy_failed(run, copy, exc.one_line(), job=None)
            return
        self.catalog.update_job(job.id, parameters={**job.parameters, **_plan_fields(run)})
        copy.update(state="RUNNING", job_id=job.id, pid=None)
        self._save(run, state=RunState.COPYING, details=run.details)
        self._counts["copies_started"] += 1
        copy["pid"] = self.runner.start(self.account, job, lock)
        self._save(run, state=RunState.COPYING, details=run.details)
        self._watch_copy(run, copy)

    def _watch_copy(self, run: Run, copy: dict[str, Any]) -> None:
        job = self.catalog.get_job(copy["job_id"])
        if job.state == JobState.COMPLETED:
            copy.update(state="COMPLETED", message=None,
                        destination_recovery_point_arn=job.result.get("destination_recovery_point_arn"))
            self._counts["copies_completed"] += 1
        elif job.state.finished:
            self._copy_failed(run, copy, job.status_message or job.state.value, job=job)
        elif model.now() >= _at(run.completion_window_ends):
            self._abort(job.id, copy.get("pid"), _completion_message(run))
            copy.update(state="ABORTED", message=_completion_message(run))
        elif not job_alive(self.account, job.id):
            self._dead(job)
            self._copy_failed(run, copy, DEAD_JOB_MESSAGE, job=job)
        self._save(run, state=RunState.COPYING, details=run.details)

    def _copy_failed(self, run: Run, copy: dict[str, Any], message: str, *, job: Job | None) -> None:
        retry_at = model.now() + FIRST_RETRY * 2 ** max(copy["attempts"] - 1, 0)
        final = job is not None and job.state == JobState.ABORTED
        if not final and copy["attempts"] < MAX_ATTEMPTS and retry_at < _at(run.completion_window_ends):
            copy.update(state="CREATED", next_attempt_at=iso(retry_at),
                        message=f"attempt {copy['attempts']} failed: {message}")
            self._counts["copy_retries_scheduled"] += 1
        else:
            copy.update(state="ABORTED" if final else "FAILED", message=message)
            self._counts["copies_failed"] += 1
            if job is None:
                self._notify(run.rule.get("target_vault_name"), "COPY_JOB_FAILED",
                             {**_run_payload(run), "job_type": JobType.COPY.value, "state": JobState.FAILED.value,
                              "status_message": message, "error": message,
                              "destination_backup_vault_arn": copy["destination_vault_arn"]})
        self._save(run, state=RunState.COPYING, details=run.details)

    # Helpers --------------------------------------------------------------------------------------------
    def _save(self, run: Run, *, state: RunState, attempts: int | None = None, new_state: RunState | None = None,
              new_attempts: int | None = None, **fields: Any) -> bool:
        """Write ``fields`` to the run while it is still in ``state`` (and ``attempts``); mirror them in ``run``."""
        changes = dict(fields)
        if new_state is not None:
            changes["state"] = new_state.value
        if new_attempts is not None:
            changes["attempts"] = new_attempts
        if not self.catalog.update_schedule_run(run.key, expected_state=state.value, expected_attempts=attempts,
                                                **changes):
            return False
        for name, value in changes.items():
            setattr(run, name, RunState(value) if name == "state" else value)
        return True

    def _has_capacity(self) -> bool:
        limit = self.runner.max_jobs
        return limit is None or len(self._running_jobs()) < limit

    def _running_jobs(self) -> list[tuple[str, int | None]]:
        """(job id, pid) of every job the runs are waiting for."""
        jobs = []
        for row in self.catalog.list_schedule_runs(states=[RunState.RUNNING.value, RunState.COPYING.value]):
            run = Run.of(row)
            if run.state == RunState.RUNNING and run.job_id:
                jobs.append((run.job_id, run.details.get("pid")))
            jobs += [(c["job_id"], c.get("pid")) for c in run.details.get("copies", []) if c["state"] == "RUNNING"]
        return jobs

    def _notify(self, vault_name: str | None, event: str, payload: dict[str, Any]) -> None:
        if vault_name:
            notifications.notify(self.account, vault_name, event, payload)

    def _sweep(self, now: datetime) -> dict[str, Any]:
        last = self.catalog.get_setting(SETTING_LAST_GC)
        if last is None:  # the first daemon of an account collects an hour after it started
            self.catalog.set_setting(SETTING_LAST_GC, iso(now))
        collect = last is not None and now - _at(last) >= GC_EVERY
        report = run_lifecycle_and_collect(self.account, now=now, collect=collect, wait_seconds=GC_WAIT_SECONDS)
        if collect:
            self.catalog.set_setting(SETTING_LAST_GC, iso(now))
        self._counts["recovery_points_expired"] += report["expired"]
        return report

    def _deliver(self, now: datetime) -> dict[str, Any]:
        return notifications.deliver_pending(self.account, now=now, timeout=NOTIFY_TIMEOUT_SECONDS)


# Occurrences into runs ----------------------------------------------------------------------------------
def _classify(rule: dict[str, Any], occurrences: list[datetime], now: datetime) -> list[_Firing]:
    """The newest occurrence runs if its start window is still open; every other one is missed."""
    if not occurrences:
        return []
    *older, newest = occurrences
    firings = [_Firing(rule, moment, f"a later occurrence ({iso(newest)}) was due when the scheduler ran")
               for moment in older]
    window_end = newest + timedelta(minutes=rule["start_window"])
    missed = None if now < window_end else f"no scheduler ran before its start window ended at {iso(window_end)}"
    return [*firings, _Firing(rule, newest, missed)]


def _new_runs(
    plan_name: str, firings: list[_Firing], resources: list[str], now: datetime, destination: str | None
) -> list[dict[str, Any]]:
    winners: dict[datetime, dict[str, Any]] = {}
    for firing in firings:
        best = winners.get(firing.occurrence)
        if firing.missed is None and (best is None or _retention(firing.rule) > _retention(best)):
            winners[firing.occurrence] = firing.rule
    return [_new_run(plan_name, firing, resource_id, winners, now, destination)
            for firing in firings for resource_id in resources]


def _new_run(
    plan_name: str, firing: _Firing, resource_id: str, winners: dict[datetime, dict[str, Any]], now: datetime,
    destination: str | None,
) -> dict[str, Any]:
    rule, moment = firing.rule, firing.occurrence
    details: dict[str, Any] = {"rule": rule_snapshot(rule, destination)}
    winner = winners.get(moment)
    if firing.missed is not None:
        state, details["message"] = RunState.MISSED, f"missed: {firing.missed}"
    elif winner is not None and winner["name"] != rule["name"]:
        state, details["message"] = RunState.SKIPPED, (
            f"rule {winner['name']} of the plan fired for this resource at the same time and keeps its backup longer")
        details["covered_by_rule"] = winner["name"]
    else:
        state = RunState.CREATED
    return {
        "plan_name": plan_name, "rule_name": rule["name"], "occurrence": iso(moment), "resource_id": resource_id,
        "state": state.value, "job_id": None, "attempts": 0, "next_attempt_at": None,
        "start_window_ends": iso(moment + timedelta(minutes=rule["start_window"])),
        "completion_window_ends": iso(moment + timedelta(minutes=rule["completion_window"])),
        "details": details, "created_at": iso(now),
    }


def rule_snapshot(rule: dict[str, Any], destination: str | None) -> dict[str, Any]:
    """What a run needs from its rule, as the rule said when it fired (a later apply does not change it)."""
    copies = []
    if rule.get("copy_action") is not None:
        copies.append({"destination_vault_arn": destination, "delete_after_days": rule["copy_action"]["delete_after"]})
    copies += [{"destination_vault_arn": c["destination_vault_arn"], "delete_after_days": c.get("delete_after")}
               for c in rule.get("copy_actions") or []]
    return {"target_vault_name": rule["target_vault_name"],
            "delete_after_days": (rule.get("lifecycle") or {}).get("delete_after"),
            "start_window": rule["start_window"], "completion_window": rule["completion_window"], "copies": copies}


def _retention(rule: dict[str, Any]) -> float:
    days = (rule.get("lifecycle") or {}).get("delete_after")
    return math.inf if days is None else float(days)


def _completion_message(run: Run) -> str:
    return (f"not completed within the completion window of {run.rule.get('completion_window')} minutes"
            f" (it ended at {run.completion_window_ends})")


def _plan_fields(run: Run) -> dict[str, Any]:
    """What a scheduled job records of its origin (notifications show the plan and rule)."""
    return {"backup_plan_name": run.plan_name, "rule_name": run.rule_name, "scheduled_at": run.occurrence}


def _run_payload(run: Run) -> dict[str, Any]:
    """A notification's fields when no job exists to describe (its start failed)."""
    return {"job_type": JobType.BACKUP.value, "resource_id": run.resource_id, "job_id": None,
            "error": None, **_plan_fields(run)}


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


# The daemon inside `strongroom serve` -------------------------------------------------------------------
def start_daemon(
    home: Path, passphrase: Callable[[], str], stop: threading.Event, *, poll_seconds: float = 30,
    max_jobs: int | None = 2, stop_grace: float = STOP_GRACE_SECONDS,
) -> threading.Thread:
    """Run a scheduler with spawned jobs in a new thread, on its own catalog connection, until ``stop``."""

    def main() -> None:
        try:
            account = open_account(home, passphrase)
        except StrongroomError as exc:
            log.error("the scheduler cannot start: %s", exc.one_line())
            return
        try:
            Scheduler(account, runner=SpawningRunner(max_jobs), stop_grace=stop_grace).run(stop, poll_seconds)
        finally:
            account.close()

    thread = threading.Thread(target=main, name="strongroom-scheduler")
    thread.start()
    return thread


# What `strongroom plans` shows ---------------------------------------------------------------------------
def applied_plans(account: Account) -> dict[str, dict[str, Any]]:
    return dict(account.catalog.get_setting(SETTING_BACKUP_PLANS, {}) or {})


def describe_plans(account: Account, now: datetime | None = None) -> dict[str, Any]:
    moment = now or model.now()
    plans = [describe_plan(account, name, moment) for name in sorted(applied_plans(account))]
    return {"backup_plans": plans, "scheduler": scheduler_status(account, moment)}


def describe_plan(account: Account, name: str, now: datetime | None = None) -> dict[str, Any]:
    plans = applied_plans(account)
    if name not in plans:
        raise NotFoundError(f"no backup plan named '{name}' is applied",
                            hint="List the plans with 'strongroom plans list'")
    plan, moment = plans[name], now or model.now()
    destination = account.catalog.get_setting(SETTING_DESTINATION)
    cursors = account.catalog.scheduler_cursors(name)
    rules = [_describe_rule(rule, destination, moment, cursors.get((name, rule["name"])))
             for rule in plan.get("rules") or []]
    upcoming = [rule["next_run"] for rule in rules if rule["next_run"]] if plan.get("enable", True) else []
    return {
        "backup_plan_name": name, "enable": plan.get("enable", True),
        "selection": {key: plan.get(key) for key in ("selection_tag", "selection_tag_value", "selection_tags",
                                                      "compliance_resource_types")},
        "selected_resources": [r.id for r in account.catalog.list_resources() if selects(plan, r.type, r.tags)],
        "next_run": min(upcoming) if upcoming else None, "rules": rules,
    }


def _describe_rule(
    rule: dict[str, Any], destination: str | None, now: datetime, cursor: str | None
) -> dict[str, Any]:
    snapshot = rule_snapshot(rule, destination)
    schedule = parse_schedule(rule["schedule"], rule.get("schedule_expression_timezone"))
    upcoming = next(iter(schedule.fire_times(now)), None)
    return {
        "rule_name": rule["name"], "schedule_expression": schedule.expression,
        "schedule_expression_timezone": schedule.timezone, "portable": schedule.portable,
        "target_backup_vault_name": snapshot["target_vault_name"],
        "start_window_minutes": rule["start_window"], "completion_window_minutes": rule["completion_window"],
        "lifecycle": {"delete_after_days": snapshot["delete_after_days"],
                      "move_to_cold_storage_after_days": (rule.get("lifecycle") or {}).get("cold_storage_after")},
        "copy_actions": [{"destination_backup_vault_arn": c["destination_vault_arn"],
                          "lifecycle": {"delete_after_days": c["delete_after_days"]}} for c in snapshot["copies"]],
        "recovery_point_tags": rule.get("recovery_point_tags") or {},
        "enable_continuous_backup": rule.get("enable_continuous_backup", False),
        "next_run": iso(upcoming), "considered_until": cursor,
    }


def scheduler_status(account: Account, now: datetime | None = None) -> dict[str, Any]:
    lease = account.catalog.get_lease(LEASE_NAME)
    live = lease is not None and _at(lease["expires_at"]) > (now or model.now())
    return {"lease_holder": lease["holder"] if live and lease else None,
            "lease_expires_at": lease["expires_at"] if live and lease else None}


def list_runs(
    account: Account, *, plan_name: str | None = None, states: list[str] | None = None, limit: int | None = 50
) -> list[Run]:
    """The newest schedule runs first."""
    rows = account.catalog.list_schedule_runs(states=states, plan_name=plan_name, limit=limit, newest_first=True)
    return [Run.of(row) for row in rows]

