"""A vault: an object store plus the keys and settings to read and write it."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

from strongroom.clock import now
from strongroom.errors import (
    AccountError,
    CatalogIntegrityError,
    FormatError,
    IntegrityError,
    NotFoundError,
    StorageError,
    StrongroomError,
)
from strongroom.fsutil import write_private
from strongroom.store.base import ObjectStore, RetainedError, Retention
from strongroom.vault import envelope
from strongroom.vault.envelope import Kind
from strongroom.vault.keys import KeySet, unwrap_keyset, wrap_keyset
from strongroom.vault.objects import LooseObjects, ObjectLayout

VAULT_FORMAT = 1  # one object per chunk (chunks/<hh>/<id>): local directories, and S3 vaults made before packs
PACKED_FORMAT = 2  # chunks in pack objects with pack indexes (packs/, docs/vault-format.md §2.1): new S3 vaults
KNOWN_FORMATS = (VAULT_FORMAT, PACKED_FORMAT)
CONFIG_KEY = "config"
KEYS_PREFIX = "keys/"
CHUNKS_PREFIX = "chunks/"
MANIFESTS_PREFIX = "manifests/"
RECORDS_PREFIX = "catalog/"
HOME_MARKER_KEY = f"{RECORDS_PREFIX}home"  # which home writes the records (vault/inventory.py); never retained
T = TypeVar("T")


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
        if raw.get("format") not in KNOWN_FORMATS:
            raise FormatError(
                f"vault format {raw.get('format')} is unknown; this Strongroom reads formats "
                + " and ".join(map(str, KNOWN_FORMATS))
            )
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
        # On a store with Object Lock, what catalog records written from now on are kept for (set by the latest
        # write session: services/object_lock.py); None writes them without retention.
        self.record_retention: Retention | None = None
        # Where the home that opened the vault caches its sealed pack indexes (vault/packs.py); None: no cache.
        self.index_cache: Path | None = None
        # Sealed manifests of the newest points, as stored (vault/manifest.py): a backup's previous point
        # comes from here instead of a GET; set by the home that opens the vault, like ``index_cache``.
        self.manifest_cache: Path | None = None
        self._objects: ObjectLayout | None = None
        self._objects_lock = threading.Lock()

    @property
    def objects(self) -> ObjectLayout:
        """Where the vault's chunks and index objects live: loose objects (format 1) or packs (format 2)."""
        with self._objects_lock:
            if self._objects is None:
                if self.config.format == PACKED_FORMAT:
                    from strongroom.vault.packs import PackedObjects

                    self._objects = PackedObjects(self)
                else:
                    self._objects = LooseObjects(self)
            return self._objects

    @classmethod
    def create(
        cls,
        store: ObjectStore,
        passphrase: str,
        *,
        chunker: ChunkerSettings | None = None,
        scrypt_params: dict[str, int] | None = None,
        packed: bool | None = None,
        key_cache: Callable[[str], Path] | None = None,
    ) -> Vault:
        """``packed``: store chunks in packs (format 2); by default where the store asks for it (S3).
        ``key_cache``: vault id -> where the creating home caches the key file (as :meth:`open` takes it)."""
        if store.exists(CONFIG_KEY):
            raise AccountError(f"a vault already exists at {store.url}")
        keys = KeySet.generate()
        config = VaultConfig(
            vault_id=secrets.token_hex(8),
            format=PACKED_FORMAT if (store.pack_size is not None if packed is None else packed) else VAULT_FORMAT,
            created_at=now().isoformat(),
            chunker=chunker or ChunkerSettings(),
        )
        wrapped = wrap_keyset(keys, passphrase, scrypt_params)
        store.put(f"{KEYS_PREFIX}{keys.key_id}", wrapped, if_absent=True)
        _cache_key_file(key_cache(config.vault_id) if key_cache else None, f"{KEYS_PREFIX}{keys.key_id}", wrapped)
        sealed = envelope.seal(keys.encryption_key, Kind.CONFIG, CONFIG_KEY.encode(), config.to_json())
        # The config is written last: a vault without it is an unfinished create.
        store.put(CONFIG_KEY, sealed, if_absent=True)
        return cls(store, keys, config)

    @classmethod
    def open(cls, store: ObjectStore, passphrase: str, *, key_cache: Path | None = None) -> Vault:
        """``key_cache``: a folder of the opening home holding the vault's key file as stored (a GET saved per
        process). Only the key file the store lists is taken from it, unwrapped with the passphrase (which
        authenticates it); the config, fetched from the store, must then open under those keys."""
        # On a versioned store a key set hidden by a delete marker still opens the vault (open_stored).
        key_names = sorted(store.list(KEYS_PREFIX)) or sorted(
            {v.key for v in store.versions(KEYS_PREFIX) if not v.delete_marker}
        )
        if not key_names:
            raise NotFoundError(f"no vault at {store.url}")
        cached = _cached_keys(key_cache, key_names[0], passphrase)
        if cached is not None:
            try:
                return cls(store, cached, _open_config(store, cached))
            except IntegrityError:  # the config does not open under the cached keys: the store's key file decides
                _drop_cached_key(key_cache, key_names[0])

        def unwrap(wrapped: bytes) -> KeySet:
            found = unwrap_keyset(wrapped, passphrase)
            _cache_key_file(key_cache, key_names[0], wrapped)
            return found

        keys = open_stored(store, key_names[0], unwrap)
        return cls(store, keys, _open_config(store, keys))

    # Chunk ids -------------------------------------------------------------------------------
    def chunk_id(self, plaintext: bytes | memoryview) -> bytes:
        import blake3

        return blake3.blake3(plaintext, key=self.keys.id_key, max_threads=1).digest()

    def has_object(self, object_id: bytes) -> bool:
        """Does the vault hold the chunk or index object ``object_id`` (the collector may have removed it)?"""
        return self.objects.exists(object_id)

    def list_chunk_ids(self) -> set[bytes]:
        return self.objects.stored_ids()

    def list_manifest_ids(self) -> list[str]:
        return sorted(key[len(MANIFESTS_PREFIX) :] for key in self.store.list(MANIFESTS_PREFIX))

    # Catalog records (docs/vault-format.md, "Catalog records") --------------------------------
    def write_record(self, key: str, body: bytes, *, retained: bool = True) -> None:
        """Seal ``body`` as the catalog record ``key`` (under ``catalog/``), replacing the one before; under
        the records' retention (Object Lock) unless not ``retained``."""
        _check_record_key(key)
        sealed = envelope.seal(self.keys.encryption_key, Kind.RECORD, key.encode(), body)
        self.store.put(key, sealed, retention=self.record_retention if retained else None)

    def replace_record(self, key: str, body: bytes, tag: str | None, *, retained: bool = True) -> str | None:
        """Seal ``body`` as the record ``key`` only while the stored one is the version tagged ``tag`` (None:
        while there is none): the new version's tag, or None when another version is there (nothing written).
        Only on a store that :meth:`~strongroom.store.base.ObjectStore.conditional_replace_supported`."""
        _check_record_key(key)
        sealed = envelope.seal(self.keys.encryption_key, Kind.RECORD, key.encode(), body)
        return self.store.replace_if(key, sealed, tag, retention=self.record_retention if retained else None)

    def read_record_tagged(self, key: str) -> tuple[bytes | None, str | None]:
        """The record ``key`` (None when the vault holds none) and the tag of the stored current version (None
        when there is none): a current version that is hidden or forged is skipped for an older one that opens
        (:func:`open_stored`), but the tag stays the current one's, the version a replacement must find."""
        _check_record_key(key)
        try:
            sealed, tag = self.store.get_tagged(key)
        except NotFoundError:
            return self.read_record(key), None
        try:
            return _record_body(key, self._open_record(key, sealed)), tag
        except IntegrityError:
            return self.read_record(key), tag

    def _open_record(self, key: str, sealed: bytes) -> envelope.Opened:
        return envelope.open_sealed(self.keys.encryption_key, key.encode(), sealed, what=f"catalog record {key}")

    def record_keys(self, prefix: str) -> list[str]:
        """Keys of the catalog records under ``prefix`` (itself under ``catalog/``), sorted."""
        if not prefix.startswith(RECORDS_PREFIX):
            raise StorageError(f"'{prefix}' is not under {RECORDS_PREFIX}")
        return sorted(self.store.list(prefix))

    def read_record(self, key: str) -> bytes | None:
        """The catalog record ``key``, opened, or None when the vault holds none."""
        _check_record_key(key)
        try:
            opened = open_stored(self.store, key, lambda sealed: self._open_record(key, sealed))
        except NotFoundError:
            return None
        return _record_body(key, opened)

    # Deleting (docs/vault-format.md §7, "Deletion order") -------------------------------------
    def withdraw_manifest(self, recovery_point_id: str) -> None:
        """Remove a recovery point's manifest, so it can no longer be restored; its objects stay for the
        collector (vault/gc.py), which frees only what no remaining manifest references. Idempotent.

        On a versioned store every version goes; a manifest still under Object Lock retention is hidden by a
        delete marker instead (the storage keeps its locked version until the retention ends)."""
        key = manifest_key(recovery_point_id)
        try:
            self.store.purge(key)
        except RetainedError:
            self.store.delete(key)

    def destroy(self) -> None:
        """Remove the whole vault; see :meth:`destroy_store`."""
        Vault.destroy_store(self.store)

    @staticmethod
    def destroy_store(store: ObjectStore) -> None:
        """Remove every object of the vault in ``store`` (which need not open: an unfinished create is removed
        the same way). The config goes first, so a destroy cut short leaves no vault that opens with objects
        missing; then manifests, catalog records, chunks and, last, the keys."""
        if store.capabilities.bulk_removal:  # best effort, as the store removes what it can
            with suppress(OSError):
                store.delete(CONFIG_KEY)
            store.remove_all()
            return
        store.delete(CONFIG_KEY)
        for prefix in (MANIFESTS_PREFIX, RECORDS_PREFIX, CHUNKS_PREFIX, ""):
            for key in sorted(k for k in store.list(prefix) if not k.startswith(KEYS_PREFIX)):
                store.delete(key)
        for key in list(store.list(KEYS_PREFIX)):
            store.delete(key)


