"""Restore testing plans: pick recovery points, restore each into a scratch target, validate it, measure the
restore time, and always remove the scratch target again (docs/restore-testing.md).

One test, in order:

1. the point is chosen (LATEST_WITHIN_WINDOW or RANDOM_WITHIN_WINDOW among the COMPLETED points of the included
   vaults; a point in another account's vault is copied back into ``Default`` first, as DR does);
2. a RESTORE job is recorded whose parameters name the scratch target (``restore_testing_records``), under a
   test lock ``locks/restore-test-JOB.lock`` held until the test ends: the catalog knows what to remove
   before anything exists;
3. the adapter restores the point there (the ordinary restore job: integrity checked on every chunk);
4. the copy is validated within the selection's validation window (``restore_testing_validation``);
5. the scratch target is removed (a cluster stopped and deleted, a database dropped, a directory removed),
   whatever happened before; the outcome is stored in the job's result, and events are sent.

A runner that dies leaves a test whose locks are free and whose cleanup is PENDING: every run (and every
scheduler tick) first removes such leftovers (:func:`clean_leftovers`) and marks the test FAILED.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from strongroom import model
from strongroom.adapters.base import ResourceSpec, get_adapter
from strongroom.config.restore_testing import (
    OVERRIDES,
    RestoreTestingPlan,
    RestoreTestingSelection,
    coerce,
)
from strongroom.config.runbook import RestoreStep
from strongroom.errors import ConfigError, NotFoundError, StrongroomError
from strongroom.faults import fault_after_first_mib, fault_point
from strongroom.model import DEFAULT_VAULT, Arn, Job, JobState, JobType, RecoveryPointStatus, iso, new_id
from strongroom.plans.schedule import parse_schedule
from strongroom.policy.principals import root_arn
from strongroom.services import notifications, remote, vault_ops
from strongroom.services.account import ENV_PASSPHRASE, SETTING_RESTORE_TESTING_PLANS, Account
from strongroom.services.copy import create_copy_job, run_copy_job
from strongroom.services.joblock import JobLock, is_held
from strongroom.services.jobs import lock_path, recover_dead_jobs
from strongroom.services.notifications.outbox import queue_safely
from strongroom.services.restore import create_restore_job, run_restore_job
from strongroom.services.restore_testing_headers import open_headers
from strongroom.services.restore_testing_records import (
    KEY,
    PLAN_NAME_KEY,
    CleanupState,
    RestoreTest,
    RestoreTestOutcome,
    RestoreTestSpec,
    RestoreTestStatus,
    ScratchTarget,
    ValidationStatus,
    restore_test_of,
)
from strongroom.services.restore_testing_validation import Restored, overall, validate

log = logging.getLogger("strongroom.restore_testing")

SETTING_CURSORS = "restore_testing_cursors"  # plan -> the instant up to which its occurrences were fired
SCRATCH_PREFIX = "restoretest"
SCRATCH_DIRECTORY = "restore-testing"
DEFAULT_VALIDATION_WINDOW_HOURS = 1
DEAD_TEST_MESSAGE = "the process running this restore test stopped before it finished (killed or crashed)"
WORKER_MODULE = "strongroom.services.restore_testing_worker"
RESTORE_JOB_FAILED = "RESTORE_JOB_FAILED"
HIDDEN = "(hidden)"
COPY_BACK_KEY = "restore_test_copy_back"  # on a copy job made for a restore test: its runner's copy-back lock
RESTORE_VALIDATION_COMPLETED = "RESTORE_VALIDATION_COMPLETED"


# Plans ------------------------------------------------------------------------------------------
def applied_plans(account: Account) -> dict[str, RestoreTestingPlan]:
    """The restore testing plans the last apply stored."""
    stored = open_headers(account, account.catalog.get_setting(SETTING_RESTORE_TESTING_PLANS) or {})
    try:
        return {name: RestoreTestingPlan.model_validate(plan) for name, plan in sorted(stored.items())}
    except ValidationError as exc:  # written by apply from a valid file: only a changed schema gets here
        raise ConfigError(f"the stored restore testing plans do not load: {exc.errors()[0]['msg']}") from None


def get_plan(account: Account, name: str) -> RestoreTestingPlan:
    plans = applied_plans(account)
    if name not in plans:
        known = ", ".join(plans) or "none"
        raise NotFoundError(
            f"no restore testing plan '{name}' (applied plans: {known})",
            hint="declare it under restore_testing_plans in the account file and run 'strongroom apply'",
        )
    return plans[name]


def describe_plan(account: Account, name: str) -> dict[str, Any]:
    plan = get_plan(account, name)
    tests = [t for t in list_tests(account) if t.spec.plan_name == name]
    schedule = parse_schedule(plan.schedule_expression, plan.schedule_expression_timezone)
    cursor = (account.catalog.get_setting(SETTING_CURSORS) or {}).get(name)
    upcoming = next(iter(schedule.fire_times(datetime.fromisoformat(cursor) if cursor else model.now())), None)
    shown = plan.model_dump(mode="json")
    for selection in shown["selections"].values():
        hook = selection["validation"]["hook"]
        if hook and hook.get("headers"):  # they may carry a token: shown by name only
            hook["headers"] = dict.fromkeys(hook["headers"], HIDDEN)
    return {
        "restore_testing_plan_name": name,
        **shown,
        "next_run": iso(upcoming),
        "last_run": tests[-1].job.creation_date if tests else None,
        "restore_jobs": len(tests),
    }


# Choosing points -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    arn: str
    resource_id: str
    resource_type: str
    vault_name: str
    creation_date: str
    remote: bool = False


def selected_points(
    account: Account, plan: RestoreTestingPlan, now: datetime, rng: random.Random | None = None
) -> list[tuple[str, Candidate]]:
    """(selection name, point) for each resource every selection picks: one point per resource."""
    pool = _candidates(account, plan, now)
    tags = {resource.id: resource.tags for resource in account.catalog.list_resources()}
    chooser = rng or random.Random()
    chosen: list[tuple[str, Candidate]] = []
    for name, selection in plan.selections.items():
        by_resource: dict[str, list[Candidate]] = {}
        for point in pool:
            if _selects(selection, point, tags):
                by_resource.setdefault(point.resource_id, []).append(point)
        for resource_id in sorted(by_resource):
            points = sorted(by_resource[resource_id], key=lambda p: p.creation_date)
            if plan.recovery_point_selection.algorithm == "RANDOM_WITHIN_WINDOW":
                chosen.append((name, chooser.choice(points)))
            else:
                chosen.append((name, points[-1]))
    return chosen


def _selects(selection: RestoreTestingSelection, point: Candidate, tags: dict[str, dict[str, str]]) -> bool:
    if point.resource_type != selection.protected_resource_type:
        return False
    if "*" not in selection.protected_resource_arns and point.resource_id not in selection.protected_resource_arns:
        return False
    conditions = selection.protected_resource_conditions
    if conditions is None or not (conditions.string_equals or conditions.string_not_equals):
        return True
    return point.resource_id in tags and conditions.holds(tags[point.resource_id])


def _candidates(account: Account, plan: RestoreTestingPlan, now: datetime) -> list[Candidate]:
    selection = plan.recovery_point_selection
    since = iso(now - timedelta(days=selection.selection_window_days)) or ""
    local_names = set(account.catalog.vault_names())
    excluded = {_vault_key(account, v) for v in selection.exclude_vaults}
    local: set[str] = set()
    remote_vaults: set[tuple[str, str]] = set()
    for entry in selection.include_vaults:
        if entry == "*":
            local |= local_names
            continue
        account_id, vault = _vault_key(account, entry)
        if account_id == account.account_id:
            local.add(vault)
        else:
            remote_vaults.add((account_id, vault))
    found = [
        Candidate(rp.arn, rp.resource_id, rp.resource_type, rp.vault_name, rp.creation_date)
        for rp in account.catalog.list_recovery_points(status=RecoveryPointStatus.COMPLETED)
        if rp.vault_name in local
        and (account.account_id, rp.vault_name) not in excluded
        and not rp.metadata.get("continuous")  # SNAPSHOT points only (CONTINUOUS is refused in the config)
    ]
    for account_id, vault in sorted(remote_vaults - excluded):
        with remote.client_for(account, account_id) as client:
            found += [
                Candidate(
                    p["recovery_point_arn"], p["resource_id"], p["resource_type"], vault, p["creation_date"], True
                )
                for p in client.list_recovery_points(vault)
                if p.get("status") == RecoveryPointStatus.COMPLETED.value
                and not (p.get("metadata") or {}).get("continuous")
            ]
    return [p for p in found if since <= p.creation_date <= (iso(now) or "")]


def _vault_key(account: Account, entry: str) -> tuple[str, str]:
    """(account id, vault name) of an include/exclude entry: a vault name (this account) or a vault ARN."""
    if not entry.startswith("arn:"):
        return account.account_id, entry
    arn = Arn.parse(entry)
    return arn.account_id, arn.name


# Running ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunResult:
    """What one run of a plan did: its tests, and the points it could not even start a test of (why)."""

    tests: list[RestoreTest]
    not_started: list[str]


def start_run(
    account: Account,
    plan_name: str,
    *,
    scheduled_for: str | None = None,
    rng: random.Random | None = None,
    progress: Callable[[str], None] | None = None,
) -> RunResult:
    """Clean up what dead runs left, then test every point the plan picks now, one after the other. A point
    whose test cannot start (no scratch target to be had, a copy back refused) is reported and the run goes on."""
    plan = get_plan(account, plan_name)
    clean_leftovers(account)
    picks = selected_points(account, plan, model.now(), rng)
    say = progress or (lambda _: None)
    if not picks:
        say(f"plan {plan_name}: no recovery point in its window matches its selections")
    result = RunResult([], [])
    for selection_name, point in picks:
        say(f"testing {point.arn} of {point.resource_id} ({selection_name})")
        try:
            result.tests.append(run_test(account, plan_name, plan, selection_name, point, scheduled_for))
        except StrongroomError as exc:  # nothing was restored: no job, nothing to remove
            result.not_started.append(f"{point.resource_id} ({point.arn}): {exc.one_line()}")
            say(f"could not test {point.resource_id}: {exc.one_line()}")
    return result


def run_test(
    account: Account,
    plan_name: str,
    plan: RestoreTestingPlan,
    selection_name: str,
    point: Candidate,
    scheduled_for: str | None,
) -> RestoreTest:
    """One restore test to its end; never raises for what the test found (it is recorded as the outcome)."""
    selection = plan.selections[selection_name]
    with _copy_back_lock(account) as copy_back_id:
        local_arn, copied = _local_point(account, point, copy_back_id)
        try:
            rp = account.catalog.get_recovery_point(local_arn)
            scratch = _scratch(account, rp.resource_id, rp.resource_type, selection)
            spec = RestoreTestSpec(
                plan_name,
                selection_name,
                scratch,
                selection.validation_window_hours or DEFAULT_VALIDATION_WINDOW_HOURS,
                scheduled_for,
                copied,
                point.arn,
            )
            fault_point("restore_test:copied-back")
            job, job_lock = create_restore_job(
                account, rp.arn, scratch.request(), extra_parameters={KEY: spec.as_dict(), PLAN_NAME_KEY: plan_name}
            )
        except BaseException:  # no test recorded: nothing else would ever remove the copied-back point
            if copied:
                _delete_copied_back(account, copied)
            raise
    with _test_lock(account, job.id):
        fault_point("restore_test:recorded")
        try:
            outcome = _restore_and_validate(account, job, job_lock, spec, selection, rp.metadata)
        except BaseException as exc:  # a bug, Ctrl-C or SIGTERM: the scratch target goes all the same
            why = f"the restore test stopped: {type(exc).__name__}: {exc}"
            _record(
                account,
                job.id,
                _cleaned(account, spec, _outcome(RestoreTestStatus.FAILED, ValidationStatus.SKIPPED, why)),
            )
            raise
        _record(account, job.id, _cleaned(account, spec, outcome))
    test = restore_test_of(account.catalog.get_job(job.id))
    assert test is not None
    _notify(account, test)
    return test


def _restore_and_validate(
    account: Account,
    job: Job,
    job_lock: JobLock,
    spec: RestoreTestSpec,
    selection: RestoreTestingSelection,
    metadata: dict[str, Any],
) -> RestoreTestOutcome:
    try:
        finished = run_restore_job(
            account, job.id, job_lock, progress=fault_after_first_mib("restore_test.restore:middle")
        )
    except StrongroomError as exc:
        return _outcome(RestoreTestStatus.FAILED, ValidationStatus.SKIPPED, f"restore failed: {exc.one_line()}")
    seconds = _seconds(finished)
    fault_point("restore_test:restored")
    deadline = time.monotonic() + spec.validation_window_hours * 3600
    restored = Restored(
        job.id,
        spec.plan_name,
        finished.resource_id or "",
        spec.scratch.resource_type,
        finished.recovery_point_arn or "",
        finished.result,
        metadata,
    )
    try:
        results = validate(restored, selection.validation, deadline)
    except StrongroomError as exc:
        return _outcome(RestoreTestStatus.FAILED, ValidationStatus.FAILED, exc.one_line(), seconds)
    status, message = overall(results)
    verdict = {
        ValidationStatus.SUCCESSFUL: RestoreTestStatus.SUCCESSFUL,
        ValidationStatus.SKIPPED: RestoreTestStatus.SUCCESSFUL,
        ValidationStatus.FAILED: RestoreTestStatus.FAILED,
        ValidationStatus.TIMED_OUT: RestoreTestStatus.TIMED_OUT,
    }[status]
    return _outcome(verdict, status, message, seconds, [r.as_dict() for r in results])


def _outcome(
    status: RestoreTestStatus,
    validation: ValidationStatus,
    message: str,
    seconds: float | None = None,
    checks: list[dict[str, Any]] | None = None,
) -> RestoreTestOutcome:
    return RestoreTestOutcome(status, validation, message, iso(model.now()) or "", seconds, validations=checks or [])


def _seconds(job: Job) -> float | None:
    if not job.start_date or not job.completion_date:
        return None
    return (datetime.fromisoformat(job.completion_date) - datetime.fromisoformat(job.start_date)).total_seconds()


def _record(account: Account, job_id: str, outcome: RestoreTestOutcome) -> None:
    job = account.catalog.get_job(job_id)
    account.catalog.update_job(job_id, result={**job.result, KEY: outcome.as_dict()})


# Scratch targets ------------------------------------------------------------------------------------
def _scratch(
    account: Account, resource_id: str, resource_type: str, selection: RestoreTestingSelection
) -> ScratchTarget:
    """Where the test restores to, with the selection's overrides: a new name nobody uses."""
    overrides = {
        key: coerce(OVERRIDES[resource_type][key], value)
        for key, value in selection.restore_metadata_overrides.items()
        if key in OVERRIDES.get(resource_type, {})
    }
    token = new_id()[:8]
    identifier = f"{SCRATCH_PREFIX}-{token}"
    if resource_type in ("directory", "sqlite"):
        parent = Path(overrides.get("target") or account.home / SCRATCH_DIRECTORY).expanduser().absolute()
        directory = parent / identifier
        target = directory / (resource_id if resource_type == "directory" else f"{resource_id}.sqlite")
        options = {"preserve_special": True} if overrides.get("preserve_special") else {}
        return ScratchTarget(resource_type, identifier, str(target), None, options, str(directory))
    step = RestoreStep(
        name="restore-test",
        type="restore",
        target_identifier=identifier if resource_type == "postgres-cluster" else identifier.replace("-", "_"),
        port=overrides.get("port"),
        target=overrides.get("target"),
        jobs=overrides.get("jobs"),
        no_owners=bool(overrides.get("no_owners")),
        no_privileges=bool(overrides.get("no_privileges")),
        create_roles=bool(overrides.get("create_roles")),
        role_map=_role_map(overrides.get("role_map")),
        encoding=overrides.get("encoding"),
        locale=overrides.get("locale"),
        trust_restored_config=bool(overrides.get("trust_restored_config")),
    )
    request = get_adapter(resource_type).runbook_restore_request(
        step, step.target_identifier, _original(account, resource_id)
    )
    port = request.port
    if resource_type == "postgres-cluster" and port is None:
        from strongroom.adapters.postgres.tools import free_port

        port = free_port()  # chosen now, so the record names the port a leftover cluster would hold
    return ScratchTarget(
        resource_type, request.target_identifier or step.target_identifier, request.target, port, dict(request.options)
    )


