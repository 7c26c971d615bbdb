"""The expiry sweep and the garbage collector on a real account: catalog, vault on disk, directory backups."""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from strongroom.adapters.base import RestoreRequest
from strongroom.errors import UsageError
from strongroom.model import RecoveryPoint, RecoveryPointStatus, iso
from strongroom.policy.principals import root_arn
from strongroom.services.account import DEFAULT_VAULT, Account, init_account, open_account
from strongroom.services.backup import create_backup_job, run_backup_job
from strongroom.services.lifecycle import collect_garbage, remove_recovery_point, run_lifecycle
from strongroom.services.resources import add_resource
from strongroom.services.restore import create_restore_job, run_restore_job
from strongroom.services.vault_ops import put_vault_lock
from strongroom.services.verify import verify
from strongroom.services.writers import admission_lock_path, exclusive_writers_lock, hold_writer
from strongroom.vault import gc
from strongroom.vault.envelope import Kind
from strongroom.vault.manifest import decode_index, load_manifest
from strongroom.vault.reader import read_object
from tests.support.locks import held_exclusively, wait_until, waiters
from tests.support.trees import snapshot_tree
from tests.support.vaults import FAST_SCRYPT

PASSPHRASE = "lifecycle test passphrase"
FAR_FUTURE = datetime(2400, 1, 1, tzinfo=UTC)


@pytest.fixture
def account(tmp_path: Path) -> Iterator[Account]:
    opened = init_account(tmp_path / "home", PASSPHRASE, scrypt_params=FAST_SCRYPT, average_chunk_size=256 * 1024)
    yield opened
    opened.close()


def write_files(root: Path, names: list[str], seed: int, size: int = 700_000) -> None:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / name).write_bytes(rng.randbytes(size))


def resource(account: Account, resource_id: str, path: Path) -> str:
    add_resource(account, resource_id, "directory", {"path": str(path)}, {})
    return resource_id


def back_up(account: Account, resource_id: str, days: int | None = None) -> RecoveryPoint:
    """A backup job kept ``days`` days from its creation (None: until deleted)."""
    job, lock = create_backup_job(account, resource_id, delete_after_days=days)
    finished = run_backup_job(account, job.id, lock)
    return account.catalog.get_recovery_point(finished.recovery_point_arn or "")


def restored(account: Account, rp: RecoveryPoint, target: Path) -> dict[str, Any]:
    job, lock = create_restore_job(account, rp.arn, RestoreRequest(target=str(target)))
    run_restore_job(account, job.id, lock)
    return snapshot_tree(target)


def status(account: Account, rp: RecoveryPoint) -> RecoveryPointStatus:
    return account.catalog.get_recovery_point(rp.id).status


def chunk_bytes(account: Account) -> int:
    root = account.home / "vaults" / DEFAULT_VAULT / "chunks"
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())


def test_a_point_expires_exactly_at_its_delete_at(account: Account, tmp_path: Path) -> None:
    write_files(tmp_path / "tree", ["a", "b"], seed=1)
    files = resource(account, "files", tmp_path / "tree")
    old = back_up(account, files, days=7)
    kept = back_up(account, files)
    deadline = datetime.fromisoformat(old.delete_at or "")

    before = run_lifecycle(account, now=deadline - timedelta(microseconds=1))
    assert before["expired_recovery_points"] == []
    assert status(account, old) == RecoveryPointStatus.COMPLETED

    at = run_lifecycle(account, now=deadline)
    assert at["expired_recovery_points"] == [old.arn]
    gone = account.catalog.get_recovery_point(old.id)
    assert gone.status == RecoveryPointStatus.DELETED
    assert gone.status_message == f"retention of 7 days ended at {iso(deadline)}"
    with pytest.raises(UsageError, match="is DELETED, not COMPLETED"):
        create_restore_job(account, old.arn, RestoreRequest(target=str(tmp_path / "nope")))
    assert restored(account, kept, tmp_path / "kept") == snapshot_tree(tmp_path / "tree")

    assert run_lifecycle(account, now=deadline + timedelta(days=1))["expired"] == 0  # nothing twice


def test_points_without_retention_never_expire(account: Account, tmp_path: Path) -> None:
    write_files(tmp_path / "tree", ["a"], seed=2)
    point = back_up(account, resource(account, "files", tmp_path / "tree"))
    assert point.delete_at is None
    report = run_lifecycle(account, now=FAR_FUTURE)
    assert report["expired"] == 0
    assert status(account, point) == RecoveryPointStatus.COMPLETED


def test_only_the_named_vault_is_swept(account: Account, tmp_path: Path) -> None:
    write_files(tmp_path / "tree", ["a"], seed=3)
    point = back_up(account, resource(account, "files", tmp_path / "tree"), days=1)
    from strongroom.services.account import create_vault

    create_vault(account, "Other", scrypt_params=FAST_SCRYPT)
    assert run_lifecycle(account, now=FAR_FUTURE, vault_name="Other")["expired"] == 0
    assert status(account, point) == RecoveryPointStatus.COMPLETED
    assert run_lifecycle(account, now=FAR_FUTURE, vault_name=DEFAULT_VAULT)["expired_recovery_points"] == [point.arn]


