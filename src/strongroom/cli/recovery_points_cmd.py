"""``strongroom recovery-points list|describe|delete|update-lifecycle``.

Deleting and changing retention are authorised as for any caller: the CLI acts as the account's root
principal (services/vault_ops.py)."""

from __future__ import annotations

import typer

from strongroom.cli import context, output
from strongroom.errors import UsageError
from strongroom.model import RecoveryPointStatus, parse_tag_options
from strongroom.policy.principals import root_arn
from strongroom.services import recovery_points, vault_ops

rp_app = typer.Typer(help="Recovery points in the account's vaults.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(rp_app, name="recovery-points")


@rp_app.command("list")
def list_(
    ctx: typer.Context,
    resource: str | None = typer.Option(None, "--resource"),
    vault: str | None = typer.Option(None, "--vault"),
    status: RecoveryPointStatus | None = typer.Option(
        None, "--status", case_sensitive=False, help="Only points in this status (default: COMPLETED)."
    ),
    every_status: bool = typer.Option(
        False, "--all", help="Points in every status: also PARTIAL (failed), CREATING, EXPIRED, DELETED."
    ),
    tag: list[str] = typer.Option(
        [], "--tag", metavar="KEY=VALUE", help="Only points with this tag (repeatable: points with all of them)."
    ),
    wide: bool = typer.Option(False, "--wide", help="Whole ARNs, however wide the table gets."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """List recovery points, oldest first: the restorable (COMPLETED) ones unless --all or --status."""
    if every_status and status is not None:
        raise UsageError("give --status or --all, not both")
    tags = parse_tag_options(tag)
    with context.account(ctx, display=True) as account:
        listed = recovery_points.list_recovery_points(
            account, resource_id=resource, vault=vault, status=status, every_status=every_status, tags=tags
        )
        points = [p.as_dict() for p in listed]
    if json_output:
        output.emit_json({"recovery_points": points})
        return
    output.table(
        "Recovery points",
        ["ARN", "Resource", "Status", "Created", "Size", "Added"],
        [
            (
                p["recovery_point_arn"],
                p["resource_id"],
                p["status"],
                p["creation_date"][:19],
                output.human_bytes(p["source_bytes"]),
                output.human_bytes(p["new_bytes"]),
            )
            for p in points
        ],
        wide=wide,
    )


@rp_app.command("describe")
def describe(
    ctx: typer.Context,
    recovery_point: str = typer.Option(..., "--recovery-point", help="ARN (or id)."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Show one recovery point."""
    with context.account(ctx, display=True) as account:
        point = recovery_points.get_recovery_point(account, recovery_point).as_dict()
    output.emit_json(point) if json_output else output.details(point)


@rp_app.command("delete")
def delete_recovery_point(
    ctx: typer.Context, recovery_point: str = typer.Argument(..., help="Recovery point ARN (or id).")
) -> None:
    """Delete a recovery point (its chunks go at the next garbage collection)."""
    with context.account(ctx) as account:
        vault_ops.delete_recovery_point(account, root_arn(account.account_id), recovery_point)
    output.console.print(f"Deleted recovery point {recovery_point}")


@rp_app.command("update-lifecycle")
def update_lifecycle(
    ctx: typer.Context,
    recovery_point: str = typer.Argument(..., help="Recovery point ARN (or id)."),
    delete_after: int = typer.Option(..., "--delete-after", help="Days to keep it, counted from its creation."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Change how long a recovery point is kept (a vault lock forbids shortening it)."""
    with context.account(ctx) as account:
        root = root_arn(account.account_id)
        point = vault_ops.update_recovery_point_lifecycle(account, root, recovery_point, delete_after)
    if json_output:
        output.emit_json(point.as_dict())
    else:
        output.console.print(f"Recovery point {point.arn} is kept {delete_after} days, until {point.delete_at}")
