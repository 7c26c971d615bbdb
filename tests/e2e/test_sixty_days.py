"""Sixty simulated days of the seed's production plan, then sixty more of retention, against PostgreSQL.

The source account (examples/mavis/source) backs up a real database with the Scheduler in this process,
on a driven clock, with jobs run in-process; the destination account (examples/mavis/destination) is a
real `strongroom serve` in its own process, reached over HTTP. The plan fires at 07:00 and 19:00 UTC, keeps
every backup 60 days and copies it to the destination, kept 60 days there too. After 60 days the plan is
switched off and the daemon keeps sweeping: every backup must go exactly on its day in the source vault.

The destination takes time from its own (real) clock, never from the source's: a copy's retention counts
from its arrival there (docs/lifecycle.md), and a copy announced as created in the destination's future is
refused. So the simulated days lie in the past (they end 30 days before today), every copy arrives during
the test's real minutes, and the destination's sweeps on the simulated days remove nothing; its copies go
60 days after they arrived, each on its own instant. The destination vault has the blueprint's policy but
no lock, so that `lifecycle run --now` can show that expiry (a lock is enforced against the real clock);
the lock's refusals are tested in test_policy_matrix and test_seed_bootstrap.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from strongroom import model
from strongroom.clock import system_clock
from strongroom.model import JobState, JobType, RecoveryPointStatus
from strongroom.services.account import Account, create_vault, init_account, open_account
from strongroom.services.apply import apply_config
from strongroom.services.lifecycle import GC_REFUSED, run_lifecycle_and_collect
from strongroom.services.scheduler import Scheduler, list_runs
from tests.support.accounts import Server, account_id, issue_credential, register, serving
from tests.support.cli import PASSPHRASE, Cli
from tests.support.clock import ManualClock
from tests.support.pgcluster import PgCluster
from tests.support.vaults import FAST_SCRYPT

pytestmark = pytest.mark.postgres

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "mavis"
FIRING_DAYS = 60
RETENTION = timedelta(days=60)
FIRES_AT = (7, 19)
SIMULATED_DAYS = FIRING_DAYS + 60  # until the last backup's expiry day
GRACEFUL_RESTARTS = (15, 75)  # days on which the daemon is stopped and started again before 07:00
CRASH_AFTER_MORNING = 30  # killed right after its 07:00 tick; the next one starts while the lease is live
CRASH_AFTER_EVENING = 45  # killed after its 19:00 tick; the next one starts the next morning


@dataclass
class Simulation:
    source: Account
    destination: Cli
    clock: ManualClock
    start: datetime
    add_data: Callable[[int], None]
    disable_plan: Callable[[], None]
    scheduler: Scheduler = field(init=False)
    backups: dict[datetime, str] = field(default_factory=dict)  # creation instant -> source recovery point
    copies: dict[datetime, str] = field(default_factory=dict)  # creation instant -> destination recovery point
    restarts: int = 0

    def __post_init__(self) -> None:
        self.scheduler = Scheduler(self.source)

    def at(self, day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
        return self.start + timedelta(days=day, hours=hour, minutes=minute, seconds=second)

    def tick(self, moment: datetime) -> dict[str, Any]:
        self.clock.moment = moment
        return self.scheduler.tick()

    def restart(self, *, graceful: bool) -> None:
        if graceful:
            self.scheduler.shutdown()
        self.scheduler = Scheduler(self.source)  # a new daemon: a new holder, state only in the catalog
        self.restarts += 1

    def run(self) -> None:
        """Day 0 06:00 (the daemon starts) to the last day's 07:00, the last backup and copy still there."""
        assert self.tick(self.at(0, 6))["acted"]
        for day in range(SIMULATED_DAYS - 1):
            self.day(day)
        self.fire(SIMULATED_DAYS - 1, 7)

    def day(self, day: int) -> None:
        if day in GRACEFUL_RESTARTS:
            self.restart(graceful=True)
        if day == FIRING_DAYS:
            self.disable_plan()
        for hour in FIRES_AT:
            self.fire(day, hour)
            if (day, hour) in ((CRASH_AFTER_MORNING, 7), (CRASH_AFTER_EVENING, 19)):
                self.crash_and_restart(day, hour)
        self.add_data(day)
        self.destination_sweep(self.at(day, 23, 59, 59))

    def fire(self, day: int, hour: int) -> None:
        moment = self.at(day, hour)
        report = self.tick(moment)
        assert report["acted"] and not report["errors"], report
        if day < FIRING_DAYS:
            assert (report["runs_created"], report["backups_completed"], report["copies_completed"]) == (1, 1, 1)
            self.record(moment)
        else:
            assert not report.get("runs_created") and not report.get("jobs_started"), report
        due = self.backups.get(moment - RETENTION)
        assert report["lifecycle"]["expired_recovery_points"] == ([due] if due else []), (moment, report)

    def record(self, moment: datetime) -> None:
        [run] = [r for r in list_runs(self.source, limit=1) if r.occurrence == moment.isoformat()]
        assert run.state == "COMPLETED"
        backup = self.source.catalog.get_recovery_point(run.details.recovery_point_arn)
        assert backup.creation_date == moment.isoformat() and backup.delete_after_days == 60
        [copy] = run.as_dict()["copy_jobs"]
        assert copy["state"] == "COMPLETED" and copy["delete_after_days"] == 60
        self.backups[moment] = backup.arn
        self.copies[moment] = copy["destination_recovery_point_arn"]

    def crash_and_restart(self, day: int, hour: int) -> None:
        self.restart(graceful=False)
        again = self.tick(self.at(day, hour))  # the same instant again: the dead daemon's lease is still live
        assert not again["acted"]
        if hour == 7:
            later = self.tick(self.at(day, hour, 6))  # the lease has lapsed: the new daemon acts
            assert later["acted"] and not later.get("runs_created") and not later.get("jobs_started"), later

    def destination_sweep(self, moment: datetime) -> None:
        """The destination's expiry on this simulated day (in the past): nothing goes, whatever the copies'
        claimed creation dates; they are kept 60 days from their arrival.

        What ``strongroom lifecycle run --now MOMENT`` does in the destination's home, minus starting an
        interpreter 119 times (the command itself runs at the end of the test): the account opened afresh,
        on the real clock as the destination's own processes are, not this process's simulated one."""
        with model.driven_clock(system_clock):
            destination = open_account(self.destination.home, lambda: PASSPHRASE)
            try:
                report = run_lifecycle_and_collect(destination, now=moment)
            finally:
                destination.close()
        assert report["expired_recovery_points"] == [], (moment, report)
        assert not report["failed"] and GC_REFUSED not in {g["status"] for g in report["garbage_collection"]}, report