def open_stored(store: ObjectStore, key: str, opener: Callable[[bytes], T]) -> T:
    """``opener`` applied to the stored object ``key``, which it authenticates (raising IntegrityError if not).

    On a versioned store (S3 with Object Lock) a current version that is missing (hidden by a delete marker) or
    fails authentication (a forged version put on top) is not the end: the newest older version that opens is
    used. Content is authenticated, so no forged version can substitute for it; ``verify`` reports the object
    and ``verify --repair`` puts the good version back on top (docs/operations.md).
    """
    try:
        return opener(store.get(key))
    except (NotFoundError, IntegrityError) as first:
        failure = first
    older = [v for v in store.versions(key) if v.key == key and not v.delete_marker and not v.latest]
    for version in sorted(older, key=lambda v: v.modified, reverse=True):
        try:
            return opener(store.get_version(key, version.version_id))
        except (NotFoundError, IntegrityError):
            continue
    raise failure


def _open_config(store: ObjectStore, keys: KeySet) -> VaultConfig:
    try:
        opened = open_stored(
            store,
            CONFIG_KEY,
            lambda sealed: envelope.open_sealed(keys.encryption_key, CONFIG_KEY.encode(), sealed, what="vault config"),
        )
    except NotFoundError:
        raise NotFoundError(f"no vault at {store.url}") from None  # an unfinished create: keys, no config
    if opened.kind != Kind.CONFIG:
        raise StorageError("vault config object has the wrong kind")
    return VaultConfig.from_json(opened.plaintext)


