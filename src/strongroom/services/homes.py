"""Which home writes a vault: the home's own id, the vault keys a home keeps, and the vault's home marker.

A home (an account's directory) gets a random id in ``HOME/home-id`` the first time it needs one. Every time
the home writes a vault's catalog records it also writes the vault's home marker (``catalog/home``,
docs/vault-format.md §10.5) naming itself, with the time. ``vaults attach`` reads the marker to refuse taking
over a vault that another home wrote to recently (services/attach.py), and a home whose vault was attached
elsewhere stops writing its records (:func:`check_writer`).

A vault attached with a passphrase other than the account's keeps its keys in the home, wrapped under the
account's passphrase: ``HOME/keys/vaults/<vault-id>.key`` (the key file format of docs/vault-format.md §3.1).
"""

from __future__ import annotations

import contextlib
import secrets
from datetime import timedelta
from pathlib import Path

from strongroom.errors import IntegrityError, VaultInUseError
from strongroom.fsutil import write_durably
from strongroom.model import VaultRecord, iso, now
from strongroom.store.base import open_store
from strongroom.vault import Vault
from strongroom.vault.inventory import HomeMarker, open_with_keys, read_home_marker, write_home_marker
from strongroom.vault.keys import KeySet, unwrap_keyset, wrap_keyset

HOME_ID_FILE = "home-id"
MARKER_REFRESH = timedelta(minutes=10)  # a home rewrites its marker at most this often (services/attach.py)


def home_id(home: Path) -> str:
    """This home's id, made on first use (a home copied elsewhere keeps it: copy homes only to move them)."""
    path = home / HOME_ID_FILE
    if not path.exists():
        with contextlib.suppress(FileExistsError):  # another process made it first: theirs wins
            write_durably(path, (secrets.token_hex(8) + "\n").encode(), replace=False, mode=0o644)
    return path.read_text().strip()


def check_writer(home: Path, vault_name: str, vault: Vault) -> HomeMarker | None:
    """Refuse to write the records of a vault whose marker names another home: it was attached there
    (``vaults attach``), and this home's catalog no longer speaks for it."""
    try:
        marker = read_home_marker(vault)
    except IntegrityError as exc:
        raise damaged_marker(exc) from None
    if marker is not None and marker.home_id != home_id(home):
        raise in_use_error(vault_name, marker)
    return marker


def damaged_marker(exc: IntegrityError) -> IntegrityError:
    """No authentic home marker is left (garbage put over it where the bucket keeps no older version)."""
    return IntegrityError(
        f"the vault's home marker is damaged: {exc.message}",
        hint="If no other home writes this vault, run 'vaults attach NAME --store URL --force' to rewrite it",
    )


def in_use_error(vault_name: str, marker: HomeMarker) -> VaultInUseError:
    return VaultInUseError(
        f"vault '{vault_name}' is written by another home (account {marker.account_id}, home {marker.home_id}) "
        f"since {marker.written_at}: it was attached there, and this home no longer writes it",
        hint="Use the vault from that home; to take it back here, run 'vaults attach NAME --store URL --force'",
    )


def keep_writing(home: Path, account_id: str, vault_name: str, vault: Vault) -> None:
    """Before a home writes a vault's records: refuse if another home took the vault (:func:`check_writer`),
    and refresh the marker when it is missing or older than MARKER_REFRESH. Throttled: a marker write is a
    synced PUT, and it lies between a point's commit and its job's; the live window is hours, not minutes."""
    marker = check_writer(home, vault_name, vault)
    if marker is None or now() - marker.moment >= MARKER_REFRESH:
        mark_home(home, account_id, vault)


def mark_home(home: Path, account_id: str, vault: Vault) -> HomeMarker:
    """Write the vault's home marker: this home writes it, now."""
    marker = HomeMarker(home_id(home), account_id, iso(now()) or "")
    write_home_marker(vault, marker)
    return marker


def held_key_path(home: Path, vault_id: str) -> Path:
    return home / "keys" / "vaults" / f"{vault_id}.key"


def keep_vault_keys(home: Path, keys: KeySet, vault_id: str, passphrase: str) -> None:
    """Keep a vault's keys in the home, wrapped under the account's passphrase (replacing an earlier copy)."""
    path = held_key_path(home, vault_id)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_durably(path, wrap_keyset(keys, passphrase), mode=0o600)


def open_vault(home: Path, record: VaultRecord, passphrase: str) -> Vault:
    """Open a catalogued vault: with the keys the home keeps for it, or else its own key file."""
    store = open_store(record.store_url)
    held = held_key_path(home, record.vault_id)
    if held.exists():
        vault = open_with_keys(store, unwrap_keyset(held.read_bytes(), passphrase))
    else:
        vault = Vault.open(store, passphrase, key_cache=vault_cache(home, record.vault_id) / "keys")
    use_home_caches(home, vault)
    return vault


def use_home_caches(home: Path, vault: Vault) -> None:
    """Let the vault keep what saves requests in the home: sealed pack indexes and recent manifests."""
    folder = vault_cache(home, vault.config.vault_id)
    vault.index_cache = folder / "pack-indexes"
    vault.manifest_cache = folder / "manifests"


def vault_cache(home: Path, vault_id: str) -> Path:
    """What the home caches of a vault, only to save requests: its key file as stored (``keys/``, unwrapped
    with the passphrase: vault/vault.py), its sealed pack indexes (``pack-indexes/``, authenticated on load
    and used only for packs the store lists: vault/packs.py), the newest sealed manifests (``manifests/``:
    vault/manifest.py) and this home's claim on the vault's records (services/records_claim.py). Deleting it
    is always safe."""
    return home / "cache" / "vaults" / vault_id
