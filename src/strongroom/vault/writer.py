"""Writing a recovery point: the single writer of chunks, index objects and manifests.

Ordering rules (docs/vault-format.md §7), enforced here and nowhere else:

1. every chunk a stream references is stored before the index object that lists it;
2. every index object is stored before the manifest that names it;
3. the manifest is stored last; only then may the catalog call the recovery point COMPLETED.

A crash at any instant therefore leaves, at worst, chunks no manifest references (harmless,
collected later) and never a manifest that points at missing data.

Delta compression: a new chunk whose first or last 64 bytes match a chunk of the previous recovery
point (``previous``) is compressed with that chunk as a zstd dictionary. A table whose rows moved
around (an UPDATE of scattered rows) changes every chunk a little; stored as deltas, the second
backup costs kilobytes per chunk instead of the whole chunk.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import blake3
from pyfastcdc import BinaryStreamReader, FastCDC

from strongroom.clock import now
from strongroom.errors import IntegrityError
from strongroom.faults import fault_point
from strongroom.store.base import Retention
from strongroom.vault import envelope
from strongroom.vault.envelope import Compression, Kind
from strongroom.vault.manifest import (
    INDEX_RECORDS_PER_OBJECT,
    NO_ANCHOR,
    ChunkRef,
    Manifest,
    StreamRef,
    cache_manifest,
    decode_index,
    encode_index,
    seal_manifest,
)
from strongroom.vault.reader import fetch_sealed, object_base, read_object
from strongroom.vault.retention import RetentionKeeper, vault_root_keys
from strongroom.vault.source import SourceRecord
from strongroom.vault.vault import Vault, manifest_key

MAX_IN_FLIGHT = 6  # chunks being sealed and written at once: bounds memory to ~6 x max chunk size (more on S3)
ANCHOR_BYTES = 64
ANCHOR_CONTEXT = "strongroom 2026-11 chunk anchor v1"
AMBIGUOUS = -1
PREVIOUS_INDEXES_PER_FETCH = 16  # index objects (up to 1.3 MiB each) fetched together when a backup starts

ProgressCallback = Callable[[int], None]


@dataclass
class WriteStats:
    source_bytes: int = 0
    stored_bytes: int = 0  # sealed size of every distinct object this recovery point needs (bases included)
    new_bytes: int = 0  # sealed size of the objects this backup added to the vault
    chunks: int = 0
    new_chunks: int = 0
    delta_chunks: int = 0

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

    def write_from(self, reader: BinaryStreamReader) -> list[ChunkRef]:
        """Chunk everything ``reader`` yields into this stream; returns the new references."""
        refs = [self.writer.store_chunk(bytes(piece.data)) for piece in self.writer.chunker.cut_stream(reader)]
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
            final = [self.writer.final_ref(ref) for ref in self.pending]
            self.index.append(self.writer.store_object(encode_index(final), Kind.INDEX))
            self.pending = []

    def finish(self) -> StreamRef:
        self._flush_index()
        return StreamRef(self.size, self.chunk_count, tuple(self.index))


class RecoveryPointWriter:
    """Stores the streams of one recovery point and finally its manifest."""

    def __init__(
        self,
        vault: Vault,
        recovery_point_id: str,
        progress: ProgressCallback | None = None,
        previous: Manifest | None = None,
        retention: Retention | None = None,
    ) -> None:
        """``retention``: on a store with Object Lock, what every object this point needs must hold (each
        object written gets it, each already stored one is extended to it: docs/vault-format.md)."""
        self.vault = vault
        self.retention = retention
        self.keeper = RetentionKeeper(vault.store, retention) if retention is not None else None
        self.recovery_point_id = recovery_point_id
        self.created_at = now().isoformat()
        settings = vault.config.chunker
        self.chunker = FastCDC(
            settings.avg_size, min_size=settings.min_size, max_size=settings.max_size, seed=vault.keys.chunker_seed
        )
        self.stats = WriteStats()
        self.streams: dict[str, StreamRef] = {}
        self._progress = progress
        self._anchor_key = blake3.blake3(vault.keys.id_key, derive_key_context=ANCHOR_CONTEXT).digest()
        self._previous = previous
        self._previous_refs: dict[bytes, ChunkRef] | None = None
        self._previous_order: list[ChunkRef] = []
        self._position: dict[bytes, int] = {}  # chunk id -> position in the previous recovery point
        self._by_anchor: dict[bytes, int] = {}  # anchor -> position; AMBIGUOUS when it names several
        self._last_position = -1
        self._final: dict[bytes, ChunkRef] = {}  # every chunk this recovery point references
        self._futures: dict[bytes, Future[ChunkRef]] = {}
        self._bases_counted: set[bytes] = set()
        self._lock = threading.Lock()
        # One worker per request the store keeps in flight (2 on a disk, 16 on S3): a worker seals a chunk,
        # then waits on the store's answer, which on S3 is a network round trip.
        workers = max(2, vault.store.concurrency)
        self._max_in_flight = max(MAX_IN_FLIGHT, workers + 2)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="strongroom-seal")
        self._in_flight: deque[Future[ChunkRef]] = deque()
        self._conditional_writes: bool | None = None
        # Where chunks and index objects go: one object each (format 1) or packs (format 2, vault/packs.py).
        self._objects = vault.objects.session(retention, self.keeper)

    # Streams ---------------------------------------------------------------------------------
    def stream(self) -> StreamBuilder:
        return StreamBuilder(self)

    def add_stream(self, name: str, builder: StreamBuilder) -> StreamRef:
        ref = builder.finish()
        self.streams[name] = ref
        return ref

    def store_stream(self, name: str, reader: BinaryStreamReader) -> StreamRef:
        builder = self.stream()
        builder.write_from(reader)
        return self.add_stream(name, builder)

    # Chunks ----------------------------------------------------------------------------------
    def store_chunk(self, data: bytes) -> ChunkRef:
        """Store one chunk (unless the vault has it); returns its reference at once."""
        ref = ChunkRef(
            self.vault.chunk_id(data),
            len(data),
            None,
            self._anchor(data[:ANCHOR_BYTES]),
            self._anchor(data[-ANCHOR_BYTES:]),
        )
        self.stats.source_bytes += len(data)
        self.stats.chunks += 1
        if self._progress:
            self._progress(len(data))
        candidate = self._similar_previous_chunk(ref)
        if ref.id not in self._final and ref.id not in self._futures:
            self._futures[ref.id] = self._submit(self._store_chunk, ref, data, candidate)
        return ref

    def reference_existing(self, refs: Iterable[ChunkRef]) -> bool:
        """Count already stored chunks (an unchanged file) into this recovery point.

        Returns False when one of them is missing from the vault, so the caller re-reads the data.
        """
        refs = list(refs)
        found = self.stored_sizes(ref.id for ref in refs if ref.id not in self._final and ref.id not in self._futures)
        sizes = {object_id: size for object_id, size in found.items() if size is not None}
        if len(sizes) < len(found):
            return False
        for ref in refs:
            if ref.id in sizes and ref.id not in self._final:
                self._final[ref.id] = self._count_base(self._resolve_existing(ref))
                with self._lock:
                    self.stats.stored_bytes += sizes[ref.id]
            self.stats.source_bytes += ref.size
            self.stats.chunks += 1
            if self._progress:
                self._progress(ref.size)
        return True

    def stored_sizes(self, object_ids: Iterable[bytes]) -> dict[bytes, int | None]:
        """Size of each stored chunk or index object (None: absent), with as many HEADs in flight as the store
        takes: on S3 one at a time would cost a round trip per chunk of an unchanged file or a copied point."""
        ids = list(dict.fromkeys(object_ids))
        return dict(zip(ids, self._pool.map(self._stored_size, ids), strict=True))

    def final_ref(self, ref: ChunkRef) -> ChunkRef:
        """The reference as the index records it: with the base the stored object really uses."""
        future = self._futures.pop(ref.id, None)
        if future is not None:
            self._final[ref.id] = future.result()
        elif ref.id not in self._final:
            self._final[ref.id] = self._count_base(self._resolve_existing(ref))
        return self._final[ref.id]

    def store_object(self, plaintext: bytes, kind: Kind) -> bytes:
        """Store an index object (never delta-compressed); returns its id."""
        object_id = self.vault.chunk_id(plaintext)
        if object_id not in self._final and object_id not in self._futures:
            ref = ChunkRef(object_id, len(plaintext))
            self._futures[object_id] = self._submit(self._store_plain, ref, plaintext, kind)
        return object_id

    def _anchor(self, data: bytes) -> bytes:
        return blake3.blake3(data, key=self._anchor_key).digest(8)

    def _submit(self, fn: Callable[..., ChunkRef], *args: Any) -> Future[ChunkRef]:
        while len(self._in_flight) >= self._max_in_flight:
            self._in_flight.popleft().result()
        future = self._pool.submit(fn, *args)
        self._in_flight.append(future)
        return future

    def _stored_size(self, object_id: bytes) -> int | None:
        """Size of the stored object (None: absent). Under a retention, what holds it is extended to this point's
        (format 1: the HEAD dedup makes anyway reads the date; format 2: one HEAD per pack reused)."""
        return self._objects.stored_size(object_id)

    def _store_chunk(self, ref: ChunkRef, data: bytes, candidate: ChunkRef | None) -> ChunkRef:
        existing = self._stored_size(ref.id)
        if existing is not None:
            self._count(existing, written=False)
            return self._count_base(self._resolve_existing(ref))
        base = self._delta_base(ref, candidate)
        compression, body = envelope.compress_body(data, base)
        sealed = envelope.seal_body(self.vault.keys.encryption_key, Kind.CHUNK, ref.id, compression, body)
        if not self._objects.put(ref.id, sealed):  # a concurrent backup was first
            self._count(self._stored_size(ref.id) or 0, written=False)
            return self._count_base(self._resolve_existing(ref))
        fault_point("write:after-new-chunk")  # crash tests: a chunk written, no manifest names it yet
        delta = compression == Compression.ZSTD_DELTA
        self._count(len(sealed), written=True, delta=delta)
        final = replace(ref, base=base[0] if base and delta else None)
        self._count_base(final)
        return final

    def _store_plain(self, ref: ChunkRef, plaintext: bytes, kind: Kind) -> ChunkRef:
        existing = self._stored_size(ref.id)
        if existing is None:
            sealed = envelope.seal(self.vault.keys.encryption_key, kind, ref.id, plaintext)
            written = self._objects.put(ref.id, sealed)
            self._count(len(sealed) if written else (self._stored_size(ref.id) or 0), written=written)
        else:
            self._count(existing, written=False)
        return ref

    def _count_base(self, ref: ChunkRef) -> ChunkRef:
        """A delta chunk's base is part of what the recovery point needs: count it once in stored_bytes."""
        if ref.base is not None:
            with self._lock:
                if ref.base in self._bases_counted or ref.base in self._final:
                    return ref
                self._bases_counted.add(ref.base)
            self._count(self._stored_size(ref.base) or 0, written=False)
        return ref

    def _count(self, size: int, *, written: bool, delta: bool = False) -> None:
        with self._lock:
            self.stats.stored_bytes += size
            if written:
                self.stats.new_bytes += size
                self.stats.new_chunks += 1
                self.stats.delta_chunks += int(delta)

    # Delta bases -----------------------------------------------------------------------------
    def _similar_previous_chunk(self, ref: ChunkRef) -> ChunkRef | None:
        """The chunk of the previous recovery point this one most likely evolved from.

        A unique head or tail anchor names it; otherwise the successor of the last chunk matched,
        since streams change in place and keep their order (a table dump, a tar of files).
        """
        self._previous_chunks()
        position = self._position.get(ref.id)
        if position is None:
            for anchor in (ref.head, ref.tail):
                found = self._by_anchor.get(anchor, AMBIGUOUS) if anchor != NO_ANCHOR else AMBIGUOUS
                if found != AMBIGUOUS:
                    position = found
                    break
        if position is None and 0 <= self._last_position + 1 < len(self._previous_order):
            position = self._last_position + 1
        if position is None:
            return None
        self._last_position = position
        return self._previous_order[position]

    def _delta_base(self, ref: ChunkRef, candidate: ChunkRef | None) -> tuple[bytes, bytes] | None:
        """The whole chunk to delta-compress against: (id, verified plaintext), or None."""
        if candidate is None or not self._deltas_safe():
            return None
        base_id = candidate.base or candidate.id
        if base_id == ref.id:
            return None
        try:
            return base_id, read_object(self.vault, base_id, Kind.CHUNK, as_base=True)
        except IntegrityError:
            return None  # a damaged or missing base, or a delta: store the chunk whole

    def _deltas_safe(self) -> bool:
        """Delta chunks need an atomic put-if-absent: two racing writers of one chunk may pick different
        bases, and only the winner's may be recorded (the collector keeps the base the index names). A store
        without it (an S3 server ignoring If-None-Match, docs/storage.md) gets whole chunks only."""
        if self._conditional_writes is None:
            self._conditional_writes = self.vault.store.conditional_writes_supported()
        return self._conditional_writes

    def _resolve_existing(self, ref: ChunkRef) -> ChunkRef:
        """The full reference of a chunk already in the vault (which base it needs, if any)."""
        known = self._previous_chunks().get(ref.id)
        if known is not None:
            return known
        return replace(ref, base=object_base(self.vault, ref.id))

    def _previous_chunks(self) -> dict[bytes, ChunkRef]:
        with self._lock:
            if self._previous_refs is None:
                self._previous_refs = self._load_previous()
            return self._previous_refs

    def _load_previous(self) -> dict[bytes, ChunkRef]:
        refs: dict[bytes, ChunkRef] = {}
        if self._previous is None:
            return refs
        index_ids = [index_id for stream in self._previous.streams.values() for index_id in stream.index]
        sealed: dict[bytes, bytes] = {}
        for number, index_id in enumerate(index_ids):
            if number % PREVIOUS_INDEXES_PER_FETCH == 0:  # a few coalesced GETs (packed vaults), not one each
                sealed = fetch_sealed(self.vault, index_ids[number : number + PREVIOUS_INDEXES_PER_FETCH])
            data = read_object(self.vault, index_id, Kind.INDEX, prefetched=sealed.get(index_id))
            for ref in decode_index(data, f"index object {index_id.hex()}"):
                refs[ref.id] = ref
                position = len(self._previous_order)
                self._previous_order.append(ref)
                self._position.setdefault(ref.id, position)
                for anchor in {ref.head, ref.tail} - {NO_ANCHOR}:
                    self._by_anchor[anchor] = AMBIGUOUS if anchor in self._by_anchor else position
        return refs

    def drain(self) -> None:
        while self._in_flight:
            self._in_flight.popleft().result()

    # Commit ----------------------------------------------------------------------------------
    def commit(
        self, resource_id: str, resource_type: str, metadata: dict[str, Any], source: SourceRecord | None = None
    ) -> Manifest:
        self.drain()
        manifest = Manifest(
            vault_id=self.vault.config.vault_id,
            recovery_point_id=self.recovery_point_id,
            resource_id=resource_id,
            resource_type=resource_type,
            created_at=self.created_at,
            completed_at=now().isoformat(),
            chunker=asdict(self.vault.config.chunker),
            streams=dict(self.streams),
            metadata=metadata,
            stats=self.stats.as_dict(),
            source=source,
        )
        sealed = seal_manifest(self.vault, manifest)
        self._objects.flush()  # rule 2: every chunk and index object (and pack) is durable before the manifest
        if self.keeper is not None:  # the keys and config open every point: they last as long as the latest
            for key in vault_root_keys(self.vault.store):
                self.keeper.ensure(key)
            held, wanted = self.vault.record_retention, self.keeper.wanted
            self.vault.record_retention = wanted if held is None else held.at_least(wanted)
        fault_point("write:before-manifest")
        if self.vault.store.put(manifest_key(self.recovery_point_id), sealed, if_absent=True, retention=self.retention):
            cache_manifest(self.vault, self.recovery_point_id, sealed)  # the next backup's previous point
        fault_point("write:after-manifest")  # crash tests: committed in the vault, not yet in the catalog
        self.stats.new_bytes += len(sealed)
        return manifest

    def close(self) -> None:
        try:
            self.drain()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._objects.close()

    def __enter__(self) -> RecoveryPointWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._objects.close()
        else:
            self.close()