def _role_map(text: str | None) -> dict[str, str]:
    pairs = [item.partition("=") for item in (text or "").split(",") if item.strip()]
    return {old.strip(): new.strip() for old, _, new in pairs}


def _original(account: Account, resource_id: str) -> ResourceSpec | None:
    try:
        resource = account.catalog.get_resource(resource_id)
    except NotFoundError:
        return None
    return ResourceSpec(resource.id, resource.type, resource.settings, resource.tags)


def discard_scratch(account: Account, spec: RestoreTestSpec) -> list[str]:
    """Remove the scratch target (idempotent: what is not there is not there) and a copied-back point."""
    scratch = spec.scratch
    removed: list[str] = []
    if scratch.directory is not None:
        directory = Path(scratch.directory)
        if directory.exists():
            shutil.rmtree(directory)
            removed.append(f"removed {directory}")
    else:
        removed += get_adapter(scratch.resource_type).discard_restore(scratch.request(), account.home, {})
    if spec.copied_back_recovery_point_arn:
        removed += _delete_copied_back(account, spec.copied_back_recovery_point_arn)
    return removed


def _delete_copied_back(account: Account, arn: str) -> list[str]:
    with suppress(NotFoundError):
        rp = account.catalog.get_recovery_point(arn)
        if rp.status != RecoveryPointStatus.DELETED:
            vault_ops.delete_recovery_point(account, root_arn(account.account_id), rp.arn)
            return [f"deleted the copied-back recovery point {rp.arn}"]
    return []


