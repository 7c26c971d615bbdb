"""``strongroom jobs list|describe``."""

from __future__ import annotations

import typer

from strongroom.cli import context, output
from strongroom.model import JobState, JobType
from strongroom.services import jobs as job_records

jobs_app = typer.Typer(help="Backup and restore jobs.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(jobs_app, name="jobs")


@jobs_app.command("list")
def list_(
    ctx: typer.Context,
    state: JobState | None = typer.Option(None, "--state", case_sensitive=False),
    job_type: JobType | None = typer.Option(None, "--type", case_sensitive=False),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """List jobs, oldest first."""
    with context.account(ctx, display=True) as account:
        jobs = [j.as_dict() for j in job_records.list_jobs(account, state=state, job_type=job_type)]
    if json_output:
        output.emit_json({"jobs": jobs})
        return
    output.table(
        "Jobs",
        ["Job", "Type", "State", "Resource", "Created", "Seconds", "Message"],
        [
            (
                j["job_id"],
                j["job_type"],
                j["state"],
                j["resource_id"],
                j["creation_date"][:19],
                j["duration_seconds"],
                j["status_message"],
            )
            for j in jobs
        ],
    )


@jobs_app.command("describe")
def describe(ctx: typer.Context, job_id: str, json_output: bool = typer.Option(False, "--json")) -> None:
    """Show one job."""
    with context.account(ctx, display=True) as account:
        job = job_records.get_job(account, job_id).as_dict()
    output.emit_json(job) if json_output else output.details(job)
