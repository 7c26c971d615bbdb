"""What ``/metrics`` shows (docs/metrics.md): gauges computed from the catalog at the moment of the scrape.

Nothing is counted in memory: every value is read from the catalog when Prometheus asks, so a restarted
daemon loses nothing and a dead one is seen by the scrape failing (``up == 0``) or by
``strongroom_scheduler_last_tick_timestamp_seconds`` going stale. Each source below turns the catalog into
:class:`Family` records; features add a source to ``SOURCES``.

Labels are bounded and hold names only: resource ids and types, vault names, job types and states, plan and
rule names, framework, control and report plan names, the destination's account id and vault name. Never a
job id, an ARN, a URL or a secret.
``resource_recovery`` is the same data for one resource, for ``strongroom resources describe``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from strongroom.catalog.compliance_records import ComplianceStatus, ReportJobState
from strongroom.catalog.dr_records import DrState
from strongroom.errors import StrongroomError
from strongroom.model import Arn, Job, JobState, JobType, RecoveryPoint, RecoveryPointStatus
from strongroom.services.account import SETTING_FRAMEWORKS, SETTING_REPORT_PLANS, Account
from strongroom.services.restore_testing_records import RestoreTest, RestoreTestStatus, restore_test_of
from strongroom.services.scheduler.daemon import SETTING_LAST_TICK

PREFIX = "strongroom_"


class Kind(StrEnum):
    GAUGE = "gauge"


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


@dataclass
class Family:
    """One metric: its name (without the prefix), help text, label names and samples."""

    name: str
    help: str
    labels: tuple[str, ...]
    samples: list[Sample] = field(default_factory=list)
    kind: Kind = Kind.GAUGE

    def add(self, value: float, **labels: str) -> None:
        self.samples.append(Sample({name: labels[name] for name in self.labels}, float(value)))

    @property
    def full_name(self) -> str:
        return PREFIX + self.name


@dataclass(frozen=True)
class Snapshot:
    """The catalog rows every source reads, read once per scrape."""

    now: datetime
    points: list[RecoveryPoint]
    jobs: list[Job]
    resource_types: dict[str, str]
    account: Account


Source = Callable[[Snapshot], Iterable[Family]]


def snapshot(account: Account, now: datetime) -> Snapshot:
    catalog = account.catalog
    return Snapshot(
        now=now,
        points=catalog.list_recovery_points(),
        jobs=catalog.list_jobs(),
        resource_types={r.id: r.type for r in catalog.list_resources()},
        account=account,
    )


def collect(account: Account, now: datetime) -> list[Family]:
    view = snapshot(account, now)
    return [family for source in SOURCES for family in source(view)]


def _seconds(text: str | None) -> float | None:
    return datetime.fromisoformat(text).timestamp() if text else None


def _type_of(view: Snapshot, resource_id: str, fallback: str = "") -> str:
    return view.resource_types.get(resource_id, fallback)


# Backups and vaults ------------------------------------------------------------------------------------
def newest_completed(points: Iterable[RecoveryPoint]) -> dict[tuple[str, str], RecoveryPoint]:
    """(resource id, vault) -> its newest COMPLETED recovery point (by completion date)."""
    newest: dict[tuple[str, str], RecoveryPoint] = {}
    for rp in points:
        if rp.status != RecoveryPointStatus.COMPLETED or not rp.completion_date:
            continue
        key = (rp.resource_id, rp.vault_name)
        if key not in newest or (newest[key].completion_date or "") < rp.completion_date:
            newest[key] = rp
    return newest


def backup_families(view: Snapshot) -> list[Family]:
    labels = ("resource_id", "resource_type", "vault")
    last = Family(
        "backup_last_success_timestamp_seconds",
        "Completion time of the newest COMPLETED recovery point of the resource in the vault.",
        labels,
    )
    rpo = Family("resource_rpo_seconds", "Now minus that completion time: the data a loss now would cost.", labels)
    size = Family("resource_source_bytes", "Bytes read from the resource by its newest COMPLETED point.", labels)
    stored = Family("resource_stored_bytes", "Bytes stored for the resource's COMPLETED points in the vault.", labels)
    kept: dict[tuple[str, str], int] = {}
    for p in view.points:
        if p.status == RecoveryPointStatus.COMPLETED:
            kept[(p.resource_id, p.vault_name)] = kept.get((p.resource_id, p.vault_name), 0) + p.stored_bytes
    for (resource_id, vault), rp in sorted(newest_completed(view.points).items()):
        tags = {"resource_id": resource_id, "resource_type": rp.resource_type, "vault": vault}
        completed = _seconds(rp.completion_date) or 0.0
        last.add(completed, **tags)
        rpo.add(max(0.0, view.now.timestamp() - completed), **tags)
        size.add(rp.source_bytes, **tags)
        stored.add(kept.get((resource_id, vault), 0), **tags)
    return [last, rpo, size, stored]


def vault_families(view: Snapshot) -> list[Family]:
    count = Family("vault_recovery_points", "Recovery points in the vault, by status.", ("vault", "state"))
    stored = Family("vault_stored_bytes", "Bytes the catalog records as stored by the vault's live points.", ("vault",))
    tally: dict[tuple[str, str], int] = {}
    sizes: dict[str, int] = {}
    for vault in view.account.catalog.vault_names():
        sizes[vault] = 0
    for rp in view.points:
        tally[(rp.vault_name, rp.status.value)] = tally.get((rp.vault_name, rp.status.value), 0) + 1
        if rp.status in (RecoveryPointStatus.COMPLETED, RecoveryPointStatus.PARTIAL):
            sizes[rp.vault_name] = sizes.get(rp.vault_name, 0) + rp.stored_bytes
    for (vault, state), value in sorted(tally.items()):
        count.add(value, vault=vault, state=state)
    for vault, value in sorted(sizes.items()):
        stored.add(value, vault=vault)
    return [count, stored]


# Jobs, copies, restores ---------------------------------------------------------------------------------
def job_families(view: Snapshot) -> list[Family]:
    counts = Family("jobs", "Jobs in the catalog, by type and state.", ("job_type", "state"))
    tally: dict[tuple[str, str], int] = {(t.value, s.value): 0 for t in JobType for s in JobState}
    for job in view.jobs:
        tally[(job.job_type.value, job.state.value)] += 1
    for (job_type, state), value in sorted(tally.items()):
        counts.add(value, job_type=job_type, state=state)
    labels = ("resource_id", "resource_type", "job_type")
    duration = Family("job_last_duration_seconds", "Start to end of the resource's last finished job.", labels)
    ended = Family(
        "job_last_end_timestamp_seconds",
        "When the resource's last job of the type ended in the state.",
        ("resource_id", "resource_type", "job_type", "state"),
    )
    last: dict[tuple[str, str], Job] = {}
    last_by_state: dict[tuple[str, str, str], Job] = {}
    for job in _finished(view.jobs):
        if not job.resource_id:
            continue
        last[(job.resource_id, job.job_type.value)] = job
        last_by_state[(job.resource_id, job.job_type.value, job.state.value)] = job
    for (resource_id, job_type), job in sorted(last.items()):
        start, end = _seconds(job.start_date or job.creation_date), _seconds(job.completion_date)
        resource_type = _type_of(view, resource_id)
        duration.add(
            (end or 0.0) - (start or 0.0), resource_id=resource_id, resource_type=resource_type, job_type=job_type
        )
    for (resource_id, job_type, state), job in sorted(last_by_state.items()):
        ended.add(
            _seconds(job.completion_date) or 0.0,
            resource_id=resource_id,
            resource_type=_type_of(view, resource_id),
            job_type=job_type,
            state=state,
        )
    return [counts, duration, ended]


def _finished(jobs: Iterable[Job]) -> list[Job]:
    """Jobs that ended, with a resource, oldest end first."""
    done = [
        j for j in jobs if j.resource_id and j.completion_date and j.state not in (JobState.CREATED, JobState.RUNNING)
    ]
    return sorted(done, key=lambda j: j.completion_date or "")


def copy_destination(job: Job) -> tuple[str, str] | None:
    """(account id, vault name) a pushed copy went to; None for a copy into this account."""
    if job.parameters.get("direction") != "push":
        return None
    try:
        target = Arn.parse(str(job.parameters.get("destination_backup_vault_arn")))
    except StrongroomError:
        return None
    return target.account_id, target.name


def last_copies(jobs: Iterable[Job]) -> dict[tuple[str, str, str], Job]:
    """(resource id, destination account, destination vault) -> its newest COMPLETED pushed copy job."""
    newest: dict[tuple[str, str, str], Job] = {}
    for job in _finished(jobs):
        destination = copy_destination(job) if job.job_type == JobType.COPY else None
        if destination and job.state == JobState.COMPLETED and job.resource_id:
            newest[(job.resource_id, *destination)] = job
    return newest


def copy_families(view: Snapshot) -> list[Family]:
    labels = ("resource_id", "resource_type", "destination_account", "destination_vault")
    last = Family("copy_last_success_timestamp_seconds", "End of the newest COMPLETED copy to the destination.", labels)
    rpo = Family(
        "copy_rpo_seconds",
        "Now minus the creation time of the newest point copied to the destination (its RPO there).",
        labels,
    )
    points = {rp.arn: rp for rp in view.points}
    for (resource_id, account_id, vault), job in sorted(last_copies(view.jobs).items()):
        tags = {
            "resource_id": resource_id,
            "resource_type": _type_of(view, resource_id),
            "destination_account": account_id,
            "destination_vault": vault,
        }
        last.add(_seconds(job.completion_date) or 0.0, **tags)
        source = points.get(str(job.parameters.get("source_recovery_point_arn")))
        if source is not None and source.completion_date:
            rpo.add(max(0.0, view.now.timestamp() - (_seconds(source.completion_date) or 0.0)), **tags)
    return [last, rpo]


class RtoSource(StrEnum):
    RESTORE_JOB = "restore_job"
    RESTORE_TEST = "restore_test"  # a SUCCESSFUL test of a restore testing plan (services/restore_testing.py)
    DR_RUN = "dr_run"
    DR_REHEARSAL = "dr_rehearsal"


@dataclass(frozen=True)
class Measured:
    """A measured restore time of a resource: what measured it, when it ended, how long it took."""

    resource_id: str
    source: RtoSource
    ended_at: str
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"rto_seconds": round(self.seconds, 3), "measured_by": self.source.value, "measured_at": self.ended_at}


def measured_restores(account: Account, jobs: Iterable[Job]) -> list[Measured]:
    """Every successful restore with its duration: restore jobs, SUCCESSFUL restore tests (their restore job's
    start to end, validation not counted), COMPLETED DR runs and rehearsals."""
    found: list[Measured] = []
    for job in _finished(jobs):
        if job.job_type == JobType.RESTORE and job.state == JobState.COMPLETED and job.resource_id:
            start, end = _seconds(job.start_date or job.creation_date) or 0.0, _seconds(job.completion_date) or 0.0
            test = restore_test_of(job)
            if test is None:
                found.append(Measured(job.resource_id, RtoSource.RESTORE_JOB, job.completion_date or "", end - start))
            elif test.outcome is not None and test.outcome.status == RestoreTestStatus.SUCCESSFUL:
                # a restore whose validation failed restored the wrong thing: it measures no recovery time
                found.append(Measured(job.resource_id, RtoSource.RESTORE_TEST, job.completion_date or "", end - start))
    for run in account.catalog.list_dr_runs():
        report = run.report or {}
        point = report.get("recovery_point") or {}
        if run.state != DrState.COMPLETED or not point.get("resource_id") or report.get("rto_seconds") is None:
            continue
        source = RtoSource.DR_REHEARSAL if run.rehearsal else RtoSource.DR_RUN
        found.append(Measured(point["resource_id"], source, run.completed_at or "", float(report["rto_seconds"])))
    return sorted(found, key=lambda m: m.ended_at)


def last_rto(account: Account, jobs: Iterable[Job]) -> dict[str, Measured]:
    """resource id -> its most recent measured restore."""
    return {m.resource_id: m for m in measured_restores(account, jobs)}


def restore_families(view: Snapshot) -> list[Family]:
    last = Family(
        "restore_last_success_timestamp_seconds",
        "End of the resource's newest successful restore (restore job, DR run or rehearsal).",
        ("resource_id", "resource_type", "source"),
    )
    rto = Family(
        "resource_last_rto_seconds",
        "Duration of the resource's newest successful restore: its last measured RTO.",
        ("resource_id", "resource_type", "source"),
    )
    for resource_id, measured in sorted(last_rto(view.account, view.jobs).items()):
        tags = {"resource_id": resource_id, "resource_type": _type_of(view, resource_id), "source": measured.source}
        last.add(_seconds(measured.ended_at) or 0.0, **tags)
        rto.add(measured.seconds, **tags)
    return [last, rto]


# Restore testing plans ------------------------------------------------------------------------------------
def last_restore_tests(jobs: Iterable[Job]) -> dict[tuple[str, str], RestoreTest]:
    """(resource id, plan) -> the resource's newest finished restore test of the plan."""
    newest: dict[tuple[str, str], RestoreTest] = {}
    for job in jobs:
        test = restore_test_of(job)
        if test is None or test.outcome is None or not job.resource_id:
            continue
        key = (job.resource_id, test.spec.plan_name)
        if key not in newest or (newest[key].outcome or test.outcome).completed_at <= test.outcome.completed_at:
            newest[key] = test
    return newest


