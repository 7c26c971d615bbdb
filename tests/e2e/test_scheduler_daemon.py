"""The scheduler with real processes: copy actions into another account behind `strongroom serve`, and
`strongroom serve` running the scheduler (alone, or with the API) until SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from strongroom import model
from strongroom.services.account import Account, init_account, open_account
from strongroom.services.apply import apply_config
from strongroom.services.resources import add_resource
from strongroom.services.scheduler import Scheduler, list_runs
from tests.support.accounts import account_id, issue_credential, register, serving
from tests.support.cli import PASSPHRASE, Cli, assert_one_line_error
from tests.support.clock import ManualClock
from tests.support.vaults import FAST_SCRYPT

# In the past: the destination (a real server, on the real clock) refuses copies created in its future.
START = datetime(2025, 6, 1, 0, 30, tzinfo=UTC)


class Clock(ManualClock):
    def at(self, hhmm: str) -> datetime:
        self.moment = START.replace(hour=int(hhmm[:2]), minute=int(hhmm[3:]))
        return self.moment


@pytest.fixture
def clock() -> Iterator[Clock]:
    driven = Clock(START)
    with model.driven_clock(driven):
        yield driven


@pytest.fixture
def source(tmp_path: Path, clock: Clock) -> Iterator[Account]:
    account = init_account(tmp_path / "source", PASSPHRASE, scrypt_params=FAST_SCRYPT)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "notes.txt").write_text("vaccinations " * 5000)
    add_resource(account, "files", "directory", {"path": str(tree)}, {"backup": "True"})
    yield account
    account.close()


def destination_config(source_id: str, vaults: list[str]) -> dict[str, Any]:
    policy = {"default_destination": {"source_account_ids": [source_id]}}
    return {"vaults": {name: {"access_policy": policy} for name in vaults} | {"closed": {}}}


def test_a_completed_backup_starts_the_rules_copy_actions_and_failed_copies_are_retried(
    tmp_path: Path, clock: Clock, source: Account
) -> None:
    destination = Cli(tmp_path / "destination")
    destination.run("init")
    (tmp_path / "destination.yaml").write_text(
        yaml.safe_dump(destination_config(source.account_id, ["offsite", "archive"]))
    )
    destination.run("apply", "-f", str(tmp_path / "destination.yaml"), "--auto-approve")
    arn = {
        name: destination.json("vaults", "describe", name)["backup_vault_arn"]
        for name in ("offsite", "archive", "closed")
    }
    with serving(destination) as server:
        register(
            Cli(source.home),
            "destination",
            server,
            issue_credential(destination, "copier", "--account-id", source.account_id),
        )
        rule = {
            "name": "hourly",
            "schedule": "cron(0 * * * ? *)",
            "lifecycle": {"delete_after": 14},
            "copy_action": {"delete_after": 30},
            "copy_actions": [
                {"destination_vault_arn": arn["archive"], "delete_after": 90},
                {"destination_vault_arn": arn["closed"]},
            ],
        }  # its policy lets nobody copy in
        config = {
            "destination": {"vault_arn": arn["offsite"]},
            "backup_plans": {"hourly": {"selection_tag": "backup", "rules": [rule]}},
        }
        (tmp_path / "source.yaml").write_text(yaml.safe_dump(config))
        apply_config(source, tmp_path / "source.yaml")
        scheduler = Scheduler(source)
        clock.at("00:30")
        scheduler.tick()
        clock.at("01:00")
        first = scheduler.tick()
        assert first["backups_completed"] == 1 and first["copies_started"] == 3
        assert first["copies_completed"] == 2 and first["copy_retries_scheduled"] == 1
        for when in ("01:05", "01:15", "01:40"):
            clock.at(when)
            scheduler.tick()
        [run] = list_runs(source)
        copies = {c["destination_vault_arn"]: c for c in run.as_dict()["copy_jobs"]}

    assert run.state == "COMPLETED"
    assert [(copies[arn[n]]["state"], copies[arn[n]]["attempts"]) for n in ("offsite", "archive", "closed")] == [
        ("COMPLETED", 1),
        ("COMPLETED", 1),
        ("FAILED", 3),
    ]
    assert "CopyIntoBackupVault" in copies[arn["closed"]]["message"]
    backup = source.catalog.get_recovery_point(run.details.recovery_point_arn)
    assert backup.delete_after_days == 14 and backup.creation_date == START.replace(hour=1, minute=0).isoformat()
    for name, days in (("offsite", 30), ("archive", 90)):
        copied = destination.json(
            "recovery-points", "describe", "--recovery-point", copies[arn[name]]["destination_recovery_point_arn"]
        )
        assert copied["backup_vault_name"] == name and copied["lifecycle"]["delete_after_days"] == days
        assert copied["creation_date"] == backup.creation_date  # kept as the source said (its retention counts
        # from its arrival, by the destination's clock: docs/lifecycle.md)
    copy_jobs = [source.catalog.get_job(c["job_id"]) for c in copies.values()]
    assert {j.parameters["backup_plan_name"] for j in copy_jobs} == {"hourly"}


def test_serve_scheduler_only_fires_a_plan_with_spawned_jobs_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    cli.run("init")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.txt").write_text("a" * 1000)
    config = {
        "resources": {"files": {"type": "directory", "settings": {"path": str(tree)}, "tags": {"backup": "True"}}},
        "backup_plans": {
            "minutely": {"selection_tag": "backup", "rules": [{"name": "minutely", "schedule": "rate(1 minute)"}]}
        },
    }
    (tmp_path / "account.yaml").write_text(yaml.safe_dump(config))
    cli.run("apply", "-f", str(tmp_path / "account.yaml"), "--auto-approve")
    _a_daemon_stopped_before_the_last_whole_minute(cli)  # so the one started below finds that minute due
    log = tmp_path / "daemon.log"
    with open(log, "w") as sink:
        daemon = subprocess.Popen(
            cli.command("serve", "--scheduler-only", "--poll-seconds", "0.2"),
            env=cli.env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        holder = _wait_for(lambda: cli.json("plans", "list")["scheduler"]["lease_holder"], 30, log)
        run = _wait_for(lambda: _completed_run(cli), 90, log)  # the whole minute due at its first tick
        assert run["state"] == "COMPLETED" and run["recovery_point_arn"]
        assert cli.json("jobs", "describe", run["backup_job_id"])["parameters"]["backup_plan_name"] == "minutely"
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0, log.read_text()
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert holder.split(":")[1] == str(daemon.pid)
    assert cli.json("plans", "list")["scheduler"]["lease_holder"] is None  # released on the way out
    assert "scheduler running every 0.2 s" in log.read_text()


def test_serve_runs_the_api_and_the_scheduler_together_or_either_alone(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    cli.run("init")
    with serving(cli, scheduler=True) as server:
        assert _wait_for(lambda: cli.json("plans", "list")["scheduler"]["lease_holder"], 30, server.log)
        assert "scheduler running" in server.log.read_text()
        assert cli.json("accounts", "list") is not None
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0, server.log.read_text()
    assert cli.json("plans", "list")["scheduler"]["lease_holder"] is None
    with serving(cli, "--poll-seconds", "0.1") as server:  # serving() passes --no-scheduler
        # serve starts its scheduler (and says so) before it listens: up without the line means none runs
        assert "serving on" in server.log.read_text()
        assert "scheduler running" not in server.log.read_text()
        assert cli.json("plans", "list")["scheduler"]["lease_holder"] is None
    both = cli.run("serve", "--no-scheduler", "--no-api", ok=False)
    assert_one_line_error(both, 2, "exclude each other")
    assert account_id(cli)


def _a_daemon_stopped_before_the_last_whole_minute(cli: Cli) -> None:
    """A scheduler ticked (in this process, on the project's driven clock) one second before the last whole
    minute, then stopped gracefully: the rule's cursor stands there, the lease is released. A daemon started
    now finds rate(1 minute)'s occurrence at that minute due and fires it on its first tick, instead of the
    test waiting up to a minute of real time for the next one (a rule seen for the first time starts from
    now: tests/integration/test_scheduler.py holds that)."""
    before = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(seconds=1)
    account = open_account(cli.home, lambda: PASSPHRASE)
    try:
        with model.driven_clock(ManualClock(before)):
            earlier = Scheduler(account)
            assert earlier.tick()["acted"]
            assert earlier.shutdown()["acted"]
    finally:
        account.close()
    assert cli.json("plans", "list")["scheduler"]["lease_holder"] is None


def _completed_run(cli: Cli) -> dict[str, Any] | None:
    runs = cli.json("plans", "runs", "--state", "COMPLETED")["schedule_runs"]
    return runs[0] if runs else None


def _wait_for(probe: Any, timeout: float, log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out; daemon log:\n{log.read_text()}")
