"""``strongroom notifications list|deliver``: the outbox of vault events (docs/notifications.md).

A vault's notification settings are ``strongroom vaults put-notifications|get-notifications|delete-notifications``
(cli/vaults_cmd.py).
"""

from __future__ import annotations

import typer

from strongroom.cli import context, output
from strongroom.services import notifications

notifications_app = typer.Typer(help="The notification outbox: events queued for vault sinks.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(notifications_app, name="notifications")


@notifications_app.command("list")
def list_(
    ctx: typer.Context,
    pending: bool = typer.Option(False, "--pending", help="Only events still to be delivered."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """The outbox, oldest first: each event per sink, DELIVERED, PENDING (retried) or FAILED (gave up)."""
    with context.account(ctx) as account:
        rows = notifications.list_outbox(account, pending_only=pending)
    if json_output:
        output.emit_json({"notifications": rows})
        return
    output.table(
        "Notifications",
        ["id", "vault", "event", "state", "sink", "delivery", "attempts", "last error"],
        [
            (
                r["id"],
                r["backup_vault_name"],
                r["event"],
                r["state"],
                r["sink"],
                r["delivery_status"],
                r["attempts"],
                r["last_error"],
            )
            for r in rows
        ],
    )


@notifications_app.command("deliver")
def deliver(
    ctx: typer.Context,
    timeout: float = typer.Option(10, "--timeout", help="Seconds to wait for each sink."),
    retry_now: bool = typer.Option(False, "--retry-now", help="Also the events still waiting out their backoff."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Send the events that are due now (the daemon does this on every tick)."""
    with context.account(ctx) as account:
        counts = notifications.deliver_pending(account, timeout=timeout, retry_now=retry_now)
    if json_output:
        output.emit_json(counts)
        return
    output.console.print(
        f"{counts['delivered']} delivered, {counts['retrying']} to retry later, {counts['failed']} failed for good",
        highlight=False,
    )