def test_sixty_days_of_the_seeds_production_plan_with_copies_and_retention_in_both_vaults(
    tmp_path: Path, pg_cluster: PgCluster, pg_databases: Callable[..., str]
) -> None:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    clock = ManualClock(today - timedelta(days=SIMULATED_DAYS + 30))
    arrivals_from = datetime.now(UTC)
    database = pg_databases("mavis")
    pg_cluster.execute("CREATE TABLE vaccinations (id serial PRIMARY KEY, patient text, given_on int)", dbname=database)
    destination = Cli(tmp_path / "destination")
    destination.run("init")
    with model.driven_clock(clock):
        source = init_account(tmp_path / "source", PASSPHRASE, scrypt_params=FAST_SCRYPT)
        create_vault(source, "mavis-production", scrypt_params=FAST_SCRYPT)
        try:
            vault_arn = _bootstrap_destination(tmp_path, destination, source)
            with serving(destination) as server:
                source_config = _bootstrap_source(
                    tmp_path, source, destination, server, vault_arn, pg_cluster.dsn(database)
                )

                def add_data(day: int) -> None:
                    pg_cluster.execute(
                        "INSERT INTO vaccinations (patient, given_on) SELECT 'patient ' || i, %s"
                        " FROM generate_series(1, 20) i",
                        (day,),
                        dbname=database,
                    )

                simulation = Simulation(
                    source, destination, clock, clock.moment, add_data, lambda: _disable_plan(source, *source_config)
                )
                simulation.run()
                _check_the_end(simulation, arrivals_from)
                assert server.process.poll() is None
        finally:
            source.close()


