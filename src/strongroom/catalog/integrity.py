"""MACs of the catalog's security-relevant rows: who a credential acts as, a vault's policy and lock, a
recovery point's retention (docs/vault-format.md, "Catalog records").

A row's MAC is HMAC-SHA256, under a key derived from the account key, of a canonical encoding of the
table name, the row's primary key and its secured columns: an edited row, or a MAC copied from another
row or table, fails. The catalog only holds the key through a :class:`Guard` the account attaches
(services/catalog_integrity.py), so the file alone can neither make nor check a MAC.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from collections.abc import Mapping
from typing import Any, Protocol

from strongroom.errors import CatalogIntegrityError

MAC_CONTEXT = b"strongroom catalog row v1\0"

# A recovery point's state and retention: secured here, and mirrored into its vault's store by
# services/catalog_integrity.py (the vault's record of each point).
POINT_STATE_COLUMNS = (
    "status",
    "creation_date",
    "arrival_date",
    "completion_date",
    "delete_after_days",
    "delete_at",
    "lock_applies",
)
# table -> (primary key column, secured columns in MAC order). Columns not listed (sizes, messages,
# metadata, notifications) decide nothing about access or retention.
SECURED: dict[str, tuple[str, tuple[str, ...]]] = {
    "vaults": ("name", ("name", "arn", "store_url", "vault_id", "created_at", "access_policy", "lock", "seq")),
    "recovery_points": (
        "id",
        ("id", "arn", "vault_name", "resource_id", "resource_type", *POINT_STATE_COLUMNS, "source_recovery_point_arn"),
    ),
    "credentials": ("key_id", ("key_id", "principal_arn", "created_at", "expires_at", "revoked_at")),
}
# sqlite3.Row reads by column name like a mapping but is not one for the type checker.
RowLike = Mapping[str, Any] | sqlite3.Row
WHAT = {"vaults": "vault", "recovery_points": "recovery point", "credentials": "credential"}


class Guard(Protocol):
    """What the catalog needs from its account to sign and check rows."""

    def read_key(self) -> bytes | None:
        """The MAC key, or None when it is not at hand (a listing run without the passphrase)."""

    def write_key(self) -> bytes:
        """The MAC key; raises when it cannot be had (a change always needs it)."""

    def mirror(self, vault_name: str, point_id: str | None) -> None:
        """Copy the vault's (and the point's) committed security state into the vault's store."""


def canonical(table: str, row: RowLike) -> bytes:
    key_column, columns = SECURED[table]
    values = [row[column] for column in columns]
    return json.dumps([table, row[key_column], values], separators=(",", ":"), ensure_ascii=True).encode()


def row_mac(key: bytes, table: str, row: RowLike) -> str:
    return hmac.new(key, MAC_CONTEXT + canonical(table, row), hashlib.sha256).hexdigest()


def row_is_authentic(key: bytes, table: str, row: RowLike) -> bool:
    stored = row["mac"]
    return bool(stored) and hmac.compare_digest(str(stored), row_mac(key, table, row))


def check_row(key: bytes, table: str, row: RowLike) -> None:
    if not row_is_authentic(key, table, row):
        raise CatalogIntegrityError(failure(table, row))


def failure(table: str, row: RowLike) -> str:
    key_column = SECURED[table][0]
    state = "has no MAC" if not row["mac"] else "fails its MAC"
    return (
        f"the catalog's {WHAT[table]} record '{row[key_column]}' {state}: it was changed outside Strongroom; "
        "refusing to rely on it"
    )
