"""Receiving a copy of another vault's recovery point, stored under this account's own keys.

Chunk ids are keyed hashes, so the two vaults name the same chunk differently. The receiver keeps,
per vault, a map from the peer's chunk ids to its own (catalog ``chunk_map``); the peer asks which of
its ids are missing and sends only those, as compressed plaintext over the authenticated channel. Each
received chunk is hashed under this vault's key, compressed, encrypted and stored like a backup's.
Before the copy is COMPLETED every chunk it references is read back, authenticated and re-hashed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import zstandard

from strongroom.errors import IntegrityError, RemoteError
from strongroom.services.account import Account
from strongroom.transport.wire import Frame
from strongroom.vault import envelope
from strongroom.vault.envelope import Kind
from strongroom.vault.manifest import ChunkRef, Manifest, StreamRef
from strongroom.vault.reader import RecoveryPointReader, read_object
from strongroom.vault.vault import Vault, chunk_key
from strongroom.vault.writer import RecoveryPointWriter, StreamBuilder


@dataclass
class ReceiveStats:
    chunks_received: int = 0
    delta_chunks_received: int = 0  # sent as a delta against a chunk this vault already held
    bytes_received: int = 0  # compressed bytes of chunk frames, as they crossed the wire
    plaintext_bytes_received: int = 0
    chunks_already_held: int = 0


class CopyReceiver:
    def __init__(
        self,
        account: Account,
        vault_name: str,
        peer_vault_id: str,
        recovery_point_id: str,
        creation_date: str,
        previous: Manifest | None = None,
    ) -> None:
        self.account = account
        self.vault_name = vault_name
        self.peer_vault_id = peer_vault_id
        self.vault = account.vault(vault_name)
        self.writer = RecoveryPointWriter(self.vault, recovery_point_id, previous=previous)
        self.writer.created_at = creation_date  # a copy keeps its source's creation date
        self.builders: dict[str, StreamBuilder] = {}
        self.known: dict[bytes, bytes] = {}  # peer id -> own id, for chunks usable in this copy
        self.sent_here: dict[bytes, bytes] = {}  # the subset received in this copy (mapped at commit)
        self.stats = ReceiveStats()
        self._decompressor = zstandard.ZstdDecompressor()

    def missing(self, peer_ids: list[bytes]) -> list[bool]:
        unknown = list({i for i in peer_ids if i not in self.known})
        mapped = self.account.catalog.mapped_chunks(self.vault_name, self.peer_vault_id, unknown)
        for peer_id, own_id in mapped.items():
            if self.vault.store.head(chunk_key(own_id)) is not None:  # the collector may have removed it
                self.known[peer_id] = own_id
        return [i not in self.known for i in peer_ids]

    def receive(self, frames: Iterable[Frame]) -> None:
        for frame in frames:
            plaintext = self._plaintext(frame)
            if len(plaintext) != frame.size:
                raise RemoteError(
                    f"chunk {frame.chunk_id.hex()} arrived with {len(plaintext)} bytes, announced {frame.size}")
            ref = self.writer.store_chunk(plaintext)
            self.known[frame.chunk_id] = ref.id
            self.sent_here[frame.chunk_id] = ref.id
            self.stats.chunks_received += 1
            self.stats.delta_chunks_received += frame.base_id is not None
            self.stats.bytes_received += len(frame.body)
            self.stats.plaintext_bytes_received += frame.size

    def _plaintext(self, frame: Frame) -> bytes:
        try:
            if frame.base_id is None:
                return self._decompressor.decompress(frame.body, max_output_size=frame.size)
            base = self.known.get(frame.base_id)
            if base is None:
                raise RemoteError(f"chunk {frame.chunk_id.hex()} is a delta against a chunk this vault lacks")
            return envelope.undelta(frame.body, read_object(self.vault, base, Kind.CHUNK), frame.size)
        except zstandard.ZstdError as exc:
            raise RemoteError(f"chunk {frame.chunk_id.hex()} arrived damaged: {exc}") from None

    def append(self, stream: str, refs: list[tuple[bytes, int]]) -> None:
        builder = self.builders.setdefault(stream, self.writer.stream())
        own: list[ChunkRef] = []
        held: list[ChunkRef] = []
        for peer_id, size in refs:
            own_id = self.known.get(peer_id)
            if own_id is None:
                raise RemoteError(f"stream '{stream}' names chunk {peer_id.hex()}, which was never sent")
            ref = ChunkRef(own_id, size)
            own.append(ref)
            if peer_id not in self.sent_here:
                held.append(ref)
        if held and not self.writer.reference_existing(held):
            raise RemoteError("a chunk this vault held disappeared during the copy (garbage collection?); retry")
        self.stats.chunks_already_held += len(held)
        builder.append_refs(own)

    def commit(self, resource_id: str, resource_type: str, metadata: dict[str, object],
               expected: dict[str, dict[str, int]]) -> Manifest:
        for name in expected:
            self.writer.add_stream(name, self.builders.pop(name, None) or self.writer.stream())
        if self.builders:
            raise RemoteError(f"the copy sent streams that were not announced: {', '.join(sorted(self.builders))}")
        _check_shape(self.writer.streams, expected)
        manifest = self.writer.commit(resource_id, resource_type, dict(metadata))
        self.writer.close()
        self.account.catalog.map_chunks(self.vault_name, self.peer_vault_id, list(self.sent_here.items()))
        verify_copy(self.vault, manifest)
        return manifest

    def close(self) -> None:
        self.writer.close()

    def stats_dict(self) -> dict[str, int]:
        return {**asdict(self.stats), **{f"stored_{k}": v for k, v in self.writer.stats.as_dict().items()}}


def _check_shape(streams: dict[str, StreamRef], expected: dict[str, dict[str, int]]) -> None:
    for name, shape in expected.items():
        got = streams[name]
        if (got.size, got.chunk_count) != (int(shape["size"]), int(shape["chunk_count"])):
            raise IntegrityError(
                f"stream '{name}' of the copy has {got.size} bytes in {got.chunk_count} chunks,"
                f" the source announced {shape['size']} in {shape['chunk_count']}"
            )


def verify_copy(vault: Vault, manifest: Manifest) -> None:
    """Read every chunk of the copy back: authenticated, re-hashed, sizes checked."""
    with RecoveryPointReader(vault, manifest) as reader:
        for name, stream in manifest.streams.items():
            total = sum(len(data) for data in reader.iter_chunk_data(reader.iter_refs(stream)))
            if total != stream.size:
                raise IntegrityError(f"stream '{name}' of the copy reads back {total} bytes, expected {stream.size}")
