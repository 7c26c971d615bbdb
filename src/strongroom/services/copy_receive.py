"""Receiving a copy of another vault's recovery point, stored under this account's own keys.

Chunk ids are keyed hashes, so the two vaults name the same chunk differently. The receiver keeps,
per vault, a map from the peer's chunk ids to its own (catalog ``chunk_map``); the peer asks which of
its ids are missing and sends only those, as compressed plaintext over the authenticated channel. Each
received chunk is hashed under this vault's key, compressed, encrypted and stored like a backup's.

A pushed copy comes with the source vault's chunk-id key, pinned on first use (services/source_keys.py),
so the receiver believes no id nor size the source sends. Every chunk a pushed copy references is
*proved* before the source may append it to a stream: a received chunk hashes to its id under that key
and has the size its frame announced; a held chunk is reused only through a mapping proved under that
key — its row carries its plaintext size and a proof, a MAC under this vault's own key over the source
key's fingerprint, both ids and the size (``vault.source.mapping_proof``), made when the mapping was
received or checked. A mapping without a valid proof (made by a pull, before proofs existed, or edited in
the catalog) is read once and checked: kept and proved if it holds what the source's id names, else
dropped and the chunk asked for — or, if the catalog claimed it was checked under this key, the copy
fails. ``append`` refuses a chunk announced with another size than the proved one. The manifest records
what the source appended (its key and per-stream digests of the (source id, size) sequence), which the
proofs make true of the stored plaintext without reading it back; ``verify --read-data`` proves it again
at rest. A pull receives without the sender's key (the sender keeps it): its mappings are recorded as
unchecked, and the copy is read back before it is COMPLETED (sizes, authenticity).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import zstandard

from strongroom.catalog.records import ChunkMapping
from strongroom.errors import IntegrityError, RemoteError, StrongroomError
from strongroom.services.account import Account
from strongroom.services.object_lock import new_point_retention
from strongroom.transport.wire import Frame
from strongroom.vault import envelope
from strongroom.vault.envelope import Kind
from strongroom.vault.manifest import ChunkRef, Manifest, StreamRef
from strongroom.vault.reader import RecoveryPointReader, fetch_sealed, read_object
from strongroom.vault.source import (
    SourceRecord,
    StreamDigest,
    key_fingerprint,
    mapping_proof,
    mapping_proof_key,
    source_chunk_id,
)
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
        self.proven: dict[bytes, int] = {}  # a push: peer id -> plaintext size, proved under the source's key
        self._proof_key = mapping_proof_key(self.vault.keys.id_key)
        self.stats = ReceiveStats()
        self._decompressor = zstandard.ZstdDecompressor()

    def missing(self, peer_ids: list[bytes]) -> list[bool]:
        unknown = list({i for i in peer_ids if i not in self.known})
        mapped = self.account.catalog.mapped_chunks(self.vault_name, self.peer_vault_id, unknown)
        unproven: dict[bytes, ChunkMapping] = {}
        present = self.writer.stored_sizes(row.chunk_id for row in mapped.values())
        for peer_id, row in mapped.items():
            if present[row.chunk_id] is None:  # the collector may have removed it
                continue
            if self.source is None:
                self.known[peer_id] = row.chunk_id
            elif row.size is not None and self._proves(peer_id, row):
                self.known[peer_id] = row.chunk_id
                self.proven[peer_id] = row.size
            else:
                unproven[peer_id] = row
        if unproven:
            self._check_mappings(unproven)
        return [i not in self.known for i in peer_ids]

    def _proof(self, peer_id: bytes, own_id: bytes, size: int) -> bytes:
        assert self.source is not None
        return mapping_proof(self._proof_key, self.peer_vault_id, self.source.fingerprint, peer_id, own_id, size)

    def _proves(self, peer_id: bytes, row: ChunkMapping) -> bool:
        """Whether the row is a mapping this vault proved under the source's pinned key (its size included)."""
        if self.source is None or row.checked_under != self.source.fingerprint or row.size is None or not row.proof:
            return False
        return hmac.compare_digest(row.proof, self._proof(peer_id, row.chunk_id, row.size))

    def _check_mappings(self, rows: dict[bytes, ChunkMapping]) -> None:
        """Mappings not proved under the source's key: read each once; keep (and prove) those holding what the
        peer id names, drop the others. One the catalog said was checked under this key but that names other
        content fails the copy: the catalog was edited (the chunk is sent again by the next copy)."""
        source = self.source
        if source is None:
            return
        good: list[tuple[bytes, bytes]] = []
        bad: list[tuple[bytes, bytes]] = []
        proven: dict[bytes, tuple[int, bytes]] = {}
        sealed = fetch_sealed(self.vault, [row.chunk_id for row in rows.values()])
        for peer_id, row in rows.items():
            own_id = row.chunk_id
            try:
                plaintext = read_object(self.vault, own_id, Kind.CHUNK, prefetched=sealed.get(own_id))
            except StrongroomError:
                continue  # damaged: not reused; the source sends the chunk
            if source.names(peer_id, plaintext):
                good.append((peer_id, own_id))
                proven[peer_id] = (len(plaintext), self._proof(peer_id, own_id, len(plaintext)))
            else:
                bad.append((peer_id, own_id))
        catalog = self.account.catalog
        catalog.set_mappings_checked(self.vault_name, self.peer_vault_id, good, source.fingerprint, proven)
        catalog.forget_mappings(self.vault_name, self.peer_vault_id, bad)
        self.known.update(good)
        self.proven.update((peer_id, size) for peer_id, (size, _) in proven.items())
        self.stats.mappings_checked += len(good)
        self.stats.mappings_dropped += len(bad)
        claimed = [peer for peer, _ in bad if rows[peer].checked_under == source.fingerprint]
        if claimed:
            raise IntegrityError(
                f"chunk {claimed[0].hex()} of the copy holds other data than the source described"
                f" ({source.recovery_point_arn}): the catalog recorded its mapping as checked;"
                f" {len(bad)} chunk mappings that named other content were dropped",
                hint="Copy the recovery point again: the dropped chunks will be sent",
            )

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
            if self.source is not None:
                self.proven[frame.chunk_id] = len(plaintext)
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
            if self.source is not None and self.proven.get(peer_id) != size:
                raise IntegrityError(
                    f"stream '{stream}' gives chunk {peer_id.hex()} {size} bytes, but that chunk holds"
                    f" {self.proven.get(peer_id)}; the copy is refused and nothing of it is kept",
                    hint="The source described other data than its chunks hold: treat it as compromised",
                )
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
        """Write the copy's manifest. A push is proved already (each appended chunk was, sizes included); a pull,
        received without the sender's key, is read back first (:func:`verify_copy`)."""
        for name in expected:
            builder = self.builders.pop(name) if name in self.builders else self.writer.stream()
            self.writer.add_stream(name, builder)
        if self.builders:
            raise RemoteError(f"the copy sent streams that were not announced: {', '.join(sorted(self.builders))}")
        _check_shape(self.writer.streams, expected)
        manifest = self.writer.commit(resource_id, resource_type, dict(metadata), self._source_record(expected))
        self.writer.close()
        if self.source is None:
            verify_copy(self.vault, manifest)
        self.stats.mappings_replaced += self.account.catalog.map_chunks(
            self.vault_name,
            self.peer_vault_id,
            list(self.sent_here.items()),
            self.source.fingerprint if self.source else None,
            self._received_proofs(),
        )
        return manifest

    def _received_proofs(self) -> dict[bytes, tuple[int, bytes]]:
        if self.source is None:
            return {}
        return {
            peer_id: (self.proven[peer_id], self._proof(peer_id, own_id, self.proven[peer_id]))
            for peer_id, own_id in self.sent_here.items()
        }

    def _source_record(self, streams: Iterable[str]) -> SourceRecord | None:
        if self.source is None:
            return None
        digests = {name: self.digests.get(name, StreamDigest()).hexdigest() for name in streams}
        return SourceRecord(
            self.source.recovery_point_arn, self.source.vault_arn, self.peer_vault_id, self.source.id_key, digests
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


def verify_copy(vault: Vault, manifest: Manifest) -> None:
    """Read every chunk of a pulled copy back: authenticated, re-hashed, each one's size and each stream's
    total checked against the indexes the receiver wrote."""
    with RecoveryPointReader(vault, manifest) as reader:
        for name, stream in manifest.streams.items():
            total = sum(len(data) for data in reader.iter_chunk_data(reader.iter_refs(stream)))
            if total != stream.size:
                raise IntegrityError(f"stream '{name}' of the copy reads back {total} bytes, expected {stream.size}")
