"""One job runner (services/job_runner.py) for the CLI and the scheduler: every job kind runs the same way
in this process, and a spawned job runs in a worker under services that gets its secret from the
environment, never from its arguments, and never goes through the CLI."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.adapters.base import RestoreRequest
from strongroom.model import JobState
from strongroom.services.account import Account, init_account
from strongroom.services.backup import create_backup_job
from strongroom.services.job_runner import WORKER_MODULE, InProcessRunner, spawn_job
from strongroom.services.jobs import get_job, lock_path
from strongroom.services.resources import add_resource
from strongroom.services.restore import create_restore_job
from tests.support.trees import snapshot_tree
from tests.support.vaults import FAST_SCRYPT

PASSPHRASE = "job runner test passphrase"


@pytest.fixture
def account(tmp_path: Path) -> Iterator[Account]:
    opened = init_account(tmp_path / "home", PASSPHRASE, scrypt_params=FAST_SCRYPT, average_chunk_size=256 * 1024)
    tree = tmp_path / "tree"
    tree.mkdir()
    rng = random.Random(14)
    for name in ("a.bin", "b.bin"):
        (tree / name).write_bytes(rng.randbytes(600_000))
    add_resource(opened, "files", "directory", {"path": str(tree)}, {})
    yield opened
    opened.close()


def test_the_scheduler_runner_runs_a_restore_as_the_cli_does(account: Account, tmp_path: Path) -> None:
    runner = InProcessRunner()
    job, lock = create_backup_job(account, "files")
    runner.start(account, job, lock)
    backup = get_job(account, job.id)
    assert backup.state == JobState.COMPLETED, backup.status_message
    target = tmp_path / "restored"
    job, lock = create_restore_job(account, backup.recovery_point_arn or "", RestoreRequest(target=str(target)))
    runner.start(account, job, lock)
    assert get_job(account, job.id).state == JobState.COMPLETED, get_job(account, job.id).status_message
    assert snapshot_tree(target) == snapshot_tree(tmp_path / "tree")


def test_a_spawned_job_runs_in_a_service_worker_that_has_no_secret_in_its_arguments(account: Account) -> None:
    job, lock = create_backup_job(account, "files")
    child = spawn_job(account, job, lock)
    assert child.wait() == 0
    arguments = " ".join(map(str, child.args))
    assert WORKER_MODULE in arguments and "strongroom.cli" not in arguments
    assert PASSPHRASE not in arguments
    finished = get_job(account, job.id)
    assert finished.state == JobState.COMPLETED, finished.status_message
    assert not lock_path(account, job.id).exists()


def test_a_failing_spawned_job_is_recorded_and_its_worker_says_why_in_one_line(
    account: Account, tmp_path: Path
) -> None:
    job, lock = create_backup_job(account, "files")
    for path in (tmp_path / "tree").iterdir():
        path.unlink()
    (tmp_path / "tree").rmdir()
    child = spawn_job(account, job, lock)
    assert child.wait() != 0
    failed = get_job(account, job.id)
    assert failed.state == JobState.FAILED
    log = (account.tmp_dir / f"job-{job.id}.log").read_text()
    assert "Traceback" not in log and PASSPHRASE not in log
    assert [line for line in log.splitlines() if line.startswith("error:")] == [f"error: {failed.status_message}"]
