"""Receiving a copy of another vault's recovery point, stored under this account's own keys.

Chunk ids are keyed hashes, so the two vaults name the same chunk differently. The receiver keeps,
per vault, a map from the peer's chunk ids to its own (catalog ``chunk_map``); the peer asks which of
its ids are missing and sends only those, as compressed plaintext over the authenticated channel. Each
received chunk is hashed under this vault's key, compressed, encrypted and stored like a backup's.
Before the copy is COMPLETED every chunk it references is read back, authenticated and re-hashed.

A pushed copy comes with the source vault's chunk-id key, pinned on first use (services/source_keys.py),
so the receiver believes no id the source sends: each received chunk must hash to its id under that
key, a mapping is reused only if its content was checked under that key (mappings made before the
check existed are checked when first reused, and dropped if wrong), and the copy's manifest records
what the source described, which is proved against the stored plaintext before COMPLETED and again
by ``verify --read-data``. A pull receives without the sender's key (the sender keeps it): its
mappings are recorded as unchecked, so a later push from that vault checks them before reuse.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field

import zstandard

from strongroom.errors import IntegrityError, RemoteError, StrongroomError
from strongroom.services.account import Account
from strongroom.services.object_lock import new_point_retention
from strongroom.transport.wire import Frame
from strongroom.vault import envelope
from strongroom.vault.envelope import Kind
from strongroom.vault.manifest import ChunkRef, Manifest, StreamRef
from strongroom.vault.reader import RecoveryPointReader, read_object
from strongroom.vault.source import SourceRecord, StreamDigest, key_fingerprint, source_chunk_id
from strongroom.vault.vault import Vault
from strongroom.vault.writer import RecoveryPointWriter, StreamBuilder


@dataclass
class ReceiveStats:
    chunks_received: int = 0
    delta_chunks_received: int = 0  # sent as a delta against a chunk this vault already held
    bytes_received: int = 0  # compressed bytes of chunk frames, as they crossed the wire
    plaintext_bytes_received: int = 0
    chunks_already_held: int = 0
    mappings_checked: int = 0  # mappings never checked under the source's key, checked now and kept
    mappings_dropped: int = 0  # ... found not to hold what the source's id names: dropped, chunk sent again
    mappings_replaced: int = 0  # unchecked mappings replaced by checked ones at commit


@dataclass(frozen=True)
class SourceCheck:
    """The pinned chunk-id key of a pushed copy's source vault and where the copy comes from."""

    id_key: bytes = field(repr=False)
    recovery_point_arn: str
    vault_arn: str
    fingerprint: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fingerprint", key_fingerprint(self.id_key))

    def names(self, peer_id: bytes, plaintext: bytes) -> bool:
        return source_chunk_id(self.id_key, plaintext) == peer_id


