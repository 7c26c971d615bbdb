"""The vault is the only code that writes or deletes vault objects: withdrawing a manifest, destroying a vault,
and catalog records, on a store that removes itself at once (local) and on one that deletes object by object."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import pytest

from strongroom.errors import NotFoundError, StorageError
from strongroom.store.base import ObjectStore
from strongroom.store.memory import MemoryStore
from strongroom.vault import Vault, gc
from strongroom.vault.manifest import load_manifest
from strongroom.vault.reader import RecoveryPointReader
from strongroom.vault.vault import CONFIG_KEY
from strongroom.vault.writer import RecoveryPointWriter
from tests.support.vaults import FAST_SCRYPT, make_vault

SRC = Path(__file__).resolve().parents[2] / "src" / "strongroom"
DATA = bytes(range(256)) * 4096


def backup(vault: Vault, rp_id: str, data: bytes = DATA) -> None:
    with RecoveryPointWriter(vault, rp_id) as writer:
        writer.store_stream("dump", io.BytesIO(data))
        writer.commit("db", "postgres", {})


def test_a_withdrawn_manifest_leaves_its_objects_to_the_collector(tmp_path: Path) -> None:
    vault = make_vault(tmp_path / "v", average_chunk=64 * 1024)
    backup(vault, "keep", DATA)
    backup(vault, "gone", DATA[::-1])
    vault.withdraw_manifest("gone")
    vault.withdraw_manifest("gone")  # idempotent: finishing an interrupted removal
    assert vault.list_manifest_ids() == ["keep"]
    with pytest.raises(NotFoundError):
        load_manifest(vault, "gone")
    deleted = gc.delete_objects(vault, gc.candidates(gc.mark(vault), gc.stored_objects(vault)))
    assert deleted.objects > 0
    with RecoveryPointReader(vault, load_manifest(vault, "keep")) as reader:
        assert reader.open_stream("dump").read() == DATA


class _FailingAfter(MemoryStore):
    """A store whose deletes fail after ``allowed`` of them: a destroy cut short by a crash or an outage."""

    def __init__(self, allowed: int) -> None:
        super().__init__("failing-after")
        self.allowed = allowed
        self.deleted: list[str] = []

    def delete(self, key: str) -> None:
        if len(self.deleted) >= self.allowed:
            raise StorageError("store unavailable")
        self.deleted.append(key)
        super().delete(key)


@pytest.mark.parametrize("allowed", [1, 3])
def test_a_destroy_cut_short_leaves_no_vault_that_opens(allowed: int) -> None:
    store = _FailingAfter(allowed)
    vault = Vault.create(store, "pw", scrypt_params=FAST_SCRYPT)
    backup(vault, "rp")
    vault.write_record("catalog/vault", b"{}")
    with pytest.raises(StorageError):
        vault.destroy()
    assert store.deleted[0] == CONFIG_KEY
    with pytest.raises(NotFoundError, match="no vault"):
        Vault.open(store, "pw")


def test_destroy_deletes_config_first_and_keys_last_one_object_at_a_time() -> None:
    store = _FailingAfter(10**6)
    vault = Vault.create(store, "pw", scrypt_params=FAST_SCRYPT)
    backup(vault, "rp")
    vault.write_record("catalog/points/rp", b"{}")
    vault.destroy()
    assert not list(store.list())
    kinds = [key.split("/")[0] for key in store.deleted]
    assert kinds[0] == CONFIG_KEY and kinds[-1] == "keys"
    assert kinds.index("manifests") < kinds.index("catalog") < kinds.index("chunks")


def test_destroy_removes_a_local_vault_directory_at_once(tmp_path: Path) -> None:
    vault = make_vault(tmp_path / "v")
    backup(vault, "rp")
    assert vault.store.capabilities.bulk_removal
    vault.destroy()
    assert not (tmp_path / "v").exists()


def test_records_cannot_replace_what_is_not_a_record(tmp_path: Path) -> None:
    """Record writes (the catalog's mirror) can never overwrite a manifest, a chunk, the config or the keys."""
    vault = make_vault(tmp_path / "v")
    backup(vault, "rp")
    for key in ("manifests/rp", CONFIG_KEY, "keys/x", "catalog/", "chunks/00/00"):
        with pytest.raises(StorageError, match="not a catalog record key"):
            vault.write_record(key, b"{}")
    load_manifest(vault, "rp")
    vault.write_record("catalog/vault", b'{"seq": 1}')
    assert vault.read_record("catalog/vault") == b'{"seq": 1}'
    assert vault.read_record("catalog/other") is None
    assert vault.record_keys("catalog/") == ["catalog/vault"]


def _calls_outside_the_vault() -> list[str]:
    """Code outside vault/ and store/ that writes or deletes store objects, composes their keys, tests for a
    concrete store or edits the account's open vaults."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC).as_posix()
        if relative.startswith(("vault/", "store/")):
            continue
        if relative == "services/reports/jobs.py":  # writes report files to a store of their own, never a vault's
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                call = ast.unparse(node.func)
                if call.endswith(("store.put", "store.delete", "store.remove_all")) or call in (
                    "manifest_key",
                    "chunk_key",
                ):
                    found.append(f"{relative}:{node.lineno} {call}")
                if call == "isinstance" and "LocalStore" in ast.unparse(node):
                    found.append(f"{relative}:{node.lineno} isinstance LocalStore")
            if isinstance(node, ast.Attribute) and node.attr == "_open_vaults" and relative != "services/account.py":
                found.append(f"{relative}:{node.lineno} _open_vaults")
    return found


def test_only_the_vault_writes_or_deletes_vault_objects() -> None:
    assert _calls_outside_the_vault() == []


def test_stores_declare_whether_they_remove_themselves_at_once() -> None:
    assert MemoryStore.capabilities.bulk_removal is False
    with pytest.raises(NotImplementedError):
        ObjectStore.remove_all(MemoryStore("x"))
