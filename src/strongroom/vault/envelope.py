"""The sealed form of every vault object (chunks, index objects, manifests, vault config).

Layout (all integers big-endian), see docs/vault-format.md §4::

    0   4  magic  b"SRGM"
    4   1  format version (1)
    5   1  kind   (1 chunk, 2 index, 3 manifest, 4 vault config)
    6   1  compression (0 none, 1 zstd)
    7   1  reserved, 0
    8  16  salt   random; object key = BLAKE3-derive-key(CONTEXT, encryption_key || salt)
    24 12  nonce  random
    36  .  AES-256-GCM ciphertext of the (compressed) plaintext, then the 16-byte tag

The associated data is the 36-byte header followed by the object's name (for a chunk its
32-byte id), so an object cannot be moved to another name or have its header altered.
A fresh 128-bit salt gives every object its own key, so a (key, nonce) pair never repeats.
"""

from __future__ import annotations

import os
import struct
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


class Kind(IntEnum):
    CHUNK = 1
    INDEX = 2
    MANIFEST = 3
    CONFIG = 4


class Compression(IntEnum):
    NONE = 0
    ZSTD = 1


@dataclass(frozen=True)
class Opened:
    kind: Kind
    plaintext: bytes


_compressors = {}


def _compressor() -> zstandard.ZstdCompressor:
    # ZstdCompressor is not thread-safe: one per thread.
    import threading

    ident = threading.get_ident()
    comp = _compressors.get(ident)
    if comp is None:
        comp = _compressors[ident] = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return comp


def seal(encryption_key: bytes, kind: Kind, name: bytes, plaintext: bytes, *, compress: bool = True) -> bytes:
    compression = Compression.NONE
    body = plaintext
    if compress and plaintext:
        packed = _compressor().compress(plaintext)
        if len(packed) < len(plaintext):
            body, compression = packed, Compression.ZSTD
    salt, nonce = os.urandom(16), os.urandom(12)
    header = HEADER.pack(MAGIC, FORMAT_VERSION, kind, compression, 0, salt, nonce)
    ciphertext = AESGCM(_object_key(encryption_key, salt)).encrypt(nonce, body, header + name)
    return header + ciphertext


def open_sealed(encryption_key: bytes, name: bytes, sealed: bytes, *, what: str) -> Opened:
    """Decrypt and decompress a sealed object, or raise IntegrityError naming ``what``."""
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
        kind_value = Kind(kind)
        if compression == Compression.ZSTD:
            body = zstandard.ZstdDecompressor().decompress(body)
        elif compression != Compression.NONE:
            raise IntegrityError(f"{what} names unknown compression {compression}")
    except (ValueError, zstandard.ZstdError) as exc:
        raise IntegrityError(f"{what} cannot be decoded: {exc}") from None
    return Opened(kind_value, body)


def _object_key(encryption_key: bytes, salt: bytes) -> bytes:
    return blake3.blake3(encryption_key + salt, derive_key_context=KEY_CONTEXT).digest()
