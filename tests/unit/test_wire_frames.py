"""The one chunk-frame encoder (transport/wire.FrameEncoder): the frames a push and a copy back send."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import zstandard

from strongroom.transport import wire
from strongroom.vault import Vault, envelope
from strongroom.vault.envelope import Kind
from strongroom.vault.manifest import Manifest, decode_index
from strongroom.vault.reader import read_object
from strongroom.vault.writer import RecoveryPointWriter
from tests.support.data import table_dump
from tests.support.vaults import make_vault


def _backup(vault: Vault, rp_id: str, data: bytes, previous: Manifest | None = None) -> Manifest:
    with RecoveryPointWriter(vault, rp_id, previous=previous) as writer:
        writer.store_stream("dump", io.BytesIO(data))
        return writer.commit("db", "postgres", {})


def _refs(vault: Vault, manifest: Manifest) -> list:
    refs = []
    for index_id in manifest.streams["dump"].index:
        refs += decode_index(read_object(vault, index_id, Kind.INDEX), "index")
    return refs


def test_full_frames_carry_each_verified_chunk_in_the_documented_layout(tmp_path: Path) -> None:
    vault = make_vault(tmp_path / "v", average_chunk=64 * 1024)
    refs = _refs(vault, _backup(vault, "rp1", table_dump(5_000, None)))
    ids = [ref.id for ref in refs[:3]]
    body = wire.FrameEncoder(vault).frames(ids)
    head = struct.Struct(">32sIIB")
    chunk_id, size, length, kind = head.unpack_from(body, 0)  # docs/wire-protocol.md: id, size, body size, kind
    first = read_object(vault, ids[0], Kind.CHUNK)
    assert (chunk_id, size, kind) == (ids[0], len(first), wire.FULL)
    assert zstandard.ZstdDecompressor().decompress(body[head.size : head.size + length]) == first
    frames = list(wire.decode_frames(body))
    assert [f.chunk_id for f in frames] == ids and all(f.base_id is None for f in frames)


def test_a_delta_frame_is_sent_only_when_the_receiver_holds_the_base(tmp_path: Path) -> None:
    vault = make_vault(tmp_path / "v", average_chunk=256 * 1024)
    first = _backup(vault, "rp1", table_dump(30_000, None))
    second = _backup(vault, "rp2", table_dump(30_000, 100), previous=first)
    ref = next(r for r in _refs(vault, second) if r.base)
    plaintext = read_object(vault, ref.id, Kind.CHUNK)
    held = wire.FrameEncoder(vault, {ref.base})
    [frame] = wire.decode_frames(held.frame(ref.id, plaintext, ref.base))
    assert (frame.base_id, held.deltas) == (ref.base, 1)
    base = read_object(vault, ref.base, Kind.CHUNK)
    assert envelope.undelta(frame.body, base, frame.size) == plaintext
    lacking = wire.FrameEncoder(vault, set())
    [whole] = wire.decode_frames(lacking.frame(ref.id, plaintext, ref.base))
    assert (whole.base_id, lacking.deltas) == (None, 0)
    assert zstandard.ZstdDecompressor().decompress(whole.body) == plaintext