def _bootstrap_destination(tmp_path: Path, destination: Cli, source: Account) -> str:
    config = yaml.safe_load((EXAMPLES / "destination" / "destination.yaml").read_text())
    del config["vaults"]["mavis-destination"]["lock"]  # see the module's docstring
    for name in list(config["variables"]):
        if name.startswith("lock_"):
            del config["variables"][name]
    values = yaml.safe_load((EXAMPLES / "destination" / "env" / "production.yaml").read_text())
    values = {key: value for key, value in values.items() if not key.startswith("lock_")}
    (tmp_path / "destination.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "destination-values.yaml").write_text(yaml.safe_dump(values))
    destination.run(
        "apply",
        "-f",
        str(tmp_path / "destination.yaml"),
        "--var-file",
        str(tmp_path / "destination-values.yaml"),
        "--var",
        f"source_account_id={source.account_id}",
        "--auto-approve",
    )
    described = destination.json("vaults", "describe", "mavis-destination")
    assert described["access_policy"] and not described["locked"]
    return destination.run("output", "destination_vault_arn", "--raw").stdout.strip()


def _bootstrap_source(
    tmp_path: Path, source: Account, destination: Cli, server: Server, vault_arn: str, dsn: str
) -> tuple[dict[str, Any], Path]:
    register(
        Cli(source.home),
        "destination",
        server,
        issue_credential(destination, "source-copier", "--account-id", source.account_id),
    )
    assert account_id(destination) == vault_arn.split(":")[4]
    values = yaml.safe_load((EXAMPLES / "source" / "env" / "production.yaml").read_text())
    values.update(
        destination_vault_arn=vault_arn,
        database_dsn=dsn,
        people_notification_url=f"log://{tmp_path}/people.jsonl",
        events_log=f"log://{tmp_path}/events.jsonl",
        reports_store=(tmp_path / "reports").as_uri(),  # the report plans write here
    )
    var_file = tmp_path / "source-values.yaml"
    var_file.write_text(yaml.safe_dump(values))
    apply_config(source, EXAMPLES / "source" / "source.yaml", var_files=[var_file])
    [rule] = source.catalog.get_setting("backup_plans")["mavis-postgres"]["rules"]
    assert (rule["schedule"], rule["lifecycle"]["delete_after"], rule["copy_action"]["delete_after"]) == (
        "cron(0 7,19 * * ? *)",
        60,
        60,
    )
    return yaml.safe_load((EXAMPLES / "source" / "source.yaml").read_text()), var_file


def _disable_plan(source: Account, config: dict[str, Any], var_file: Path) -> None:
    """What an operator does: `enable: false` on the plan, and apply."""
    config["backup_plans"]["mavis-postgres"]["enable"] = False
    path = var_file.with_name("source-disabled.yaml")
    path.write_text(yaml.safe_dump(config))
    apply_config(source, path, var_files=[var_file])


def _check_the_end(simulation: Simulation, arrivals_from: datetime) -> None:
    source, last_day = simulation.source, SIMULATED_DAYS - 1
    fired = sorted(simulation.backups)
    expected = [simulation.at(day, hour) for day in range(FIRING_DAYS) for hour in FIRES_AT]
    assert fired == expected and len(fired) == 120  # no lost run
    runs = list_runs(source, limit=None)
    assert sorted(r.occurrence for r in runs) == [m.isoformat() for m in expected]  # no double, no missed
    assert {r.state for r in runs} == {"COMPLETED"}
    jobs = source.catalog.list_jobs()
    assert [j.job_type for j in jobs].count(JobType.BACKUP) == 120
    assert [j.job_type for j in jobs].count(JobType.COPY) == 120
    assert {j.state for j in jobs} == {JobState.COMPLETED}
    assert len(set(simulation.copies.values())) == 120
    assert simulation.restarts == 4

    # The newest backup (day 59, 19:00) is still there just before its instant, and goes at it.
    last = simulation.at(last_day, 19)
    points = {p.arn: p for p in source.catalog.list_recovery_points(vault_name="mavis-production")}
    assert [p.status for p in points.values()].count(RecoveryPointStatus.COMPLETED) == 1
    assert points[simulation.backups[last - RETENTION]].status == RecoveryPointStatus.COMPLETED
    simulation.fire(last_day, 19)
    for point in source.catalog.list_recovery_points(vault_name="mavis-production"):
        assert point.status == RecoveryPointStatus.DELETED
        assert point.status_message == f"retention of 60 days ended at {point.delete_at}"

    # The destination kept every copy, each 60 days from its arrival (by its own clock, during this test)...
    copies = _destination_points(simulation.destination)
    assert len(copies) == 120 and {p["status"] for p in copies.values()} == {"COMPLETED"}
    created = {p["creation_date"] for p in copies.values()}
    assert created == {m.isoformat() for m in expected}  # the source's creation dates, kept as information
    arrived = {arn: datetime.fromisoformat(p["arrival_date"]) for arn, p in copies.items()}
    ends = {arn: datetime.fromisoformat(p["calculated_lifecycle"]["delete_at"]) for arn, p in copies.items()}
    assert all(arrivals_from <= arrived[arn] <= datetime.now(UTC) for arn in copies)
    assert all(ends[arn] == arrived[arn] + RETENTION for arn in copies)
    # ...so none goes just before the first of those instants, and all have gone at the last.
    first, final = min(ends.values()), max(ends.values())
    early = simulation.destination.json("lifecycle", "run", "--now", (first - timedelta(seconds=1)).isoformat())
    assert early["expired_recovery_points"] == []
    due = simulation.destination.json("lifecycle", "run", "--now", final.isoformat())
    assert sorted(due["expired_recovery_points"]) == sorted(copies)

    # The seed's notifications: every event to the machines' log, nothing to people (all completed).
    log = simulation.source.home.parent / "events.jsonl"
    events = [(e["event"], e["state"]) for e in map(json.loads, log.read_text().splitlines())]
    assert events.count(("BACKUP_JOB_COMPLETED", "COMPLETED")) == 120
    assert events.count(("COPY_JOB_SUCCESSFUL", "COMPLETED")) == 120
    assert events.count(("RECOVERY_POINT_MODIFIED", "DELETED")) == 120
    assert not (simulation.source.home.parent / "people.jsonl").exists()
    _check_compliance(simulation, log)


def _check_compliance(simulation: Simulation, log: Path) -> None:
    """The example's frameworks and report plans ran all along: the dead-man's switch fired the morning after the
    first missed backup, and each report plan made one report a day, never two, across the daemon's restarts."""
    events = [json.loads(line) for line in log.read_text().splitlines()]
    switch = [
        (e["previous_state"], e["state"], e["event_time"])
        for e in events
        if e["event"] == "RESOURCE_COMPLIANCE_CHANGED"
        and (e["framework_name"], e["control_name"], e["resource_id"])
        == ("mavis_postgres_framework", "BACKUP_LAST_RECOVERY_POINT_CREATED", "mavis-db")
    ]
    # Compliant from the first backup; the last one is day 59 19:00; on day 61 07:00 it is 36 hours old.
    assert switch == [
        (None, "NON_COMPLIANT", simulation.at(0, 6).isoformat()),
        ("NON_COMPLIANT", "COMPLIANT", simulation.at(0, 7).isoformat()),
        ("COMPLIANT", "NON_COMPLIANT", simulation.at(FIRING_DAYS + 1, 7).isoformat()),
    ]
    jobs = simulation.source.catalog.list_report_jobs()
    per_plan = {name: [j for j in jobs if j.report_plan_name == name] for name in {j.report_plan_name for j in jobs}}
    assert set(per_plan) == {"backup_jobs", "copy_jobs", "backup_restore_testing_jobs", "resource_compliance"}
    for name, made in per_plan.items():
        assert {j.state for j in made} == {"COMPLETED"}, name
        days = [datetime.fromisoformat(j.creation_time) for j in made]
        assert days == [simulation.at(day, 7) for day in range(1, SIMULATED_DAYS)], name  # each day's first tick


def _destination_points(destination: Cli) -> dict[str, dict[str, Any]]:
    listed = destination.json("recovery-points", "list", "--all", "--vault", "mavis-destination")["recovery_points"]
    return {p["recovery_point_arn"]: p for p in listed}
