"""The vault engine on its own: streams in, streams out, dedup, and damage always named."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from strongroom.errors import FormatError, IntegrityError
from strongroom.vault import Vault
from strongroom.vault.manifest import load_manifest
from strongroom.vault.reader import RecoveryPointReader
from strongroom.vault.vault import CHUNKS_PREFIX, MANIFESTS_PREFIX
from strongroom.vault.verify import verify_recovery_points
from strongroom.vault.writer import RecoveryPointWriter
from tests.support.data import mixed_data
from tests.support.faulty_store import FaultyStore, flip_byte
from tests.support.vaults import make_vault

REPO = Path(__file__).resolve().parents[2]


def write(vault: Vault, rp_id: str, streams: dict[str, bytes]) -> dict[str, int]:
    with RecoveryPointWriter(vault, rp_id) as writer:
        for name, data in streams.items():
            writer.store_stream(name, io.BytesIO(data))
        writer.commit("res", "test", {"note": "x"})
    return writer.stats.as_dict()


def read(vault: Vault, rp_id: str, name: str) -> bytes:
    with RecoveryPointReader(vault, load_manifest(vault, rp_id)) as reader:
        return reader.open_stream(name).read()


@pytest.fixture
def small_vault(tmp_path: Path) -> Vault:
    return make_vault(tmp_path / "vault", average_chunk=64 * 1024)


def test_round_trip_of_several_streams(small_vault: Vault) -> None:
    data = {"a": mixed_data(3_000_000), "b": b"", "c": os.urandom(100_000)}
    write(small_vault, "rp1", data)
    for name, content in data.items():
        assert read(small_vault, "rp1", name) == content


def test_identical_second_backup_adds_only_its_manifest(small_vault: Vault) -> None:
    data = mixed_data(2_000_000)
    first = write(small_vault, "rp1", {"s": data})
    second = write(small_vault, "rp2", {"s": data})
    assert first["new_chunks"] > 10
    assert second["new_chunks"] == 0
    assert second["new_bytes"] < 2_000  # the manifest alone
    assert second["stored_bytes"] == first["stored_bytes"]


def test_insertion_in_the_middle_stores_a_few_chunks(small_vault: Vault) -> None:
    data = mixed_data(4_000_000)
    first = write(small_vault, "rp1", {"s": data})
    changed = data[:2_000_000] + b"inserted!" + data[2_000_000:]
    second = write(small_vault, "rp2", {"s": changed})
    assert second["new_bytes"] < first["stored_bytes"] * 0.1
    assert read(small_vault, "rp2", "s") == changed


def test_reopened_vault_with_passphrase_reads_back(tmp_path: Path) -> None:
    vault = make_vault(tmp_path / "v")
    write(vault, "rp1", {"s": b"hello" * 1000})
    reopened = Vault.open(vault.store, "test-passphrase")
    assert read(reopened, "rp1", "s") == b"hello" * 1000


def _objects(vault: Vault) -> list[str]:
    return sorted(k for k in vault.store.list() if k.startswith((CHUNKS_PREFIX, MANIFESTS_PREFIX)))


def test_a_flipped_byte_in_any_object_is_caught_by_verify_and_restore(small_vault: Vault) -> None:
    data = mixed_data(600_000)
    write(small_vault, "rp1", {"s": data})
    store = FaultyStore(small_vault.store)
    vault = Vault.open(store, "test-passphrase")
    for key in _objects(vault):
        position = random.Random(key).randrange(store.head(key) or 0)
        with store.tampered(key, flip_byte(position)):
            report = verify_recovery_points(vault, ["rp1"], read_data=True)
            assert not report.ok, key
            assert any(key in k for k in report.damaged_objects), (key, report.damaged_objects)
            assert report.damaged_recovery_points == {"rp1": list(report.damaged_objects)}
            # A flip of the envelope's version byte reads as an unknown format (FormatError); both exit 7.
            with pytest.raises((IntegrityError, FormatError)):
                read(vault, "rp1", "s")
    assert verify_recovery_points(vault, ["rp1"], read_data=True).ok


def test_a_chunk_swapped_for_another_is_caught(small_vault: Vault) -> None:
    write(small_vault, "rp1", {"s": mixed_data(600_000)})
    store = FaultyStore(small_vault.store)
    vault = Vault.open(store, "test-passphrase")
    chunks = [k for k in _objects(vault) if k.startswith(CHUNKS_PREFIX)]
    store.tamper(chunks[0], lambda _: store.inner.get(chunks[1]))
    with pytest.raises(IntegrityError):
        read(vault, "rp1", "s")


def test_missing_chunk_is_named_without_read_data(small_vault: Vault) -> None:
    write(small_vault, "rp1", {"s": mixed_data(600_000)})
    write(small_vault, "rp2", {"s": mixed_data(600_000)})
    victim = next(k for k in _objects(small_vault) if k.startswith(CHUNKS_PREFIX))
    small_vault.store.delete(victim)
    report = verify_recovery_points(small_vault, ["rp1", "rp2"], read_data=False)
    assert victim in report.damaged_objects
    assert set(report.damaged_recovery_points) == {"rp1", "rp2"}


def test_memory_stays_bounded_for_a_large_stream(tmp_path: Path) -> None:
    """A 200 MB generated stream passes through with a memory peak far below its size, measured in a
    fresh process with tracemalloc (tests/support/memory_probe.py), where holding the stream shows as
    200 MiB or more."""
    size = 200 << 20
    probe = subprocess.run(
        [sys.executable, "-m", "tests.support.memory_probe", str(tmp_path / "vault"), str(size)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    grown = json.loads(probe.stdout)
    assert grown["buffer"] > 150, grown  # the probe sees a stream held in memory ...
    assert grown["writer"] < 100, grown  # ... and the writer does not hold one