def _cleaned(account: Account, spec: RestoreTestSpec, outcome: RestoreTestOutcome) -> RestoreTestOutcome:
    fault_point("restore_test:before-cleanup")
    try:
        removed = discard_scratch(account, spec)
    except (StrongroomError, OSError) as exc:
        message = exc.one_line() if isinstance(exc, StrongroomError) else str(exc)
        return replace(outcome, cleanup=CleanupState.FAILED, cleanup_message=message)
    return replace(outcome, cleanup=CleanupState.DONE, cleanup_message="; ".join(removed) or "nothing to remove")


# Copies back from another account ----------------------------------------------------------------
def _local_point(account: Account, point: Candidate, copy_back_id: str) -> tuple[str, str | None]:
    """The point's ARN in this account, copying it back into Default first when it lives elsewhere. The copy
    job carries ``copy_back_id``: until a test records the copied point, only the runner's lock keeps it."""
    if not point.remote:
        return point.arn, None
    vault = account.catalog.get_vault(DEFAULT_VAULT)
    job, lock = create_copy_job(account, point.arn, vault.arn, extra_parameters={COPY_BACK_KEY: copy_back_id})
    finished = run_copy_job(account, job.id, lock)
    local = str(finished.result["destination_recovery_point_arn"])
    return local, local


