"""Garbage collection in the vault engine: what is live, what is garbage, and deleting only the garbage."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest

from strongroom.errors import IntegrityError
from strongroom.vault import Vault, gc
from strongroom.vault.envelope import Kind
from strongroom.vault.manifest import ChunkRef, Manifest, decode_index, load_manifest
from strongroom.vault.reader import RecoveryPointReader, read_object
from strongroom.vault.vault import chunk_key, manifest_key
from strongroom.vault.verify import verify_recovery_points
from strongroom.vault.writer import RecoveryPointWriter
from tests.support.data import table_dump
from tests.support.vaults import make_vault


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    return make_vault(tmp_path / "v", average_chunk=256 * 1024)


def backup(vault: Vault, rp_id: str, data: bytes, previous: Manifest | None = None) -> Manifest:
    with RecoveryPointWriter(vault, rp_id, previous=previous) as writer:
        writer.store_stream("dump", io.BytesIO(data))
        return writer.commit("db", "postgres", {})


def read(vault: Vault, rp_id: str) -> bytes:
    with RecoveryPointReader(vault, load_manifest(vault, rp_id)) as reader:
        return reader.open_stream("dump").read()


def refs_of(vault: Vault, manifest: Manifest) -> list[ChunkRef]:
    return [
        ref
        for index_id in manifest.streams["dump"].index
        for ref in decode_index(read_object(vault, index_id, Kind.INDEX), "index")
    ]


def needed_by(vault: Vault, manifest: Manifest) -> set[bytes]:
    """Every object a recovery point needs, found independently of the collector."""
    needed = set(manifest.streams["dump"].index)
    for ref in refs_of(vault, manifest):
        needed |= {ref.id, ref.base} - {None}
    return needed


def remove(vault: Vault, rp_id: str) -> None:
    vault.store.delete(manifest_key(rp_id))


def collect(vault: Vault) -> gc.Deleted:
    return gc.delete_objects(vault, gc.candidates(gc.mark(vault), gc.stored_objects(vault)))


def stored_size(vault: Vault) -> int:
    return sum(vault.store.head(key) or 0 for key in vault.store.list("chunks/"))


def test_objects_only_a_removed_recovery_point_needed_are_deleted(vault: Vault) -> None:
    rng = random.Random(1)
    shared, old_only, new_only = rng.randbytes(1_500_000), rng.randbytes(2_000_000), rng.randbytes(1_000_000)
    old = backup(vault, "old", shared + old_only)
    new = backup(vault, "new", shared + new_only)
    garbage = needed_by(vault, old) - needed_by(vault, new)
    assert garbage
    remove(vault, "old")
    before = stored_size(vault)

    deleted = collect(vault)

    assert gc.stored_objects(vault) == needed_by(vault, new)
    assert deleted.objects == len(garbage)
    assert deleted.bytes == before - stored_size(vault) >= len(old_only)
    assert read(vault, "new") == shared + new_only
    assert verify_recovery_points(vault, ["new"], read_data=True).ok


def test_the_base_of_a_live_delta_chunk_is_live(vault: Vault) -> None:
    first = backup(vault, "rp1", table_dump(30_000, None))
    second_data = table_dump(30_000, 100)
    second = backup(vault, "rp2", second_data, previous=first)
    bases = {ref.base for ref in refs_of(vault, second) if ref.base}
    direct = {ref.id for ref in refs_of(vault, second)}
    assert bases - direct, "the test needs bases that the second recovery point does not list itself"
    remove(vault, "rp1")

    marking = gc.mark(vault)
    doomed = gc.candidates(marking, gc.stored_objects(vault))
    assert bases <= marking.referenced
    assert not bases & doomed
    gc.delete_objects(vault, doomed)

    assert all(vault.store.exists(chunk_key(base)) for base in bases)
    assert read(vault, "rp2") == second_data
    assert verify_recovery_points(vault, ["rp2"], read_data=True).ok


def test_a_vault_without_garbage_loses_nothing(vault: Vault) -> None:
    first = backup(vault, "rp1", table_dump(20_000, None))
    backup(vault, "rp2", table_dump(20_000, 100), previous=first)
    stored = gc.stored_objects(vault)

    assert collect(vault) == gc.Deleted(0, 0)
    assert gc.stored_objects(vault) == stored
    assert verify_recovery_points(vault, ["rp1", "rp2"], read_data=True).ok


def test_a_manifest_committed_after_the_mark_spares_what_it_reuses(vault: Vault) -> None:
    data = random.Random(2).randbytes(3_000_000)
    old = backup(vault, "old", data)
    remove(vault, "old")
    marking = gc.mark(vault)
    doomed = gc.candidates(marking, gc.stored_objects(vault))
    assert doomed == needed_by(vault, old)

    backup(vault, "again", data)  # a writer that was in flight during the mark reuses every object
    gc.mark(vault, marking)

    assert gc.candidates(marking, doomed) == set()
    assert "again" in marking.manifests


def test_a_damaged_manifest_stops_the_collector(vault: Vault) -> None:
    backup(vault, "rp1", random.Random(3).randbytes(1_000_000))
    key = manifest_key("rp1")
    sealed = bytearray(vault.store.get(key))
    sealed[-3] ^= 0xFF
    vault.store.put(key, bytes(sealed))
    with pytest.raises(IntegrityError, match="rp1 cannot be read"):
        gc.mark(vault)


def test_a_missing_index_object_stops_the_collector(vault: Vault) -> None:
    manifest = backup(vault, "rp1", random.Random(4).randbytes(1_000_000))
    vault.store.delete(chunk_key(manifest.streams["dump"].index[0]))
    with pytest.raises(IntegrityError, match="what it needs is unknown"):
        gc.mark(vault)


def test_keys_of_another_shape_are_never_touched(vault: Vault) -> None:
    strays = ["chunks/ab/not-an-id", "chunks/zz/" + "ab" * 32, "chunks/ab/" + "cd" * 32]
    for key in strays:
        vault.store.put(key, b"whatever")
    assert collect(vault) == gc.Deleted(0, 0)
    assert all(vault.store.exists(key) for key in strays)
