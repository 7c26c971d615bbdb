"""``strongroom credentials``: access keys this account issues to principals (other accounts, people)."""

from __future__ import annotations

import typer

from strongroom.cli import context, output
from strongroom.services.credentials import create_credential, revoke_credential

credentials_app = typer.Typer(help="Access keys other accounts use to call this account's API.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(credentials_app, name="credentials")


@credentials_app.command("create")
def create(
    ctx: typer.Context,
    principal: str = typer.Option(..., "--principal", help="Name of the principal the key acts as."),
    account_id: str | None = typer.Option(
        None, "--account-id", help="The principal belongs to this other account (e.g. the source account)."
    ),
    expires_in_days: int | None = typer.Option(
        None, "--expires-in-days", min=1, max=36500, help="The key stops working after N days."
    ),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Issue an access key; its secret is shown once, here, and never stored."""
    with context.account(ctx) as account:
        issued = create_credential(account, principal, principal_account_id=account_id, expires_in_days=expires_in_days)
    data = {
        "access_key_id": issued.key_id,
        "secret_access_key": issued.secret,
        "principal_arn": issued.principal_arn,
        "expires_at": issued.expires_at,
    }
    if json_output:
        output.emit_json(data)
        return
    output.details(data)
    output.console.print("Keep the secret now: it cannot be shown again.")


@credentials_app.command("list")
def list_credentials(ctx: typer.Context, json_output: bool = typer.Option(False, "--json")) -> None:
    """Access keys this account issued (never their secrets)."""
    with context.account(ctx, display=True) as account:
        rows = [credential.as_dict() for credential in account.catalog.list_credentials()]
    if json_output:
        output.emit_json({"credentials": rows})
        return
    output.table(
        "Credentials",
        ["access key id", "principal", "created", "expires", "revoked"],
        [
            [r["key_id"], r["principal_arn"], r["created_at"], r["expires_at"] or "-", r["revoked_at"] or "-"]
            for r in rows
        ],
    )


@credentials_app.command("revoke")
def revoke(ctx: typer.Context, key_id: str = typer.Argument(..., help="The access key id.")) -> None:
    """Stop an access key from working, at once."""
    with context.account(ctx) as account:
        revoke_credential(account, key_id)
    output.console.print(f"Revoked {key_id}")