def copy_back_lock_path(account: Account, copy_back_id: str) -> Path:
    return account.locks_dir / f"restore-test-copy-back-{copy_back_id}.lock"


@contextmanager
def _copy_back_lock(account: Account) -> Iterator[str]:
    """Held from before a copy back until its test is recorded (or the copied point is deleted)."""
    copy_back_id = new_id()
    path = copy_back_lock_path(account, copy_back_id)
    lock = JobLock.acquire(path)
    try:
        yield copy_back_id
    finally:
        path.unlink(missing_ok=True)
        lock.release()


def orphaned_copy_backs(account: Account) -> list[str]:
    """Points copied back for a restore test whose runner died before the test was recorded: no test names
    them and no live runner holds their copy-back lock."""
    recorded = {t.spec.copied_back_recovery_point_arn for t in list_tests(account)}
    found = []
    for job in account.catalog.list_jobs(job_type=JobType.COPY):
        copy_back_id = job.parameters.get(COPY_BACK_KEY)
        arn = (job.result or {}).get("destination_recovery_point_arn")
        unrecorded = bool(copy_back_id and arn and arn not in recorded)
        if unrecorded and not is_held(copy_back_lock_path(account, str(copy_back_id))):
            found.append(str(arn))
    return found


# Locks and leftovers --------------------------------------------------------------------------------
def test_lock_path(account: Account, job_id: str) -> Path:
    return account.locks_dir / f"restore-test-{job_id}.lock"


