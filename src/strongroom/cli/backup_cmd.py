"""``strongroom backup start``."""

from __future__ import annotations

import typer

from strongroom.cli import context
from strongroom.cli.job_output import report, run_or_spawn
from strongroom.model import DEFAULT_VAULT, parse_tag_options
from strongroom.services.backup import create_backup_job

backup_app = typer.Typer(help="Backup jobs.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(backup_app, name="backup")


@backup_app.command("start")
def backup_start(
    ctx: typer.Context,
    resource: str = typer.Option(..., "--resource", help="Id of a registered resource."),
    vault: str = typer.Option(DEFAULT_VAULT, "--vault", help="Backup vault name or ARN."),
    delete_after: int | None = typer.Option(
        None, "--delete-after", help="Days to keep the recovery point, counted from its creation (default: forever)."
    ),
    tag: list[str] = typer.Option(
        [], "--tag", metavar="KEY=VALUE", help="Tag the recovery point (repeatable), as a plan's recovery_point_tags."
    ),
    wait: bool = typer.Option(False, "--wait", help="Run in the foreground and wait for the result."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Start a backup job of a resource into a vault."""
    tags = parse_tag_options(tag)
    with context.account(ctx) as account:
        job, lock = create_backup_job(account, resource, vault, delete_after, tags)
        finished = run_or_spawn(account, job, lock, wait, json_output, "Backing up")
    report(finished, json_output)
