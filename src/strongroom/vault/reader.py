"""Reading recovery points back: every chunk is authenticated and re-hashed before use."""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from strongroom.errors import IntegrityError, StrongroomError
from strongroom.faults import fault_point
from strongroom.vault import envelope
from strongroom.vault.envelope import Kind
from strongroom.vault.manifest import ChunkRef, Manifest, StreamRef, decode_index
from strongroom.vault.vault import Vault

T = TypeVar("T")
# What a reader's worker makes of one chunk: (its ref, its sealed bytes as fetched, the batch's sealed bytes).
ChunkOpener = Callable[[ChunkRef, bytes | None, Mapping[bytes, bytes] | None], T]

READ_AHEAD = 6
BATCH_SEALED = 8 * 1024 * 1024  # packed vaults: sealed bytes fetched as one batch (held until its chunks are read)
BATCH_REFS = 4096
PACKED_READ_AHEAD = 2  # batches fetched ahead: a restore holds about 3 x BATCH_SEALED of sealed bytes and bases
COALESCE_SPAN = 8 * 1024 * 1024  # sealed bytes one ranged GET of a pack may fetch for several chunks
SPAN_GAP = 1024 * 1024  # unwanted bytes one such GET may read between two wanted objects


class RecoveryPointReader:
    def __init__(self, vault: Vault, manifest: Manifest) -> None:
        self.vault = vault
        self.manifest = manifest
        self._workers = max(2, vault.store.concurrency)  # parallel GETs: S3 reads are network round trips
        self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="strongroom-open")
        self._window = max(READ_AHEAD, self._workers + 2)  # chunks opened ahead (format 1: GETs), per worker + 2
        self._batch_pool = ThreadPoolExecutor(max_workers=PACKED_READ_AHEAD, thread_name_prefix="strongroom-batch")
        # Batches an iteration fetched (or was fetching) when its consumer stopped early, e.g. a restore that read
        # a dump's table of contents before reading the whole dump: the next iteration takes them over.
        self._leftover: dict[tuple[bytes, ...], Future[dict[bytes, bytes]]] = {}

    def close(self) -> None:
        self._leftover = {}
        self._batch_pool.shutdown(wait=False, cancel_futures=True)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> RecoveryPointReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stream_ref(self, name: str) -> StreamRef:
        try:
            return self.manifest.streams[name]
        except KeyError:
            raise IntegrityError(f"recovery point {self.manifest.recovery_point_id} has no stream '{name}'") from None

    def iter_refs(self, stream: StreamRef) -> Iterator[ChunkRef]:
        count = 0
        for index_id in stream.index:
            data = read_object(self.vault, index_id, Kind.INDEX)
            for ref in decode_index(data, f"index object {index_id.hex()}"):
                count += 1
                yield ref
        if count != stream.chunk_count:
            raise IntegrityError(f"stream lists {count} chunks but its manifest says {stream.chunk_count}")

    def iter_chunk_data(self, refs: Iterable[ChunkRef]) -> Iterator[bytes]:
        """Verified plaintext of each chunk in order, opened a few chunks ahead (one per worker, plus two). In a
        format-1 vault each is one GET; in a packed vault the sealed bytes come in batches of coalesced ranged
        GETs, their delta bases too (:meth:`_fetch_batch`)."""
        for ref, data in self.iter_opened(refs, self._plaintext):
            if len(data) != ref.size:
                raise IntegrityError(f"chunk {ref.id.hex()} has {len(data)} bytes, its index says {ref.size}")
            yield data

    def iter_opened(self, refs: Iterable[ChunkRef], opener: ChunkOpener[T]) -> Iterator[tuple[ChunkRef, T]]:
        """``opener(ref, prefetched, sealed_bases)`` of each chunk in order, run in the reader's workers a few
        chunks ahead, with the sealed bytes the batch fetched (None in a format-1 vault)."""
        window: deque[tuple[ChunkRef, Future[T]]] = deque()
        delivered = 0
        for ref, sealed in self._sealed_ahead(refs):
            prefetched = None if sealed is None else sealed.get(ref.id)
            window.append((ref, self._pool.submit(opener, ref, prefetched, sealed)))
            if len(window) >= self._window:
                delivered = _fault_after_first(delivered)
                done, future = window.popleft()
                yield done, future.result()
        while window:
            delivered = _fault_after_first(delivered)
            done, future = window.popleft()
            yield done, future.result()

    def _plaintext(self, ref: ChunkRef, prefetched: bytes | None, sealed: Mapping[bytes, bytes] | None) -> bytes:
        return read_object(self.vault, ref.id, Kind.CHUNK, prefetched=prefetched, sealed_bases=sealed)

    def _sealed_ahead(self, refs: Iterable[ChunkRef]) -> Iterator[tuple[ChunkRef, dict[bytes, bytes] | None]]:
        """Each ref with the sealed bytes its batch fetched (None in a format-1 vault: read one by one)."""
        if not self.vault.objects.packed:
            for ref in refs:
                yield ref, None
            return
        batches: deque[tuple[list[ChunkRef], Future[dict[bytes, bytes]]]] = deque()
        leftover, self._leftover = self._leftover, {}
        try:
            for batch in _batches(self.vault, refs):
                fetched = leftover.pop(tuple(ref.id for ref in batch), None)
                batches.append((batch, fetched or self._batch_pool.submit(self._fetch_batch, batch)))
                if len(batches) >= PACKED_READ_AHEAD:
                    yield from self._batch_refs(batches)
            while batches:
                yield from self._batch_refs(batches)
        except GeneratorExit:  # the consumer stopped early: keep what was fetched for the next iteration
            self._leftover = {tuple(ref.id for ref in batch): future for batch, future in batches}
            raise

    def _batch_refs(
        self, batches: deque[tuple[list[ChunkRef], Future[dict[bytes, bytes]]]]
    ) -> Iterator[tuple[ChunkRef, dict[bytes, bytes]]]:
        """The first batch's refs with its sealed bytes; it stays first in ``batches`` until all are handed out
        (so an iteration stopped in its middle leaves it to the next one)."""
        done, sealed = batches[0]
        for ref in done:
            yield ref, sealed.result()
        batches.popleft()

    def _fetch_batch(self, batch: list[ChunkRef]) -> dict[bytes, bytes]:
        """Sealed bytes of the batch's chunks in coalesced ranges, then of the bases its delta chunks need (also
        coalesced). Nothing is trusted here: read_object authenticates each, and a missing or failed range falls
        back to a plain read of the object, which tries every copy."""
        ids = list(dict.fromkeys(ref.id for ref in batch))
        sealed = self._fetch(ids)
        bases = {base for base in (_delta_base(self.vault, i, sealed.get(i)) for i in ids) if base}
        fetched_bases = self._fetch([base for base in bases if base not in sealed])
        self.vault.objects.keep_along(fetched_bases)  # a copy's frame encoder reads them again (wire.FrameEncoder)
        sealed.update(fetched_bases)
        return sealed

    def _fetch(self, ids: list[bytes]) -> dict[bytes, bytes]:
        found, wanted = _fetched_along(self.vault, ids)
        for part in self._pool.map(self.vault.objects.fetch_span, _spans(self.vault, wanted)):
            found.update(part)
        return found

    def open_stream(self, name: str) -> io.BufferedReader:
        return io.BufferedReader(_ChunkStream(self.iter_stream(name)), 1 << 20)

    def iter_stream(self, name: str) -> Iterator[bytes]:
        """The verified chunks of stream ``name`` in order; raises if they do not add up to its size."""
        stream = self.stream_ref(name)
        delivered = 0
        for data in self.iter_chunk_data(self.iter_refs(stream)):
            delivered += len(data)
            yield data
        if delivered != stream.size:
            raise IntegrityError(f"stream ended after {delivered} bytes, manifest says {stream.size}")


