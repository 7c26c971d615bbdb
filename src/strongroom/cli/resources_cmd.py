"""``strongroom resources add|list|describe|remove``."""

from __future__ import annotations

from pathlib import Path

import typer

from strongroom.cli import context, output
from strongroom.errors import ConfigError
from strongroom.services.resources import add_resource, parse_tags

resources_app = typer.Typer(help="Resources this account protects.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(resources_app, name="resources")


SETTING_WORDS: dict[str, object] = {"true": True, "false": False}  # as YAML would read them


@resources_app.command("add")
def add(
    ctx: typer.Context,
    resource_id: str = typer.Argument(..., metavar="ID"),
    type_name: str = typer.Option(..., "--type", help="postgres, postgres-cluster, directory or sqlite."),
    dsn: str | None = typer.Option(None, help="PostgreSQL URI without a password (postgres types)."),
    path: Path | None = typer.Option(None, help="Path (directory, sqlite)."),
    tag: list[str] = typer.Option([], "--tag", help="KEY=VALUE, repeatable."),
    setting: list[str] = typer.Option(
        [], "--setting", help="KEY=VALUE, repeatable: the type's other settings (e.g. method=direct)."
    ),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Register a resource. Passwords come from PGPASSWORD, a .pgpass file or secrets — never from here."""
    if (dsn is None) == (path is None):
        raise ConfigError("give exactly one of --dsn and --path")
    location = {"dsn": dsn} if dsn is not None else {"path": str(path.expanduser().absolute())}  # type: ignore[union-attr]
    given = {key: SETTING_WORDS.get(value, value) for key, value in parse_tags(setting, what="setting").items()}
    settings = {**given, **location}
    with context.account(ctx) as account:
        resource = add_resource(account, resource_id, type_name, settings, parse_tags(tag))
    if json_output:
        output.emit_json(resource.as_dict())
    else:
        output.console.print(f"Added {resource.type} resource '{resource.id}'")


@resources_app.command("list")
def list_(ctx: typer.Context, json_output: bool = typer.Option(False, "--json")) -> None:
    """List registered resources."""
    with context.account(ctx, display=True) as account:
        resources = [r.as_dict() for r in account.catalog.list_resources()]
    if json_output:
        output.emit_json({"resources": resources})
        return
    output.table(
        "Resources",
        ["ID", "Type", "Settings", "Tags"],
        [(r["resource_id"], r["resource_type"], _brief(r["settings"]), _brief(r["tags"])) for r in resources],
    )


@resources_app.command("describe")
def describe(
    ctx: typer.Context,
    resource_id: str = typer.Argument(..., metavar="ID"),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Show one resource, with its current RPO in each vault and destination and its last measured RTO."""
    from strongroom.clock import now
    from strongroom.services.metrics import resource_recovery  # the scheduler's modules: only when needed

    with context.account(ctx, display=True) as account:
        resource = account.catalog.get_resource(resource_id).as_dict()
        resource.update(resource_recovery(account, resource_id, now()))
    output.emit_json(resource) if json_output else output.details(resource)


@resources_app.command("remove")
def remove(
    ctx: typer.Context,
    resource_id: str = typer.Argument(..., metavar="ID"),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Stop protecting a resource. Its recovery points stay in their vaults."""
    with context.account(ctx) as account:
        removed = account.catalog.get_resource(resource_id).as_dict()
        account.catalog.remove_resource(resource_id)
    if json_output:
        output.emit_json(removed)
    else:
        output.console.print(f"Removed resource '{resource_id}'")


def _brief(mapping: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in mapping.items())