@contextmanager
def _test_lock(account: Account, job_id: str) -> Iterator[None]:
    path = test_lock_path(account, job_id)
    lock = JobLock.acquire(path)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        lock.release()


def _abandoned(account: Account, test: RestoreTest) -> RestoreTest | None:
    """The test as it stands now if nobody runs it and its scratch target may still exist; else None."""
    if test.outcome is not None and test.outcome.cleanup == CleanupState.DONE:
        return None
    if is_held(test_lock_path(account, test.job.id)) or is_held(lock_path(account, test.job.id)):
        return None
    # Read again once both locks are seen free: a runner records its outcome before it lets go of the test lock,
    # so a test that ended since the listing is not taken for a dead one.
    now = restore_test_of(account.catalog.get_job(test.job.id))
    if now is None or (now.outcome is not None and now.outcome.cleanup == CleanupState.DONE):
        return None
    return now


def clean_leftovers(account: Account) -> list[str]:
    """Remove the scratch targets of tests whose process died (or whose cleanup failed), and points copied back
    for a test that was never recorded; what was removed."""
    recover_dead_jobs(account)
    removed: list[str] = []
    for arn in orphaned_copy_backs(account):
        removed += [f"restore test copy back: {line}" for line in _delete_copied_back(account, arn)]
    for listed in list_tests(account):
        test = _abandoned(account, listed)
        if test is None:
            continue
        outcome = test.outcome or _outcome(RestoreTestStatus.FAILED, ValidationStatus.SKIPPED, DEAD_TEST_MESSAGE)
        if test.outcome is None and test.job.state == JobState.COMPLETED:
            outcome = replace(outcome, restore_seconds=_seconds(test.job))
        outcome = _cleaned(account, test.spec, outcome)
        _record(account, test.job.id, outcome)
        removed.append(f"restore test {test.job.id}: {outcome.cleanup_message}")
        if test.outcome is None:
            settled = restore_test_of(account.catalog.get_job(test.job.id))
            if settled is not None:
                _notify(account, settled)
    return removed


