"""The scheduler daemon: its lease, the tick, the loop inside ``strongroom serve`` and the graceful stop.

Every decision takes its time from ``model.now()``, so simulations drive weeks in seconds. One tick:

1. hold the account's scheduler lease (one daemon per account acts; another takes over when it lapses);
2. for each enabled plan and rule, the occurrences since the rule's cursor become schedule runs
   (plans/firing.py), one per resource the plan selects now, inserted with the cursor's move in one
   transaction: the runs' primary key makes every occurrence fire once, also across restarts and daemons;
3. due restore testing plans start (services/restore_testing.py) and the active runs advance (runs.py);
4. the lifecycle sweep (garbage collection at most hourly), the frameworks' evaluation and the report plans
   that are due (services/compliance, services/reports), and the delivery of pending notifications.

docs/scheduler.md tells the whole story.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from strongroom import model
from strongroom.errors import ConfigError, StrongroomError
from strongroom.model import Resource, iso, new_id
from strongroom.plans.firing import Firing, new_runs, rule_firings
from strongroom.plans.records import BackupPlan
from strongroom.plans.schedule import parse_schedule
from strongroom.plans.selection import selects
from strongroom.services import notifications, restore_testing
from strongroom.services.account import SETTING_DESTINATION, Account, open_account
from strongroom.services.job_runner import InProcessRunner, Runner, SpawningRunner, wait_for_jobs
from strongroom.services.lifecycle import run_lifecycle_and_collect
from strongroom.services.scheduler.runs import RunMachine, Tally
from strongroom.services.scheduler.views import LEASE_NAME, applied_plans

log = logging.getLogger("strongroom.scheduler")

LEASE = timedelta(minutes=5)
GC_EVERY = timedelta(hours=1)
GC_WAIT_SECONDS = 5.0
STOP_GRACE_SECONDS = 60.0
REAP_SECONDS = 5.0  # at shutdown, how long each finished job's process may take to exit
SETTING_LAST_GC = "scheduler_last_gc"
SETTING_LAST_TICK = "scheduler_last_tick"  # {"at", "holder"} of the last tick that held the lease (docs/metrics.md)
NOTIFY_TIMEOUT_SECONDS = 10.0
EVALUATE_EVERY = timedelta(minutes=5)  # frameworks are evaluated at most this often (each reads the whole catalog)
SETTING_LAST_EVALUATION = "compliance_last_evaluation"


class Scheduler:
    def __init__(
        self,
        account: Account,
        *,
        holder: str | None = None,
        runner: Runner | None = None,
        stop_grace: float = STOP_GRACE_SECONDS,
    ) -> None:
        self.account = account
        self.catalog = account.catalog
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{new_id()[:8]}"
        self.runner: Runner = runner or InProcessRunner()
        self.stop_grace = stop_grace
        self.lease = LEASE
        self.lease_holder: str | None = None
        self.tally = Tally()
        self.runs = RunMachine(account, self.runner, self.tally, self._hold_lease)

    def tick(self) -> dict[str, Any]:
        """One pass at ``model.now()``: fire due rules, advance runs, sweep retention, send notifications."""
        now = model.now()
        self.tally.reset()
        report: dict[str, Any] = {"now": iso(now), "holder": self.holder}
        if not self._hold_lease(now):
            return {**report, "lease_holder": self.lease_holder, "acted": False}
        self.catalog.set_setting(SETTING_LAST_TICK, {"at": iso(now), "holder": self.holder})
        if self.runs.accepting:
            self.tally.guarded("firing", self._fire, now)
            report["restore_testing"] = self.tally.guarded("restore testing", self._restore_tests, now)
        self.runs.advance()
        self.runner.reap()
        report["lifecycle"] = self.tally.guarded("lifecycle sweep", self._sweep, now)
        report["compliance"] = self.tally.guarded("compliance", self._audit, now)
        report["notifications"] = self.tally.guarded("notifications", self._deliver, now)
        return {
            **report,
            "lease_holder": self.holder,
            "acted": True,
            **self.tally.counts,
            "errors": list(self.tally.errors),
        }

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
        self.runs.accepting = False
        self.tally.reset()
        if self.lease_holder != self.holder or not self._hold_lease(model.now()):
            return {"acted": False}  # another daemon acts for the account: its jobs are its business
        running = self.runs.running_jobs()
        left = set(wait_for_jobs(self.account, [job_id for job_id, _ in running], self.stop_grace))
        for job_id, pid in running:
            if job_id in left:
                self.runs.abort(job_id, pid, "stopped with the scheduler daemon before it finished")
        self.runs.advance()
        self.runner.reap(wait=REAP_SECONDS)
        self.catalog.release_lease(LEASE_NAME, self.holder)
        log.info("scheduler %s stopped (%d jobs aborted)", self.holder, len(left))
        return {"acted": True, "aborted": sorted(left), **self.tally.counts}

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
        self.lease_holder = lease.holder
        return lease.holder == self.holder

    # Firing rules ---------------------------------------------------------------------------------------
    def _fire(self, now: datetime) -> None:
        resources = self.catalog.list_resources()
        active: set[tuple[str, str]] = set()
        for name, plan in sorted(applied_plans(self.account).items()):
            if plan.enable:
                active |= {(name, rule.name) for rule in plan.rules}
                self._fire_plan(name, plan, resources, now)
        self.catalog.keep_scheduler_cursors(active)

    def _fire_plan(self, name: str, plan: BackupPlan, resources: list[Resource], now: datetime) -> None:
        cursors = self.catalog.scheduler_cursors(name)
        expected: dict[str, str | None] = {}
        firings: list[Firing] = []
        for rule in plan.rules:
            since = expected[rule.name] = cursors.get((name, rule.name))
            if since is None:  # a rule seen for the first time starts from now: no back-fill
                continue
            try:
                schedule = parse_schedule(rule.schedule, rule.schedule_expression_timezone)
            except ConfigError as exc:
                self.tally.errors.append(f"plan {name} rule {rule.name}: {exc.one_line()}")
                continue
            fired = rule_firings(rule, schedule, datetime.fromisoformat(since), now)
            self.tally.counts["missed_not_recorded"] += fired.not_recorded
            firings += fired.firings
        selected = [r.id for r in resources if selects(plan, r.type, r.tags)]
        runs = new_runs(name, firings, selected, now, self.catalog.get_setting(SETTING_DESTINATION))
        if self.catalog.record_occurrences(name, expected, iso(now) or "", runs):
            self.tally.counts.update(f"runs_{run.state.value.lower()}" for run in runs)

    def _restore_tests(self, now: datetime) -> list[str]:
        """Leftovers of dead restore tests removed, then the due restore testing plans started
        (services/restore_testing.py): here with the in-process runner, else in a worker process."""
        done = restore_testing.clean_leftovers(self.account)
        return done + restore_testing.tick(self.account, now, inline=isinstance(self.runner, InProcessRunner))

    # Retention and notifications ------------------------------------------------------------------------
    def _sweep(self, now: datetime) -> dict[str, Any]:
        last = self.catalog.get_setting(SETTING_LAST_GC)
        if last is None:  # the first daemon of an account collects an hour after it started
            self.catalog.set_setting(SETTING_LAST_GC, iso(now))
        collect = last is not None and now - datetime.fromisoformat(last) >= GC_EVERY
        report = run_lifecycle_and_collect(self.account, now=now, collect=collect, wait_seconds=GC_WAIT_SECONDS)
        if collect:
            self.catalog.set_setting(SETTING_LAST_GC, iso(now))
        self.tally.counts["recovery_points_expired"] += report["expired"]
        return report

    def _audit(self, now: datetime) -> dict[str, Any]:
        """Frameworks evaluated (a change of verdict is an event), then the report plans that are due."""
        # Imported here: compliance reads services.metrics, which reads this module's SETTING_LAST_TICK.
        from strongroom.services.compliance.state import evaluate_all
        from strongroom.services.reports.jobs import run_due_reports

        last = self.catalog.get_setting(SETTING_LAST_EVALUATION)
        due = last is None or not timedelta(0) <= now - datetime.fromisoformat(last) < EVALUATE_EVERY
        changes = evaluate_all(self.account, now) if due else []
        if due:
            self.catalog.set_setting(SETTING_LAST_EVALUATION, iso(now))
        reports = run_due_reports(self.account, now)
        self.tally.counts["compliance_changes"] += len(changes)
        self.tally.counts["reports_made"] += len(reports)
        return {"evaluated": due, "changes": len(changes), "report_jobs": [job.id for job in reports]}

    def _deliver(self, now: datetime) -> dict[str, Any]:
        return notifications.deliver_pending(self.account, now=now, timeout=NOTIFY_TIMEOUT_SECONDS)


def start_daemon(
    home: Path,
    passphrase: Callable[[], str],
    stop: threading.Event,
    *,
    poll_seconds: float = 30,
    max_jobs: int | None = 2,
    stop_grace: float = STOP_GRACE_SECONDS,
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
