"""Thirty simulated days of issue 13 working together: backups, copies, daily restore tests against real
PostgreSQL, the nine controls, the five report templates, and the metrics (docs/restore-testing.md,
docs/compliance.md, docs/metrics.md).

The source account runs in this process on a driven clock that runs at the real pace from each instant it is
set to (restores take their real time: the measured RTO is real). Its scheduler ticks three times a day:
07:00 (the backup plans fire: `shop`, a PostgreSQL database, into `locked`, a vault under a compliance lock,
copied to the destination account; `notes`, a SQLite file, into `gov`, a vault under a governance lock, kept
21 days), 09:00 (the restore testing plan restores the newest point of `shop` into a scratch database,
checks it with SQL and the point's recorded row counts, drops it; the report plans, due at 08:00, are made
after it; this tick comes up to 25 s late, a different lateness each day, as a polling daemon's does).
`orphan` has no plan. The destination is a real `strongroom serve` reached over HTTP. The days lie
in the past (the last one is yesterday), so the destination, whose clock is real, accepts the copies.

- Day BAD_DATA_DAY: the application lost a row before the backup; the point restores faithfully, and the
  validation's SQL check fails: the test is FAILED (validation FAILED), and measures no restore time.
- Day TAMPERED_DAY: after the backup, one bit of the newest point's chunk in the vault is flipped (bit rot or
  an attacker on the disk): that day's restore test is FAILED, naming the object; the next day's passes.
- Day CRASH_DAY: at noon an operator's `restore-testing start-run` (the real CLI, its clock set to noon) is
  killed mid-restore (fault point `restore_test.restore:middle`); its scratch database is left behind until
  the next tick of the scheduler removes it and settles the test.

Asserted: every restore test, every control's verdict on every resource (and the transitions), every row of
the last day's reports and the failures' rows in theirs, every job in exactly one daily report, the events,
`resources describe`, and /metrics over HTTP parsed with the Prometheus text parser.
"""

from __future__ import annotations

import csv
import json
import secrets
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from strongroom import model
from strongroom.clock import system_clock
from strongroom.model import JobState, JobType, RecoveryPointStatus
from strongroom.policy.document import default_destination_policy
from strongroom.policy.principals import root_arn
from strongroom.services.account import Account, init_account
from strongroom.services.apply import apply_config
from strongroom.services.compliance.state import framework_view
from strongroom.services.restore_testing import list_tests
from strongroom.services.restore_testing_records import RestoreTest
from strongroom.services.scheduler import Scheduler
from strongroom.vault.envelope import Kind
from strongroom.vault.manifest import load_manifest
from strongroom.vault.reader import RecoveryPointReader, read_object
from strongroom.vault.vault import chunk_key
from tests.support.accounts import account_id, issue_credential, register, serving, vault_arn
from tests.support.cli import PASSPHRASE, Cli
from tests.support.clock import RunningClock
from tests.support.pgcluster import PgCluster
from tests.support.ports import free_port
from tests.support.scrape import scrape, value
from tests.support.vaults import FAST_SCRYPT

pytestmark = [pytest.mark.postgres, pytest.mark.xdist_group("thirty_days")]  # one simulation for the module