def list_tests(account: Account, plan_name: str | None = None) -> list[RestoreTest]:
    """Every restore test (oldest first), of one plan if named."""
    tests = [restore_test_of(job) for job in account.catalog.list_jobs(job_type=JobType.RESTORE)]
    return [t for t in tests if t is not None and (plan_name is None or t.spec.plan_name == plan_name)]


# Events --------------------------------------------------------------------------------------------
def _notify(account: Account, test: RestoreTest) -> None:
    """RESTORE_VALIDATION_COMPLETED always; RESTORE_JOB_FAILED when the test did not succeed. Never raises."""
    if test.outcome is None or not test.job.vault_name:
        return
    try:
        base = notifications.job_payload(account, test.job)
        described = test.as_dict()
        fields = {key: described[key] for key in ("restore_testing_plan_name", "restore_testing_selection_name")}
        fields.update(
            validation_status=test.outcome.validation_status.value,
            validation_status_message=test.outcome.validation_status_message,
            restore_test_status=test.outcome.status.value,
            restore_seconds=test.outcome.restore_seconds,
        )
        events = [(RESTORE_VALIDATION_COMPLETED, test.outcome.validation_status.value)]
        if test.outcome.status != RestoreTestStatus.SUCCESSFUL:
            events.append((RESTORE_JOB_FAILED, test.outcome.status.value))
        for event, state in events:
            payload = {**base, **fields, "state": state}
            notifications.deliver_now(account, queue_safely(account, test.job.vault_name, event, payload))
    except Exception as exc:  # a notification problem never fails the test
        log.warning("could not notify about restore test %s: %s", test.job.id, type(exc).__name__)


