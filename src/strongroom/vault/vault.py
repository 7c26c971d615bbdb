"""A vault: an object store plus the keys and settings to read and write it."""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from strongroom.errors import AccountError, FormatError, NotFoundError, StorageError
from strongroom.store.base import ObjectStore
from strongroom.vault import envelope
from strongroom.vault.envelope import Kind
from strongroom.vault.keys import KeySet, unwrap_keyset, wrap_keyset

VAULT_FORMAT = 1
CONFIG_KEY = "config"
KEYS_PREFIX = "keys/"
CHUNKS_PREFIX = "chunks/"
MANIFESTS_PREFIX = "manifests/"


@dataclass(frozen=True)
class ChunkerSettings:
    algorithm: str = "fastcdc-2020"
    min_size: int = 256 * 1024
    avg_size: int = 1024 * 1024  # pyfastcdc's average; real average is avg_size + min_size
    max_size: int = 4 * 1024 * 1024

    @classmethod
    def for_average(cls, average: int) -> ChunkerSettings:
        """Settings whose real average chunk size is about ``average`` bytes."""
        return cls(min_size=average // 4, avg_size=average - average // 4, max_size=average * 4)


@dataclass(frozen=True)
class VaultConfig:
    vault_id: str
    format: int
    created_at: str
    chunker: ChunkerSettings

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> VaultConfig:
        raw = json.loads(data)
        if raw.get("format") != VAULT_FORMAT:
            raise FormatError(f"vault format {raw.get('format')} is unknown; this Strongroom reads {VAULT_FORMAT}")
        return cls(raw["vault_id"], raw["format"], raw["created_at"], ChunkerSettings(**raw["chunker"]))


def chunk_key(chunk_id: bytes) -> str:
    hex_id = chunk_id.hex()
    return f"{CHUNKS_PREFIX}{hex_id[:2]}/{hex_id}"


def chunk_id_from_key(key: str) -> bytes:
    return bytes.fromhex(key.rsplit("/", 1)[1])


def manifest_key(recovery_point_id: str) -> str:
    return f"{MANIFESTS_PREFIX}{recovery_point_id}"


class Vault:
    """Open vault: its store, its keys and its settings."""

    def __init__(self, store: ObjectStore, keys: KeySet, config: VaultConfig) -> None:
        self.store = store
        self.keys = keys
        self.config = config

    @classmethod
    def create(
        cls,
        store: ObjectStore,
        passphrase: str,
        *,
        chunker: ChunkerSettings | None = None,
        scrypt_params: dict[str, int] | None = None,
    ) -> Vault:
        if store.exists(CONFIG_KEY):
            raise AccountError(f"a vault already exists at {store.url}")
        keys = KeySet.generate()
        config = VaultConfig(
            vault_id=secrets.token_hex(8),
            format=VAULT_FORMAT,
            created_at=datetime.now(UTC).isoformat(),
            chunker=chunker or ChunkerSettings(),
        )
        store.put(f"{KEYS_PREFIX}{keys.key_id}", wrap_keyset(keys, passphrase, scrypt_params), if_absent=True)
        sealed = envelope.seal(keys.encryption_key, Kind.CONFIG, CONFIG_KEY.encode(), config.to_json())
        # The config is written last: a vault without it is an unfinished create.
        store.put(CONFIG_KEY, sealed, if_absent=True)
        return cls(store, keys, config)

    @classmethod
    def open(cls, store: ObjectStore, passphrase: str) -> Vault:
        key_names = sorted(store.list(KEYS_PREFIX))
        if not key_names or not store.exists(CONFIG_KEY):
            raise NotFoundError(f"no vault at {store.url}")
        keys = unwrap_keyset(store.get(key_names[0]), passphrase)
        opened = envelope.open_sealed(
            keys.encryption_key, CONFIG_KEY.encode(), store.get(CONFIG_KEY), what="vault config"
        )
        if opened.kind != Kind.CONFIG:
            raise StorageError("vault config object has the wrong kind")
        return cls(store, keys, VaultConfig.from_json(opened.plaintext))

    # Chunk ids -------------------------------------------------------------------------------
    def chunk_id(self, plaintext: bytes | memoryview) -> bytes:
        import blake3

        return blake3.blake3(plaintext, key=self.keys.id_key, max_threads=1).digest()

    def list_chunk_ids(self) -> set[bytes]:
        return {chunk_id_from_key(key) for key in self.store.list(CHUNKS_PREFIX)}

    def list_manifest_ids(self) -> list[str]:
        return sorted(key[len(MANIFESTS_PREFIX) :] for key in self.store.list(MANIFESTS_PREFIX))
