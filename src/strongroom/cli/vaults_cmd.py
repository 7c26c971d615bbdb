"""``strongroom vaults``: list, describe, access policies, locks, notifications and deletion.

The local CLI acts as the account's root principal, so the vault's access policy and lock judge it as
they would any other caller (services/vault_ops.py). Notification sink URLs hold secrets, so they are read
from STRONGROOM_NOTIFICATION_URLS or stdin (cli/notification_urls.py) and shown only masked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

from strongroom.cli import context, output
from strongroom.cli.notification_urls import sink, url_lines
from strongroom.errors import UsageError
from strongroom.model import DEFAULT_VAULT
from strongroom.policy.document import PolicyDocument, default_destination_policy
from strongroom.policy.principals import root_arn
from strongroom.services import attach, notifications, vault_ops
from strongroom.services.account import Account

vaults_app = typer.Typer(help="Backup vaults of this account.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(vaults_app, name="vaults")


def _root(account: Account) -> str:
    return root_arn(account.account_id)


@vaults_app.command("list")
def vaults_list(
    ctx: typer.Context,
    wide: bool = typer.Option(False, "--wide", help="Whole ARNs, however wide the table gets."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """List the account's backup vaults."""
    with context.account(ctx, display=True) as account:
        records = [v.as_dict() for v in account.catalog.list_vaults()]
    if json_output:
        output.emit_json({"backup_vaults": records})
        return
    output.table(
        "Backup vaults",
        ["Name", "ARN", "Store"],
        [(v["backup_vault_name"], v["backup_vault_arn"], v["store_url"]) for v in records],
        wide=wide,
    )


