"""Recovery point manifests and stream references (docs/vault-format.md §6)."""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from strongroom.errors import FormatError, IntegrityError, NotFoundError, StrongroomError
from strongroom.fsutil import write_private
from strongroom.vault import envelope
from strongroom.vault.envelope import Kind
from strongroom.vault.source import SourceRecord
from strongroom.vault.vault import Vault, manifest_key, open_stored

log = logging.getLogger(__name__)

MANIFEST_FORMAT = 1
CACHED_MANIFESTS = 64  # the home keeps this many of a vault's newest manifests (each a few KiB)
# chunk id, plaintext length, base chunk id (zeros: none), head and tail anchors (zeros: unknown)
INDEX_RECORD = struct.Struct(">32sI32s8s8s")
INDEX_RECORDS_PER_OBJECT = 16384  # 1.3 MiB of records per index object
NO_BASE = bytes(32)
NO_ANCHOR = bytes(8)


@dataclass(frozen=True)
class ChunkRef:
    """A chunk of a stream. ``base`` names the chunk it was delta-compressed against (it needs it);
    ``head`` and ``tail`` are keyed fingerprints of its first and last 64 bytes, used to find a
    similar chunk of the previous recovery point to delta-compress against."""

    id: bytes
    size: int
    base: bytes | None = None
    head: bytes = NO_ANCHOR
    tail: bytes = NO_ANCHOR


@dataclass(frozen=True)
class StreamRef:
    """A named byte stream: its length, chunk count and the index objects listing its chunks."""

    size: int
    chunk_count: int
    index: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "chunks": self.chunk_count, "index": [i.hex() for i in self.index]}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> StreamRef:
        return cls(int(raw["size"]), int(raw["chunks"]), tuple(bytes.fromhex(i) for i in raw["index"]))


@dataclass
class Manifest:
    vault_id: str
    recovery_point_id: str
    resource_id: str
    resource_type: str
    created_at: str
    completed_at: str
    chunker: dict[str, Any]
    streams: dict[str, StreamRef]
    metadata: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)
    source: SourceRecord | None = None  # a copy: what its source described (§6.4)
    format: int = MANIFEST_FORMAT

    def to_json(self) -> bytes:
        document = {
            "format": self.format,
            "vault_id": self.vault_id,
            "recovery_point_id": self.recovery_point_id,
            "resource": {"id": self.resource_id, "type": self.resource_type},
            "created_at": self.created_at,
            "completed_at": self.completed_at,
            "chunker": self.chunker,
            "streams": {name: ref.to_json() for name, ref in self.streams.items()},
            "metadata": self.metadata,
            "stats": self.stats,
        }
        if self.source is not None:
            document["source"] = self.source.to_json()
        return json.dumps(document, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        raw = json.loads(data)
        if raw.get("format") != MANIFEST_FORMAT:
            raise FormatError(f"manifest format {raw.get('format')} is unknown; this Strongroom reads 1")
        return cls(
            vault_id=raw["vault_id"],
            recovery_point_id=raw["recovery_point_id"],
            resource_id=raw["resource"]["id"],
            resource_type=raw["resource"]["type"],
            created_at=raw["created_at"],
            completed_at=raw["completed_at"],
            chunker=raw["chunker"],
            streams={name: StreamRef.from_json(ref) for name, ref in raw["streams"].items()},
            metadata=raw.get("metadata", {}),
            stats=raw.get("stats", {}),
            source=SourceRecord.from_json(raw["source"]) if raw.get("source") is not None else None,
        )


def seal_manifest(vault: Vault, manifest: Manifest) -> bytes:
    name = manifest_key(manifest.recovery_point_id).encode()
    return envelope.seal(vault.keys.encryption_key, Kind.MANIFEST, name, manifest.to_json())


def load_manifest(vault: Vault, recovery_point_id: str, *, cached: bool = False) -> Manifest:
    """The point's manifest from the vault, authenticated. ``cached``: from the home's cache when it holds it
    (a backup's or a copy's previous point: what it decides, chunk reuse, is checked against the store's
    objects again; a pushed copy's source point: every chunk it names is read from the store), else from the
    store, kept in the cache. Nothing that must prove the point exists in the store (verify, restore,
    collection, attach) reads the cache."""
    key = manifest_key(recovery_point_id)

    def opener(sealed: bytes) -> Manifest:
        opened = envelope.open_sealed(
            vault.keys.encryption_key, key.encode(), sealed, what=f"manifest of recovery point {recovery_point_id}"
        )
        if opened.kind != Kind.MANIFEST:
            raise IntegrityError(f"manifest of recovery point {recovery_point_id} has the wrong kind")
        manifest = Manifest.from_json(opened.plaintext)
        if manifest.recovery_point_id != recovery_point_id or manifest.vault_id != vault.config.vault_id:
            raise IntegrityError(f"manifest {key} belongs to another recovery point or vault")
        return manifest

    if cached and (found := _from_cache(vault, recovery_point_id, opener)) is not None:
        return found
    read: list[bytes] = []

    def keeping(sealed: bytes) -> Manifest:
        manifest = opener(sealed)
        read.append(sealed)
        return manifest

    try:
        manifest = open_stored(vault.store, key, keeping)
    except NotFoundError:
        raise NotFoundError(f"recovery point {recovery_point_id} has no manifest in the vault") from None
    if cached:
        cache_manifest(vault, recovery_point_id, read[-1])
    return manifest


def cache_manifest(vault: Vault, recovery_point_id: str, sealed: bytes) -> None:
    """Keep a manifest as stored in the home's cache (the newest CACHED_MANIFESTS); failing costs a GET later."""
    folder = vault.manifest_cache
    if folder is None or not _file_name(recovery_point_id):
        return
    try:
        write_private(folder / recovery_point_id, sealed)
        kept = sorted(folder.iterdir(), key=lambda path: path.stat().st_mtime_ns, reverse=True)
        for path in kept[CACHED_MANIFESTS:]:
            path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("manifest cache %s not written: %s", folder, exc)


def _from_cache(vault: Vault, recovery_point_id: str, opener: Callable[[bytes], Manifest]) -> Manifest | None:
    folder = vault.manifest_cache
    if folder is None or not _file_name(recovery_point_id):
        return None
    path = folder / recovery_point_id
    try:
        return opener(path.read_bytes())
    except OSError:
        return None
    except StrongroomError as exc:  # planted, damaged or from another vault: dropped, read from the store
        log.warning("cached manifest %s dropped: %s", path, exc.message)
        path.unlink(missing_ok=True)
        return None


def _file_name(recovery_point_id: str) -> bool:
    return bool(recovery_point_id) and "/" not in recovery_point_id and not recovery_point_id.startswith(".")


def encode_index(records: list[ChunkRef]) -> bytes:
    return b"".join(INDEX_RECORD.pack(ref.id, ref.size, ref.base or NO_BASE, ref.head, ref.tail) for ref in records)


def decode_index(data: bytes, what: str) -> Iterator[ChunkRef]:
    if len(data) % INDEX_RECORD.size:
        raise IntegrityError(f"{what} has a length that is not a whole number of records")
    for chunk_id, size, base, head, tail in INDEX_RECORD.iter_unpack(data):
        yield ChunkRef(chunk_id, size, None if base == NO_BASE else base, head, tail)
