"""Access policies, locks and deletions: ``strongroom vaults put-access-policy|get-access-policy|
delete-access-policy|put-lock|delete-lock|delete`` and ``strongroom recovery-points delete|update-lifecycle``.

The local CLI acts as the account's root principal, so the vault's access policy and lock judge it as
they would any other caller (services/vault_ops.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from strongroom.cli import context, output
from strongroom.cli.account_cmd import vaults_app
from strongroom.cli.recovery_points_cmd import rp_app
from strongroom.errors import UsageError
from strongroom.policy.document import PolicyDocument, default_destination_policy
from strongroom.policy.principals import root_arn
from strongroom.services import vault_ops
from strongroom.services.account import Account


def register(app: typer.Typer) -> None:
    """Add the commands to the existing ``vaults`` and ``recovery-points`` groups (``app`` holds both)."""
    vaults_app.command("put-access-policy")(put_access_policy)
    vaults_app.command("get-access-policy")(get_access_policy)
    vaults_app.command("delete-access-policy")(delete_access_policy)
    vaults_app.command("put-lock")(put_lock)
    vaults_app.command("delete-lock")(delete_lock)
    vaults_app.command("delete")(delete_vault)
    rp_app.command("delete")(delete_recovery_point)
    rp_app.command("update-lifecycle")(update_lifecycle)


def _root(account: Account) -> str:
    return root_arn(account.account_id)


def put_access_policy(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Vault name or ARN."),
    file: Path | None = typer.Option(None, "--file", help="Policy document (JSON, AWS's shape)."),
    default_destination: bool = typer.Option(
        False, "--default-destination", help="Use the blueprint's destination vault policy instead of a file."
    ),
    source_account_ids: list[str] = typer.Option(
        [], "--source-account-id", help="With --default-destination: account allowed to copy in (repeatable)."
    ),
    source_vault_arns: list[str] = typer.Option(
        [], "--source-vault-arn", help="With --default-destination: vault copies may go back to (repeatable)."
    ),
    admins: list[str] = typer.Option(
        [], "--admin", help="With --default-destination: principal ARN exempt from the Deny (repeatable)."
    ),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Set a vault's access policy (replacing the one it has)."""
    document = _policy_to_put(file, default_destination, source_account_ids, source_vault_arns, admins)
    with context.account(ctx) as account:
        vault_ops.put_access_policy(account, _root(account), name, document)
        shown = _policy_view(account, name)
    if json_output:
        output.emit_json(shown)
    else:
        count = len(shown["policy"]["Statement"])
        output.console.print(f"Access policy of vault {shown['backup_vault_name']} set ({count} statements)")


def _policy_to_put(
    file: Path | None, default_destination: bool, accounts: list[str], vaults: list[str], admins: list[str]
) -> dict[str, Any]:
    if (file is None) == (not default_destination):
        raise UsageError("give either --file POLICY.json or --default-destination")
    if file is not None:
        if accounts or vaults or admins:
            raise UsageError("--source-account-id, --source-vault-arn and --admin go with --default-destination")
        try:
            text = file.read_text()
        except OSError as exc:
            raise UsageError(f"cannot read {file}: {exc.strerror or exc}") from None
        return PolicyDocument.parse(text, where=str(file)).as_dict()
    if not accounts:
        raise UsageError("--default-destination needs --source-account-id (the account that copies in)")
    return default_destination_policy(
        source_account_ids=accounts, source_vault_arns=vaults, admin_principal_arns=admins
    )


def get_access_policy(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Vault name or ARN."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Show a vault's access policy."""
    with context.account(ctx, display=True) as account:
        shown = _policy_view(account, name)
    if json_output:
        output.emit_json(shown)
    elif shown["policy"] is None:
        output.console.print(f"Vault {shown['backup_vault_name']} has no access policy")
    else:
        output.console.print(json.dumps(shown["policy"], indent=2), highlight=False)


def _policy_view(account: Account, name: str) -> dict[str, Any]:
    record = account.catalog.get_vault(name)
    policy = vault_ops.get_access_policy(account, _root(account), record.name)
    return {"backup_vault_name": record.name, "backup_vault_arn": record.arn, "policy": policy}


def delete_access_policy(
    ctx: typer.Context, name: str = typer.Argument(..., help="Vault name or ARN.")
) -> None:
    """Remove a vault's access policy (then only its own account may use it)."""
    with context.account(ctx) as account:
        vault_ops.put_access_policy(account, _root(account), name, None)
    output.console.print(f"Removed the access policy of vault {name}")


def put_lock(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Vault name or ARN."),
    min_retention_days: int | None = typer.Option(None, "--min-retention-days", help="Shortest retention allowed."),
    max_retention_days: int | None = typer.Option(None, "--max-retention-days", help="Longest retention allowed."),
    changeable_for_days: int | None = typer.Option(
        None, "--changeable-for-days", help="Compliance mode: days (3..36500) before the lock becomes immutable."
    ),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Lock a vault (governance mode, or compliance mode with --changeable-for-days), or change its lock."""
    with context.account(ctx) as account:
        vault_ops.put_vault_lock(
            account, _root(account), name, min_retention_days=min_retention_days,
            max_retention_days=max_retention_days, changeable_for_days=changeable_for_days,
        )
        shown = _lock_view(account, name)
    if json_output:
        output.emit_json(shown)
        return
    output.details(shown)
    if shown["lock_date"]:
        output.console.print(f"The lock can be changed or removed until {shown['lock_date']}; never after.")


def _lock_view(account: Account, name: str) -> dict[str, Any]:
    described = vault_ops.describe_vault(account, _root(account), name)
    return {key: described[key] for key in ("backup_vault_name", "backup_vault_arn", *vault_ops.LOCK_FIELDS)}


def delete_lock(ctx: typer.Context, name: str = typer.Argument(..., help="Vault name or ARN.")) -> None:
    """Remove a vault's lock (governance: named principals only; compliance: only before its lock date)."""
    with context.account(ctx) as account:
        vault_ops.delete_vault_lock(account, _root(account), name)
    output.console.print(f"Removed the lock of vault {name}")


def delete_vault(ctx: typer.Context, name: str = typer.Argument(..., help="Vault name or ARN.")) -> None:
    """Delete an empty vault."""
    with context.account(ctx) as account:
        vault_ops.delete_vault(account, _root(account), name)
    output.console.print(f"Deleted vault {name}")


def delete_recovery_point(
    ctx: typer.Context, recovery_point: str = typer.Argument(..., help="Recovery point ARN (or id).")
) -> None:
    """Delete a recovery point (its chunks go at the next garbage collection)."""
    with context.account(ctx) as account:
        vault_ops.delete_recovery_point(account, _root(account), recovery_point)
    output.console.print(f"Deleted recovery point {recovery_point}")


def update_lifecycle(
    ctx: typer.Context,
    recovery_point: str = typer.Argument(..., help="Recovery point ARN (or id)."),
    delete_after: int = typer.Option(..., "--delete-after", help="Days to keep it, counted from its creation."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Change how long a recovery point is kept (a vault lock forbids shortening it)."""
    with context.account(ctx) as account:
        point = vault_ops.update_recovery_point_lifecycle(account, _root(account), recovery_point, delete_after)
    if json_output:
        output.emit_json(point.as_dict())
    else:
        output.console.print(f"Recovery point {point.arn} is kept {delete_after} days, until {point.delete_at}")
