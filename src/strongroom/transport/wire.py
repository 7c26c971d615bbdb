"""Binary bodies of the copy protocol (docs/wire-protocol.md): chunk id lists, chunk frames, chunk refs.

:class:`FrameEncoder` is the one sender of chunk frames, for a push (services/copy.py) and for the
chunks a copy back asks for (services/copy_sessions.py).
"""

from __future__ import annotations

import struct
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass

import zstandard

from strongroom.errors import RemoteError
from strongroom.vault import Vault, envelope
from strongroom.vault.envelope import Kind
from strongroom.vault.reader import read_object

ID_SIZE = 32
COMPRESSION_LEVEL = 3  # zstd level of a FULL frame's body
MAX_CHUNK_SIZE = 64 << 20  # far above the chunker's maximum: guards decompression against a hostile peer
_FRAME_HEAD = struct.Struct(">32sIIB")  # chunk id, plaintext size, body size, kind
FULL = 0  # body: a zstd frame of the chunk's plaintext
DELTA = 1  # a 32-byte base chunk id follows the head; body: a zstd frame against the base's plaintext
_REF = struct.Struct(">32sI")  # chunk id, plaintext size


def encode_ids(ids: Iterable[bytes]) -> bytes:
    return b"".join(ids)


def decode_ids(body: bytes) -> list[bytes]:
    if len(body) % ID_SIZE:
        raise RemoteError(f"a chunk id list of {len(body)} bytes is not a multiple of {ID_SIZE}")
    return [body[i : i + ID_SIZE] for i in range(0, len(body), ID_SIZE)]


@dataclass(frozen=True)
class Frame:
    chunk_id: bytes
    size: int  # plaintext size
    body: bytes  # zstd frame (FULL) or zstd frame against the base chunk (DELTA)
    base_id: bytes | None = None


def encode_frame(chunk_id: bytes, size: int, body: bytes, base_id: bytes | None = None) -> bytes:
    kind = FULL if base_id is None else DELTA
    return _FRAME_HEAD.pack(chunk_id, size, len(body), kind) + (base_id or b"") + body


def is_delta(frame: bytes) -> bool:
    """Is this encoded frame a DELTA (its head's kind)?"""
    return bool(_FRAME_HEAD.unpack_from(frame)[3] == DELTA)


class FrameEncoder:
    """Chunk frames of one vault's chunks: a DELTA against the chunk's base when the receiver holds that
    base (``held_bases``) and the vault stores the chunk as a delta of it, else the whole chunk (FULL)."""

    def __init__(self, vault: Vault, held_bases: Collection[bytes] = ()) -> None:
        self.vault = vault
        self.held_bases = held_bases
        self.compressor = zstandard.ZstdCompressor(level=COMPRESSION_LEVEL)
        self.deltas = 0  # DELTA frames made so far

    def frame(self, chunk_id: bytes, plaintext: bytes, base_id: bytes | None = None) -> bytes:
        """The frame of a chunk whose verified ``plaintext`` the caller read (``base_id``: its base, if any)."""
        if base_id is not None and base_id in self.held_bases:
            base = read_object(self.vault, base_id, Kind.CHUNK, as_base=True)
            compression, body = envelope.compress_body(plaintext, (base_id, base))
            if compression == envelope.Compression.ZSTD_DELTA:
                self.deltas += 1
                return encode_frame(chunk_id, len(plaintext), body[envelope.BASE_ID_SIZE :], base_id)
        return encode_frame(chunk_id, len(plaintext), self.compressor.compress(plaintext))

    def frames(self, ids: Iterable[bytes]) -> bytes:
        """FULL frames of the given chunk ids, each read and verified from the vault."""
        return b"".join(self.frame(chunk_id, read_object(self.vault, chunk_id, Kind.CHUNK)) for chunk_id in ids)


def decode_frames(body: bytes) -> Iterator[Frame]:
    view = memoryview(body)
    offset = 0
    while offset < len(view):
        if len(view) - offset < _FRAME_HEAD.size:
            raise RemoteError("a chunk frame is cut short")
        chunk_id, size, length, kind = _FRAME_HEAD.unpack_from(view, offset)
        offset += _FRAME_HEAD.size
        base_id = None
        if kind == DELTA:
            base_id = bytes(view[offset : offset + ID_SIZE])
            offset += ID_SIZE
        if kind not in (FULL, DELTA) or size > MAX_CHUNK_SIZE or offset + length > len(view):
            raise RemoteError("a chunk frame is malformed or larger than any chunk")
        yield Frame(chunk_id, size, bytes(view[offset : offset + length]), base_id)
        offset += length


def encode_refs(refs: Iterable[tuple[bytes, int]]) -> bytes:
    return b"".join(_REF.pack(chunk_id, size) for chunk_id, size in refs)


def decode_refs(body: bytes) -> list[tuple[bytes, int]]:
    if len(body) % _REF.size:
        raise RemoteError(f"a chunk reference list of {len(body)} bytes is not a multiple of {_REF.size}")
    return [_REF.unpack_from(body, i) for i in range(0, len(body), _REF.size)]