def _fault_after_first(delivered: int) -> int:
    """Count a delivered chunk; the crash tests' point ``read:after-first-chunk`` fires before the second,
    once the consumer has used the first (a restore has written some of its target)."""
    if delivered == 1:
        fault_point("read:after-first-chunk")
    return delivered + 1


def object_base(vault: Vault, object_id: bytes) -> bytes | None:
    """The base a stored chunk was delta-compressed against (authenticated, not decompressed)."""

    def opener(sealed: bytes, what: str) -> bytes | None:
        return envelope.open_sealed(vault.keys.encryption_key, object_id, sealed, what=what).base_id

    return vault.objects.open(object_id, opener)


def _batches(vault: Vault, refs: Iterable[ChunkRef]) -> Iterator[list[ChunkRef]]:
    """Consecutive refs, up to BATCH_SEALED bytes as stored (what a batch's fetch holds) and BATCH_REFS refs."""
    batch: list[ChunkRef] = []
    size = 0
    for ref in refs:
        spot = vault.objects.committed(ref.id)
        stored = spot.length if spot is not None else ref.size
        if batch and (size + stored > BATCH_SEALED or len(batch) >= BATCH_REFS):
            yield batch
            batch, size = [], 0
        batch.append(ref)
        size += stored
    if batch:
        yield batch