# The scheduler ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Due:
    plan_name: str
    occurrence: datetime


def due_runs(account: Account, now: datetime) -> list[Due]:
    """The plans whose newest occurrence since the last tick is still inside its start window; moves the cursors
    (a plan seen for the first time starts from now). Older occurrences are missed, as for backup rules."""
    cursors: dict[str, str] = dict(account.catalog.get_setting(SETTING_CURSORS) or {})
    due: list[Due] = []
    plans = applied_plans(account)
    for name, plan in plans.items():
        since = cursors.get(name)
        cursors[name] = iso(now) or ""
        if since is None:
            continue
        schedule = parse_schedule(plan.schedule_expression, plan.schedule_expression_timezone)
        newest = None
        for moment in schedule.fire_times(datetime.fromisoformat(since)):
            if moment > now:
                break
            newest = moment
        if newest is not None and now < newest + timedelta(hours=plan.start_window_hours):
            due.append(Due(name, newest))
    account.catalog.set_setting(SETTING_CURSORS, {name: cursors[name] for name in plans} or None)
    return due


def tick(account: Account, now: datetime, *, inline: bool) -> list[str]:
    """The scheduler's hook: start the due runs (here, or in a detached worker process); what it did."""
    done = []
    for due in due_runs(account, now):
        if inline:
            run = start_run(account, due.plan_name, scheduled_for=iso(due.occurrence))
            done.append(f"restore testing plan {due.plan_name}: {len(run.tests)} test(s)")
            done += [f"restore testing plan {due.plan_name}: not started: {why}" for why in run.not_started]
        else:
            spawn_run(account, due.plan_name, iso(due.occurrence) or "")
            done.append(f"restore testing plan {due.plan_name}: started")
    return done


def spawn_run(account: Account, plan_name: str, scheduled_for: str) -> subprocess.Popen[bytes]:
    """Run a plan in a detached worker (``python -m strongroom.services.restore_testing_worker``), logging to
    ``tmp/restore-testing-PLAN.log``; the passphrase goes in its environment, never its arguments."""
    account.tmp_dir.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, ENV_PASSPHRASE: account.passphrase()}
    command = [sys.executable, "-m", WORKER_MODULE, str(account.home), plan_name, scheduled_for]
    with open(account.tmp_dir / f"restore-testing-{plan_name}.log", "ab") as out:
        return subprocess.Popen(
            command, env=environment, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