def restore_test_families(view: Snapshot) -> list[Family]:
    labels = ("resource_id", "resource_type", "plan")
    last = Family(
        "restore_test_last_timestamp_seconds", "End of the resource's newest restore test of the plan.", labels
    )
    success = Family(
        "restore_test_last_success",
        "1 when the resource's newest restore test of the plan was SUCCESSFUL, else 0 (FAILED or TIMED_OUT).",
        labels,
    )
    last_success = Family(
        "restore_test_last_success_timestamp_seconds",
        "End of the resource's newest SUCCESSFUL restore test of the plan.",
        labels,
    )
    status = Family(
        "restore_test_last_status",
        "1 for the status and validation status of the resource's newest restore test of the plan.",
        (*labels, "status", "validation_status"),
    )
    seconds = Family(
        "restore_test_last_restore_seconds",
        "Restore time (the restore job's start to end) of the resource's newest restore test of the plan.",
        labels,
    )
    good: dict[tuple[str, str], float] = {}
    for job in view.jobs:
        test = restore_test_of(job)
        if test and test.outcome and job.resource_id and test.outcome.status == RestoreTestStatus.SUCCESSFUL:
            key, ended = (job.resource_id, test.spec.plan_name), _seconds(test.outcome.completed_at) or 0.0
            good[key] = max(good.get(key, 0.0), ended)
    for (resource_id, plan), test in sorted(last_restore_tests(view.jobs).items()):
        assert test.outcome is not None
        tags = {"resource_id": resource_id, "resource_type": test.spec.scratch.resource_type, "plan": plan}
        last.add(_seconds(test.outcome.completed_at) or 0.0, **tags)
        success.add(1.0 if test.outcome.status == RestoreTestStatus.SUCCESSFUL else 0.0, **tags)
        status.add(
            1.0, status=test.outcome.status.value, validation_status=test.outcome.validation_status.value, **tags
        )
        if test.outcome.restore_seconds is not None:
            seconds.add(test.outcome.restore_seconds, **tags)
        if (resource_id, plan) in good:
            last_success.add(good[(resource_id, plan)], **tags)
    return [last, success, last_success, status, seconds]