def test_a_simulated_future_never_reaches_points_a_vault_lock_protects(account: Account, tmp_path: Path) -> None:
    write_files(tmp_path / "tree", ["a"], seed=4)
    files = resource(account, "files", tmp_path / "tree")
    put_vault_lock(
        account,
        root_arn(account.account_id),
        DEFAULT_VAULT,
        min_retention_days=1,
        max_retention_days=90,
        changeable_for_days=3,
    )
    protected = back_up(account, files, days=30)
    past_due = back_up(account, files, days=1)
    assert protected.lock_applies and past_due.lock_applies
    a_day_later = datetime.now(UTC) - timedelta(seconds=1)  # as if its day had passed
    account.catalog.update_recovery_point(past_due.id, delete_at=iso(a_day_later))

    report = run_lifecycle(account, now=FAR_FUTURE)

    assert report["expired_recovery_points"] == [past_due.arn]  # its retention really has ended
    assert status(account, protected) == RecoveryPointStatus.COMPLETED


def test_remove_is_idempotent_and_refuses_a_point_being_created(account: Account, tmp_path: Path) -> None:
    write_files(tmp_path / "tree", ["a"], seed=5)
    point = back_up(account, resource(account, "files", tmp_path / "tree"))
    remove_recovery_point(account, point, "deleted by a test")
    remove_recovery_point(account, account.catalog.get_recovery_point(point.id), "again")
    gone = account.catalog.get_recovery_point(point.id)
    assert (gone.status, gone.status_message) == (RecoveryPointStatus.DELETED, "deleted by a test")
    assert account.vault().list_manifest_ids() == []

    creating = RecoveryPoint(
        "rp-creating",
        account.recovery_point_arn("rp-creating"),
        DEFAULT_VAULT,
        "files",
        "directory",
        RecoveryPointStatus.CREATING,
        iso(datetime.now(UTC)) or "",
    )
    account.catalog.add_recovery_point(creating)
    with pytest.raises(UsageError, match="still being created"):
        remove_recovery_point(account, creating, "too early")