def _record_body(key: str, opened: envelope.Opened) -> bytes:
    if opened.kind != Kind.RECORD:
        raise CatalogIntegrityError(f"the vault object {key} is not a catalog record")
    return opened.plaintext


def _drop_cached_key(folder: Path | None, key_name: str) -> None:
    if folder is not None:
        with suppress(OSError):
            (folder / key_name[len(KEYS_PREFIX) :]).unlink(missing_ok=True)


def _cached_keys(folder: Path | None, key_name: str, passphrase: str) -> KeySet | None:
    """The keys of the cached copy of ``key_name`` if it unwraps as that key file; None: read the store."""
    if folder is None:
        return None
    key_id = key_name[len(KEYS_PREFIX) :]
    try:
        keys = unwrap_keyset((folder / key_id).read_bytes(), passphrase)
    except (OSError, ValueError, KeyError, TypeError, StrongroomError):
        return None  # absent, damaged or made under another passphrase: the store's copy decides
    return keys if keys.key_id == key_id else None


def _cache_key_file(folder: Path | None, key_name: str, wrapped: bytes) -> None:
    if folder is not None:
        with suppress(OSError):  # a cache that cannot be written costs a GET, nothing else
            write_private(folder / key_name[len(KEYS_PREFIX) :], wrapped)


def _check_record_key(key: str) -> None:
    if not key.startswith(RECORDS_PREFIX) or len(key) == len(RECORDS_PREFIX):
        raise StorageError(f"'{key}' is not a catalog record key (they live under {RECORDS_PREFIX})")
