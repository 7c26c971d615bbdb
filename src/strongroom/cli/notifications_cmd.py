"""Vault notifications: ``strongroom vaults put-notifications|get-notifications|delete-notifications`` and
``strongroom notifications list|deliver`` (docs/notifications.md).

Sink URLs hold secrets, so they are read from STRONGROOM_NOTIFICATION_URLS or stdin, never from arguments,
and shown only masked.
"""

from __future__ import annotations

import getpass
import os
import sys

import typer

from strongroom.cli import context, output
from strongroom.cli.account_cmd import vaults_app
from strongroom.errors import UsageError
from strongroom.services import notifications
from strongroom.services.notifications import Sink

ENV_NOTIFICATION_URLS = "STRONGROOM_NOTIFICATION_URLS"
SINK_OPTIONS = ("events", "exclude_states")

notifications_app = typer.Typer(help="The notification outbox: events queued for vault sinks.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    vaults_app.command("put-notifications")(put_notifications)
    vaults_app.command("get-notifications")(get_notifications)
    vaults_app.command("delete-notifications")(delete_notifications)
    app.add_typer(notifications_app, name="notifications")


def put_notifications(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Vault name or ARN."),
    events: list[str] = typer.Option(..., "--event", help="AWS Backup vault event to send (repeatable)."),
    exclude_states: list[str] = typer.Option(
        [], "--exclude-state", help="Do not send events carrying this state, e.g. COMPLETED (repeatable)."
    ),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Set a vault's notifications. Sink URLs: one per line from STRONGROOM_NOTIFICATION_URLS or stdin."""
    sinks = [_sink(line) for line in _url_lines()]
    wanted = notifications.settings([e.upper() for e in events], [s.upper() for s in exclude_states], sinks)
    with context.account(ctx) as account:
        shown = notifications.put_notifications(account, name, wanted)
    if json_output:
        output.emit_json(shown)
        return
    count = len(shown["sinks"])
    output.console.print(f"Notifications of vault {shown['backup_vault_name']} set: {count} sink{'s' * (count != 1)}"
                         f", events {', '.join(shown['events'])}", highlight=False)


def get_notifications(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Vault name or ARN."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Show a vault's notification settings (sink URLs masked: scheme and host)."""
    with context.account(ctx) as account:
        shown = notifications.get_notifications(account, name)
    if json_output:
        output.emit_json(shown)
        return
    output.details({"vault": shown["backup_vault_name"], "events": ", ".join(shown["events"]) or "(none)",
                    "exclude_states": ", ".join(shown["exclude_states"]) or "(none)"})
    output.table("Sinks", ["sink", "events", "exclude_states"], [
        (s["sink"], ", ".join(s["events"]) if s["events"] is not None else "(vault's)",
         ", ".join(s["exclude_states"]) if s["exclude_states"] is not None else "(vault's)")
        for s in shown["sinks"]])


def delete_notifications(ctx: typer.Context, name: str = typer.Argument(..., help="Vault name or ARN.")) -> None:
    """Remove a vault's notification settings (queued events are still delivered)."""
    with context.account(ctx) as account:
        notifications.delete_notifications(account, name)
    output.console.print(f"Notifications of vault {name} removed", highlight=False)


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
    output.table("Notifications", ["id", "vault", "event", "state", "sink", "delivery", "attempts", "last error"], [
        (r["id"], r["backup_vault_name"], r["event"], r["state"], r["sink"], r["delivery_status"], r["attempts"],
         r["last_error"]) for r in rows])


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
    output.console.print(f"{counts['delivered']} delivered, {counts['retrying']} to retry later, "
                         f"{counts['failed']} failed for good", highlight=False)


def _url_lines() -> list[str]:
    text = os.environ.get(ENV_NOTIFICATION_URLS)
    if text is None:
        text = _prompted() if sys.stdin.isatty() else sys.stdin.read()
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        raise UsageError(f"no sink URLs: give them one per line in {ENV_NOTIFICATION_URLS} or on stdin",
                         hint="URLs hold secrets, so they are never command-line arguments")
    return lines


def _prompted() -> str:
    lines = []
    while line := getpass.getpass("Sink URL (empty line to finish): ").strip():
        lines.append(line)
    return "\n".join(lines)


def _sink(line: str) -> Sink:
    """``URL [events=E,E] [exclude_states=S,S]``: a sink, optionally with its own filter."""
    url, *options = line.split()
    fields: dict[str, tuple[str, ...]] = {}
    for option in options:
        key, _, value = option.partition("=")
        if key not in SINK_OPTIONS:
            raise UsageError(f"unknown sink option after the sink {notifications.mask_url(url)} (not shown: it may "
                             "be part of a secret)", hint="A line is: URL [events=E,E] [exclude_states=S,S]")
        fields[key] = tuple(v.strip().upper() for v in value.split(",") if v.strip())
    return Sink(url, fields.get("events"), fields.get("exclude_states"))