DAYS = 30
BAD_DATA_DAY = 13
TAMPERED_DAY = 26
CRASH_DAY = 28
LAST = DAYS - 1
BACKUP_HOUR, REPORT_HOUR, TEST_HOUR, CRASH_HOUR = 7, 8, 9, 12
# A daemon polls (every 30 s by default): its 09:00 tick comes a little late, by a different amount each day.
LATENESS_SECONDS = (0, 25, 5, 15)
NOTES_KEPT_DAYS = 21
PLAN = "daily-restore-test"
FRAMEWORK = "audit"
DATABASE = "thirty_days_shop"
C, N = "COMPLIANT", "NON_COMPLIANT"
CONTROLS = [
    "BACKUP_RESOURCES_PROTECTED_BY_BACKUP_PLAN",
    "BACKUP_PLAN_MIN_FREQUENCY_AND_MIN_RETENTION_CHECK",
    "BACKUP_RECOVERY_POINT_MINIMUM_RETENTION_CHECK",
    "BACKUP_RECOVERY_POINT_ENCRYPTED",
    "BACKUP_RECOVERY_POINT_MANUAL_DELETION_DISABLED",
    "BACKUP_RESOURCES_PROTECTED_BY_BACKUP_VAULT_LOCK",
    "BACKUP_LAST_RECOVERY_POINT_CREATED",
    "BACKUP_RESOURCES_PROTECTED_BY_CROSS_ACCOUNT",
    "RESTORE_TIME_FOR_RESOURCES_MEET_TARGET",
]
TEMPLATES = {
    "backup_jobs": "BACKUP_JOB_REPORT",
    "copy_jobs": "COPY_JOB_REPORT",
    "restore_jobs": "RESTORE_JOB_REPORT",
    "control_compliance": "CONTROL_COMPLIANCE_REPORT",
    "resource_compliance": "RESOURCE_COMPLIANCE_REPORT",
}
# The verdicts at the end: (control, subject) -> status, and a piece of the reason (its evidence).
FINAL = {
    ("BACKUP_RESOURCES_PROTECTED_BY_BACKUP_PLAN", "shop"): (C, "selected by backup plan shop-daily"),
    ("BACKUP_RESOURCES_PROTECTED_BY_BACKUP_PLAN", "notes"): (C, "selected by backup plan notes-daily"),
    ("BACKUP_RESOURCES_PROTECTED_BY_BACKUP_PLAN", "orphan"): (N, "no enabled backup plan"),
    ("BACKUP_PLAN_MIN_FREQUENCY_AND_MIN_RETENTION_CHECK", "shop-daily"): (C, "backs up at least every 24 h"),
    ("BACKUP_PLAN_MIN_FREQUENCY_AND_MIN_RETENTION_CHECK", "notes-daily"): (
        N,
        "no rule backs up at least every 1 day and keeps points at least 30 days",
    ),
    ("BACKUP_RECOVERY_POINT_MINIMUM_RETENTION_CHECK", "shop"): (C, f"all {DAYS} recovery points kept at least 30"),
    ("BACKUP_RECOVERY_POINT_MINIMUM_RETENTION_CHECK", "notes"): (N, "recovery points kept less than 30 days"),
    ("BACKUP_RECOVERY_POINT_ENCRYPTED", "shop"): (C, "AES-256-GCM, keys of vault locked"),
    ("BACKUP_RECOVERY_POINT_ENCRYPTED", "notes"): (C, "AES-256-GCM, keys of vault gov"),
    ("BACKUP_RECOVERY_POINT_MANUAL_DELETION_DISABLED", "shop"): (C, "vault locked denies backup:DeleteRecoveryPoint"),
    ("BACKUP_RECOVERY_POINT_MANUAL_DELETION_DISABLED", "notes"): (N, "vault gov: a principal of account"),
    ("BACKUP_RESOURCES_PROTECTED_BY_BACKUP_VAULT_LOCK", "shop"): (C, "locked in compliance mode"),
    ("BACKUP_RESOURCES_PROTECTED_BY_BACKUP_VAULT_LOCK", "notes"): (N, "locked in governance mode"),
    ("BACKUP_RESOURCES_PROTECTED_BY_BACKUP_VAULT_LOCK", "orphan"): (N, "no COMPLETED recovery point"),
    ("BACKUP_LAST_RECOVERY_POINT_CREATED", "shop"): (C, "within 1 day"),
    ("BACKUP_LAST_RECOVERY_POINT_CREATED", "notes"): (C, "within 1 day"),
    ("BACKUP_LAST_RECOVERY_POINT_CREATED", "orphan"): (N, "no COMPLETED recovery point"),
    ("BACKUP_RESOURCES_PROTECTED_BY_CROSS_ACCOUNT", "shop"): (C, "copied to vault Default of account"),
    ("BACKUP_RESOURCES_PROTECTED_BY_CROSS_ACCOUNT", "notes"): (N, "no COMPLETED copy to a vault of another"),
    ("BACKUP_RESOURCES_PROTECTED_BY_CROSS_ACCOUNT", "orphan"): (N, "no COMPLETED copy to a vault of another"),
    ("RESTORE_TIME_FOR_RESOURCES_MEET_TARGET", "shop"): (C, "last restore (restore_test"),
    ("RESTORE_TIME_FOR_RESOURCES_MEET_TARGET", "notes"): (N, "never restored"),
    ("RESTORE_TIME_FOR_RESOURCES_MEET_TARGET", "orphan"): (N, "never restored"),
}

# The real `strongroom` command with its clock driven to argv[1] (a process's clock can only be driven from
# inside it, docs: src/strongroom/clock.py): the operator's run on the crash day, at the simulated noon.
DRIVEN_CLI = """
import sys
from datetime import datetime
from strongroom import model
from strongroom.cli.main import execute
from tests.support.clock import RunningClock
with model.driven_clock(RunningClock(datetime.fromisoformat(sys.argv[1]))):
    sys.exit(execute(sys.argv[2:]))
"""
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Crash:
    """The killed run: the test as the dead process left it, and its scratch database then and after."""

    left: RestoreTest
    databases_after_kill: list[str]
    databases_after_tick: list[str]
    tick_cleaned: list[str]


@dataclass
class World:
    tmp: Path
    source: Account
    cli: Cli
    destination: Cli
    pg: PgCluster
    clock: RunningClock
    start: datetime
    scheduler: Scheduler
    verdicts: dict[tuple[int, int], dict[tuple[str, str], tuple[str, str]]] = field(default_factory=dict)
    tests_by_day: dict[int, RestoreTest] = field(default_factory=dict)
    victim: str = ""
    crash: Crash | None = None

    def at(self, day: int, hour: int) -> datetime:
        return self.start + timedelta(days=day, hours=hour)

    def tick_time(self, day: int, hour: int) -> datetime:
        late = LATENESS_SECONDS[day % len(LATENESS_SECONDS)] if hour == TEST_HOUR else 0
        return self.at(day, hour) + timedelta(seconds=late)

    def tick(self, day: int, hour: int) -> dict[str, Any]:
        self.clock.moment = self.tick_time(day, hour)
        report = self.scheduler.tick()
        assert report["acted"] and not report["errors"], report
        self.verdicts[(day, hour)] = self.current_verdicts()
        return report

    def current_verdicts(self) -> dict[tuple[str, str], tuple[str, str]]:
        view = framework_view(self.source, FRAMEWORK)
        return {
            (c["control_name"], r["resource_id"]): (r["compliance_status"], r["reason"])
            for c in view["controls"]
            for r in c["resources"]
        }


