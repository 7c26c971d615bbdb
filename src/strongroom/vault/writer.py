"""Writing a recovery point: the single writer of chunks, index objects and manifests.

Ordering rules (docs/vault-format.md §7), enforced here and nowhere else:

1. every chunk a stream references is stored before the index object that lists it;
2. every index object is stored before the manifest that names it;
3. the manifest is stored last; only then may the catalog call the recovery point COMPLETED.

A crash at any instant therefore leaves, at worst, chunks no manifest references (harmless,
collected later) and never a manifest that points at missing data.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO

from pyfastcdc import FastCDC

from strongroom.vault import envelope
from strongroom.vault.envelope import Kind
from strongroom.vault.manifest import (
    INDEX_RECORDS_PER_OBJECT,
    ChunkRef,
    Manifest,
    StreamRef,
    encode_index,
    seal_manifest,
)
from strongroom.vault.vault import Vault, chunk_key, manifest_key

MAX_IN_FLIGHT = 6  # chunks being sealed and written at once: bounds memory to ~6 x max chunk size

ProgressCallback = Callable[[int], None]


@dataclass
class WriteStats:
    source_bytes: int = 0
    stored_bytes: int = 0  # sealed size of every distinct chunk this recovery point references
    new_bytes: int = 0  # sealed size of the objects this backup added to the vault
    chunks: int = 0
    new_chunks: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class StreamBuilder:
    """Collects the chunk references of one named stream, writing index objects as it goes."""

    writer: RecoveryPointWriter
    size: int = 0
    chunk_count: int = 0
    pending: list[ChunkRef] = field(default_factory=list)
    index: list[bytes] = field(default_factory=list)

    def write_from(self, reader: BinaryIO) -> list[ChunkRef]:
        """Chunk everything ``reader`` yields into this stream; returns the new references."""
        refs = []
        for piece in self.writer.chunker.cut_stream(reader):
            refs.append(self.writer.store_chunk(bytes(piece.data)))
        self.append_refs(refs)
        return refs

    def write_bytes(self, data: bytes) -> list[ChunkRef]:
        refs = [self.writer.store_chunk(bytes(piece.data)) for piece in self.writer.chunker.cut_buf(data)]
        self.append_refs(refs)
        return refs

    def append_refs(self, refs: Iterable[ChunkRef]) -> None:
        for ref in refs:
            self.pending.append(ref)
            self.size += ref.size
            self.chunk_count += 1
            if len(self.pending) >= INDEX_RECORDS_PER_OBJECT:
                self._flush_index()

    def _flush_index(self) -> None:
        if self.pending:
            self.index.append(self.writer.store_object(encode_index(self.pending), Kind.INDEX))
            self.pending = []

    def finish(self) -> StreamRef:
        self._flush_index()
        return StreamRef(self.size, self.chunk_count, tuple(self.index))


class RecoveryPointWriter:
    """Stores the streams of one recovery point and finally its manifest."""

    def __init__(self, vault: Vault, recovery_point_id: str, progress: ProgressCallback | None = None) -> None:
        self.vault = vault
        self.recovery_point_id = recovery_point_id
        self.created_at = datetime.now(UTC).isoformat()
        settings = vault.config.chunker
        self.chunker = FastCDC(
            settings.avg_size,
            min_size=settings.min_size,
            max_size=settings.max_size,
            seed=vault.keys.chunker_seed,
        )
        self.stats = WriteStats()
        self.streams: dict[str, StreamRef] = {}
        self._progress = progress
        self._referenced: set[bytes] = set()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="strongroom-seal")
        self._in_flight: deque[Future[None]] = deque()

    # Streams ---------------------------------------------------------------------------------
    def stream(self) -> StreamBuilder:
        return StreamBuilder(self)

    def add_stream(self, name: str, builder: StreamBuilder) -> StreamRef:
        ref = builder.finish()
        self.streams[name] = ref
        return ref

    def store_stream(self, name: str, reader: BinaryIO) -> StreamRef:
        builder = self.stream()
        builder.write_from(reader)
        return self.add_stream(name, builder)

    # Chunks ----------------------------------------------------------------------------------
    def store_chunk(self, data: bytes) -> ChunkRef:
        chunk_id = self.vault.chunk_id(data)
        self.stats.source_bytes += len(data)
        self.stats.chunks += 1
        if self._progress:
            self._progress(len(data))
        if chunk_id not in self._referenced:
            self._referenced.add(chunk_id)
            self._submit(self._store_if_absent, chunk_id, data, Kind.CHUNK)
        return ChunkRef(chunk_id, len(data))

    def reference_existing(self, refs: Iterable[ChunkRef]) -> bool:
        """Count already stored chunks (an unchanged file) into this recovery point.

        Returns False when one of them is missing from the vault, so the caller re-reads the data.
        """
        refs = list(refs)
        sizes = []
        for ref in refs:
            if ref.id in self._referenced:
                sizes.append(0)
                continue
            size = self.vault.store.head(chunk_key(ref.id))
            if size is None:
                return False
            sizes.append(size)
        for ref, size in zip(refs, sizes, strict=True):
            if ref.id not in self._referenced:
                self._referenced.add(ref.id)
                with self._lock:
                    self.stats.stored_bytes += size
            self.stats.source_bytes += ref.size
            self.stats.chunks += 1
            if self._progress:
                self._progress(ref.size)
        return True

    def store_object(self, plaintext: bytes, kind: Kind) -> bytes:
        object_id = self.vault.chunk_id(plaintext)
        if object_id not in self._referenced:
            self._referenced.add(object_id)
            self._submit(self._store_if_absent, object_id, plaintext, kind)
        return object_id

    def _submit(self, fn: Callable[..., None], *args: Any) -> None:
        while len(self._in_flight) >= MAX_IN_FLIGHT:
            self._in_flight.popleft().result()
        self._in_flight.append(self._pool.submit(fn, *args))

    def _store_if_absent(self, object_id: bytes, plaintext: bytes, kind: Kind) -> None:
        key = chunk_key(object_id)
        store = self.vault.store
        existing = store.head(key)
        if existing is None:
            sealed = envelope.seal(self.vault.keys.encryption_key, kind, object_id, plaintext)
            written = store.put(key, sealed, if_absent=True)
            size = len(sealed) if written else (store.head(key) or 0)
            with self._lock:
                self.stats.stored_bytes += size
                if written:
                    self.stats.new_bytes += len(sealed)
                    self.stats.new_chunks += 1
        else:
            with self._lock:
                self.stats.stored_bytes += existing

    def drain(self) -> None:
        while self._in_flight:
            self._in_flight.popleft().result()

    # Commit ----------------------------------------------------------------------------------
    def commit(self, resource_id: str, resource_type: str, metadata: dict[str, Any]) -> Manifest:
        self.drain()
        manifest = Manifest(
            vault_id=self.vault.config.vault_id,
            recovery_point_id=self.recovery_point_id,
            resource_id=resource_id,
            resource_type=resource_type,
            created_at=self.created_at,
            completed_at=datetime.now(UTC).isoformat(),
            chunker=asdict(self.vault.config.chunker),
            streams=dict(self.streams),
            metadata=metadata,
            stats=self.stats.as_dict(),
        )
        sealed = seal_manifest(self.vault, manifest)
        self.vault.store.put(manifest_key(self.recovery_point_id), sealed, if_absent=True)
        self.stats.new_bytes += len(sealed)
        return manifest

    def close(self) -> None:
        try:
            self.drain()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> RecoveryPointWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        else:
            self.close()