def test_gc_frees_the_bytes_of_expired_points_and_keeps_live_points_whole(account: Account, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    write_files(tree, ["a", "b", "c", "d"], seed=6)
    files = resource(account, "files", tree)
    expiring = back_up(account, files, days=1)
    write_files(tree, ["c", "d"], seed=7)  # half of the tree changes
    live = back_up(account, files)
    before = chunk_bytes(account)

    run_lifecycle(account, now=FAR_FUTURE)
    result = collect_garbage(account, DEFAULT_VAULT)

    assert result["status"] == "COMPLETED", result
    assert result["bytes_deleted"] == before - chunk_bytes(account)
    assert result["bytes_deleted"] >= 2 * 700_000  # the two replaced files were in the expired point only
    assert result["live_recovery_points"] == 1
    assert status(account, expiring) == RecoveryPointStatus.DELETED
    assert restored(account, live, tmp_path / "live") == snapshot_tree(tree)
    assert verify(account, read_data=True).ok
    assert collect_garbage(account, DEFAULT_VAULT)["objects_deleted"] == 0  # it was all collected


def test_delta_bases_of_live_points_survive_gc(account: Account, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    write_files(tree, ["big"], seed=8, size=2_000_000)
    files = resource(account, "files", tree)
    back_up(account, files, days=1)
    data = bytearray((tree / "big").read_bytes())
    data[1_000_000:1_000_010] = b"0123456789"  # a small change in place: that chunk is stored as a delta
    (tree / "big").write_bytes(bytes(data))
    live = back_up(account, files)
    bases = delta_bases_not_listed(account, live)
    assert bases, "the second backup should hold a delta chunk whose base only the first lists"

    run_lifecycle(account, now=FAR_FUTURE)
    result = collect_garbage(account, DEFAULT_VAULT)

    assert result["objects_deleted"] > 0
    assert bases <= gc.stored_objects(account.vault())
    assert restored(account, live, tmp_path / "live") == snapshot_tree(tree)
    assert verify(account, read_data=True).ok


def delta_bases_not_listed(account: Account, rp: RecoveryPoint) -> set[bytes]:
    vault = account.vault()
    refs = [
        ref
        for stream in load_manifest(vault, rp.id).streams.values()
        for index_id in stream.index
        for ref in decode_index(read_object(vault, index_id, Kind.INDEX), "index")
    ]
    return {ref.base for ref in refs if ref.base} - {ref.id for ref in refs}


def test_gc_of_a_vault_without_garbage_deletes_nothing(account: Account, tmp_path: Path) -> None:
    write_files(tmp_path / "tree", ["a", "b"], seed=9)
    files = resource(account, "files", tmp_path / "tree")
    back_up(account, files)
    write_files(tmp_path / "tree", ["b"], seed=10)
    back_up(account, files)
    stored = gc.stored_objects(account.vault())

    result = collect_garbage(account, DEFAULT_VAULT)

    assert (result["status"], result["objects_deleted"], result["bytes_deleted"]) == ("COMPLETED", 0, 0)
    assert gc.stored_objects(account.vault()) == stored


def test_gc_is_postponed_not_failed_while_a_writer_holds_the_vault(account: Account, tmp_path: Path) -> None:
    write_files(tmp_path / "tree", ["a"], seed=11)
    back_up(account, resource(account, "files", tmp_path / "tree"), days=1)
    run_lifecycle(account, now=FAR_FUTURE)
    stored = gc.stored_objects(account.vault())

    with hold_writer(account, DEFAULT_VAULT):
        started = time.monotonic()
        postponed = collect_garbage(account, DEFAULT_VAULT, wait_seconds=0.5)
        assert time.monotonic() - started >= 0.5
    assert postponed["status"] == "POSTPONED"
    assert postponed["message"].startswith("GC postponed: 1 writers active")
    assert gc.stored_objects(account.vault()) == stored

    assert collect_garbage(account, DEFAULT_VAULT, wait_seconds=0.5)["objects_deleted"] == len(stored)


def test_a_writer_waits_while_the_collector_holds_the_vault(account: Account) -> None:
    entered = threading.Event()

    def writer() -> None:
        with hold_writer(account, DEFAULT_VAULT):
            entered.set()

    with exclusive_writers_lock(account, DEFAULT_VAULT, wait_seconds=1) as acquired:
        assert acquired
        thread = threading.Thread(target=writer)
        thread.start()
        assert not entered.wait(0.5)
    assert entered.wait(5)
    thread.join()


def test_a_backup_started_while_gc_waits_enters_after_it_and_loses_nothing(account: Account, tmp_path: Path) -> None:
    """A backup that would reuse chunks GC has marked as garbage starts while GC waits for a writer in flight:
    it waits at the admission gate (so GC is not kept out by writers that keep starting), enters once GC has
    deleted, finds the chunks gone and writes them again. (Writers already in flight when GC marked and
    committing while it waits are the re-check's business: tests/e2e/test_gc_safety.py.)"""
    write_files(tmp_path / "tree", ["a", "b", "c"], seed=12)
    back_up(account, resource(account, "files", tmp_path / "tree"), days=1)
    run_lifecycle(account, now=FAR_FUTURE)
    shutil.copytree(tmp_path / "tree", tmp_path / "same")  # same content, new resource: would reuse every chunk
    same = resource(account, "same", tmp_path / "same")
    results: list[dict[str, Any]] = []
    reused: list[RecoveryPoint] = []

    def in_own_account(action: Any) -> Any:
        def run() -> None:
            other = open_account(account.home, lambda: PASSPHRASE)  # one catalog connection per thread
            try:
                action(other)
            finally:
                other.close()

        return threading.Thread(target=run)

    collector = in_own_account(lambda a: results.append(collect_garbage(a, DEFAULT_VAULT, wait_seconds=60)))
    backup = in_own_account(lambda a: reused.append(back_up(a, same)))
    with hold_writer(account, DEFAULT_VAULT):  # a writer in flight when the collector starts
        collector.start()
        gate = admission_lock_path(account, DEFAULT_VAULT)
        wait_until(lambda: held_exclusively(gate), "the collector closes the admission gate")
        backup.start()
        wait_until(lambda: waiters(gate) == 1, "the backup queues at the gate")
        assert backup.is_alive() and not reused  # held at the gate while the collector waits
    collector.join()
    backup.join()

    [result] = results
    assert result["status"] == "COMPLETED" and result["writers_waited_for"] == 1
    assert result["objects_deleted"] == result["candidates"] > 0
    assert restored(account, reused[0], tmp_path / "restored") == snapshot_tree(tmp_path / "tree")
    assert verify(account, read_data=True).ok


def test_gc_refuses_when_a_present_manifest_cannot_be_read(account: Account, tmp_path: Path) -> None:
    write_files(tmp_path / "tree", ["a"], seed=13)
    files = resource(account, "files", tmp_path / "tree")
    back_up(account, files, days=1)
    damaged = back_up(account, files)
    run_lifecycle(account, now=FAR_FUTURE)
    manifest = account.home / "vaults" / DEFAULT_VAULT / "manifests" / damaged.id
    manifest.write_bytes(os.urandom(200))
    stored = gc.stored_objects(account.vault())

    result = collect_garbage(account, DEFAULT_VAULT)

    assert result["status"] == "REFUSED"
    assert damaged.id in result["message"]
    assert gc.stored_objects(account.vault()) == stored