def _config(tmp: Path, account: str, pg: PgCluster, destination_vault: str, destination_id: str) -> dict[str, Any]:
    root = root_arn(account)
    deny_deletes = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyDeletingRecoveryPoints",
                "Effect": "Deny",
                "Principal": "*",
                "Action": ["backup:DeleteRecoveryPoint", "backup:UpdateRecoveryPointLifecycle"],
                "Resource": "*",
                "Condition": {"ArnNotLike": {"aws:PrincipalArn": [root]}},
            }
        ],
    }
    events = [
        "COPY_JOB_SUCCESSFUL",
        "RESTORE_VALIDATION_COMPLETED",
        "RESTORE_JOB_FAILED",
        "RESOURCE_COMPLIANCE_CHANGED",
    ]
    controls: list[dict[str, Any]] = [{"name": name} for name in CONTROLS]
    parameters: dict[str, dict[str, Any]] = {
        "BACKUP_PLAN_MIN_FREQUENCY_AND_MIN_RETENTION_CHECK": {
            "requiredFrequencyUnit": "days",
            "requiredFrequencyValue": 1,
            "requiredRetentionDays": 30,
        },
        "BACKUP_RECOVERY_POINT_MINIMUM_RETENTION_CHECK": {"requiredRetentionDays": 30},
        "BACKUP_RECOVERY_POINT_MANUAL_DELETION_DISABLED": {"principalArnList": root},
        "BACKUP_RESOURCES_PROTECTED_BY_BACKUP_VAULT_LOCK": {"minRetentionDays": 7},
        "BACKUP_LAST_RECOVERY_POINT_CREATED": {"recoveryPointAgeUnit": "days", "recoveryPointAgeValue": 1},
        "BACKUP_RESOURCES_PROTECTED_BY_CROSS_ACCOUNT": {"crossAccountList": destination_id},
        "RESTORE_TIME_FOR_RESOURCES_MEET_TARGET": {"maxRestoreTime": 60},
    }
    for control in controls:
        if control["name"] in parameters:
            control["input_parameters"] = parameters[control["name"]]
    daily = f"cron(0 {BACKUP_HOUR} * * ? *)"
    return {
        "vaults": {
            "locked": {
                "access_policy": deny_deletes,
                "lock": {"min_retention_days": 7, "max_retention_days": 60, "changeable_for_days": 3},
                "notifications": {"events": events, "sinks": [f"log://{tmp}/events.jsonl"]},
            },
            "gov": {"lock": {"min_retention_days": 7, "max_retention_days": 60}},
        },
        "resources": {
            "shop": {"type": "postgres", "settings": {"dsn": pg.dsn(DATABASE)}, "tags": {"BackupSource": "True"}},
            "notes": {"type": "sqlite", "settings": {"path": str(tmp / "notes.sqlite")}, "tags": {"Notes": "True"}},
            "orphan": {"type": "directory", "settings": {"path": str(tmp / "orphan")}},
        },
        "destination": {"vault_arn": destination_vault},
        "backup_plans": {
            "shop-daily": {
                "selection_tag": "BackupSource",
                "validation_window_hours": 1,
                "rules": [
                    {
                        "name": "daily",
                        "schedule": daily,
                        "target_vault_name": "locked",
                        "lifecycle": {"delete_after": 35},
                        "copy_action": {"delete_after": 35},
                    }
                ],
            },
            "notes-daily": {
                "selection_tag": "Notes",
                "rules": [
                    {
                        "name": "daily",
                        "schedule": daily,
                        "target_vault_name": "gov",
                        "lifecycle": {"delete_after": NOTES_KEPT_DAYS},
                    }
                ],
            },
        },
        "restore_testing_plans": {
            PLAN: {
                "schedule_expression": f"cron(0 {TEST_HOUR} * * ? *)",
                "start_window_hours": 1,
                "recovery_point_selection": {
                    "algorithm": "LATEST_WITHIN_WINDOW",
                    "include_vaults": ["locked"],
                    "recovery_point_types": ["SNAPSHOT"],
                    "selection_window_days": 7,
                },
                "selections": {
                    "shop": {
                        "protected_resource_type": "postgres",
                        "backup_plan": "shop-daily",
                        "validation": {
                            "sql": [
                                {"sql": "SELECT count(*) FROM heartbeat", "expect": 1},
                                {"sql": "SELECT count(*) > 0 FROM items", "expect": True},
                            ],
                            "row_counts": True,
                        },
                    }
                },
            }
        },
        "frameworks": {FRAMEWORK: {"description": "Thirty days audit", "controls": controls}},
        "report_plans": {
            name: {
                "description": f"{template} of the last 24 hours",
                "report_delivery_channel": {"formats": ["CSV", "JSON"], "store": (tmp / "reports").as_uri()},
                "report_setting": {
                    "report_template": template,
                    **({"framework_arns": [FRAMEWORK]} if "COMPLIANCE" in template else {}),
                },
                "schedule": f"cron(0 {REPORT_HOUR} * * ? *)",  # made at the 09:00 tick, after the test
            }
            for name, template in TEMPLATES.items()
        },
    }


# The data --------------------------------------------------------------------------------------------------
def _create_shop(pg: PgCluster) -> None:
    pg.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    pg.create_database(DATABASE)
    pg.execute(
        "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL);"
        "CREATE TABLE heartbeat (day int PRIMARY KEY, note text NOT NULL);"
        "CREATE TABLE attachments (id serial PRIMARY KEY, body text NOT NULL);"
        "INSERT INTO items (name) SELECT 'item ' || g FROM generate_series(1, 200) g",
        dbname=DATABASE,
    )


def _heartbeat(pg: PgCluster, day: int) -> str:
    """A value only this day's dump holds: the chunk that carries it is this day's point's alone. On
    BAD_DATA_DAY the application has lost it (what the restore test's SQL check is there to notice)."""
    note = f"heartbeat of day {day}: {secrets.token_hex(16)}"
    pg.execute("DELETE FROM heartbeat", dbname=DATABASE)
    if day != BAD_DATA_DAY:
        pg.execute(f"INSERT INTO heartbeat VALUES ({day}, '{note}')", dbname=DATABASE)
    return note


def _grow(pg: PgCluster, tmp: Path, day: int) -> None:
    pg.execute(f"INSERT INTO items (name) SELECT 'item {day}-' || g FROM generate_series(1, 40) g", dbname=DATABASE)
    with sqlite3.connect(tmp / "notes.sqlite") as notes:
        notes.execute("INSERT INTO notes VALUES (?)", (f"note of day {day}",))
    notes.close()


