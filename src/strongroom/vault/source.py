"""What the source of a copy described, so the copy can be proved to be exactly that (vault-format.md §6.4).

A source names each chunk by ``BLAKE3(key = its vault's id_key, plaintext)``. A copy's receiver is
given that key, so it can recompute the source's id of every chunk it receives or reuses; the
manifest of the copy keeps the key and, per stream, a digest of the (source chunk id, size) sequence
the source appended. Reading the copy back and recomputing the digest from the plaintext proves that
the copy holds the bytes the source's ids name, in the source's order.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass, field
from typing import Any

import blake3

from strongroom.errors import FormatError

ID_KEY_SIZE = 32
_FINGERPRINT_CONTEXT = "strongroom 2026-12 source chunk-id key fingerprint v1"
_STREAM_DIGEST_CONTEXT = b"strongroom 2026-12 source stream v1\0"
_RECORD = struct.Struct(">32sI")  # source chunk id, plaintext size
_MAPPING_PROOF_CONTEXT = "strongroom 2026-12 chunk mapping proof v1"
_MAPPING = struct.Struct(">16s32s32sQ")  # source key fingerprint, source chunk id, own chunk id, plaintext size


def source_chunk_id(id_key: bytes, plaintext: bytes | memoryview) -> bytes:
    """The id the source vault gives this plaintext."""
    return blake3.blake3(plaintext, key=id_key, max_threads=1).digest()


def key_fingerprint(id_key: bytes) -> bytes:
    """16 bytes that name an id key without revealing it (the catalog records which key checked a mapping)."""
    return blake3.blake3(derive_key_context=_FINGERPRINT_CONTEXT).update(id_key).digest(16)


def mapping_proof_key(own_id_key: bytes) -> bytes:
    """The receiving vault's key for proofs of its chunk mappings (derived from its own id key: the catalog
    file alone can neither make nor check a proof)."""
    return blake3.blake3(derive_key_context=_MAPPING_PROOF_CONTEXT).update(own_id_key).digest()


def mapping_proof(
    proof_key: bytes, peer_vault_id: str, fingerprint: bytes, peer_id: bytes, own_id: bytes, size: int
) -> bytes:
    """The proof that own chunk ``own_id`` holds ``size`` bytes whose id under the key ``fingerprint`` names
    is ``peer_id`` in vault ``peer_vault_id``: a keyed BLAKE3 of all of it, 16 bytes."""
    record = _MAPPING.pack(fingerprint, peer_id, own_id, size) + peer_vault_id.encode()
    return blake3.blake3(record, key=proof_key).digest(16)


class StreamDigest:
    """Digest of a stream as the source described it: its (source chunk id, size) records in order."""

    def __init__(self) -> None:
        self._hash = blake3.blake3(_STREAM_DIGEST_CONTEXT)

    def add(self, source_id: bytes, size: int) -> None:
        self._hash.update(_RECORD.pack(source_id, size))

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


@dataclass(frozen=True)
class SourceRecord:
    """The ``source`` member of a copy's manifest."""

    recovery_point_arn: str
    vault_arn: str
    vault_id: str
    id_key: bytes = field(repr=False)
    streams: dict[str, str] = field(default_factory=dict)  # stream name -> StreamDigest hex

    def to_json(self) -> dict[str, Any]:
        return {
            "recovery_point_arn": self.recovery_point_arn,
            "vault_arn": self.vault_arn,
            "vault_id": self.vault_id,
            "id_key": base64.b64encode(self.id_key).decode("ascii"),
            "streams": dict(self.streams),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> SourceRecord:
        try:
            key = base64.b64decode(raw["id_key"], validate=True)
            record = cls(
                str(raw["recovery_point_arn"]),
                str(raw["vault_arn"]),
                str(raw["vault_id"]),
                key,
                {str(k): str(v) for k, v in raw["streams"].items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FormatError(f"the manifest's source record is malformed: {exc}") from None
        if len(key) != ID_KEY_SIZE:
            raise FormatError("the manifest's source record holds an id key of the wrong length")
        return record
