"""Reading recovery points back: every chunk is authenticated and re-hashed before use."""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from strongroom.errors import IntegrityError, NotFoundError
from strongroom.faults import fault_point
from strongroom.vault import envelope
from strongroom.vault.envelope import Kind
from strongroom.vault.manifest import ChunkRef, Manifest, StreamRef, decode_index
from strongroom.vault.vault import T, Vault, chunk_key, open_stored

READ_AHEAD = 6


class RecoveryPointReader:
    def __init__(self, vault: Vault, manifest: Manifest) -> None:
        self.vault = vault
        self.manifest = manifest
        self._workers = max(2, vault.store.concurrency)  # parallel GETs: S3 reads are network round trips
        self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="strongroom-open")

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
        """Verified plaintext of each chunk in order, fetched a few chunks ahead."""
        window: deque[tuple[ChunkRef, Future[bytes]]] = deque()
        delivered = 0
        for ref in refs:
            window.append((ref, self._pool.submit(read_object, self.vault, ref.id, Kind.CHUNK)))
            if len(window) >= max(READ_AHEAD, self._workers + 2):
                delivered = _fault_after_first(delivered)
                yield _checked(*window.popleft())
        while window:
            delivered = _fault_after_first(delivered)
            yield _checked(*window.popleft())

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


def _fetch(vault: Vault, key: str, what: str, opener: Callable[[bytes], T]) -> T:
    """``opener`` over the stored object; an older version if the current one is hidden or forged (S3)."""
    try:
        return open_stored(vault.store, key, opener)
    except NotFoundError:
        raise IntegrityError(f"{what} is missing from the vault") from None


def object_base(vault: Vault, object_id: bytes) -> bytes | None:
    """The base a stored chunk was delta-compressed against (authenticated, not decompressed)."""
    key = chunk_key(object_id)
    what = f"object {key}"
    opened = _fetch(
        vault, key, what, lambda sealed: envelope.open_sealed(vault.keys.encryption_key, object_id, sealed, what=what)
    )
    return opened.base_id


def _checked(ref: ChunkRef, future: Future[bytes]) -> bytes:
    data = future.result()
    if len(data) != ref.size:
        raise IntegrityError(f"chunk {ref.id.hex()} has {len(data)} bytes, its index says {ref.size}")
    return data


def read_object(vault: Vault, object_id: bytes, kind: Kind, *, as_base: bool = False) -> bytes:
    """Fetch, authenticate, decompress and re-hash one content-addressed object.

    A delta-compressed chunk is rebuilt from its base chunk, which must itself be a whole chunk.
    """
    key = chunk_key(object_id)
    what = f"object {key}"

    def load_base(base_id: bytes) -> bytes:
        if as_base:
            raise IntegrityError(f"{what} is a delta used as a base (chains are not allowed)")
        return read_object(vault, base_id, Kind.CHUNK, as_base=True)

    def opener(sealed: bytes) -> bytes:
        opened = envelope.open_sealed(vault.keys.encryption_key, object_id, sealed, what=what, base_loader=load_base)
        if opened.kind != kind:
            raise IntegrityError(f"{what} is a {opened.kind.name.lower()}, expected a {kind.name.lower()}")
        if vault.chunk_id(opened.plaintext) != object_id:
            raise IntegrityError(f"{what} does not hash to its id (damaged or forged)")
        return opened.plaintext

    return _fetch(vault, key, what, opener)


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
