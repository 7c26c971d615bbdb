"""Reading recovery points back: every chunk is authenticated and re-hashed before use."""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from strongroom.errors import IntegrityError
from strongroom.faults import fault_point
from strongroom.vault import envelope
from strongroom.vault.envelope import Kind
from strongroom.vault.manifest import ChunkRef, Manifest, StreamRef, decode_index
from strongroom.vault.vault import Vault

READ_AHEAD = 6
COALESCE_SPAN = 4 * 1024 * 1024  # sealed bytes one ranged GET of a pack may fetch for several chunks
COALESCE_PLAINTEXT = 4 * 1024 * 1024  # plaintext one such group may hold once opened
PACKED_READ_AHEAD = 8  # groups in flight: bounds a restore's memory to about 8 x COALESCE_PLAINTEXT


class RecoveryPointReader:
    def __init__(self, vault: Vault, manifest: Manifest) -> None:
        self.vault = vault
        self.manifest = manifest
        self._workers = max(2, vault.store.concurrency)  # parallel GETs: S3 reads are network round trips
        self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="strongroom-open")
        # Requests kept ahead: one per worker, plus two; a packed vault's are groups of up to COALESCE_PLAINTEXT.
        self._window = PACKED_READ_AHEAD if vault.objects.packed else max(READ_AHEAD, self._workers + 2)

    def close(self) -> None:
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
        """Verified plaintext of each chunk in order, fetched a few chunks ahead; in a packed vault the chunks of
        one pack that lie close together come in one ranged GET (:func:`_coalesced`)."""
        window: deque[tuple[list[ChunkRef], Future[list[bytes]]]] = deque()
        delivered = 0
        groups = _coalesced(self.vault, refs) if self.vault.objects.packed else ([ref] for ref in refs)
        for group in groups:
            window.append((group, self._pool.submit(self._read_group, group)))
            if len(window) >= self._window:
                for data in _checked_group(*window.popleft()):
                    delivered = _fault_after_first(delivered)
                    yield data
        while window:
            for data in _checked_group(*window.popleft()):
                delivered = _fault_after_first(delivered)
                yield data

    def _read_group(self, group: list[ChunkRef]) -> list[bytes]:
        spans = self.vault.objects.fetch_span([ref.id for ref in group]) if len(group) > 1 else {}
        return [read_object(self.vault, ref.id, Kind.CHUNK, prefetched=spans.get(ref.id)) for ref in group]

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


def _checked_group(refs: list[ChunkRef], future: Future[list[bytes]]) -> list[bytes]:
    found = future.result()
    for ref, data in zip(refs, found, strict=True):
        if len(data) != ref.size:
            raise IntegrityError(f"chunk {ref.id.hex()} has {len(data)} bytes, its index says {ref.size}")
    return found


def _coalesced(vault: Vault, refs: Iterable[ChunkRef]) -> Iterator[list[ChunkRef]]:
    """Consecutive refs grouped while they lie in one pack within a span worth one GET: at most
    ``COALESCE_SPAN`` bytes, no more than twice the bytes wanted, at most ``COALESCE_PLAINTEXT`` of plaintext
    (what a group holds in memory once opened)."""
    locate = vault.objects.committed
    group: list[ChunkRef] = []
    pack_id, start, end, wanted, plain = None, 0, 0, 0, 0
    for ref in refs:
        spot = locate(ref.id)
        if spot is not None and group and spot.pack_id == pack_id:
            new_start, new_end = min(start, spot.offset), max(end, spot.offset + spot.length)
            span = new_end - new_start
            if span <= COALESCE_SPAN and span <= 2 * (wanted + spot.length) and plain + ref.size <= COALESCE_PLAINTEXT:
                group.append(ref)
                start, end, wanted, plain = new_start, new_end, wanted + spot.length, plain + ref.size
                continue
        if group:
            yield group
        group = [ref]
        if spot is None:
            pack_id = None
        else:
            pack_id, start, end = spot.pack_id, spot.offset, spot.offset + spot.length
            wanted, plain = spot.length, ref.size
    if group:
        yield group


def read_object(
    vault: Vault, object_id: bytes, kind: Kind, *, as_base: bool = False, prefetched: bytes | None = None
) -> bytes:
    """Fetch, authenticate, decompress and re-hash one content-addressed object.

    A delta-compressed chunk is rebuilt from its base chunk, which must itself be a whole chunk.
    ``prefetched``: its sealed bytes as a coalesced read found them (tried first, authenticated all the same).
    """

    def opener(sealed: bytes, what: str) -> bytes:
        def load_base(base_id: bytes) -> bytes:
            if as_base:
                raise IntegrityError(f"{what} is a delta used as a base (chains are not allowed)")
            return read_object(vault, base_id, Kind.CHUNK, as_base=True)

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