class CopyReceiver:
    def __init__(
        self,
        account: Account,
        vault_name: str,
        peer_vault_id: str,
        recovery_point_id: str,
        creation_date: str,
        previous: Manifest | None = None,
        source: SourceCheck | None = None,
    ) -> None:
        self.account = account
        self.vault_name = vault_name
        self.peer_vault_id = peer_vault_id
        self.source = source
        self.vault = account.vault(vault_name)
        point = account.catalog.get_recovery_point(recovery_point_id)  # recorded CREATING before the copy starts
        retention = new_point_retention(account, vault_name, point)  # the storage's lock (S3 Object Lock)
        self.writer = RecoveryPointWriter(self.vault, recovery_point_id, previous=previous, retention=retention)
        self.writer.created_at = creation_date  # a copy keeps its source's creation date
        self.builders: dict[str, StreamBuilder] = {}
        self.digests: dict[str, StreamDigest] = {}  # what the source described, per stream
        self.known: dict[bytes, bytes] = {}  # peer id -> own id, for chunks usable in this copy
        self.sent_here: dict[bytes, bytes] = {}  # the subset received in this copy (mapped at commit)
        self.stats = ReceiveStats()
        self._decompressor = zstandard.ZstdDecompressor()

    def missing(self, peer_ids: list[bytes]) -> list[bool]:
        unknown = list({i for i in peer_ids if i not in self.known})
        mapped = self.account.catalog.mapped_chunks(self.vault_name, self.peer_vault_id, unknown)
        unchecked = []
        present = self.writer.stored_sizes(own_id for own_id, _ in mapped.values())
        for peer_id, (own_id, checked_under) in mapped.items():
            if present[own_id] is None:  # the collector may have removed it
                continue
            if self.source is None or checked_under == self.source.fingerprint:
                self.known[peer_id] = own_id
            else:
                unchecked.append((peer_id, own_id))
        if unchecked:
            self._check_mappings(unchecked)
        return [i not in self.known for i in peer_ids]

    def _check_mappings(self, pairs: list[tuple[bytes, bytes]]) -> None:
        """Mappings never checked under the source's key: keep those holding what the peer id names."""
        source = self.source
        if source is None:
            return
        good: list[tuple[bytes, bytes]] = []
        bad: list[tuple[bytes, bytes]] = []
        for peer_id, own_id in pairs:
            try:
                plaintext = read_object(self.vault, own_id, Kind.CHUNK)
            except StrongroomError:
                continue  # damaged: not reused; the source sends the chunk
            (good if source.names(peer_id, plaintext) else bad).append((peer_id, own_id))
        catalog = self.account.catalog
        catalog.set_mappings_checked(self.vault_name, self.peer_vault_id, good, source.fingerprint)
        catalog.forget_mappings(self.vault_name, self.peer_vault_id, bad)
        self.known.update(good)
        self.stats.mappings_checked += len(good)
        self.stats.mappings_dropped += len(bad)

    def receive(self, frames: Iterable[Frame]) -> None:
        for frame in frames:
            plaintext = self._plaintext(frame)
            if len(plaintext) != frame.size:
                raise RemoteError(
                    f"chunk {frame.chunk_id.hex()} arrived with {len(plaintext)} bytes, announced {frame.size}"
                )
            if self.source is not None and not self.source.names(frame.chunk_id, plaintext):
                raise IntegrityError(
                    f"chunk {frame.chunk_id.hex()} sent by the source is not the content that id names under the"
                    " source vault's pinned chunk-id key; the copy is refused and nothing is stored under that id",
                    hint="The source sent other bytes than its ids name: treat it as compromised and investigate",
                )
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
                return envelope.bounded(self._decompressor, frame.body, frame.size)
            base = self.known.get(frame.base_id)
            if base is None:
                raise RemoteError(f"chunk {frame.chunk_id.hex()} is a delta against a chunk this vault lacks")
            return envelope.undelta(frame.body, read_object(self.vault, base, Kind.CHUNK), frame.size)
        except zstandard.ZstdError as exc:
            raise RemoteError(f"chunk {frame.chunk_id.hex()} arrived damaged: {exc}") from None

    def append(self, stream: str, refs: list[tuple[bytes, int]]) -> None:
        builder = self.builders.setdefault(stream, self.writer.stream())
        digest = self.digests.setdefault(stream, StreamDigest())
        own: list[ChunkRef] = []
        held: list[ChunkRef] = []
        for peer_id, size in refs:
            own_id = self.known.get(peer_id)
            if own_id is None:
                raise RemoteError(f"stream '{stream}' names chunk {peer_id.hex()}, which was never sent")
            ref = ChunkRef(own_id, size)
            own.append(ref)
            digest.add(peer_id, size)
            if peer_id not in self.sent_here:
                held.append(ref)
        if held and not self.writer.reference_existing(held):
            raise RemoteError("a chunk this vault held disappeared during the copy (garbage collection?); retry")
        self.stats.chunks_already_held += len(held)
        builder.append_refs(own)

    def commit(
        self, resource_id: str, resource_type: str, metadata: dict[str, object], expected: dict[str, dict[str, int]]
    ) -> Manifest:
        for name in expected:
            builder = self.builders.pop(name) if name in self.builders else self.writer.stream()
            self.writer.add_stream(name, builder)
        if self.builders:
            raise RemoteError(f"the copy sent streams that were not announced: {', '.join(sorted(self.builders))}")
        _check_shape(self.writer.streams, expected)
        manifest = self.writer.commit(resource_id, resource_type, dict(metadata), self._source_record(expected))
        self.writer.close()
        check = verify_copy(self.vault, manifest)
        if manifest.source is not None and check.mismatched_streams:
            self._drop_wrong_mappings(manifest.source, check)
        checked_under = self.source.fingerprint if self.source else None
        self.stats.mappings_replaced += self.account.catalog.map_chunks(
            self.vault_name, self.peer_vault_id, list(self.sent_here.items()), checked_under
        )
        return manifest

    def _source_record(self, streams: Iterable[str]) -> SourceRecord | None:
        if self.source is None:
            return None
        digests = {name: self.digests.get(name, StreamDigest()).hexdigest() for name in streams}
        return SourceRecord(
            self.source.recovery_point_arn, self.source.vault_arn, self.peer_vault_id, self.source.id_key, digests
        )

    def _drop_wrong_mappings(self, source: SourceRecord, check: CopyCheck) -> None:
        """A copy that differs from what the source described fails; mappings that caused it are dropped."""
        wrong = [
            (peer, own) for peer, own in self.known.items() if own in check.source_ids and check.source_ids[own] != peer
        ]
        self.account.catalog.forget_mappings(self.vault_name, self.peer_vault_id, wrong)
        raise IntegrityError(
            f"stream '{check.mismatched_streams[0]}' of the copy holds other data than the source described"
            f" ({source.recovery_point_arn}); {len(wrong)} chunk mappings that named other content were dropped",
            hint="Copy the recovery point again: the dropped chunks will be sent",
        )

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


@dataclass
class CopyCheck:
    """What reading a copy back found: own chunk id -> the source's id of its plaintext, streams that differ."""

    source_ids: dict[bytes, bytes] = field(default_factory=dict)
    mismatched_streams: list[str] = field(default_factory=list)


def verify_copy(vault: Vault, manifest: Manifest) -> CopyCheck:
    """Read every chunk of the copy back: authenticated, re-hashed, sizes checked; for a copy that records
    its source, the source's ids recomputed from the plaintext and each stream's digest compared."""
    source = manifest.source
    found = CopyCheck()
    with RecoveryPointReader(vault, manifest) as reader:
        for name, stream in manifest.streams.items():
            digest = StreamDigest()
            total = 0
            refs: deque[ChunkRef] = deque()
            for data in reader.iter_chunk_data(_tapped(reader.iter_refs(stream), refs)):
                ref = refs.popleft()
                total += len(data)
                if source is not None:
                    source_id = found.source_ids.get(ref.id)
                    if source_id is None:
                        source_id = found.source_ids[ref.id] = source_chunk_id(source.id_key, data)
                    digest.add(source_id, len(data))
            if total != stream.size:
                raise IntegrityError(f"stream '{name}' of the copy reads back {total} bytes, expected {stream.size}")
            if source is not None and digest.hexdigest() != source.streams.get(name):
                found.mismatched_streams.append(name)
    return found


def _tapped(refs: Iterator[ChunkRef], seen: deque[ChunkRef]) -> Iterator[ChunkRef]:
    """``refs``, remembering each as it is handed out (to pair read-ahead data with its reference)."""
    for ref in refs:
        seen.append(ref)
        yield ref
