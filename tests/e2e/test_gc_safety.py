"""Expiry and garbage collection while a backup and a copy write into the same vault lose nothing.

The writers are real ``strongroom`` processes: a backup in the destination account and a copy pushed
by the source account through ``strongroom serve``. Each stops itself (SIGSTOP) at a fault point while
its job is RUNNING — a source that stalls, deterministically — so the collector certainly meets them in flight;
it must wait for them, then spare every chunk they reused (chunks the expired points held before).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from strongroom.catalog import Catalog
from strongroom.faults import ENV_FAULT_STOP_AT
from strongroom.model import JobState, JobType
from tests.support.accounts import (
    Server,
    account_id,
    issue_credential,
    register,
    serving,
    source_and_destination,
    vault_arn,
)
from tests.support.cli import Cli, assert_one_line_error
from tests.support.locks import held_exclusively, wait_until
from tests.support.trees import Entry, snapshot_tree

FAR_FUTURE = "2400-01-01T00:00:00+00:00"
FILE_SIZE = 500_000
SPARSE_SIZE = 64 * 1024 * 1024  # zeros: much to read, nothing on disk
STOP_POLLS = 12000  # looks at a process's state, 10 ms apart, before giving up: two minutes or more


def write_files(root: Path, names: list[str], seed: int) -> None:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / name).write_bytes(rng.randbytes(FILE_SIZE))


def add_sparse_file(root: Path) -> None:
    with open(root / "zz-sparse.bin", "wb") as handle:
        handle.truncate(SPARSE_SIZE)


@pytest.fixture
def accounts(tmp_path: Path) -> Iterator[tuple[Cli, Cli, Server]]:
    source, destination = source_and_destination(tmp_path)
    with serving(destination) as server:
        credential = issue_credential(destination, "copier", "--account-id", account_id(source))
        register(source, "destination", server, credential)
        yield source, destination, server


def writing(cli: Cli, job_type: JobType) -> bool:
    """Whether a job of ``job_type`` is RUNNING with its recovery point recorded (the catalog read directly)."""
    catalog = Catalog(cli.home / "catalog.db")
    try:
        return any(j.recovery_point_arn for j in catalog.list_jobs(states=[JobState.RUNNING], job_type=job_type))
    finally:
        catalog.close()


def stalling(cli: Cli, point: str, *args: str) -> subprocess.Popen[str]:
    """``strongroom ARGS`` that stops itself (SIGSTOP) the first time it reaches fault point ``point``."""
    return subprocess.Popen(
        cli.command(*args),
        env={**cli.env, ENV_FAULT_STOP_AT: point},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@contextmanager
def stalled(process: subprocess.Popen[str]) -> Iterator[None]:
    """Wait until ``process`` has stopped at its fault point, keep it stopped for the block, then let it go
    on; never leave it stopped, whatever happens. A writer stops after its first new chunk, a copy's source
    after its first chunk: each has its job RUNNING with its recovery point recorded, and from then on only
    reads and writes the vault until it finishes, so while stopped it holds no catalog transaction open."""
    try:
        stat = Path(f"/proc/{process.pid}/stat")
        for _ in range(STOP_POLLS):
            state = stat.read_text().rpartition(")")[2].split()[0]
            if state in ("T", "t"):
                break
            assert process.poll() is None, f"{process.args} ended before its fault point: {process.communicate()}"
            time.sleep(0.01)
        else:
            raise AssertionError(f"{process.args} never reached its fault point")
        yield
    finally:
        os.kill(process.pid, signal.SIGCONT)


def finished(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err
    return dict(json.loads(out))


def restores_to(cli: Cli, arn: str, target: Path) -> dict[str, Entry]:
    cli.run("restore", "start", "--recovery-point", arn, "--target", str(target), "--wait")
    snapshot = snapshot_tree(target)
    shutil.rmtree(target)  # the restored zeros are real bytes on disk
    return snapshot


def statuses(cli: Cli) -> dict[str, str]:
    return {
        p["recovery_point_arn"]: p["status"] for p in cli.json("recovery-points", "list", "--all")["recovery_points"]
    }


def wait_for_status(cli: Cli, arns: list[str], status: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while any(statuses(cli)[arn] != status for arn in arns):
        assert time.monotonic() < deadline, statuses(cli)
        time.sleep(0.2)


def test_gc_during_a_backup_and_a_copy_loses_nothing_a_live_point_needs(
    accounts: tuple[Cli, Cli, Server], tmp_path: Path
) -> None:
    source, destination, _ = accounts
    destination_vault = vault_arn(destination)

    # Source: P1 (copied with 1 day of retention: expires), then P2 without some files (copied live, in flight).
    tree_s = tmp_path / "tree-s"
    write_files(tree_s, [f"a{n:02}" for n in range(8)], seed=1)
    write_files(tree_s, [f"gone{n}" for n in range(4)], seed=2)
    source.run("resources", "add", "app", "--type", "directory", "--path", str(tree_s))
    p1 = source.backup("app")["recovery_point_arn"]
    expired_copy = source.json(
        "copy",
        "start",
        "--recovery-point",
        p1,
        "--destination-vault",
        destination_vault,
        "--delete-after",
        "1",
        "--wait",
    )["result"]["destination_recovery_point_arn"]
    for n in range(4):
        (tree_s / f"gone{n}").unlink()
    write_files(tree_s, [f"new{n:02}" for n in range(20)], seed=3)
    add_sparse_file(tree_s)
    p2 = source.backup("app")["recovery_point_arn"]

    # Destination: its own backup D2 (1 day), a live backup L after half the files changed, and a resource
    # whose first backup (in flight) holds two of D2's old files, i.e. chunks that become garbage.
    tree_d, tree_big = tmp_path / "tree-d", tmp_path / "tree-big"
    write_files(tree_d, [f"b{n:02}" for n in range(8)], seed=4)
    destination.run("resources", "add", "local", "--type", "directory", "--path", str(tree_d))
    expired_backup = destination.json("backup", "start", "--resource", "local", "--delete-after", "1", "--wait")[
        "recovery_point_arn"
    ]
    tree_big.mkdir()
    for name in ("b04", "b05"):
        shutil.copy2(tree_d / name, tree_big / name)
    add_sparse_file(tree_big)
    write_files(tree_d, [f"b{n:02}" for n in range(4, 8)], seed=5)
    live_backup = destination.backup("local")["recovery_point_arn"]
    destination.run("resources", "add", "big", "--type", "directory", "--path", str(tree_big))
    expected = {"s": snapshot_tree(tree_s), "d": snapshot_tree(tree_d), "big": snapshot_tree(tree_big)}

    backup = stalling(destination, "write:after-new-chunk", "backup", "start", "--resource", "big", "--wait", "--json")
    copy = stalling(
        source,
        "read:after-first-chunk",
        *("copy", "start", "--recovery-point", p2, "--destination-vault", destination_vault, "--wait", "--json"),
    )
    with stalled(backup), stalled(copy):
        assert writing(destination, JobType.BACKUP) and writing(destination, JobType.COPY)
        running = destination.json("jobs", "list", "--state", "RUNNING")["jobs"]
        assert sorted(j["job_type"] for j in running) == ["BACKUP", "COPY"]
        lifecycle = destination.popen("lifecycle", "run", "--now", FAR_FUTURE, "--gc-wait", "600", "--json")
        wait_for_status(destination, [expired_copy, expired_backup], "DELETED")
        gate = destination.home / "locks" / "vault-Default.gc"
        wait_until(lambda: held_exclusively(gate), "the collector closes the gate and waits for the writers")
        assert lifecycle.poll() is None, "GC must wait while writers are in flight"
    backup_job, copy_job, report = finished(backup), finished(copy), finished(lifecycle)

    assert backup_job["state"] == copy_job["state"] == "COMPLETED", (backup_job, copy_job)
    assert sorted(report["expired_recovery_points"]) == sorted([expired_copy, expired_backup])
    [gc] = report["garbage_collection"]
    assert gc["status"] == "COMPLETED", gc
    assert gc["writers_waited_for"] == 2 and gc["waited_seconds"] > 0, gc
    assert gc["spared"] > 0, gc  # chunks of the expired points that the writers reused
    assert gc["bytes_deleted"] >= 6 * FILE_SIZE, gc  # gone0-3 and the old b06, b07 were needed by nobody

    copied_live = copy_job["result"]["destination_recovery_point_arn"]
    assert restores_to(destination, copied_live, tmp_path / "r-copy") == expected["s"]
    assert restores_to(destination, live_backup, tmp_path / "r-live") == expected["d"]
    assert restores_to(destination, backup_job["recovery_point_arn"], tmp_path / "r-big") == expected["big"]
    assert destination.json("verify", "--read-data")["ok"]
    gone = destination.run(
        "restore", "start", "--recovery-point", expired_copy, "--target", str(tmp_path / "r-gone"), "--wait", ok=False
    )
    assert_one_line_error(gone, 2, "DELETED")
    again = destination.json("lifecycle", "run", "--now", FAR_FUTURE)
    assert again["garbage_collection"][0]["objects_deleted"] == 0  # the first collection freed it all


def test_gc_gives_up_cleanly_when_a_writer_outlasts_gc_wait(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    cli.run("init")
    tree = tmp_path / "tree"
    write_files(tree, ["a", "b"], seed=6)
    cli.run("resources", "add", "files", "--type", "directory", "--path", str(tree))
    expiring = cli.json("backup", "start", "--resource", "files", "--delete-after", "1", "--wait")
    write_files(tree, ["a", "b"], seed=7)
    add_sparse_file(tree)

    backup = stalling(cli, "write:after-new-chunk", "backup", "start", "--resource", "files", "--wait", "--json")
    with stalled(backup):
        assert writing(cli, JobType.BACKUP)
        started = time.monotonic()
        postponed = cli.run("lifecycle", "run", "--now", FAR_FUTURE, "--gc-wait", "1")
        assert time.monotonic() - started >= 1
    assert "GC postponed: 1 writers active" in postponed.stdout
    assert f"expired {expiring['recovery_point_arn']}" in postponed.stdout
    assert finished(backup)["state"] == "COMPLETED"

    report = cli.json("lifecycle", "run", "--now", FAR_FUTURE, "--gc-wait", "1")
    assert report["expired"] == 0  # swept the first time
    [gc] = report["garbage_collection"]
    assert (gc["status"], gc["writers_waited_for"]) == ("COMPLETED", 0)
    assert gc["bytes_deleted"] >= 2 * FILE_SIZE
    assert cli.json("verify", "--read-data")["ok"]
