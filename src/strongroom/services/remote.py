"""Other accounts this account talks to: their endpoint and the credential they issued to us."""

from __future__ import annotations

from typing import Any

from strongroom.catalog.records import RemoteAccount
from strongroom.errors import RemoteError, UsageError
from strongroom.model import iso, now
from strongroom.services.account import Account
from strongroom.services.credentials import open_secret, seal_secret
from strongroom.transport.client import AccountClient


def add_remote_account(
    account: Account,
    name: str,
    *,
    endpoint: str,
    key_id: str,
    secret: str,
    account_id: str | None = None,
    ca_file: str | None = None,
) -> dict[str, Any]:
    """Register another account after checking that the endpoint answers and accepts the credential."""
    if not secret:
        raise UsageError("the credential's secret is empty", hint="Pipe it on stdin or set STRONGROOM_REMOTE_SECRET")
    with AccountClient(endpoint, key_id, secret, ca_file=ca_file) as client:
        identity = client.whoami()
    remote_id = str(identity.get("account_id", ""))
    if account_id and remote_id != account_id:
        raise RemoteError(
            f"the endpoint {endpoint} serves account {remote_id}, not {account_id}",
            hint="Check the endpoint and the --account-id you were given",
        )
    if remote_id == account.account_id:
        raise UsageError("that endpoint serves this very account", hint="Register the other account's endpoint")
    record = RemoteAccount(
        name=name,
        account_id=remote_id,
        endpoint=endpoint,
        key_id=key_id,
        sealed_secret=seal_secret(account, secret, f"remote account {remote_id}"),
        ca_file=ca_file,
        created_at=iso(now()) or "",
    )
    account.catalog.put_remote_account(record)
    return record.describe(identity.get("principal_arn"))


def client_for(account: Account, name_or_account_id: str) -> AccountClient:
    record = account.catalog.get_remote_account(name_or_account_id)
    secret = open_secret(account, record.sealed_secret, f"remote account {record.account_id}")
    return AccountClient(record.endpoint, record.key_id, secret, ca_file=record.ca_file)


def list_remote_accounts(account: Account) -> list[dict[str, Any]]:
    """What ``accounts list`` shows of each registered account (never the sealed secret)."""
    return [r.describe() for r in account.catalog.list_remote_accounts()]
