"""``strongroom accounts``: other accounts this one talks to (e.g. the destination)."""

from __future__ import annotations

import getpass
import os
import sys

import typer

from strongroom.cli import context, output
from strongroom.errors import UsageError
from strongroom.services.remote import add_remote_account, list_remote_accounts
from strongroom.services.source_keys import pinned_source_keys, unpin_source_key

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


@accounts_app.command("source-keys")
def source_keys(ctx: typer.Context, json_output: bool = typer.Option(False, "--json")) -> None:
    """Chunk-id keys of source vaults that copy into this account, pinned on their first copy (fingerprints)."""
    with context.account(ctx, display=True) as account:
        rows = [pin.as_dict() for pin in pinned_source_keys(account)]
    if json_output:
        output.emit_json({"source_keys": rows})
        return
    output.table(
        "Pinned source keys",
        ["source account", "source vault id", "fingerprint", "pinned at"],
        [[r["source_account_id"], r["source_vault_id"], r["fingerprint"], r["pinned_at"]] for r in rows],
    )


@accounts_app.command("unpin-source-key")
def unpin(
    ctx: typer.Context,
    source_account_id: str = typer.Argument(..., help="The source's account id (see 'accounts source-keys')."),
    source_vault_id: str = typer.Argument(..., help="The source vault's id (see 'accounts source-keys')."),
    yes: bool = typer.Option(False, "--yes", help="Confirm: the source vault's next copy pins whatever key it sends."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Clear a wrongly pinned source key and the chunk mappings checked under it. Investigate first."""
    if not yes:
        raise UsageError(
            "unpinning lets the source vault's next copy pin whatever key it announces",
            hint="make sure the source is trustworthy again, then add --yes",
        )
    with context.account(ctx) as account:
        result = unpin_source_key(account, source_account_id, source_vault_id)
    if json_output:
        output.emit_json(result)
        return
    output.console.print(
        f"Unpinned source vault {source_vault_id} of account {source_account_id};"
        f" {result['mappings_dropped']} chunk mappings dropped. Its next copy pins its key again."
    )


def _read_secret() -> str:
    value = os.environ.get(ENV_REMOTE_SECRET)
    if value:
        return value.strip()
    if sys.stdin.isatty():
        return getpass.getpass("Secret access key: ").strip()
    return sys.stdin.readline().strip()
