"""``strongroom copy start``: a recovery point into another account's vault, or back."""

from __future__ import annotations

import typer

from strongroom.cli import context, output
from strongroom.cli.job_output import report, run_or_spawn
from strongroom.services.copy import create_copy_job

copy_app = typer.Typer(help="Copy jobs between accounts.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(copy_app, name="copy")


@copy_app.command("start")
def copy_start(
    ctx: typer.Context,
    recovery_points: list[str] = typer.Option(
        ...,
        "--recovery-point",
        help="ARN of the recovery point to copy; repeat it to copy several, one job each, in this order.",
    ),
    destination_vault: str | None = typer.Option(
        None, "--destination-vault", help="ARN of the vault to copy into (default: the configured destination)."
    ),
    delete_after: int | None = typer.Option(
        None, "--delete-after", help="Days the copy is kept, from the source's creation date (default: as the source)."
    ),
    wait: bool = typer.Option(False, "--wait", help="Run in the foreground and wait for the result."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Copy recovery points into a vault of another account (or back from one), incrementally.

    Several points are copied one after the other in this process (a job each; with --wait the first that
    fails stops the rest, the ones before it stay copied)."""
    finished = []
    with context.account(ctx) as account:
        for recovery_point in recovery_points:
            job, lock = create_copy_job(account, recovery_point, destination_vault, delete_after)
            finished.append(run_or_spawn(account, job, lock, wait, json_output, "Copying"))
            if not json_output and len(recovery_points) > 1:
                report(finished[-1], json_output)
    if len(finished) == 1:
        report(finished[0], json_output)
    elif json_output:
        output.emit_json({"copy_jobs": [job.as_dict() for job in finished]})
