"""What an attacker holding the source's home and passphrase sends: copy announcements as the source's own."""

from __future__ import annotations

import base64
from typing import Any

from strongroom.services.account import open_account
from strongroom.transport.client import AccountClient
from tests.support.accounts import vault_arn
from tests.support.cli import PASSPHRASE, Cli


def stolen_id_key(source: Cli) -> bytes:
    """The source vault's chunk-id key, read with the stolen passphrase: frames the destination accepts."""
    account = open_account(source.home, lambda: PASSPHRASE)
    try:
        return account.vault("Default").keys.id_key
    finally:
        account.close()


def stolen_announcement(
    client: AccountClient, source: Cli, source_point: str, creation_date: str, delete_after_days: int
) -> dict[str, Any]:
    """A copy-in announcement for an empty stream, as the source itself would send it: its real vault id and,
    to a destination speaking API 2 or later, its real chunk-id key (read with the stolen passphrase)."""
    account = open_account(source.home, lambda: PASSPHRASE)
    try:
        vault = account.vault("Default")
        vault_id, id_key = vault.config.vault_id, vault.keys.id_key
    finally:
        account.close()
    announce: dict[str, Any] = {
        "source_recovery_point_arn": source_point,
        "source_vault_arn": vault_arn(source),
        "source_vault_id": vault_id,
        "resource_id": "files",
        "resource_type": "directory",
        "creation_date": creation_date,
        "delete_after_days": delete_after_days,
        "metadata": {},
        "streams": {"tree": {"size": 0, "chunk_count": 0}},
    }
    if str(client.whoami().get("api_version", "1")) != "1":
        announce["source_chunk_id_key"] = base64.b64encode(id_key).decode("ascii")
    return announce