def _databases(pg: PgCluster, prefix: str) -> list[str]:
    return [row[0] for row in pg.query("SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix + "%",))]


# The simulation --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, pg_cluster: PgCluster) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("thirty")
    (tmp / "orphan").mkdir()
    (tmp / "orphan" / "readme.txt").write_text("nobody backs me up\n")
    with sqlite3.connect(tmp / "notes.sqlite") as notes:
        notes.execute("CREATE TABLE notes (body TEXT)")
    notes.close()
    _create_shop(pg_cluster)
    start = (system_clock() - timedelta(days=DAYS)).replace(hour=0, minute=0, second=0, microsecond=0)
    clock = RunningClock(start)
    destination = Cli(tmp / "destination")
    destination.run("init")
    try:
        with model.driven_clock(clock):
            source = init_account(tmp / "source", PASSPHRASE, scrypt_params=FAST_SCRYPT)
            try:
                cli = Cli(source.home)
                policy = default_destination_policy(
                    source_account_ids=[source.account_id], source_vault_arns=[], admin_principal_arns=[]
                )
                (tmp / "policy.json").write_text(json.dumps(policy))
                destination.run("vaults", "put-access-policy", "Default", "--file", str(tmp / "policy.json"))
                with serving(destination) as server:
                    credential = issue_credential(destination, "copier", "--account-id", source.account_id)
                    register(cli, "destination", server, credential)
                    config = _config(
                        tmp, source.account_id, pg_cluster, vault_arn(destination), account_id(destination)
                    )
                    (tmp / "source.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
                    apply_config(source, tmp / "source.yaml")
                    built = World(tmp, source, cli, destination, pg_cluster, clock, start, Scheduler(source))
                    _simulate(built)
                    yield built
            finally:
                source.close()
    finally:
        pg_cluster.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


def _simulate(world: World) -> None:
    world.tick(0, 6)  # the daemon starts: rules, restore testing and report plans start from now
    for day in range(DAYS):
        note = _heartbeat(world.pg, day)
        if day == CRASH_DAY:  # enough data that the restore has a middle (the fault point: after 1 MiB)
            world.pg.execute(
                "INSERT INTO attachments (body) SELECT repeat(md5(g::text), 8) FROM generate_series(1, 6000) g",
                dbname=DATABASE,
            )
        fired = world.tick(day, BACKUP_HOUR)
        assert (fired.get("backups_completed"), fired.get("copies_completed")) == (2, 1), fired
        if day == CRASH_DAY + 1:
            assert world.crash is not None
            world.crash.tick_cleaned = fired["restore_testing"]
            world.crash.databases_after_tick = _databases(world.pg, "restoretest_")
        if day == TAMPERED_DAY:
            world.victim = _tamper(world, note)
        tested = world.tick(day, TEST_HOUR)
        assert tested["restore_testing"] == [f"restore testing plan {PLAN}: 1 test(s)"], tested
        assert tested["compliance"]["evaluated"] and len(tested["compliance"]["report_jobs"]) == len(TEMPLATES)
        world.tests_by_day[day] = list_tests(world.source, PLAN)[-1]
        if day == CRASH_DAY:
            world.crash = _crash(world, day)
        _grow(world.pg, world.tmp, day)


def _tamper(world: World, note: str) -> str:
    """Flip one bit of the stored chunk of the newest point of shop that holds this day's heartbeat."""
    newest = world.source.catalog.list_recovery_points(resource_id="shop")[-1]
    vault = world.source.vault(newest.vault_name)
    manifest = load_manifest(vault, newest.id)
    with RecoveryPointReader(vault, manifest) as reader:
        refs = list(reader.iter_refs(reader.stream_ref("dump")))
    [victim] = [ref.id for ref in refs if note.encode() in read_object(vault, ref.id, Kind.CHUNK)]
    path = world.source.home / "vaults" / newest.vault_name / chunk_key(victim)
    path.chmod(0o600)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return victim.hex()


def _crash(world: World, day: int) -> Crash:
    """The operator's run at noon, killed in the middle of its restore: what it leaves."""
    killed = subprocess.run(
        [sys.executable, "-c", DRIVEN_CLI, world.at(day, CRASH_HOUR).isoformat(), "restore-testing", "start-run", PLAN],
        env={**world.cli.env, "STRONGROOM_FAULT_KILL_AT": "restore_test.restore:middle"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -9, killed.stderr
    left = list_tests(world.source, PLAN)[-1]
    return Crash(left, _databases(world.pg, "restoretest_"), [], [])


# Restore tests ---------------------------------------------------------------------------------------------
def test_a_restore_test_every_day_the_bad_ones_failed_the_killed_one_cleaned_up(world: World) -> None:
    points = {p.arn: p for p in world.source.catalog.list_recovery_points(resource_id="shop")}
    newest_of_day = {datetime.fromisoformat(p.creation_date).date(): p.arn for p in points.values()}
    for day, test in world.tests_by_day.items():
        assert test.spec.scheduled_for == world.at(day, TEST_HOUR).isoformat()
        assert test.job.recovery_point_arn == newest_of_day[world.at(day, 0).date()]  # LATEST_WITHIN_WINDOW
        assert test.outcome is not None and test.outcome.cleanup == "DONE", test.as_dict()
        if day in (BAD_DATA_DAY, TAMPERED_DAY):
            continue
        assert (test.job.state, test.outcome.status, test.outcome.validation_status) == (
            JobState.COMPLETED,
            "SUCCESSFUL",
            "SUCCESSFUL",
        ), (day, test.outcome.as_dict())
        checks = {check["kind"]: check["status"] for check in test.outcome.validations}
        assert checks == {"sql": "SUCCESSFUL", "row_counts": "SUCCESSFUL"}
        assert test.outcome.restore_seconds is not None and test.outcome.restore_seconds > 0
    bad = world.tests_by_day[BAD_DATA_DAY]
    assert bad.outcome is not None and bad.job.state == JobState.COMPLETED  # restored: the data itself is wrong
    assert (bad.outcome.status, bad.outcome.validation_status) == ("FAILED", "FAILED")
    assert bad.outcome.validation_status_message == (
        "sql: query 'SELECT count(*) FROM heartbeat' returned [[0]], expected 1"
    )
    assert {check["kind"]: check["status"] for check in bad.outcome.validations} == {
        "sql": "FAILED",
        "row_counts": "SUCCESSFUL",  # the point holds exactly what the database held
    }
    broken = world.tests_by_day[TAMPERED_DAY].outcome
    assert broken is not None
    assert world.tests_by_day[TAMPERED_DAY].job.state == JobState.FAILED
    assert (broken.status, broken.validation_status) == ("FAILED", "SKIPPED")
    assert broken.validation_status_message.startswith("restore failed: ")
    assert world.victim in broken.validation_status_message  # the damaged object is named
    assert broken.restore_seconds is None  # a failed test measures nothing

    # The killed run: its scratch database outlived it, and the next tick removed it and settled the test.
    crash = world.crash
    assert crash is not None
    scratch = crash.left.spec.scratch.identifier
    assert scratch.startswith("restoretest_") and crash.left.outcome is None
    assert crash.left.job.state == JobState.RUNNING and crash.left.spec.scheduled_for is None
    assert crash.databases_after_kill == [scratch]
    assert crash.databases_after_tick == []
    assert crash.tick_cleaned == [
        f"restore test {crash.left.job.id}: dropped database {scratch} on 127.0.0.1:{world.pg.port}"
    ]
    settled = world.source.catalog.get_job(crash.left.job.id)
    [again] = [t for t in list_tests(world.source, PLAN) if t.job.id == settled.id]
    assert again.outcome is not None and settled.state == JobState.FAILED
    assert (again.outcome.status, again.outcome.validation_status, again.outcome.cleanup) == (
        "FAILED",
        "SKIPPED",
        "DONE",
    )
    assert "the process running this restore test stopped before it finished" in again.outcome.validation_status_message
    assert _databases(world.pg, "restoretest_") == []

    listed = world.cli.json("restore-testing", "list-jobs", "--plan", PLAN)["restore_jobs"]
    assert len(listed) == DAYS + 1
    statuses = [j["status"] for j in listed]
    assert statuses.count("SUCCESSFUL") == DAYS - 2 and statuses.count("FAILED") == 3
    assert {j["cleanup"] for j in listed} == {"DONE"}


def test_restore_test_and_copy_events(world: World) -> None:
    events = [json.loads(line) for line in (world.tmp / "events.jsonl").read_text().splitlines()]
    copies = [e for e in events if e["event"] == "COPY_JOB_SUCCESSFUL"]
    assert len(copies) == DAYS
    locked = world.source.catalog.get_vault("locked").arn
    assert {(e["source_backup_vault_arn"], e["destination_backup_vault_arn"]) for e in copies} == {
        (locked, vault_arn(world.destination))
    }
    validated = [e for e in events if e["event"] == "RESTORE_VALIDATION_COMPLETED"]
    assert len(validated) == DAYS + 1
    assert sorted(e["state"] for e in validated) == ["FAILED"] + ["SKIPPED"] * 2 + ["SUCCESSFUL"] * (DAYS - 2)
    failed = [e for e in events if e["event"] == "RESTORE_JOB_FAILED"]
    assert [(e["restore_test_status"], e["restore_testing_plan_name"]) for e in failed] == [("FAILED", PLAN)] * 3
    assert world.crash is not None
    assert [e["job_id"] for e in failed] == [
        world.tests_by_day[BAD_DATA_DAY].job.id,
        world.tests_by_day[TAMPERED_DAY].job.id,
        world.crash.left.job.id,
    ]


# Controls --------------------------------------------------------------------------------------------------
def test_every_control_on_every_resource_at_the_end(world: World) -> None:
    found = world.current_verdicts()
    assert set(found) == set(FINAL)
    for key, (status, reason) in FINAL.items():
        assert found[key][0] == status and reason in found[key][1], (key, found[key])
    view = framework_view(world.source, FRAMEWORK)
    assert view["framework_status"] == N
    statuses = {c["control_name"]: c["control_compliance_status"] for c in view["controls"]}
    assert statuses == {
        control: (N if any(s == N for (c, _), (s, _) in FINAL.items() if c == control) else C) for control in CONTROLS
    }


def test_verdicts_change_when_they_must(world: World) -> None:
    def history(control: str, subject: str) -> list[tuple[tuple[int, int], str]]:
        return [(moment, verdicts[(control, subject)][0]) for moment, verdicts in sorted(world.verdicts.items())]

    restore = history("RESTORE_TIME_FOR_RESOURCES_MEET_TARGET", "shop")
    # NON_COMPLIANT until the first restore test measured a restore, COMPLIANT from then on: a failed test (wrong
    # data, a tampered point) measures nothing, the last measured restore still counts.
    assert restore == [(m, N) for m, _ in restore[:2]] + [(m, C) for m, _ in restore[2:]]
    assert restore[2][0] == (0, TEST_HOUR)
    reason = {
        moment: verdicts[("RESTORE_TIME_FOR_RESOURCES_MEET_TARGET", "shop")][1]
        for moment, verdicts in world.verdicts.items()
    }
    for day in (BAD_DATA_DAY, TAMPERED_DAY):  # the failed test is not the last measured restore
        assert reason[(day, TEST_HOUR)] == reason[(day - 1, TEST_HOUR)]
        assert world.tests_by_day[day - 1].job.completion_date in reason[(day, TEST_HOUR)]
    assert world.tests_by_day[LAST].job.completion_date in reason[(LAST, TEST_HOUR)]
    lock = history("BACKUP_RESOURCES_PROTECTED_BY_BACKUP_VAULT_LOCK", "shop")
    assert [m for m, status in lock if status == N] == [(0, 6), (0, 7), (0, 9), (1, 7), (1, 9), (2, 7), (2, 9)]
    assert (
        "cooling-off period" in world.verdicts[(0, 7)][("BACKUP_RESOURCES_PROTECTED_BY_BACKUP_VAULT_LOCK", "shop")][1]
    )
    created = history("BACKUP_LAST_RECOVERY_POINT_CREATED", "shop")
    assert [m for m, status in created if status == N] == [(0, 6)]  # before the first backup only
    copied = history("BACKUP_RESOURCES_PROTECTED_BY_CROSS_ACCOUNT", "shop")
    assert [m for m, status in copied if status == N] == [(0, 6)]
    assert {status for _, status in history("BACKUP_RESOURCES_PROTECTED_BY_BACKUP_VAULT_LOCK", "notes")} == {N}
    assert {status for _, status in history("BACKUP_RESOURCES_PROTECTED_BY_BACKUP_PLAN", "orphan")} == {N}

    events = [json.loads(line) for line in (world.tmp / "events.jsonl").read_text().splitlines()]
    changes = [
        (e["previous_state"], e["state"])
        for e in events
        if e["event"] == "RESOURCE_COMPLIANCE_CHANGED"
        and (e["control_name"], e["resource_id"]) == ("RESTORE_TIME_FOR_RESOURCES_MEET_TARGET", "shop")
    ]
    assert changes == [(None, N), (N, C)]


# Reports ---------------------------------------------------------------------------------------------------
def read_report(world: World, key: str) -> list[dict[str, str]]:
    """A report file as an auditor reads it: the stdlib's csv or json, nothing of Strongroom."""
    path = world.tmp / "reports" / key
    if key.endswith(".json"):
        items = json.loads(path.read_text())["reportItems"]
        return [{k: "" if v is None else str(v) for k, v in item.items()} for item in items]
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def report_of(world: World, plan: str, day: int) -> list[dict[str, str]]:
    """The rows of the plan's scheduled report made on ``day``; the CSV and the JSON file hold the same."""
    made = world.tick_time(day, TEST_HOUR).isoformat()
    [job] = [j for j in world.source.catalog.list_report_jobs(plan) if j.creation_time == made]
    assert job.state == "COMPLETED" and job.trigger == "SCHEDULED", job
    csv_key, json_key = job.keys
    assert csv_key.endswith(".csv") and json_key.endswith(".json")
    rows = read_report(world, csv_key)
    assert rows == read_report(world, json_key)
    return rows


def _run_time(job: Any) -> str:
    seconds = round(
        (datetime.fromisoformat(job.completion_date) - datetime.fromisoformat(job.start_date)).total_seconds()
    )
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def test_one_report_per_plan_and_day(world: World) -> None:
    for plan, template in TEMPLATES.items():
        jobs = [j for j in world.source.catalog.list_report_jobs(plan) if j.trigger == "SCHEDULED"]
        assert [j.creation_time for j in jobs] == [world.tick_time(day, TEST_HOUR).isoformat() for day in range(DAYS)]
        # Each covers the 24 hours before its 08:00, not before the tick that made it: they join up exactly.
        assert [(j.period_start, j.period_end) for j in jobs] == [
            (world.at(day - 1, REPORT_HOUR).isoformat(), world.at(day, REPORT_HOUR).isoformat()) for day in range(DAYS)
        ]
        assert {(j.state, j.report_template) for j in jobs} == {("COMPLETED", template)}


def test_the_last_days_job_reports_row_by_row(world: World) -> None:
    account = world.source.account_id
    period = (world.at(LAST - 1, REPORT_HOUR).isoformat(), world.at(LAST, REPORT_HOUR).isoformat())
    catalog = world.source.catalog
    common = {
        "reportTimePeriodStart": period[0],
        "reportTimePeriodEnd": period[1],
        "accountId": account,
        "region": "local",
    }

    def resource(name: str, kind: str) -> dict[str, str]:
        return {
            "resourceType": kind,
            "resourceArn": f"arn:strongroom:backup:local:{account}:resource:{name}",
            "resourceName": name,
        }

    backups = [
        j for j in catalog.list_jobs(job_type=JobType.BACKUP) if j.creation_date >= world.at(LAST, 0).isoformat()
    ]
    assert sorted(j.resource_id for j in backups) == ["notes", "shop"]
    vaults = {v.name: v.arn for v in catalog.list_vaults()}
    plans = {"shop": ("shop-daily", "locked", "postgres"), "notes": ("notes-daily", "gov", "sqlite")}
    expected = [
        {
            **common,
            **resource(job.resource_id, plans[job.resource_id][2]),
            "backupJobId": job.id,
            "jobStatus": "COMPLETED",
            "statusMessage": job.status_message or "",
            "backupPlanName": plans[job.resource_id][0],
            "backupRuleName": "daily",
            "creationDate": job.creation_date,
            "completionDate": job.completion_date,
            "recoveryPointArn": job.recovery_point_arn,
            "jobRunTime": _run_time(job),
            "backupSizeInBytes": str(job.bytes_processed),
            "backupVaultName": plans[job.resource_id][1],
            "backupVaultArn": vaults[plans[job.resource_id][1]],
        }
        for job in sorted(backups, key=lambda j: (j.creation_date, j.id))
    ]
    assert report_of(world, "backup_jobs", LAST) == expected

    [copied] = [j for j in catalog.list_jobs(job_type=JobType.COPY) if j.creation_date >= world.at(LAST, 0).isoformat()]
    [shop_backup] = [j for j in backups if j.resource_id == "shop"]
    assert report_of(world, "copy_jobs", LAST) == [
        {
            **common,
            **resource("shop", "postgres"),
            "copyJobId": copied.id,
            "jobStatus": "COMPLETED",
            "statusMessage": copied.status_message or "",
            "backupPlanName": "shop-daily",
            "backupRuleName": "daily",
            "creationDate": copied.creation_date,
            "completionDate": copied.completion_date,
            "sourceRecoveryPointArn": shop_backup.recovery_point_arn,
            "destinationRecoveryPointArn": copied.result["destination_recovery_point_arn"],
            "jobRunTime": _run_time(copied),
            "backupSizeInBytes": str(copied.bytes_processed),
            "sourceBackupVaultArn": vaults["locked"],
            "destinationBackupVaultArn": vault_arn(world.destination),
        }
    ]

    # The restore jobs of those 24 hours: the day before's scheduled test, and the killed run settled this morning.
    assert world.crash is not None
    tested, killed = world.tests_by_day[LAST - 1].job, catalog.get_job(world.crash.left.job.id)
    assert report_of(world, "restore_jobs", LAST) == [
        {
            **common,
            **resource("shop", "postgres"),
            "restoreJobId": job.id,
            "jobStatus": job.state.value,
            "statusMessage": job.status_message or "",
            "recoveryPointArn": job.recovery_point_arn,
            "creationDate": job.creation_date,
            "completionDate": job.completion_date,
            "jobRunTime": _run_time(job),
            "backupSizeInBytes": str(job.bytes_processed),
            "validationStatus": validation,
        }
        for job, validation in ((tested, "SUCCESSFUL"), (killed, "SKIPPED"))
    ]
    assert killed.state == JobState.FAILED and tested.state == JobState.COMPLETED


def test_the_failed_tests_in_their_days_reports(world: World) -> None:
    """A restore job's status says whether it restored, the validation status whether the data was right."""
    [row] = report_of(world, "restore_jobs", BAD_DATA_DAY + 1)
    bad = world.tests_by_day[BAD_DATA_DAY].job
    assert (row["restoreJobId"], row["jobStatus"], row["validationStatus"]) == (bad.id, "COMPLETED", "FAILED")
    [row] = report_of(world, "restore_jobs", TAMPERED_DAY + 1)
    broken = world.tests_by_day[TAMPERED_DAY].job
    assert (row["restoreJobId"], row["jobStatus"], row["validationStatus"]) == (broken.id, "FAILED", "SKIPPED")
    assert world.victim in row["statusMessage"]


def test_the_last_days_compliance_reports_row_by_row(world: World) -> None:
    account = world.source.account_id
    evaluated = world.tick_time(LAST, TEST_HOUR).isoformat()
    controls = report_of(world, "control_compliance", LAST)
    assert [r["controlName"] for r in controls] == CONTROLS
    for row in controls:
        mine = [status for (control, _), (status, _) in FINAL.items() if control == row["controlName"]]
        assert {k: v for k, v in row.items() if k not in ("controlScope", "controlParameters")} == {
            "accountId": account,
            "region": "local",
            "frameworkName": FRAMEWORK,
            "frameworkDescription": "Thirty days audit",
            "controlName": row["controlName"],
            "controlComplianceStatus": N if N in mine else C,
            "lastEvaluationTime": evaluated,
            "numResourcesCompliant": str(mine.count(C)),
            "numResourcesNonCompliant": str(mine.count(N)),
        }
        assert isinstance(json.loads(row["controlScope"]), dict)
    parameters = {r["controlName"]: json.loads(r["controlParameters"]) for r in controls}
    assert parameters["RESTORE_TIME_FOR_RESOURCES_MEET_TARGET"] == {"maxRestoreTime": "60"}
    assert parameters["BACKUP_RECOVERY_POINT_ENCRYPTED"] == {}

    rows = report_of(world, "resource_compliance", LAST)
    kinds = {
        "shop": "postgres",
        "notes": "sqlite",
        "orphan": "directory",
        "shop-daily": "backup-plan",
        "notes-daily": "backup-plan",
    }
    assert len(rows) == len(FINAL)
    for row in rows:
        status, reason = FINAL[(row["controlName"], row["resourceId"])]
        assert row == {
            "accountId": account,
            "region": "local",
            "frameworkName": FRAMEWORK,
            "frameworkDescription": "Thirty days audit",
            "controlName": row["controlName"],
            "resourceName": row["resourceId"],
            "resourceId": row["resourceId"],
            "resourceType": kinds[row["resourceId"]],
            "resourceComplianceStatus": status,
            "lastEvaluationTime": evaluated,
            "complianceReason": row["complianceReason"],
        }
        assert reason in row["complianceReason"]


# RPO, RTO and metrics --------------------------------------------------------------------------------------
def test_resources_describe_shows_rpo_and_the_measured_rto(world: World) -> None:
    last = world.tests_by_day[LAST]
    assert last.outcome is not None and last.outcome.restore_seconds is not None
    catalog = world.source.catalog
    newest = catalog.list_recovery_points(resource_id="shop")[-1]
    before = system_clock()
    shop = world.cli.json("resources", "describe", "shop")
    places = {entry.get("vault") or entry["destination"]: entry for entry in shop["rpo"]}
    assert set(places) == {"locked", f"{account_id(world.destination)}:Default"}
    for entry in places.values():
        assert entry["newest_completed_point"] == newest.completion_date
        assert entry["rpo_seconds"] >= (before - datetime.fromisoformat(newest.completion_date)).total_seconds()
    assert shop["last_rto"] == {
        "rto_seconds": pytest.approx(last.outcome.restore_seconds, abs=1e-3),
        "measured_by": "restore_test",
        "measured_at": last.job.completion_date,
    }
    notes = world.cli.json("resources", "describe", "notes")
    assert [entry["vault"] for entry in notes["rpo"]] == ["gov"] and notes["last_rto"] is None
    orphan = world.cli.json("resources", "describe", "orphan")
    assert (orphan["rpo"], orphan["last_rto"]) == ([], None)
    # notes' points go 21 days after they were made: those of days 0..8 by the last tick (day 29, 09:00).
    notes_points = catalog.list_recovery_points(resource_id="notes")
    kept = [
        world.start.date() - datetime.fromisoformat(p.creation_date).date()
        for p in notes_points
        if p.status == RecoveryPointStatus.COMPLETED
    ]
    assert [-d.days for d in kept] == list(range(DAYS - NOTES_KEPT_DAYS, DAYS))
    assert {p.status for p in notes_points[: DAYS - NOTES_KEPT_DAYS]} == {RecoveryPointStatus.DELETED}


def test_metrics_over_http(world: World) -> None:
    last = world.tests_by_day[LAST]
    assert last.outcome is not None
    port = free_port()
    with serving(world.cli, "--metrics-bind", str(port)):
        scraped_before = system_clock().timestamp()
        samples = scrape(port)
        scraped_after = system_clock().timestamp()
    newest = world.source.catalog.list_recovery_points(resource_id="shop")[-1]
    assert newest.completion_date is not None
    completed = datetime.fromisoformat(newest.completion_date).timestamp()
    assert value(samples, "strongroom_backup_last_success_timestamp_seconds", resource_id="shop") == completed
    rpo = value(samples, "strongroom_resource_rpo_seconds", resource_id="shop")
    assert scraped_before - completed <= rpo <= scraped_after - completed  # the age at the (real) scrape
    copies = world.source.catalog.list_jobs(job_type=JobType.COPY)
    [copied] = [j for j in copies if j.parameters["source_recovery_point_arn"] == newest.arn]
    assert copied.completion_date is not None
    assert (
        value(samples, "strongroom_copy_last_success_timestamp_seconds", resource_id="shop")
        == datetime.fromisoformat(copied.completion_date).timestamp()
    )
    where = {"resource_id": "shop", "resource_type": "postgres", "plan": PLAN}
    ended = datetime.fromisoformat(last.outcome.completed_at).timestamp()  # restored, validated, removed
    assert value(samples, "strongroom_restore_test_last_success", **where) == 1.0
    assert value(samples, "strongroom_restore_test_last_timestamp_seconds", **where) == ended
    assert value(samples, "strongroom_restore_test_last_success_timestamp_seconds", **where) == ended
    assert (
        value(
            samples, "strongroom_restore_test_last_status", status="SUCCESSFUL", validation_status="SUCCESSFUL", **where
        )
        == 1.0
    )
    assert value(samples, "strongroom_restore_test_last_restore_seconds", **where) == pytest.approx(
        last.outcome.restore_seconds, abs=1e-3
    )
    rto = value(samples, "strongroom_resource_last_rto_seconds", resource_id="shop", source="restore_test")
    assert rto == pytest.approx(last.outcome.restore_seconds, abs=1e-3)
    assert [labels["resource_id"] for labels, _ in samples["strongroom_resource_last_rto_seconds"]] == ["shop"]
    assert value(samples, "strongroom_jobs", job_type="RESTORE", state="COMPLETED") == DAYS - 1
    assert value(samples, "strongroom_jobs", job_type="RESTORE", state="FAILED") == 2
    assert value(samples, "strongroom_jobs", job_type="COPY", state="COMPLETED") == DAYS
    assert value(samples, "strongroom_jobs", job_type="BACKUP", state="COMPLETED") == 2 * DAYS
    for control in CONTROLS:
        mine = [status for (name, _), (status, _) in FINAL.items() if name == control]
        labels = {"framework": FRAMEWORK, "control": control}
        assert value(samples, "strongroom_control_compliant", **labels) == (0 if N in mine else 1), control
        assert value(samples, "strongroom_control_resources", status=N, **labels) == mine.count(N)
        assert value(samples, "strongroom_control_resources", status=C, **labels) == mine.count(C)
        assert (
            value(samples, "strongroom_control_last_evaluation_timestamp_seconds", **labels)
            == world.tick_time(LAST, TEST_HOUR).timestamp()
        )
    for plan in TEMPLATES:
        assert value(samples, "strongroom_report_last_job_failed", report_plan=plan) == 0
        assert (
            value(samples, "strongroom_report_last_success_timestamp_seconds", report_plan=plan)
            == world.tick_time(LAST, TEST_HOUR).timestamp()
        )


def test_no_report_holds_a_path_dsn_or_endpoint(world: World) -> None:
    """Reports go to auditors: ids, names, ARNs, states, times, sizes and reasons, never where things live."""
    files = sorted((world.tmp / "reports").rglob("*.*"))
    assert len(files) == DAYS * len(TEMPLATES) * 2
    secrets_of_the_world = [str(world.tmp), world.pg.dsn(DATABASE), f"127.0.0.1:{world.pg.port}", "://", PASSPHRASE]
    for path in files:
        text = path.read_text()
        assert not [s for s in secrets_of_the_world if s in text], (path, text[:500])


def test_every_job_is_in_exactly_one_daily_report(world: World) -> None:
    """What an auditor reconciles: the daily reports, read together, hold every finished job once, however late
    the daemon's tick came on each day (a report's period ends at its 08:00, not at the tick)."""
    end = world.at(LAST, REPORT_HOUR)  # the last report's period end
    for plan, job_type, id_column in (
        ("backup_jobs", JobType.BACKUP, "backupJobId"),
        ("copy_jobs", JobType.COPY, "copyJobId"),
        ("restore_jobs", JobType.RESTORE, "restoreJobId"),
    ):
        reported = [row[id_column] for day in range(DAYS) for row in report_of(world, plan, day)]
        jobs = world.source.catalog.list_jobs(job_type=job_type)
        finished = [j.id for j in jobs if j.completion_date and datetime.fromisoformat(j.completion_date) < end]
        assert sorted(reported) == sorted(finished), plan
