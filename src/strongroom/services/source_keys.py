"""Chunk-id keys of the source vaults that copy into this account, pinned on first use.

A source names its chunks ``BLAKE3(key = its vault's id_key, plaintext)``. It sends that key when it
starts a copy, so this account can check that every chunk it receives, or reuses from an earlier copy,
is the content the source's id names (services/copy_receive.py). The first copy from a (source
account, source vault id) pins the key, sealed under this account's key; a later copy that announces
another key is refused and its job FAILED: a compromised source cannot swap the key to make junk
check out under its real ids. A vault's id key never changes, so a different key is never legitimate.

The one case an operator must mend: the very first copy came from an attacker holding the source's
credential, so the attacker's key is pinned and every legitimate copy is refused. After investigating,
the destination's owner lists the pins (``strongroom accounts source-keys``) and clears the wrong one
(``strongroom accounts unpin-source-key``); its chunk mappings go with it, so nothing checked under the
attacker's key is ever reused, and the next copy pins again.
"""

from __future__ import annotations

import base64
import hmac

from strongroom.catalog.records import PinnedSourceKey
from strongroom.errors import IntegrityError
from strongroom.services.account import Account
from strongroom.services.credentials import open_secret, seal_secret
from strongroom.vault.source import key_fingerprint


def pin_source_key(account: Account, source_account_id: str, source_vault_id: str, id_key: bytes) -> None:
    """Pin ``id_key`` for the source vault on first use; refuse a key that differs from the pinned one."""
    label = _label(source_account_id, source_vault_id)
    sealed = seal_secret(account, base64.b64encode(id_key).decode("ascii"), label)
    pinned = account.catalog.pin_source_key(source_account_id, source_vault_id, sealed, key_fingerprint(id_key))
    if not hmac.compare_digest(base64.b64decode(open_secret(account, pinned, label)), id_key):
        raise IntegrityError(
            f"the copy announces a chunk-id key for source vault {source_vault_id} of account {source_account_id}"
            " other than the one pinned on its first copy; the copy is refused",
            hint="A vault's key never changes: treat the source account as compromised and investigate; if the"
            " pinned key is the wrong one, 'strongroom accounts unpin-source-key' clears it",
        )


def pinned_source_keys(account: Account) -> list[PinnedSourceKey]:
    """Every pinned source vault key, by fingerprint (the keys themselves stay sealed)."""
    return account.catalog.list_source_keys()


def unpin_source_key(account: Account, source_account_id: str, source_vault_id: str) -> dict[str, object]:
    """Clear a pin and the chunk mappings checked under it; the source vault's next copy pins again."""
    dropped = account.catalog.unpin_source_key(source_account_id, source_vault_id)
    return {"source_account_id": source_account_id, "source_vault_id": source_vault_id, "mappings_dropped": dropped}


def _label(source_account_id: str, source_vault_id: str) -> str:
    return f"source chunk-id key {source_account_id}/{source_vault_id}"