@vaults_app.command("create")
def vaults_create(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Name of the new vault (2-50 letters, digits, _ and -)."),
    store: str | None = typer.Option(
        None,
        "--store",
        help="Where its objects live: s3://BUCKET/PREFIX?endpoint=URL&region=R (credentials from the AWS chain,"
        " never the URL) or file:///path; default: the account home. See docs/storage.md.",
    ),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Create a backup vault, on local disk or in an S3 bucket."""
    with context.account(ctx) as account:
        record = vault_ops.create_vault(account, name, store_url=store).as_dict()
    if json_output:
        output.emit_json(record)
    else:
        output.console.print(
            f"Created vault {record['backup_vault_name']} ({record['backup_vault_arn']}) in {record['store_url']}",
            highlight=False,
        )


@vaults_app.command("attach")
def vaults_attach(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Name the vault gets in this account (2-50 letters, digits, _ and -)."),
    store: str = typer.Option(
        ...,
        "--store",
        help="Where the vault's objects are: file:///path/to/vault or s3://BUCKET/PREFIX?endpoint=URL&region=R.",
    ),
    vault_passphrase_file: Path | None = typer.Option(
        None,
        "--vault-passphrase-file",
        help="File holding the passphrase of the account that created the vault, when it is not this account's"
        f" (or set {attach.ENV_VAULT_PASSPHRASE}).",
    ),
    force: bool = typer.Option(
        False, "--force", help="Attach even though another home wrote to the vault in the last 24 hours."
    ),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Attach an existing vault (a lost machine's, or this home's after catalog.db was lost), rebuilt from
    the vault's own objects: recovery points, retention, lock and access policy. Idempotent."""
    vault_passphrase = _vault_passphrase(vault_passphrase_file)
    with context.account(ctx) as account:
        result = attach.attach_vault(account, name, store, vault_passphrase=vault_passphrase, force=force)
    shown = result.as_dict()
    if json_output:
        output.emit_json(shown)
        return
    verb = "Attached" if result.outcome == attach.AttachOutcome.ATTACHED else "Already attached:"
    counts = ", ".join(f"{n} {status}" for status, n in shown["recovery_points_by_status"].items()) or "none"
    output.console.print(
        f"{verb} vault {shown['backup_vault_name']} ({shown['backup_vault_arn']}) from {shown['store_url']}:"
        f" recovery points {counts}",
        highlight=False,
    )
    for warning in shown["warnings"]:
        output.console.print(f"warning: {warning}", highlight=False)


def _vault_passphrase(path: Path | None) -> str | None:
    if path is None:
        return os.environ.get(attach.ENV_VAULT_PASSPHRASE) or None
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read --vault-passphrase-file {path}: {exc.strerror or exc}") from None
    value = lines[0] if lines else ""
    if not value:
        raise UsageError(f"--vault-passphrase-file {path} is empty", hint="Write the vault's passphrase into it")
    return value


@vaults_app.command("describe")
def vaults_describe(
    ctx: typer.Context, name: str = typer.Argument(DEFAULT_VAULT), json_output: bool = typer.Option(False, "--json")
) -> None:
    """Show one vault: how many recovery points it holds, its lock's mode, state and lock date."""
    with context.account(ctx, display=True) as account:
        record = vault_ops.describe_vault(account, _root(account), name)
    if json_output:
        output.emit_json(record)
    else:
        output.details({**record, "access_policy": _policy_summary(record, name)})


def _policy_summary(record: dict[str, Any], name: str) -> str:
    """One line for people: the document itself is 'vaults get-access-policy' (or --json)."""
    policy = record.get("access_policy")
    if not policy:
        return "none"
    statements = policy.get("Statement") or []
    count = len(statements) if isinstance(statements, list) else 1
    return f"{count} statement{'s' if count != 1 else ''} (see 'strongroom vaults get-access-policy {name}')"


@vaults_app.command("put-access-policy")
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


@vaults_app.command("get-access-policy")
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


@vaults_app.command("delete-access-policy")
def delete_access_policy(ctx: typer.Context, name: str = typer.Argument(..., help="Vault name or ARN.")) -> None:
    """Remove a vault's access policy (then only its own account may use it)."""
    with context.account(ctx) as account:
        vault_ops.put_access_policy(account, _root(account), name, None)
    output.console.print(f"Removed the access policy of vault {name}")


@vaults_app.command("put-lock")
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
            account,
            _root(account),
            name,
            min_retention_days=min_retention_days,
            max_retention_days=max_retention_days,
            changeable_for_days=changeable_for_days,
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


@vaults_app.command("delete-lock")
def delete_lock(ctx: typer.Context, name: str = typer.Argument(..., help="Vault name or ARN.")) -> None:
    """Remove a vault's lock (governance: named principals only; compliance: only before its lock date)."""
    with context.account(ctx) as account:
        vault_ops.delete_vault_lock(account, _root(account), name)
    output.console.print(f"Removed the lock of vault {name}")


@vaults_app.command("delete")
def delete_vault(ctx: typer.Context, name: str = typer.Argument(..., help="Vault name or ARN.")) -> None:
    """Delete an empty vault."""
    with context.account(ctx) as account:
        vault_ops.delete_vault(account, _root(account), name)
    output.console.print(f"Deleted vault {name}")


@vaults_app.command("put-notifications")
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
    sinks = [sink(line) for line in url_lines()]
    wanted = notifications.settings([e.upper() for e in events], [s.upper() for s in exclude_states], sinks)
    with context.account(ctx) as account:
        shown = notifications.put_notifications(account, name, wanted)
    if json_output:
        output.emit_json(shown)
        return
    count = len(shown["sinks"])
    output.console.print(
        f"Notifications of vault {shown['backup_vault_name']} set: {count} sink{'s' * (count != 1)}"
        f", events {', '.join(shown['events'])}",
        highlight=False,
    )


@vaults_app.command("get-notifications")
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
    output.details(
        {
            "vault": shown["backup_vault_name"],
            "events": ", ".join(shown["events"]) or "(none)",
            "exclude_states": ", ".join(shown["exclude_states"]) or "(none)",
        }
    )
    output.table(
        "Sinks",
        ["sink", "events", "exclude_states"],
        [
            (
                s["sink"],
                ", ".join(s["events"]) if s["events"] is not None else "(vault's)",
                ", ".join(s["exclude_states"]) if s["exclude_states"] is not None else "(vault's)",
            )
            for s in shown["sinks"]
        ],
    )


@vaults_app.command("delete-notifications")
def delete_notifications(ctx: typer.Context, name: str = typer.Argument(..., help="Vault name or ARN.")) -> None:
    """Remove a vault's notification settings (queued events are still delivered)."""
    with context.account(ctx) as account:
        notifications.delete_notifications(account, name)
    output.console.print(f"Notifications of vault {name} removed", highlight=False)
