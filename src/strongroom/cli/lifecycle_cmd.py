"""``strongroom lifecycle run``: the expiry sweep, then garbage collection."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import typer

from strongroom.cli import context, output
from strongroom.errors import IntegrityError, StorageError, UsageError

lifecycle_app = typer.Typer(help="Retention of recovery points and garbage collection.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(lifecycle_app, name="lifecycle")


@lifecycle_app.command("run")
def run(
    ctx: typer.Context,
    vault: str | None = typer.Option(None, "--vault", help="Vault name or ARN; default: every vault."),
    now: str | None = typer.Option(None, "--now", help="Act as if it were this ISO 8601 time (UTC if no zone)."),
    no_gc: bool = typer.Option(False, "--no-gc", help="Only the expiry sweep; leave unreferenced chunks."),
    gc_wait: float = typer.Option(60.0, "--gc-wait", min=0, help="Seconds to wait for running writers."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Remove recovery points whose retention has ended, then delete chunks nothing references."""
    from strongroom.services.lifecycle import GC_REFUSED, run_lifecycle_and_collect

    moment = _parse_now(now)
    with context.account(ctx) as account:
        vault_name = account.catalog.get_vault(vault).name if vault else None
        report = run_lifecycle_and_collect(
            account, now=moment, vault_name=vault_name, collect=not no_gc, wait_seconds=gc_wait
        )
    output.emit_json(report) if json_output else _print(report)
    if report["failed"]:
        raise StorageError(
            f"{len(report['failed'])} expired recovery points could not be removed",
            hint="They are EXPIRED; the next 'strongroom lifecycle run' tries again",
        )
    refused = [g for g in report["garbage_collection"] if g["status"] == GC_REFUSED]
    if refused:
        raise IntegrityError(refused[0]["message"])


def _parse_now(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        hint = "Write e.g. 2027-01-31T07:00:00+00:00"
        raise UsageError(f"--now '{text}' is not an ISO 8601 time", hint=hint) from None


def _print(report: dict[str, Any]) -> None:
    for arn in report["expired_recovery_points"]:
        output.console.print(f"expired {arn}", highlight=False)
    for arn, message in report["failed"].items():
        output.console.print(f"[red]not removed[/] {arn}: {message}", highlight=False)
    output.console.print(f"{report['expired']} recovery points expired (as of {report['now']})")
    for gc in report["garbage_collection"]:
        freed = f"{gc['objects_deleted']} objects, {output.human_bytes(gc['bytes_deleted'])} freed"
        output.console.print(f"{gc['backup_vault_name']}: {gc['status']}: {freed}; {gc['message']}", highlight=False)
