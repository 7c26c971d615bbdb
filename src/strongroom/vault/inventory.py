"""Reading a vault as a new home finds it: unlocking with a given key set, what it holds, and its home marker.

``strongroom vaults attach`` (services/attach.py) rebuilds a catalog from these alone: the vault's own key
file and config, its catalog records (``catalog/vault``, ``catalog/points/<id>``, docs/vault-format.md §10)
and its manifests. The home marker ``catalog/home`` (§10.5) names the home that last wrote the vault's
records and when, so a second home does not take over a vault that a live one still writes to.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime

from strongroom.errors import FormatError, IntegrityError, NotFoundError, StorageError
from strongroom.store.base import ObjectStore
from strongroom.vault import envelope
from strongroom.vault.envelope import Kind
from strongroom.vault.keys import KeySet, unwrap_keyset
from strongroom.vault.vault import CONFIG_KEY, HOME_MARKER_KEY, KEYS_PREFIX, Vault, VaultConfig

HOME_MARKER_FORMAT = 1


def vault_key_file(store: ObjectStore) -> bytes:
    """The vault's key file (``keys/<key-id>``); NotFoundError when the store holds no vault."""
    key_names = sorted(store.list(KEYS_PREFIX))
    if not key_names or not store.exists(CONFIG_KEY):
        raise NotFoundError(
            f"{store.url} holds no Strongroom vault (no keys/ or config object)",
            hint="Check the store URL: it names the vault's own prefix, as 'vaults list' showed it",
        )
    return store.get(key_names[0])


def unlock(store: ObjectStore, passphrase: str) -> Vault:
    """Open the vault in ``store`` with its own key file and ``passphrase`` (WrongPassphraseError if wrong)."""
    return open_with_keys(store, unwrap_keyset(vault_key_file(store), passphrase))


def open_with_keys(store: ObjectStore, keys: KeySet) -> Vault:
    """Open the vault in ``store`` with ``keys`` held elsewhere; its config must open under them."""
    try:
        sealed = store.get(CONFIG_KEY)
    except NotFoundError:
        raise NotFoundError(f"{store.url} holds no Strongroom vault (no config object)") from None
    opened = envelope.open_sealed(keys.encryption_key, CONFIG_KEY.encode(), sealed, what="vault config")
    if opened.kind != Kind.CONFIG:
        raise StorageError("vault config object has the wrong kind")
    try:
        config = VaultConfig.from_json(opened.plaintext)
    except FormatError as exc:
        raise FormatError(exc.message, hint="Upgrade Strongroom to attach this vault") from None
    return Vault(store, keys, config)


@dataclass(frozen=True)
class HomeMarker:
    """Who last wrote the vault's catalog records: a home (its id and account) and when (its clock)."""

    home_id: str
    account_id: str
    written_at: str  # ISO 8601, the writing home's clock

    @property
    def moment(self) -> datetime:
        return datetime.fromisoformat(self.written_at)


def read_home_marker(vault: Vault) -> HomeMarker | None:
    """The vault's home marker, or None when no home has written one (a vault from before markers)."""
    body = vault.read_record(HOME_MARKER_KEY)
    return None if body is None else parse_home_marker(body)


def parse_home_marker(body: bytes) -> HomeMarker:
    raw = json.loads(body)
    if raw.get("format") != HOME_MARKER_FORMAT:
        raise FormatError(f"home marker format {raw.get('format')} is unknown", hint="Upgrade Strongroom")
    try:
        return HomeMarker(str(raw["home_id"]), str(raw["account_id"]), str(raw["written_at"]))
    except KeyError as exc:
        raise IntegrityError(f"the vault's home marker lacks {exc}") from None


def home_marker_body(marker: HomeMarker) -> bytes:
    return json.dumps({"format": HOME_MARKER_FORMAT, **asdict(marker)}, sort_keys=True).encode()


def write_home_marker(vault: Vault, marker: HomeMarker) -> None:
    """Replace the vault's home marker (sealed, like every catalog record; never retained: it holds no backup
    data and is rewritten often, docs/storage.md)."""
    vault.write_record(HOME_MARKER_KEY, home_marker_body(marker), retained=False)