# The scheduler -------------------------------------------------------------------------------------------
def last_tick(account: Account) -> datetime | None:
    """When the account's scheduler last ticked holding its lease (any daemon of the account)."""
    recorded = account.catalog.get_setting(SETTING_LAST_TICK) or {}
    return datetime.fromisoformat(recorded["at"]) if recorded.get("at") else None


def scheduler_families(view: Snapshot) -> list[Family]:
    tick = Family(
        "scheduler_last_tick_timestamp_seconds",
        "When a scheduler daemon of the account last ticked (holding the lease). Stale: no daemon runs plans.",
        (),
    )
    lag = Family(
        "scheduler_rule_lag_seconds",
        "Now minus the instant up to which the rule's occurrences were fired: due but not yet fired.",
        ("plan", "rule"),
    )
    ticked = last_tick(view.account)
    if ticked is not None:
        tick.add(ticked.timestamp())
    for (plan, rule), cursor in sorted(view.account.catalog.scheduler_cursors().items()):
        lag.add(max(0.0, view.now.timestamp() - datetime.fromisoformat(cursor).timestamp()), plan=plan, rule=rule)
    return [tick, lag]


# Frameworks and report plans (docs/compliance.md) -----------------------------------------------------------
def compliance_families(view: Snapshot) -> list[Family]:
    control = Family(
        "control_compliant",
        "1 when every resource a framework's control evaluated is COMPLIANT, 0 when one is NON_COMPLIANT.",
        ("framework", "control"),
    )
    counted = Family(
        "control_resources",
        "Resources (or backup plans) a framework's control evaluated, by verdict.",
        ("framework", "control", "status"),
    )
    evaluated = Family(
        "control_last_evaluation_timestamp_seconds",
        "When the framework's control was last evaluated (by the daemon or 'frameworks describe').",
        ("framework", "control"),
    )
    stored = view.account.catalog.get_setting(SETTING_FRAMEWORKS, {}) or {}
    evaluations = view.account.catalog.list_evaluations()
    for name in sorted(stored):
        for item in stored[name].get("controls") or []:
            rows = [e for e in evaluations if e.framework == name and e.control == item["name"]]
            bad = sum(e.status == ComplianceStatus.NON_COMPLIANT for e in rows)
            tags = {"framework": name, "control": item["name"]}
            control.add(0 if bad else 1, **tags)
            counted.add(len(rows) - bad, **tags, status=ComplianceStatus.COMPLIANT.value)
            counted.add(bad, **tags, status=ComplianceStatus.NON_COMPLIANT.value)
            if rows:
                evaluated.add(_seconds(max(e.evaluated_at for e in rows)) or 0.0, **tags)
    return [control, counted, evaluated]


