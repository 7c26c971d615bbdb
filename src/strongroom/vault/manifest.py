"""Recovery point manifests and stream references (docs/vault-format.md §6)."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from strongroom.errors import FormatError, IntegrityError, NotFoundError
from strongroom.vault import envelope
from strongroom.vault.envelope import Kind
from strongroom.vault.source import SourceRecord
from strongroom.vault.vault import Vault, manifest_key, open_stored

MANIFEST_FORMAT = 1
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


def load_manifest(vault: Vault, recovery_point_id: str) -> Manifest:
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

    try:
        return open_stored(vault.store, key, opener)
    except NotFoundError:
        raise NotFoundError(f"recovery point {recovery_point_id} has no manifest in the vault") from None


def encode_index(records: list[ChunkRef]) -> bytes:
    return b"".join(INDEX_RECORD.pack(ref.id, ref.size, ref.base or NO_BASE, ref.head, ref.tail) for ref in records)


def decode_index(data: bytes, what: str) -> Iterator[ChunkRef]:
    if len(data) % INDEX_RECORD.size:
        raise IntegrityError(f"{what} has a length that is not a whole number of records")
    for chunk_id, size, base, head, tail in INDEX_RECORD.iter_unpack(data):
        yield ChunkRef(chunk_id, size, None if base == NO_BASE else base, head, tail)
