"""``strongroom reports start-job|list-jobs|describe-job``: report jobs made on demand and by the daemon."""

from __future__ import annotations

import typer

from strongroom import model
from strongroom.catalog.compliance_records import ReportJobState
from strongroom.cli import context, output
from strongroom.errors import StrongroomError
from strongroom.services.reports.jobs import fail_abandoned_report_jobs, start_report_job

reports_app = typer.Typer(
    help="Report jobs: make a report plan's report now, list what was made.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(reports_app, name="reports")


@reports_app.command("start-job")
def start_job(ctx: typer.Context, plan: str, json_output: bool = typer.Option(False, "--json")) -> None:
    """Make the plan's report now (the 24 hours before now); exit 1 if it could not be written."""
    with context.account(ctx) as account:
        job = start_report_job(account, plan, model.now())
    if json_output:
        output.emit_json(job.as_dict())
    else:
        output.details(job.as_dict())
    if job.state == ReportJobState.FAILED:
        raise StrongroomError(f"report job {job.id} FAILED: {job.status_message}", hint="")


@reports_app.command("list-jobs")
def list_jobs(
    ctx: typer.Context,
    plan: str | None = typer.Option(None, "--plan", help="Only this report plan's jobs."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """List report jobs, oldest first."""
    with context.account(ctx) as account:
        fail_abandoned_report_jobs(account, model.now())
        jobs = [job.as_dict() for job in account.catalog.list_report_jobs(plan)]
    if json_output:
        output.emit_json({"report_jobs": jobs})
        return
    output.table(
        "Report jobs",
        ["Job", "Plan", "Template", "Status", "Created", "Files"],
        [
            (
                j["report_job_id"],
                j["report_plan_name"],
                j["report_template"],
                j["status"],
                j["creation_time"],
                ", ".join(j["report_destination"]["keys"]) or (j["status_message"] or ""),
            )
            for j in jobs
        ],
    )


@reports_app.command("describe-job")
def describe_job(ctx: typer.Context, job_id: str, json_output: bool = typer.Option(False, "--json")) -> None:
    """Show one report job: its period, status and the files it wrote."""
    with context.account(ctx) as account:
        fail_abandoned_report_jobs(account, model.now())
        job = account.catalog.get_report_job(job_id).as_dict()
    if json_output:
        output.emit_json(job)
    else:
        output.details(job)
