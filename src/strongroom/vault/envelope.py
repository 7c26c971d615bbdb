"""The sealed form of every vault object (chunks, index objects, manifests, vault config).

Layout (all integers big-endian), see docs/vault-format.md §4::

    0   4  magic  b"SRGM"
    4   1  format version (1)
    5   1  kind   (1 chunk, 2 index, 3 manifest, 4 vault config, 5 catalog record)
    6   1  compression (0 none, 1 zstd, 2 zstd delta against a base chunk)
    7   1  reserved, 0
    8  16  salt   random; object key = BLAKE3-derive-key(CONTEXT, encryption_key || salt)
    24 12  nonce  random
    36  .  AES-256-GCM ciphertext of the (compressed) plaintext, then the 16-byte tag

The associated data is the 36-byte header followed by the object's name (for a chunk its
32-byte id), so an object cannot be moved to another name or have its header altered.
A fresh 128-bit salt gives every object its own key, so a (key, nonce) pair never repeats.

With compression 2 the decrypted body is the 32-byte id of a base chunk followed by a zstd frame
compressed with the base chunk's plaintext as a raw-content dictionary: a chunk that differs a little
from an older one (rows moved inside a table) is stored as a few kilobytes. A base is always a chunk
stored with compression 0 or 1, so reading a delta chunk needs exactly one more object.
"""

from __future__ import annotations

import io
import os
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

import blake3
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from strongroom.errors import FormatError, IntegrityError

MAGIC = b"SRGM"
FORMAT_VERSION = 1
HEADER = struct.Struct(">4sBBBB16s12s")
HEADER_SIZE = HEADER.size  # 36
KEY_CONTEXT = "strongroom 2026-11 vault object key v1"
ZSTD_LEVEL = 3
# Delta parameters: lazy2 matching with a window covering dictionary + chunk (2 x 4 MiB), hash tables
# that index a whole base chunk, and 16 candidates per position. Table rows are repetitive (blank
# filler, sequential keys): a greedy matcher takes the first short match and pays per row, while this
# finds the long runs of unchanged rows. Measured on pgbench chunks with 1% of rows moved: plain zstd
# keeps 28 KB per 2.9 MB chunk, greedy level 4 22 KB, these settings 5 KB, at ~230 MB/s on one core.
ZSTD_DELTA_PARAMETERS = zstandard.ZstdCompressionParameters(
    window_log=23,
    hash_log=20,
    chain_log=20,
    search_log=4,
    min_match=6,
    target_length=64,
    strategy=zstandard.STRATEGY_LAZY2,
)
BASE_ID_SIZE = 32


class Kind(IntEnum):
    CHUNK = 1
    INDEX = 2
    MANIFEST = 3
    CONFIG = 4
    RECORD = 5  # the catalog's security records mirrored into the vault (services/catalog_integrity.py)
    WAL = 6  # one archived PostgreSQL WAL file (vault/wal.py)
    PACK_INDEX = 7  # where each sealed object of one pack object lies (vault/packs.py, format 2)


class Compression(IntEnum):
    NONE = 0
    ZSTD = 1
    ZSTD_DELTA = 2


@dataclass(frozen=True)
class Opened:
    kind: Kind
    plaintext: bytes
    base_id: bytes | None = None  # the chunk this one was delta-compressed against


BaseLoader = Callable[[bytes], bytes]


_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    # ZstdCompressor is not thread-safe: one per thread.
    comp = getattr(_local, "compressor", None)
    if comp is None:
        comp = _local.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return comp


def compress_body(plaintext: bytes, base: tuple[bytes, bytes] | None = None) -> tuple[Compression, bytes]:
    """The smallest encoding of ``plaintext``: stored, zstd, or zstd against ``base`` (id, plaintext)."""
    if not plaintext:
        return Compression.NONE, plaintext
    if base is not None:
        delta = base[0] + _delta(plaintext, base[1])
        if len(delta) * 8 < len(plaintext) and len(delta) * 2 < len(_fast_compressor().compress(plaintext)):
            return Compression.ZSTD_DELTA, delta
        packed = _compressor().compress(plaintext)
        if _worth_a_base(len(delta), len(packed)):
            return Compression.ZSTD_DELTA, delta
    else:
        packed = _compressor().compress(plaintext)
    if len(packed) < len(plaintext):
        return Compression.ZSTD, packed
    return Compression.NONE, plaintext


def _fast_compressor() -> zstandard.ZstdCompressor:
    comp = getattr(_local, "fast_compressor", None)
    if comp is None:
        comp = _local.fast_compressor = zstandard.ZstdCompressor(level=1)
    return comp


def _worth_a_base(delta_size: int, packed_size: int) -> bool:
    """A delta ties its base's lifetime to the chunk's (GC keeps the base) and costs a second read at
    restore: take it only when the base saves at least an eighth of what compression alone achieves.
    Content that compresses as well by itself (zeros, unrelated data) stays self-contained."""
    return delta_size <= packed_size * 7 // 8