def fetch_sealed(vault: Vault, ids: Iterable[bytes]) -> dict[bytes, bytes]:
    """Sealed bytes of these objects in coalesced ranged GETs where the vault packs them ({} otherwise): to
    pass to :func:`read_object` as ``prefetched``, which authenticates them all the same."""
    if not vault.objects.packed:
        return {}
    found, wanted = _fetched_along(vault, ids)
    for span in _spans(vault, wanted):
        found.update(vault.objects.fetch_span(span))
    return found


def _fetched_along(vault: Vault, ids: Iterable[bytes]) -> tuple[dict[bytes, bytes], list[bytes]]:
    """Sealed bytes of the ids an earlier read of the vault fetched along already, and the ids still wanted:
    no stored byte is fetched twice while it is in the read-ahead cache."""
    found: dict[bytes, bytes] = {}
    wanted = []
    for object_id in dict.fromkeys(ids):
        piece = vault.objects.fetched_along(object_id)
        if piece is None:
            wanted.append(object_id)
        else:
            found[object_id] = piece
    return found, wanted


def _spans(vault: Vault, ids: list[bytes]) -> list[list[bytes]]:
    """The ids grouped into ranges worth one GET each: one pack, in offset order, gaps of at most SPAN_GAP
    holding nothing fetched already, and at most COALESCE_SPAN bytes in all. An id no pack index lists is a
    range of its own."""
    by_pack: dict[str, list[tuple[int, int, bytes]]] = {}
    spans: list[list[bytes]] = []
    for object_id in ids:
        spot = vault.objects.committed(object_id)
        if spot is None:
            spans.append([object_id])
        else:
            by_pack.setdefault(spot.pack_id, []).append((spot.offset, spot.offset + spot.length, object_id))
    for pack_id, spots in by_pack.items():
        spots.sort()
        current: list[bytes] = []
        start = end = 0
        for offset, stop, object_id in spots:
            if current and (
                offset - end > SPAN_GAP
                or stop - start > COALESCE_SPAN
                or vault.objects.fetched_between(pack_id, end, offset)  # never fetch those bytes twice
            ):
                spans.append(current)
                current = []
            if not current:
                start = offset
            current.append(object_id)
            end = max(end, stop) if len(current) > 1 else stop
        if current:
            spans.append(current)
    return spans


def _delta_base(vault: Vault, object_id: bytes, sealed: bytes | None) -> bytes | None:
    """The base a fetched delta chunk needs (None for a whole chunk, or one that does not open: reported later)."""
    if sealed is None or len(sealed) < envelope.HEADER_SIZE or sealed[6] != envelope.Compression.ZSTD_DELTA:
        return None
    try:
        return envelope.open_sealed(vault.keys.encryption_key, object_id, sealed, what="chunk").base_id
    except StrongroomError:
        return None


def read_object(
    vault: Vault,
    object_id: bytes,
    kind: Kind,
    *,
    as_base: bool = False,
    prefetched: bytes | None = None,
    sealed_bases: Mapping[bytes, bytes] | None = None,
) -> bytes:
    """Fetch, authenticate, decompress and re-hash one content-addressed object.

    A delta-compressed chunk is rebuilt from its base chunk, which must itself be a whole chunk.
    ``prefetched``: its sealed bytes as a coalesced read found them (tried first, authenticated all the same);
    ``sealed_bases``: sealed bytes fetched already, where a delta's base is looked for first (and authenticated).
    """

    def opener(sealed: bytes, what: str) -> bytes:
        def load_base(base_id: bytes) -> bytes:
            if as_base:
                raise IntegrityError(f"{what} is a delta used as a base (chains are not allowed)")
            found = sealed_bases.get(base_id) if sealed_bases is not None else None
            return read_object(vault, base_id, Kind.CHUNK, as_base=True, prefetched=found)

        opened = envelope.open_sealed(vault.keys.encryption_key, object_id, sealed, what=what, base_loader=load_base)
        if opened.kind != kind:
            raise IntegrityError(f"{what} is a {opened.kind.name.lower()}, expected a {kind.name.lower()}")
        if vault.chunk_id(opened.plaintext) != object_id:
            raise IntegrityError(f"{what} does not hash to its id (damaged or forged)")
        return opened.plaintext

    return vault.objects.open(object_id, opener, prefetched=prefetched)


class _ChunkStream(io.RawIOBase):
    """A read-only file object over an iterator of verified chunks."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = memoryview(b"")

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            close = getattr(self._chunks, "close", None)
            if close is not None:  # a generator: it hands what it fetched ahead to the next iteration
                close()
        super().close()

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buffer:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._buffer = memoryview(chunk)
        count = min(len(target), len(self._buffer))
        target[:count] = self._buffer[:count]
        self._buffer = self._buffer[count:]
        return count
