"""A chunk frame from another account is decompressed to at most its announced size (docs/wire-protocol.md):
a zstd frame whose own header claims a huge content size is a bomb ``decompress(max_output_size=)`` would
allocate in full."""

from __future__ import annotations

import zstandard

from strongroom.vault import envelope

BOMB_SIZE = 64 << 20  # zeros compress to a few KiB


def test_a_full_frame_claiming_more_than_announced_yields_at_most_one_byte_more() -> None:
    bomb = zstandard.ZstdCompressor().compress(bytes(BOMB_SIZE))
    assert len(bomb) < 1 << 16
    out = envelope.bounded(zstandard.ZstdDecompressor(), bomb, 10)
    assert len(out) == 11  # refused by the receiver's size check, after producing 11 bytes, not 64 MiB


def test_a_delta_frame_is_bounded_too_even_when_announcing_zero_bytes() -> None:
    base = b"base" * 1000
    dictionary = zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    bomb = zstandard.ZstdCompressor(dict_data=dictionary).compress(bytes(BOMB_SIZE))
    assert len(envelope.undelta(bomb, base, 0)) == 1
    assert len(envelope.undelta(bomb, base, 100)) == 101