def _delta(plaintext: bytes, base_plaintext: bytes) -> bytes:
    """``plaintext`` as a zstd frame against ``base_plaintext`` (a raw-content dictionary).

    The default tables hold 2^20 positions: enough for repetitive rows, but in high-entropy data (random,
    compressed or encrypted content) every position of a base over 1 MiB is its own hash, older ones are
    evicted, and a 100-byte change in a 4 MiB chunk cost half the chunk. When the first try shows the
    base is related yet leaves much behind, it is indexed whole (2^22..2^24 positions) and the smaller
    frame wins; unrelated content (no matches at all) is not tried twice.
    """
    dictionary = zstandard.ZstdCompressionDict(base_plaintext, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    delta = zstandard.ZstdCompressor(compression_params=ZSTD_DELTA_PARAMETERS, dict_data=dictionary).compress(plaintext)
    related_but_loose = len(plaintext) // 8 <= len(delta) < len(plaintext) * 9 // 10
    if not related_but_loose or len(base_plaintext) <= 1 << ZSTD_DELTA_PARAMETERS.chain_log:
        return delta
    table_log = min(24, len(base_plaintext).bit_length())
    wider = zstandard.ZstdCompressionParameters(
        window_log=23,
        hash_log=table_log,
        chain_log=table_log,
        search_log=4,
        min_match=6,
        target_length=64,
        strategy=zstandard.STRATEGY_LAZY2,
    )
    retried = zstandard.ZstdCompressor(compression_params=wider, dict_data=dictionary).compress(plaintext)
    return min(delta, retried, key=len)


def seal(
    encryption_key: bytes,
    kind: Kind,
    name: bytes,
    plaintext: bytes,
    *,
    compress: bool = True,
    base: tuple[bytes, bytes] | None = None,
) -> bytes:
    compression, body = compress_body(plaintext, base) if compress else (Compression.NONE, plaintext)
    return seal_body(encryption_key, kind, name, compression, body)


def seal_body(encryption_key: bytes, kind: Kind, name: bytes, compression: Compression, body: bytes) -> bytes:
    salt, nonce = os.urandom(16), os.urandom(12)
    header = HEADER.pack(MAGIC, FORMAT_VERSION, kind, compression, 0, salt, nonce)
    ciphertext = AESGCM(_object_key(encryption_key, salt)).encrypt(nonce, body, header + name)
    return header + ciphertext


def open_sealed(
    encryption_key: bytes, name: bytes, sealed: bytes, *, what: str, base_loader: BaseLoader | None = None
) -> Opened:
    """Decrypt and decompress a sealed object, or raise IntegrityError naming ``what``.

    A delta-compressed object needs ``base_loader`` (base id -> verified base plaintext); without it
    the plaintext is left empty and only ``base_id`` is returned (enough to list dependencies).
    """
    kind_value, compression, body = open_body(encryption_key, name, sealed, what=what)
    base_id = None
    try:
        if compression == Compression.ZSTD:
            body = zstandard.ZstdDecompressor().decompress(body)
        elif compression == Compression.ZSTD_DELTA:
            base_id, frame = body[:BASE_ID_SIZE], body[BASE_ID_SIZE:]
            if len(base_id) != BASE_ID_SIZE:
                raise IntegrityError(f"{what} is a delta without a base id")
            body = undelta(frame, base_loader(base_id)) if base_loader else b""
    except (ValueError, zstandard.ZstdError) as exc:
        raise IntegrityError(f"{what} cannot be decoded: {exc}") from None
    return Opened(kind_value, body, base_id)


def open_body(encryption_key: bytes, name: bytes, sealed: bytes, *, what: str) -> tuple[Kind, Compression, bytes]:
    """Decrypt and authenticate a sealed object, leaving its body as stored (compressed, or a delta)."""
    if len(sealed) < HEADER_SIZE + 16:
        raise IntegrityError(f"{what} is truncated ({len(sealed)} bytes)")
    magic, version, kind, compression, _reserved, salt, nonce = HEADER.unpack_from(sealed)
    if magic != MAGIC:
        raise IntegrityError(f"{what} is not a Strongroom object (bad magic)")
    if version != FORMAT_VERSION:
        raise FormatError(
            f"{what} has format version {version}; this Strongroom reads version {FORMAT_VERSION}",
            hint="Upgrade Strongroom to read this vault",
        )
    header = sealed[:HEADER_SIZE]
    try:
        body = AESGCM(_object_key(encryption_key, salt)).decrypt(nonce, sealed[HEADER_SIZE:], header + name)
    except InvalidTag:
        raise IntegrityError(f"{what} failed authentication (damaged or forged)") from None
    try:
        return Kind(kind), Compression(compression), body
    except ValueError:
        raise IntegrityError(f"{what} names unknown kind {kind} or compression {compression}") from None


def undelta(frame: bytes, base_plaintext: bytes, max_size: int | None = None) -> bytes:
    """Decompress a zstd frame made against ``base_plaintext`` as a raw-content dictionary; with ``max_size``
    (a frame from another account) never more than ``max_size`` + 1 bytes are produced."""
    dictionary = zstandard.ZstdCompressionDict(base_plaintext, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    decompressor = zstandard.ZstdDecompressor(dict_data=dictionary)
    return bounded(decompressor, frame, max_size) if max_size is not None else decompressor.decompress(frame)


def bounded(decompressor: zstandard.ZstdDecompressor, frame: bytes, max_size: int) -> bytes:
    """At most ``max_size`` + 1 bytes of ``frame``: a frame's own content size is not trusted (``decompress``
    with ``max_output_size`` allocates whatever a frame header claims, a bomb from a hostile peer)."""
    with decompressor.stream_reader(io.BytesIO(frame)) as reader:
        return bytes(reader.read(max_size + 1))


def _object_key(encryption_key: bytes, salt: bytes) -> bytes:
    return blake3.blake3(encryption_key + salt, derive_key_context=KEY_CONTEXT).digest()
