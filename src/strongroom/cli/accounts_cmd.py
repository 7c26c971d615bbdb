"""``strongroom accounts``: other accounts this one talks to (e.g. the destination)."""

from __future__ import annotations

import getpass
import os
import sys

import typer

from strongroom.cli import context, output
from strongroom.services.remote import add_remote_account, list_remote_accounts

ENV_REMOTE_SECRET = "STRONGROOM_REMOTE_SECRET"

accounts_app = typer.Typer(help="Other accounts this account copies to or from.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(accounts_app, name="accounts")


@accounts_app.command("add")
def add(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A local name for the account, e.g. destination."),
    endpoint: str = typer.Option(..., "--endpoint", help="URL of its 'strongroom serve'."),
    key_id: str = typer.Option(..., "--key-id", help="Access key id it issued to this account."),
    account_id: str | None = typer.Option(None, "--account-id", help="Its account id, checked against the endpoint."),
    ca_file: str | None = typer.Option(None, "--ca-file", help="PEM CA bundle that signed its TLS certificate."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Register another account. The secret is read from STRONGROOM_REMOTE_SECRET or stdin, never an argument."""
    secret = _read_secret()
    with context.account(ctx) as account:
        shown = add_remote_account(
            account, name, endpoint=endpoint, key_id=key_id, secret=secret, account_id=account_id, ca_file=ca_file
        )
    if json_output:
        output.emit_json(shown)
        return
    output.console.print(f"Registered account {shown['account_id']} as '{name}' at {endpoint}")


@accounts_app.command("list")
def list_accounts(ctx: typer.Context, json_output: bool = typer.Option(False, "--json")) -> None:
    """Registered accounts (never their secrets)."""
    with context.account(ctx, display=True) as account:
        rows = list_remote_accounts(account)
    if json_output:
        output.emit_json({"accounts": rows})
        return
    output.table(
        "Accounts",
        ["name", "account id", "endpoint", "access key id"],
        [[r["name"], r["account_id"], r["endpoint"], r["key_id"]] for r in rows],
    )


def _read_secret() -> str:
    value = os.environ.get(ENV_REMOTE_SECRET)
    if value:
        return value.strip()
    if sys.stdin.isatty():
        return getpass.getpass("Secret access key: ").strip()
    return sys.stdin.readline().strip()
