"""``strongroom secrets``: the account's encrypted secret store (docs/secrets.md).

A value comes from STRONGROOM_SECRET_VALUE or stdin (a terminal asks without echo), never an argument, and
is printed only by ``get`` (asked for) or written by ``export``. Values go to stdout as plain text, never
through rich, so no markup is interpreted in them.
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

import typer

from strongroom.cli import context, output
from strongroom.errors import UsageError
from strongroom.services import secrets

ENV_SECRET_VALUE = "STRONGROOM_SECRET_VALUE"

secrets_app = typer.Typer(
    help="The account's encrypted secret store (e.g. database credentials).", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(secrets_app, name="secrets")


@secrets_app.command("put", context_settings={"allow_extra_args": True})
def put(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The secret's name, e.g. mavis/prod/db."),
    rds: bool = typer.Option(
        False, "--rds", help="Require the RDS shape {engine, host, port, username, password, dbname}."
    ),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Store a new version. The value is read from STRONGROOM_SECRET_VALUE or stdin, never an argument."""
    if ctx.args:  # not echoed: an extra argument is most likely the value itself
        raise UsageError(f"'secrets put' takes the value from {ENV_SECRET_VALUE} or stdin, never an argument")
    secrets.check_name(name)
    value = secrets.parse_value(_read_value(), rds=rds)
    with context.account(ctx) as account:
        shown = secrets.put_secret(account, name, value)
    if json_output:
        output.emit_json(shown)
        return
    output.console.print(f"Stored secret '{name}' version {shown['version']}", markup=False, highlight=False)


@secrets_app.command("get")
def get(
    ctx: typer.Context,
    name: str = typer.Argument(...),
    json_output: bool = typer.Option(False, "--json", help="The value as JSON (what an export file holds)."),
    field: str | None = typer.Option(None, "--field", help="Print this one field of an object secret, raw."),
    previous: bool = typer.Option(False, "--previous", help="The version before the current one."),
) -> None:
    """Print the secret's value (this is asking for it: mind where stdout goes)."""
    with context.account(ctx) as account:
        value = secrets.get_secret(account, name, previous=previous)
    if field is not None:
        _write(secrets.field_of(value, field) + "\n")
    elif json_output or isinstance(value, dict):
        _write(secrets.as_json(value))
    else:
        _write(value + "\n")


@secrets_app.command("list")
def list_secrets(ctx: typer.Context, json_output: bool = typer.Option(False, "--json")) -> None:
    """Secret names, versions and dates (never values)."""
    with context.account(ctx) as account:
        rows = secrets.list_secrets(account)
    if json_output:
        output.emit_json({"secrets": rows})
        return
    output.table(
        "Secrets",
        ["name", "version", "created", "updated"],
        [[r["name"], r["version"], r["created_at"], r["updated_at"]] for r in rows],
    )


@secrets_app.command("delete")
def delete(ctx: typer.Context, name: str = typer.Argument(...)) -> None:
    """Delete the secret and its previous version."""
    with context.account(ctx) as account:
        secrets.delete_secret(account, name)
    output.console.print(f"Deleted secret '{name}'", markup=False, highlight=False)


@secrets_app.command("export")
def export(
    ctx: typer.Context,
    name: str = typer.Argument(...),
    file: Path = typer.Option(..., "--file", help="The new file (mode 0600) to write the value's JSON to."),
    force: bool = typer.Option(False, "--force", help="Replace the file if it exists."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Write the secret's value as JSON to a new file readable by its owner only, atomically."""
    with context.account(ctx) as account:
        shown = secrets.export_secret(account, name, file, force=force)
    if json_output:
        output.emit_json(shown)
        return
    output.console.print(
        f"Wrote secret '{name}' version {shown['version']} to {shown['file']}", markup=False, highlight=False
    )


def _read_value() -> str:
    value = os.environ.get(ENV_SECRET_VALUE)
    if value:
        return value
    if sys.stdin.isatty():
        return getpass.getpass("Secret value: ")
    return sys.stdin.read().rstrip("\r\n")


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
