"""``strongroom copy start``: a recovery point into another account's vault, or back."""

from __future__ import annotations

import typer

from strongroom.cli import context
from strongroom.cli.job_output import report, run_or_spawn
from strongroom.services.copy import create_copy_job

copy_app = typer.Typer(help="Copy jobs between accounts.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(copy_app, name="copy")


@copy_app.command("start")
def copy_start(
    ctx: typer.Context,
    recovery_point: str = typer.Option(..., "--recovery-point", help="ARN of the recovery point to copy."),
    destination_vault: str | None = typer.Option(
        None, "--destination-vault", help="ARN of the vault to copy into (default: the configured destination)."
    ),
    delete_after: int | None = typer.Option(
        None, "--delete-after", help="Days the copy is kept, from the source's creation date (default: as the source)."
    ),
    wait: bool = typer.Option(False, "--wait", help="Run in the foreground and wait for the result."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Copy a recovery point into a vault of another account (or back from one), incrementally."""
    with context.account(ctx) as account:
        job, lock = create_copy_job(account, recovery_point, destination_vault, delete_after)
        finished = run_or_spawn(account, job, lock, wait, json_output, "Copying")
    report(finished, json_output)
