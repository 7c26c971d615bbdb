"""Scheduled jobs in their own processes (the daemon's runner) against a PostgreSQL database whose table a
migration holds locked, so pg_dump waits: the queue behind it expires, the hung job is aborted at the end
of its completion window, and a daemon stopped meanwhile aborts it instead of leaving it RUNNING."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from strongroom import model
from strongroom.model import JobState, RecoveryPointStatus
from strongroom.services.account import Account, init_account
from strongroom.services.apply import apply_config
from strongroom.services.job_runner import SpawningRunner, job_alive
from strongroom.services.scheduler import Scheduler, ScheduleRun, list_runs, start_daemon
from tests.support.cli import PASSPHRASE
from tests.support.clock import ManualClock
from tests.support.pgcluster import PgCluster
from tests.support.vaults import FAST_SCRYPT

pytestmark = pytest.mark.postgres

DAY = datetime(2031, 9, 1, tzinfo=UTC)


@pytest.fixture
def clock() -> Iterator[ManualClock]:
    driven = ManualClock(DAY)
    with model.driven_clock(driven):
        yield driven


@pytest.fixture
def account(tmp_path: Path, clock: ManualClock, pg_cluster: PgCluster, pg_database: str) -> Iterator[Account]:
    pg_cluster.execute("CREATE TABLE visits (id serial PRIMARY KEY, patient text)", dbname=pg_database)
    pg_cluster.execute("INSERT INTO visits (patient) SELECT 'p' || i FROM generate_series(1, 50) i", dbname=pg_database)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.txt").write_text("files " * 1000)
    rule = {"name": "nightly", "schedule": "cron(0 1 * * ? *)", "start_window": 60, "completion_window": 120}
    config = {
        "resources": {
            "db": {"type": "postgres", "settings": {"dsn": pg_cluster.dsn(pg_database)}, "tags": {"backup": "True"}},
            "files": {"type": "directory", "settings": {"path": str(tree)}, "tags": {"backup": "True"}},
        },
        "backup_plans": {"nightly": {"selection_tag": "backup", "rules": [rule]}},
    }
    (tmp_path / "account.yaml").write_text(yaml.safe_dump(config))
    opened = init_account(tmp_path / "home", PASSPHRASE, scrypt_params=FAST_SCRYPT)
    apply_config(opened, tmp_path / "account.yaml")
    yield opened
    opened.close()


@contextmanager
def table_locked(cluster: PgCluster, dbname: str) -> Iterator[None]:
    """A migration holding ``visits`` ACCESS EXCLUSIVE: pg_dump waits for it (it has no lock timeout)."""
    with psycopg.connect(host="127.0.0.1", port=cluster.port, dbname=dbname, user="postgres") as conn:
        conn.execute("LOCK TABLE visits IN ACCESS EXCLUSIVE MODE")
        yield
        conn.rollback()


def at(clock: ManualClock, hhmm: str, day: int = 0) -> None:
    clock.moment = DAY.replace(day=DAY.day + day, hour=int(hhmm[:2]), minute=int(hhmm[3:]))


def runs(account: Account) -> dict[str, ScheduleRun]:
    return {run.resource_id: run for run in list_runs(account, limit=2)}


def wait_until(probe: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := probe():
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def waiting_for_lock(cluster: PgCluster, dbname: str) -> bool:
    rows = cluster.query(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE NOT l.granted AND a.datname = %s",
        (dbname,),
    )
    return bool(rows[0][0])


def process_group_gone(pid: int) -> bool:
    """No process is left of the job's group: neither the job worker nor its pg_dump."""
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_hung_job_blocks_the_queue_whose_runs_expire_and_is_aborted_at_its_completion_window(
    account: Account, clock: ManualClock, pg_cluster: PgCluster, pg_database: str
) -> None:
    scheduler = Scheduler(account, runner=SpawningRunner(max_jobs=1))
    at(clock, "00:30")
    scheduler.tick()
    with table_locked(pg_cluster, pg_database):
        at(clock, "01:00")
        assert scheduler.tick()["jobs_started"] == 1  # db first; files waits for the only slot
        wait_until(lambda: waiting_for_lock(pg_cluster, pg_database))
        hung, queued = runs(account)["db"], runs(account)["files"]
        assert (hung.state, queued.state) == ("RUNNING", "CREATED")
        pid = hung.details.pid

        at(clock, "01:59")
        scheduler.tick()
        assert runs(account)["files"].state == "CREATED"
        at(clock, "02:00")  # files' start window (01:00-02:00) ends with the slot still taken
        assert scheduler.tick()["runs_expired"] == 1
        expired = runs(account)["files"]
        assert expired.state == "EXPIRED"
        assert account.catalog.get_job(expired.job_id or "").state == JobState.EXPIRED

        at(clock, "02:59")
        scheduler.tick()
        assert runs(account)["db"].state == "RUNNING" and job_alive(account, hung.job_id or "")
        at(clock, "03:00")  # the completion window (120 minutes from 01:00) ends: the job is stopped
        assert scheduler.tick()["jobs_aborted"] == 1
        aborted = runs(account)["db"]
        assert aborted.state == "ABORTED"
        assert process_group_gone(pid)

    job = account.catalog.get_job(aborted.job_id or "")
    assert job.state == JobState.ABORTED
    assert "not completed within the completion window of 120 minutes" in (job.status_message or "")
    point = account.catalog.get_recovery_point(job.recovery_point_arn or "")
    assert point.status == RecoveryPointStatus.PARTIAL
    assert not (account.locks_dir / f"job-{job.id}.lock").exists()


def test_a_stopped_daemon_waits_for_its_running_jobs_then_aborts_them_and_releases_its_lease(
    account: Account, clock: ManualClock, pg_cluster: PgCluster, pg_database: str
) -> None:
    at(clock, "00:30")
    first = Scheduler(account)  # a first daemon ran at 00:30 and stopped
    first.tick()
    first.shutdown()
    stop = threading.Event()
    with table_locked(pg_cluster, pg_database):
        at(clock, "01:00")
        # What `strongroom serve` runs: its own catalog connection in a thread, jobs in their own processes.
        daemon = start_daemon(account.home, lambda: PASSPHRASE, stop, poll_seconds=0.05, max_jobs=1, stop_grace=1)
        try:
            wait_until(lambda: waiting_for_lock(pg_cluster, pg_database))
            pid = runs(account)["db"].details.pid
        finally:
            stop.set()  # what SIGTERM does in `strongroom serve`
            daemon.join(timeout=30)
        assert not daemon.is_alive()
        assert process_group_gone(pid)

    db, files = runs(account)["db"], runs(account)["files"]
    assert db.state == "ABORTED"
    job = account.catalog.get_job(db.job_id or "")
    assert (job.state, job.status_message) == (JobState.ABORTED, "stopped with the scheduler daemon before it finished")
    assert files.state == "CREATED"  # never started: the next daemon starts it if its window is still open
    assert account.catalog.get_lease("scheduler") is None

    successor = Scheduler(account, runner=SpawningRunner(max_jobs=1))
    at(clock, "01:10")
    assert successor.tick()["jobs_started"] == 1
    done = wait_until(lambda: account.catalog.get_job(runs(account)["files"].job_id or "").state.finished)
    assert done
    at(clock, "01:11")
    successor.tick()
    successor.shutdown()
    assert runs(account)["files"].state == "COMPLETED"