def report_families(view: Snapshot) -> list[Family]:
    last = Family(
        "report_last_success_timestamp_seconds",
        "When the report plan's newest COMPLETED report job ended.",
        ("report_plan",),
    )
    failed = Family(
        "report_last_job_failed", "1 when the report plan's newest report job FAILED, else 0.", ("report_plan",)
    )
    plans = view.account.catalog.get_setting(SETTING_REPORT_PLANS, {}) or {}
    jobs = view.account.catalog.list_report_jobs()
    for name in sorted(plans):
        mine = [j for j in jobs if j.report_plan_name == name and j.state != ReportJobState.RUNNING]
        done = [j for j in mine if j.state == ReportJobState.COMPLETED]
        if done:
            last.add(_seconds(done[-1].completion_time) or 0.0, report_plan=name)
        failed.add(1 if mine and mine[-1].state == ReportJobState.FAILED else 0, report_plan=name)
    return [last, failed]


SOURCES: list[Source] = [
    backup_families,
    vault_families,
    job_families,
    copy_families,
    restore_families,
    restore_test_families,
    scheduler_families,
    compliance_families,
    report_families,
]


# One resource, for ``strongroom resources describe`` ------------------------------------------------------
def resource_recovery(account: Account, resource_id: str, now: datetime) -> dict[str, Any]:
    """The resource's current RPO in each vault and destination, and its last measured RTO."""
    points = account.catalog.list_recovery_points(resource_id=resource_id)
    jobs = [j for j in account.catalog.list_jobs() if j.resource_id == resource_id]
    vaults = [
        {
            "vault": vault,
            "newest_completed_point": rp.completion_date,
            "rpo_seconds": round(now.timestamp() - (_seconds(rp.completion_date) or 0.0), 3),
        }
        for (_, vault), rp in sorted(newest_completed(points).items())
    ]
    by_arn = {rp.arn: rp for rp in points}
    for (_, account_id, vault), job in sorted(last_copies(jobs).items()):
        source = by_arn.get(str(job.parameters.get("source_recovery_point_arn")))
        created = source.completion_date if source else None
        vaults.append(
            {
                "destination": f"{account_id}:{vault}",
                "newest_completed_point": created,
                "copied_at": job.completion_date,
                "rpo_seconds": round(now.timestamp() - (_seconds(created) or 0.0), 3) if created else None,
            }
        )
    measured = last_rto(account, jobs).get(resource_id)
    return {"rpo": vaults, "last_rto": measured.as_dict() if measured else None}
