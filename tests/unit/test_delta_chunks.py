"""Delta compression against the previous recovery point: small, exact, and its base always guarded."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
import zstandard

from strongroom.errors import IntegrityError
from strongroom.vault import Vault, envelope
from strongroom.vault.envelope import Kind
from strongroom.vault.manifest import Manifest, decode_index, load_manifest
from strongroom.vault.reader import RecoveryPointReader, read_object
from strongroom.vault.vault import chunk_key
from strongroom.vault.verify import verify_recovery_points
from strongroom.vault.writer import RecoveryPointWriter
from tests.support.data import table_dump
from tests.support.faulty_store import FaultyStore
from tests.support.vaults import make_vault


def backup(vault: Vault, rp_id: str, data: bytes, previous: Manifest | None = None) -> tuple[Manifest, dict]:
    with RecoveryPointWriter(vault, rp_id, previous=previous) as writer:
        writer.store_stream("dump", io.BytesIO(data))
        manifest = writer.commit("db", "postgres", {})
    return manifest, writer.stats.as_dict()


def read(vault: Vault, rp_id: str) -> bytes:
    with RecoveryPointReader(vault, load_manifest(vault, rp_id)) as reader:
        return reader.open_stream("dump").read()


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    return make_vault(tmp_path / "v", average_chunk=256 * 1024)


def test_scattered_updates_are_stored_as_small_deltas(vault: Vault) -> None:
    first_data = table_dump(60_000, None)
    second_data = table_dump(60_000, 100)
    first, first_stats = backup(vault, "rp1", first_data)
    _, second_stats = backup(vault, "rp2", second_data, previous=first)
    assert second_stats["delta_chunks"] > 0.8 * second_stats["new_chunks"]
    # Whole chunks would cost ~100%. Typically 2-3%; the vault's random chunker seed moves the cut points, and
    # a seed whose cuts fall badly leaves a few chunks whole (26% seen once): the bound says "deltas", not "how small".
    assert second_stats["new_bytes"] < 0.5 * first_stats["stored_bytes"]
    # what the second recovery point needs includes the bases its deltas were made against
    assert second_stats["stored_bytes"] > first_stats["stored_bytes"]
    assert read(vault, "rp2") == second_data
    assert read(vault, "rp1") == first_data
    assert verify_recovery_points(vault, ["rp1", "rp2"], read_data=True).ok


def test_without_previous_nothing_is_a_delta(vault: Vault) -> None:
    backup(vault, "rp1", table_dump(30_000, None))
    _, stats = backup(vault, "rp2", table_dump(30_000, 100))
    assert stats["delta_chunks"] == 0


def _delta_refs(vault: Vault, manifest: Manifest) -> list:
    refs = []
    for index_id in manifest.streams["dump"].index:
        refs += [r for r in decode_index(read_object(vault, index_id, Kind.INDEX), "index") if r.base]
    return refs


def test_a_damaged_base_is_blamed_on_every_recovery_point_that_needs_it(vault: Vault) -> None:
    first, _ = backup(vault, "rp1", table_dump(30_000, None))
    second, _ = backup(vault, "rp2", table_dump(30_000, 100), previous=first)
    base = _delta_refs(vault, second)[0].base
    store = FaultyStore(vault.store)
    vault = Vault.open(store, "test-passphrase")
    store.tamper(chunk_key(base), lambda data: data[:-5] + bytes([data[-5] ^ 0xFF]) + data[-4:])
    report = verify_recovery_points(vault, ["rp1", "rp2"], read_data=True)
    assert chunk_key(base) in report.damaged_objects
    assert set(report.damaged_recovery_points) == {"rp1", "rp2"}
    with pytest.raises(IntegrityError, match=base.hex()):
        read(vault, "rp2")


def test_a_missing_base_is_found_without_reading_data(vault: Vault) -> None:
    first, _ = backup(vault, "rp1", table_dump(30_000, None))
    second, _ = backup(vault, "rp2", table_dump(30_000, 100), previous=first)
    base = _delta_refs(vault, second)[0].base
    vault.store.delete(chunk_key(base))
    report = verify_recovery_points(vault, ["rp2"], read_data=False)
    assert report.damaged_recovery_points == {"rp2": [chunk_key(base)]}


def test_third_backup_deltas_against_whole_chunks_only(vault: Vault) -> None:
    first, _ = backup(vault, "rp1", table_dump(30_000, None))
    second, _ = backup(vault, "rp2", table_dump(30_000, 100), previous=first)
    third_data = table_dump(30_000, 50)
    third, stats = backup(vault, "rp3", third_data, previous=second)
    assert stats["delta_chunks"] > 0
    bases = {ref.base for ref in _delta_refs(vault, third)}
    second_deltas = {ref.id for ref in _delta_refs(vault, second)}
    assert not bases & second_deltas  # never a delta of a delta
    assert read(vault, "rp3") == third_data
    assert verify_recovery_points(vault, ["rp1", "rp2", "rp3"], read_data=True).ok


@pytest.mark.parametrize("size", [1 << 20, 5 << 19, 4 << 20])
def test_a_small_change_in_a_large_high_entropy_chunk_is_a_small_delta(size: int) -> None:
    """Random (compressed, encrypted) content: a base larger than the default match tables is indexed
    whole, so a 100-byte change costs about 100 bytes, not half the chunk."""
    rng = random.Random(size)
    base = rng.randbytes(size)
    changed = bytearray(base)
    changed[size // 3 : size // 3 + 100] = rng.randbytes(100)
    compression, body = envelope.compress_body(bytes(changed), (b"b" * envelope.BASE_ID_SIZE, base))
    assert compression == envelope.Compression.ZSTD_DELTA
    assert len(body) < 4_000, len(body)
    assert envelope.undelta(body[envelope.BASE_ID_SIZE :], base, size) == bytes(changed)


def test_unrelated_high_entropy_content_round_trips_whatever_its_encoding() -> None:
    rng = random.Random(7)
    base, other = rng.randbytes(3 << 20), rng.randbytes(3 << 20)
    compression, body = envelope.compress_body(other, (b"b" * envelope.BASE_ID_SIZE, base))
    if compression == envelope.Compression.ZSTD_DELTA:
        assert envelope.undelta(body[envelope.BASE_ID_SIZE :], base, len(other)) == other
    else:
        assert compression == envelope.Compression.NONE and body == other


@pytest.mark.parametrize("content", ["zeros", "random", "text"])
def test_content_that_compresses_as_well_by_itself_does_not_depend_on_a_base(content: str) -> None:
    """A delta keeps its base alive (GC spares it): a run of zeros, or data unrelated to the base, is
    stored self-contained even when a delta against the base would be as small."""
    rng = random.Random(11)
    base = rng.randbytes(500_000)
    plaintext = {
        "zeros": bytes(4 << 20),
        "random": rng.randbytes(500_000),
        "text": b"".join(b"row %d of a table nobody changed\n" % n for n in range(40_000)),
    }[content]
    compression, body = envelope.compress_body(plaintext, (b"b" * envelope.BASE_ID_SIZE, base))
    assert compression != envelope.Compression.ZSTD_DELTA
    if compression == envelope.Compression.ZSTD:
        body = zstandard.ZstdDecompressor().decompress(body)
    assert body == plaintext
