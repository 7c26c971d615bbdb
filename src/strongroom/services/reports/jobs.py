"""Report jobs: a plan's report made from the catalog, written to its store, recorded (AWS's ``ReportJob``).

Each file is written whole or not at all (the store's put: a temporary object, then a rename or a single S3
PUT), under ``Backup/ACCOUNT/REGION/YYYY/MM/DD/PLAN/TEMPLATE_<time>_<job>.csv|json`` of the plan's store, as
AWS lays its reports out under the bucket's prefix. The job is COMPLETED once every format is written, FAILED
with the reason otherwise. While it runs, its process holds the job's lock: a job found RUNNING with a free
lock (its process was killed) is marked FAILED by the next command or daemon tick that looks. The daemon
makes each plan's report on its ``schedule`` (default daily, 01:00 UTC) for the 24 hours before the schedule's
occurrence; ``reports start-job`` makes one now, for the 24 hours before.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from strongroom.catalog.compliance_records import ReportJob, ReportJobState
from strongroom.errors import NotFoundError, StorageError, StrongroomError
from strongroom.faults import fault_point
from strongroom.model import iso, new_id
from strongroom.plans.schedule import Schedule, parse_schedule
from strongroom.services.account import SETTING_REPORT_PLANS, Account
from strongroom.services.compliance.snapshot import applied_frameworks
from strongroom.services.compliance.state import evaluate_all
from strongroom.services.joblock import JobLock, is_held
from strongroom.services.jobs import lock_path
from strongroom.services.reports.render import EXTENSIONS, render
from strongroom.services.reports.templates import COLUMNS, JOB_TEMPLATES, ReportInput, rows
from strongroom.store.base import open_store

PERIOD = timedelta(hours=24)
SETTING_CURSORS = "report_plan_cursors"  # plan -> the last scheduled instant a report was made for
SCHEDULED, ON_DEMAND = "SCHEDULED", "ON_DEMAND"
COMPLIANCE_TEMPLATES = ("CONTROL_COMPLIANCE_REPORT", "RESOURCE_COMPLIANCE_REPORT")


def applied_report_plans(account: Account) -> dict[str, dict[str, Any]]:
    return account.catalog.get_setting(SETTING_REPORT_PLANS, {}) or {}


def report_plan(account: Account, name: str) -> dict[str, Any]:
    plans = applied_report_plans(account)
    if name not in plans:
        raise NotFoundError(
            f"no report plan named '{name}' is applied", hint="List them with 'strongroom report-plans list'"
        )
    return plans[name]


def store_url(plan: dict[str, Any]) -> str:
    channel = plan["report_delivery_channel"]
    if channel.get("store"):
        return str(channel["store"])
    prefix = str(channel.get("s3_key_prefix") or "").strip("/")
    return f"s3://{channel['s3_bucket_name']}/{prefix}".rstrip("/")


def start_report_job(
    account: Account,
    name: str,
    now: datetime,
    *,
    trigger: str = ON_DEMAND,
    evaluate: bool = True,
    period_end: datetime | None = None,
) -> ReportJob:
    """Make the plan's report for the 24 hours before ``period_end`` (default ``now``); the recorded job
    (COMPLETED or FAILED). A scheduled report ends its period at its schedule's occurrence, not at the tick that
    made it, so consecutive daily reports join without gap or overlap however late the daemon's ticks come.

    A compliance report first evaluates the frameworks at ``now`` (``evaluate``; the daemon has just done so)."""
    end = period_end or now
    plan = report_plan(account, name)
    template = plan["report_setting"]["report_template"]
    if evaluate and template in COMPLIANCE_TEMPLATES:
        evaluate_all(account, now)
    job_id = new_id()
    lock = JobLock.acquire(lock_path(account, job_id))  # before the row: a RUNNING row always has a live holder
    try:
        return _run(account, name, plan, job_id, (now, end), trigger)
    finally:
        lock.release()
        lock_path(account, job_id).unlink(missing_ok=True)


def fail_abandoned_report_jobs(account: Account, now: datetime) -> list[str]:
    """Mark FAILED the report jobs left RUNNING by a process that died making them; their ids."""
    abandoned = [
        job.id
        for job in account.catalog.list_report_jobs()
        if job.state == ReportJobState.RUNNING and not is_held(lock_path(account, job.id))
    ]
    for job_id in abandoned:
        account.catalog.update_report_job(
            job_id,
            state=ReportJobState.FAILED.value,
            completion_time=iso(now),
            status_message="the process making the report ended before it finished",
        )
    return abandoned


def _run(
    account: Account, name: str, plan: dict[str, Any], job_id: str, times: tuple[datetime, datetime], trigger: str
) -> ReportJob:
    now, end = times
    template = plan["report_setting"]["report_template"]
    job = ReportJob(
        id=job_id,
        report_plan_name=name,
        report_template=template,
        state=ReportJobState.RUNNING,
        creation_time=iso(now) or "",
        period_start=iso(end - PERIOD) or "",
        period_end=iso(end) or "",
        trigger=trigger,
        destination=store_url(plan),
    )
    account.catalog.add_report_job(job)
    try:
        keys = _write(account, plan, job, now, end)
    except StrongroomError as exc:
        account.catalog.update_report_job(
            job.id, state=ReportJobState.FAILED.value, completion_time=iso(now), status_message=exc.one_line()
        )
    except OSError as exc:
        message = f"the report could not be written: {exc.strerror or type(exc).__name__}"
        account.catalog.update_report_job(
            job.id, state=ReportJobState.FAILED.value, completion_time=iso(now), status_message=message
        )
    else:
        account.catalog.update_report_job(
            job.id, state=ReportJobState.COMPLETED.value, completion_time=iso(now), keys=keys
        )
    return account.catalog.get_report_job(job.id)


def _write(account: Account, plan: dict[str, Any], job: ReportJob, now: datetime, end: datetime) -> list[str]:
    template = job.report_template
    found = rows(template, _input(account, plan, end))
    _refuse_vault_stores(account, job.destination)
    store = open_store(job.destination)
    base = (
        f"Backup/{account.account_id}/{account.region}/{now:%Y/%m/%d}/{job.report_plan_name}/"
        f"{template}_{now:%Y%m%dT%H%M%SZ}_{job.id[:8]}"
    )
    keys = []
    for fmt in plan["report_delivery_channel"]["formats"]:
        key = f"{base}.{EXTENSIONS[fmt]}"
        fault_point("report.before_put")
        store.put(key, render(fmt, COLUMNS[template], found))
        keys.append(key)
    return keys


def _refuse_vault_stores(account: Account, url: str) -> None:
    """Reports never go into a vault's store (nor above or below it): only the vault writes there."""
    wanted = _bare(url)
    for vault in account.catalog.list_vaults():
        held = _bare(vault.store_url)
        if wanted == held or wanted.startswith(held + "/") or held.startswith(wanted + "/"):
            raise StorageError(
                f"the report store overlaps the store of vault {vault.name}; reports never go into a vault",
                hint="Give the report plan a store of its own (report_delivery_channel.store)",
            )


