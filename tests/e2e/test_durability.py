"""Breaking things on purpose: SIGKILL at random instants, flipped bytes, a full disk, concurrent backups.

Each test asserts that nothing committed is lost, that no partial recovery point is ever listed as
COMPLETED, that the next backup succeeds and that ``verify --read-data`` is clean afterwards.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from strongroom.faults import ENV_FAULT_KILL_AT
from tests.support.cli import Cli, assert_one_line_error
from tests.support.trees import snapshot_tree

KILLS_DEFAULT = 12  # plus the three named commit steps below; -m slow runs KILLS_FULL
KILLS_FULL = 60


def make_tree(root: Path, files: int, size: int, seed: int = 3) -> None:
    rng = random.Random(seed)
    for n in range(files):
        sub = root / f"d{n % 4}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{n}.bin").write_bytes(rng.randbytes(size))


@pytest.fixture
def account(tmp_path: Path) -> tuple[Cli, Path]:
    cli = Cli(tmp_path / "home")
    cli.run("init")
    tree = tmp_path / "tree"
    make_tree(tree, files=24, size=1_500_000)
    cli.run("resources", "add", "files", "--type", "directory", "--path", str(tree))
    return cli, tree


def assert_consistent(cli: Cli) -> None:
    jobs = cli.json("jobs", "list")["jobs"]
    assert not [j for j in jobs if j["state"] in ("CREATED", "RUNNING")], jobs
    points = cli.json("recovery-points", "list", "--all")["recovery_points"]
    by_job = {j["job_id"]: j for j in jobs}
    for point in points:
        assert point["status"] in ("COMPLETED", "PARTIAL"), point
        job = by_job[point["backup_job_id"]]
        assert (point["status"] == "COMPLETED") == (job["state"] == "COMPLETED"), (point, job)
    assert cli.json("verify", "--read-data")["ok"]


def kill_backups_at_random_instants(cli: Cli, tree: Path, kills: int) -> None:
    started = time.monotonic()
    cli.backup("files")
    duration = time.monotonic() - started
    (tree / "d0" / "f0.bin").write_bytes(os.urandom(1_500_000))  # something new to write each time
    rng = random.Random(kills)
    for round_number in range(kills):
        process = cli.popen("backup", "start", "--resource", "files", "--wait", "--json")
        time.sleep(rng.uniform(0.0, duration * 1.2))
        process.send_signal(signal.SIGKILL)
        process.communicate()
        (tree / "d1" / f"new{round_number}.bin").write_bytes(os.urandom(300_000))
        assert_consistent(cli)
    final = cli.backup("files")
    assert final["state"] == "COMPLETED"
    assert_consistent(cli)
    restored = tree.parent / "restored"
    cli.run("restore", "start", "--recovery-point", final["recovery_point_arn"], "--target", str(restored), "--wait")
    assert snapshot_tree(restored) == snapshot_tree(tree)


def test_sigkill_during_backups_never_corrupts_the_vault(account: tuple[Cli, Path]) -> None:
    kill_backups_at_random_instants(*account, kills=KILLS_DEFAULT)


@pytest.mark.parametrize("point", ["write:after-new-chunk", "write:before-manifest", "write:after-manifest"])
def test_sigkill_at_each_commit_step_of_a_backup_never_corrupts_the_vault(
    account: tuple[Cli, Path], point: str
) -> None:
    """The windows the random instants may miss, each hit on purpose (src/strongroom/faults.py)."""
    cli, tree = account
    cli.backup("files")
    (tree / "d0" / "f0.bin").write_bytes(os.urandom(1_500_000))  # a new chunk to write
    killed = cli.run(
        "backup", "start", "--resource", "files", "--wait", "--json", env={ENV_FAULT_KILL_AT: point}, ok=False
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert_consistent(cli)
    final = cli.backup("files")
    assert final["state"] == "COMPLETED"
    assert_consistent(cli)
    restored = tree.parent / "restored"
    cli.run("restore", "start", "--recovery-point", final["recovery_point_arn"], "--target", str(restored), "--wait")
    assert snapshot_tree(restored) == snapshot_tree(tree)


@pytest.mark.slow
def test_sigkill_full_matrix(account: tuple[Cli, Path]) -> None:
    kill_backups_at_random_instants(*account, kills=KILLS_FULL)


def test_sigkill_during_restore_marks_the_job_failed(account: tuple[Cli, Path]) -> None:
    cli, tree = account
    arn = cli.backup("files")["recovery_point_arn"]
    killed = cli.run(
        "restore",
        "start",
        "--recovery-point",
        arn,
        "--target",
        str(tree.parent / "r1"),
        "--wait",
        env={ENV_FAULT_KILL_AT: "read:after-first-chunk"},
        ok=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    written = [p for p in (tree.parent / "r1").rglob("*") if p.is_file()]
    assert written, "the kill lands once the restore has written part of a file"
    restores = [j for j in cli.json("jobs", "list")["jobs"] if j["job_type"] == "RESTORE"]
    assert [j["state"] for j in restores] == ["FAILED"]
    assert_consistent(cli)
    cli.run("restore", "start", "--recovery-point", arn, "--target", str(tree.parent / "r2"), "--wait")
    assert snapshot_tree(tree.parent / "r2") == snapshot_tree(tree)


def test_backup_without_wait_runs_in_the_background(account: tuple[Cli, Path]) -> None:
    cli, _ = account
    job = cli.json("backup", "start", "--resource", "files")
    assert job["state"] in ("CREATED", "RUNNING", "COMPLETED")
    finished = cli.wait_for_job(job["job_id"])
    assert finished["state"] == "COMPLETED", finished
    assert finished["recovery_point_arn"].startswith("arn:strongroom:backup:local:")


def test_two_backups_of_one_resource_at_once(account: tuple[Cli, Path]) -> None:
    cli, tree = account
    processes = [cli.popen("backup", "start", "--resource", "files", "--wait", "--json") for _ in range(2)]
    outputs = [p.communicate() for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    assert_consistent(cli)
    points = cli.json("recovery-points", "list")["recovery_points"]
    assert [p["status"] for p in points] == ["COMPLETED", "COMPLETED"]
    for n, point in enumerate(points):
        target = tree.parent / f"restored{n}"
        cli.run("restore", "start", "--recovery-point", point["recovery_point_arn"], "--target", str(target), "--wait")
        assert snapshot_tree(target) == snapshot_tree(tree)


def _chunk_files(cli: Cli) -> list[Path]:
    return sorted((cli.home / "vaults" / "Default" / "chunks").rglob("*"))


def test_flipped_byte_is_named_by_verify_and_refused_by_restore(account: tuple[Cli, Path]) -> None:
    cli, tree = account
    arn = cli.backup("files")["recovery_point_arn"]
    victim = [p for p in _chunk_files(cli) if p.is_file()][5]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))

    result = cli.run("verify", "--read-data", "--json", ok=False)
    assert result.returncode == 7
    report = result.json()
    assert list(report["damaged_objects"]) == [f"Default/chunks/{victim.parent.name}/{victim.name}"]
    assert list(report["damaged_recovery_points"]) == [arn]

    target = tree.parent / "restored"
    failed = cli.run("restore", "start", "--recovery-point", arn, "--target", str(target), "--wait", ok=False)
    assert_one_line_error(failed, 7, victim.name)
    restore_job = next(j for j in cli.json("jobs", "list")["jobs"] if j["job_type"] == "RESTORE")
    assert restore_job["state"] == "FAILED"


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs as root)")
def test_full_disk_fails_the_backup_cleanly(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    cli.run("init")
    vault_dir = cli.home / "vaults" / "Default"
    saved = tmp_path / "saved-vault"
    subprocess.run(["cp", "-a", str(vault_dir), str(saved)], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(vault_dir)], check=True)
    try:
        subprocess.run(f"cp -a {saved}/. {vault_dir}/", shell=True, check=True)
        tree = tmp_path / "tree"
        make_tree(tree, files=8, size=1_000_000)
        cli.run("resources", "add", "files", "--type", "directory", "--path", str(tree))
        result = cli.run("backup", "start", "--resource", "files", "--wait", ok=False)
        assert_one_line_error(result, 6, "no space left")
        assert [j["state"] for j in cli.json("jobs", "list")["jobs"]] == ["FAILED"]
        assert [p["status"] for p in cli.json("recovery-points", "list", "--all")["recovery_points"]] == ["PARTIAL"]
        assert not list((vault_dir / "tmp").iterdir())
        # Once the disk has room again, the next backup succeeds and the vault verifies.
        subprocess.run(["mount", "-o", "remount,size=64m", str(vault_dir)], check=True)
        assert cli.backup("files")["state"] == "COMPLETED"
        assert cli.json("verify", "--read-data")["ok"]
    finally:
        subprocess.run(["umount", "-l", str(vault_dir)], check=False)