def _bare(url: str) -> str:
    return url.split("?", 1)[0].rstrip("/")


def _input(account: Account, plan: dict[str, Any], end: datetime) -> ReportInput:
    catalog = account.catalog
    template = plan["report_setting"]["report_template"]
    frameworks = applied_frameworks(account)
    named = [arn.rsplit("/", 1)[-1].rsplit(":", 1)[-1] for arn in plan["report_setting"].get("framework_arns") or []]
    if named:
        frameworks = {name: frameworks[name] for name in named if name in frameworks}
    return ReportInput(
        account_id=account.account_id,
        region=account.region,
        period_start=end - PERIOD,
        period_end=end,
        jobs=catalog.list_jobs(job_type=JOB_TEMPLATES[template]) if template in JOB_TEMPLATES else [],
        resources={r.id: r for r in catalog.list_resources()},
        vault_arns={v.name: v.arn for v in catalog.list_vaults()},
        frameworks=frameworks,
        evaluations=[e for e in catalog.list_evaluations() if e.framework in frameworks],
    )


def run_due_reports(account: Account, now: datetime) -> list[ReportJob]:
    """The daemon's part: each plan whose schedule fired since its cursor makes one report (a plan seen for the
    first time starts from now: no back-fill, as backup rules)."""
    fail_abandoned_report_jobs(account, now)
    stored: dict[str, str] = dict(account.catalog.get_setting(SETTING_CURSORS, {}) or {})
    cursors = dict(stored)
    plans = applied_report_plans(account)
    made = []
    for name, plan in sorted(plans.items()):
        since = cursors.get(name)
        if since is None:
            cursors[name] = iso(now) or ""
            continue
        schedule = parse_schedule(plan.get("schedule") or "cron(0 1 * * ? *)")
        due = _newest_occurrence(schedule, datetime.fromisoformat(since), now)
        if due is not None:
            cursors[name] = iso(now) or ""  # moved before the report is made: a crash never makes it twice
            stored = {k: v for k, v in cursors.items() if k in plans}
            account.catalog.set_setting(SETTING_CURSORS, stored)
            made.append(start_report_job(account, name, now, trigger=SCHEDULED, evaluate=False, period_end=due))
    kept = {k: v for k, v in cursors.items() if k in plans}
    if kept != stored:
        account.catalog.set_setting(SETTING_CURSORS, kept or None)
    return made


def _newest_occurrence(schedule: Schedule, since: datetime, now: datetime) -> datetime | None:
    """The schedule's last occurrence after ``since`` and not after ``now`` (one report for a daemon that was down)."""
    newest = None
    for moment in schedule.fire_times(since):
        if moment > now:
            break
        newest = moment
    return newest
