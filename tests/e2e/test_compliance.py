"""Frameworks and report plans over nine simulated days of real backups, copies and a restore.

The source account runs in this process on a driven clock (its Scheduler ticks once a day, when its plans
fire); the destination is a real `strongroom serve` reached over HTTP and receives the copies. Three
directory resources: `app` (a daily plan into a vault under a compliance lock, copied to the destination),
`legacy` (a daily plan into a vault under a governance lock, kept 14 days, switched off after day 5: the
dead-man's switch flips two days later) and `orphan` (no plan). The simulated days end two hours before the
real now, so that the destination (whose clock is real) accepts the copies, and so that `restore start` and
the on-demand reports made at the end with the real clock see the last day's jobs.

Every control's verdict on every resource is asserted, the compliance-change events, every row of the
scheduled and on-demand reports (parsed with csv and json), and the compliance metrics over HTTP.
"""

from __future__ import annotations

import csv
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from strongroom import model
from strongroom.clock import system_clock
from strongroom.model import JobType
from strongroom.plans.schedule import parse_schedule
from strongroom.policy.document import default_destination_policy
from strongroom.policy.principals import root_arn
from strongroom.services.account import Account, init_account
from strongroom.services.apply import apply_config
from strongroom.services.compliance.state import evaluate_all, framework_view
from strongroom.services.scheduler import Scheduler
from tests.support.accounts import account_id, issue_credential, register, serving, vault_arn
from tests.support.cli import PASSPHRASE, Cli, assert_one_line_error
from tests.support.clock import ManualClock
from tests.support.ports import free_port
from tests.support.vaults import FAST_SCRYPT

pytestmark = pytest.mark.xdist_group("compliance")  # one simulation, shared by the module

DAYS = 8  # the plans fire on days 0..DAYS
LEGACY_OFF_AFTER = 5  # legacy's plan is switched off after its day-5 backup
C, N = "COMPLIANT", "NON_COMPLIANT"
FRAMEWORK = "mavis_audit"
CONTROLS = [
    {"name": "BACKUP_RESOURCES_PROTECTED_BY_BACKUP_PLAN"},
    {
        "name": "BACKUP_PLAN_MIN_FREQUENCY_AND_MIN_RETENTION_CHECK",
        "input_parameters": [
            {"name": "requiredFrequencyUnit", "value": "days"},
            {"name": "requiredFrequencyValue", "value": "1"},
            {"name": "requiredRetentionDays", "value": "30"},
        ],
    },
    {"name": "BACKUP_RECOVERY_POINT_MINIMUM_RETENTION_CHECK", "input_parameters": {"requiredRetentionDays": 30}},
    {"name": "BACKUP_RECOVERY_POINT_ENCRYPTED"},
    {"name": "BACKUP_RECOVERY_POINT_MANUAL_DELETION_DISABLED"},  # principalArnList: set below (the root)
    {"name": "BACKUP_RESOURCES_PROTECTED_BY_BACKUP_VAULT_LOCK", "input_parameters": {"minRetentionDays": 7}},
    {
        "name": "BACKUP_LAST_RECOVERY_POINT_CREATED",
        "input_parameters": {"recoveryPointAgeUnit": "days", "recoveryPointAgeValue": 1},
    },
    {"name": "BACKUP_RESOURCES_PROTECTED_BY_CROSS_ACCOUNT"},  # crossAccountList: the destination, below
    {"name": "RESTORE_TIME_FOR_RESOURCES_MEET_TARGET", "input_parameters": {"maxRestoreTime": 60}},
]
TEMPLATES = {
    "backup_jobs": ("BACKUP_JOB_REPORT", ["CSV", "JSON"]),
    "copy_jobs": ("COPY_JOB_REPORT", ["JSON"]),
    "restore_jobs": ("RESTORE_JOB_REPORT", ["CSV"]),
    "control_compliance": ("CONTROL_COMPLIANCE_REPORT", ["CSV"]),
    "resource_compliance": ("RESOURCE_COMPLIANCE_REPORT", ["CSV", "JSON"]),
}

# The verdicts at the end (after the restore of app): (control, subject) -> status, and a piece of the reason.
FINAL = {
    ("BACKUP_RESOURCES_PROTECTED_BY_BACKUP_PLAN", "app"): (C, "selected by backup plan app-daily"),
    ("BACKUP_RESOURCES_PROTECTED_BY_BACKUP_PLAN", "legacy"): (N, "only a disabled backup plan selects it"),
    ("BACKUP_RESOURCES_PROTECTED_BY_BACKUP_PLAN", "orphan"): (N, "no enabled backup plan"),
    ("BACKUP_PLAN_MIN_FREQUENCY_AND_MIN_RETENTION_CHECK", "app-daily"): (C, "backs up at least every 24 h"),
    ("BACKUP_PLAN_MIN_FREQUENCY_AND_MIN_RETENTION_CHECK", "legacy-daily"): (N, "the plan is disabled"),
    ("BACKUP_RECOVERY_POINT_MINIMUM_RETENTION_CHECK", "app"): (C, f"all {DAYS + 1} recovery points kept at least 30"),
    ("BACKUP_RECOVERY_POINT_MINIMUM_RETENTION_CHECK", "legacy"): (N, "6 of 6 recovery points kept less than 30 days"),
    ("BACKUP_RECOVERY_POINT_ENCRYPTED", "app"): (C, "AES-256-GCM, keys of vault locked"),
    ("BACKUP_RECOVERY_POINT_ENCRYPTED", "legacy"): (C, "AES-256-GCM, keys of vault gov"),
    ("BACKUP_RECOVERY_POINT_MANUAL_DELETION_DISABLED", "app"): (C, "vault locked denies backup:DeleteRecoveryPoint"),
    ("BACKUP_RECOVERY_POINT_MANUAL_DELETION_DISABLED", "legacy"): (N, "vault gov: a principal of account"),
    ("BACKUP_RESOURCES_PROTECTED_BY_BACKUP_VAULT_LOCK", "app"): (C, "locked in compliance mode"),
    ("BACKUP_RESOURCES_PROTECTED_BY_BACKUP_VAULT_LOCK", "legacy"): (N, "locked in governance mode"),
    ("BACKUP_RESOURCES_PROTECTED_BY_BACKUP_VAULT_LOCK", "orphan"): (N, "no COMPLETED recovery point"),
    ("BACKUP_LAST_RECOVERY_POINT_CREATED", "app"): (C, "within 1 day"),
    ("BACKUP_LAST_RECOVERY_POINT_CREATED", "legacy"): (N, "no recovery point in the last 1 day"),
    ("BACKUP_LAST_RECOVERY_POINT_CREATED", "orphan"): (N, "no COMPLETED recovery point"),
    ("BACKUP_RESOURCES_PROTECTED_BY_CROSS_ACCOUNT", "app"): (C, "copied to vault Default of account"),
    ("BACKUP_RESOURCES_PROTECTED_BY_CROSS_ACCOUNT", "legacy"): (N, "no COMPLETED copy to a vault of another"),
    ("BACKUP_RESOURCES_PROTECTED_BY_CROSS_ACCOUNT", "orphan"): (N, "no COMPLETED copy to a vault of another"),
    ("RESTORE_TIME_FOR_RESOURCES_MEET_TARGET", "app"): (C, "last restore (restore_job"),
    ("RESTORE_TIME_FOR_RESOURCES_MEET_TARGET", "legacy"): (N, "never restored"),
    ("RESTORE_TIME_FOR_RESOURCES_MEET_TARGET", "orphan"): (N, "never restored"),
}


@dataclass
class World:
    tmp: Path
    source: Account
    source_cli: Cli
    destination: Cli
    clock: ManualClock
    start: datetime
    config: dict[str, Any]
    scheduler: Scheduler

    def at(self, day: int) -> datetime:
        return self.start + timedelta(days=day)

    def tick(self, moment: datetime) -> dict[str, Any]:
        self.clock.moment = moment
        report = self.scheduler.tick()
        assert report["acted"] and not report["errors"], report
        return report

    def apply(self) -> None:
        path = self.tmp / "source.yaml"
        path.write_text(yaml.safe_dump(self.config))
        apply_config(self.source, path)

    def verdicts(self) -> dict[tuple[str, str], tuple[str, str]]:
        view = framework_view(self.source, FRAMEWORK)
        return {
            (c["control_name"], r["resource_id"]): (r["compliance_status"], r["reason"])
            for c in view["controls"]
            for r in c["resources"]
        }


def _source_config(
    tmp: Path, account_id: str, destination_vault: str, destination_id: str, hour: int
) -> dict[str, Any]:
    root = root_arn(account_id)
    schedule = f"cron(0 {hour} * * ? *)"
    controls = json.loads(json.dumps(CONTROLS))
    controls[4]["input_parameters"] = [{"name": "principalArnList", "value": root}]
    controls[7]["input_parameters"] = {"crossAccountList": destination_id}
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
    reports = tmp / "reports"
    return {
        "vaults": {
            "locked": {
                "access_policy": deny_deletes,
                "lock": {"min_retention_days": 7, "max_retention_days": 60, "changeable_for_days": 3},
                "notifications": {
                    "events": ["RESOURCE_COMPLIANCE_CHANGED"],
                    "sinks": [f"log://{tmp}/events.jsonl"],
                },
            },
            "gov": {"lock": {"min_retention_days": 7, "max_retention_days": 60}},
        },
        "resources": {
            "app": {"type": "directory", "settings": {"path": str(tmp / "app")}, "tags": {"BackupSource": "True"}},
            "legacy": {
                "type": "directory",
                "settings": {"path": str(tmp / "legacy")},
                "tags": {"BackupLegacy": "True"},
            },
            "orphan": {"type": "directory", "settings": {"path": str(tmp / "orphan")}},
        },
        "destination": {"vault_arn": destination_vault},
        "backup_plans": {
            "app-daily": {
                "selection_tag": "BackupSource",
                "compliance_resource_types": ["directory"],
                "create_framework": True,
                "rules": [
                    {
                        "name": "daily",
                        "schedule": schedule,
                        "target_vault_name": "locked",
                        "lifecycle": {"delete_after": 35},
                        "copy_action": {"delete_after": 35},
                    }
                ],
            },
            "legacy-daily": {
                "selection_tag": "BackupLegacy",
                "rules": [
                    {
                        "name": "daily",
                        "schedule": schedule,
                        "target_vault_name": "gov",
                        "lifecycle": {"delete_after": 14},
                    }
                ],
            },
        },
        "frameworks": {FRAMEWORK: {"description": "Mavis audit", "controls": controls}},
        "report_plans": {
            name: {
                "description": f"{template} of the last 24 hours",
                "report_delivery_channel": {"formats": formats, "store": reports.as_uri()},
                "report_setting": {
                    "report_template": template,
                    **({"framework_arns": [FRAMEWORK]} if "COMPLIANCE" in template else {}),
                },
            }
            for name, (template, formats) in TEMPLATES.items()
        },
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("compliance")
    for name in ("app", "legacy", "orphan"):
        (tmp / name).mkdir()
        (tmp / name / "data.txt").write_text(f"{name} data\n")
    real_now = datetime.now(UTC)
    start = (real_now - timedelta(days=DAYS, hours=2)).replace(minute=0, second=0, microsecond=0)
    clock = ManualClock(start - timedelta(minutes=15))
    destination = Cli(tmp / "destination")
    destination.run("init")
    with model.driven_clock(clock):
        source = init_account(tmp / "source", PASSPHRASE, scrypt_params=FAST_SCRYPT)
        try:
            source_cli = Cli(source.home)
            destination_id = account_id(destination)
            policy = default_destination_policy(
                source_account_ids=[source.account_id], source_vault_arns=[], admin_principal_arns=[]
            )
            (tmp / "policy.json").write_text(json.dumps(policy))
            destination.run("vaults", "put-access-policy", "Default", "--file", str(tmp / "policy.json"))
            with serving(destination) as server:
                credential = issue_credential(destination, "copier", "--account-id", source.account_id)
                register(source_cli, "destination", server, credential)
                config = _source_config(tmp, source.account_id, vault_arn(destination), destination_id, start.hour)
                built = World(tmp, source, source_cli, destination, clock, start, config, Scheduler(source))
                built.apply()
                _simulate(built)
                yield built
        finally:
            source.close()


@dataclass
class Run:
    history: dict[int, dict[tuple[str, str], tuple[str, str]]]
    restore: dict[str, Any]
    final_at: datetime


RUNS: dict[int, Run] = {}


def _simulate(world: World) -> None:
    """Day 0 to DAYS at the plans' hour; legacy's plan switched off after day LEGACY_OFF_AFTER; then app restored
    with `restore start` (real clock) and a last evaluation at the real now."""
    world.tick(world.start - timedelta(minutes=10))  # the daemon starts: rules and report plans start from now
    history = {}
    for day in range(DAYS + 1):
        report = world.tick(world.at(day))
        expected_runs = 2 if day <= LEGACY_OFF_AFTER else 1
        assert (report.get("runs_created"), report.get("backups_completed")) == (expected_runs, expected_runs), report
        assert report.get("copies_completed") == 1, report
        assert report["compliance"]["evaluated"], report
        history[day] = world.verdicts()
        if day == 1:  # the daemon polls often; frameworks are evaluated at most every 5 minutes
            assert not world.tick(world.at(day) + timedelta(minutes=4))["compliance"]["evaluated"]
        if day == LEGACY_OFF_AFTER:
            world.clock.moment = world.at(day) + timedelta(hours=1)
            world.config["backup_plans"]["legacy-daily"]["enable"] = False  # what an operator does, then apply
            world.apply()
    points = world.source.catalog.list_recovery_points(resource_id="app")
    [newest] = [p for p in points if p.creation_date == world.at(DAYS).isoformat()]
    restored = world.source_cli.json(
        "restore", "start", "--recovery-point", newest.arn, "--target", str(world.tmp / "restored"), "--wait"
    )
    assert restored["state"] == "COMPLETED", restored
    assert (world.tmp / "restored" / "data.txt").read_text() == "app data\n"
    world.clock.moment = system_clock()
    evaluate_all(world.source, world.clock.moment)
    RUNS[id(world)] = Run(history, restored, world.clock.moment)


def run_of(world: World) -> Run:
    return RUNS[id(world)]


# Verdicts and events -------------------------------------------------------------------------------------
def test_every_control_on_every_resource_at_the_end(world: World) -> None:
    found = world.verdicts()
    assert set(found) == set(FINAL)
    for key, (status, reason) in FINAL.items():
        assert found[key][0] == status and reason in found[key][1], (key, found[key])
    view = framework_view(world.source, FRAMEWORK)
    assert view["framework_status"] == N
    statuses = {c["control_name"]: c["control_compliance_status"] for c in view["controls"]}
    assert statuses == {
        "BACKUP_RESOURCES_PROTECTED_BY_BACKUP_PLAN": N,
        "BACKUP_PLAN_MIN_FREQUENCY_AND_MIN_RETENTION_CHECK": N,
        "BACKUP_RECOVERY_POINT_MINIMUM_RETENTION_CHECK": N,
        "BACKUP_RECOVERY_POINT_ENCRYPTED": C,
        "BACKUP_RECOVERY_POINT_MANUAL_DELETION_DISABLED": N,
        "BACKUP_RESOURCES_PROTECTED_BY_BACKUP_VAULT_LOCK": N,
        "BACKUP_LAST_RECOVERY_POINT_CREATED": N,
        "BACKUP_RESOURCES_PROTECTED_BY_CROSS_ACCOUNT": N,
        "RESTORE_TIME_FOR_RESOURCES_MEET_TARGET": N,
    }
    # The blueprint's framework of app's plan (create_framework) covers only what the plan selects: all compliant.
    blueprint = framework_view(world.source, "app_daily_framework")
    assert blueprint["framework_status"] == C
    assert {(c["control_name"], r["resource_id"]) for c in blueprint["controls"] for r in c["resources"]} == {
        ("BACKUP_RECOVERY_POINT_ENCRYPTED", "app"),
        ("BACKUP_RECOVERY_POINT_MINIMUM_RETENTION_CHECK", "app"),
        ("BACKUP_PLAN_MIN_FREQUENCY_AND_MIN_RETENTION_CHECK", "app-daily"),
        ("BACKUP_RESOURCES_PROTECTED_BY_BACKUP_PLAN", "app"),
        ("BACKUP_LAST_RECOVERY_POINT_CREATED", "app"),
    }


def test_verdicts_change_with_the_days(world: World) -> None:
    history = run_of(world).history
    lock = [history[day][("BACKUP_RESOURCES_PROTECTED_BY_BACKUP_VAULT_LOCK", "app")] for day in range(DAYS + 1)]
    assert [status for status, _ in lock] == [N, N, N] + [C] * (DAYS - 2)  # the lock's 3 cooling-off days
    assert "cooling-off period" in lock[0][1]
    legacy = [history[day][("BACKUP_LAST_RECOVERY_POINT_CREATED", "legacy")][0] for day in range(DAYS + 1)]
    assert legacy == [C] * (LEGACY_OFF_AFTER + 2) + [N] * (DAYS - LEGACY_OFF_AFTER - 1)  # 24 h old on day 6: fine
    planned = [history[day][("BACKUP_RESOURCES_PROTECTED_BY_BACKUP_PLAN", "legacy")][0] for day in range(DAYS + 1)]
    assert planned == [C] * (LEGACY_OFF_AFTER + 1) + [N] * (DAYS - LEGACY_OFF_AFTER)
    restore = [history[day][("RESTORE_TIME_FOR_RESOURCES_MEET_TARGET", "app")][0] for day in range(DAYS + 1)]
    assert restore == [N] * (DAYS + 1)  # restored only at the end
    assert all(history[day][("BACKUP_RESOURCES_PROTECTED_BY_CROSS_ACCOUNT", "app")][0] == C for day in range(DAYS + 1))


def test_each_change_of_verdict_is_one_event(world: World) -> None:
    events = [json.loads(line) for line in (world.tmp / "events.jsonl").read_text().splitlines()]
    assert {e["event"] for e in events} == {"RESOURCE_COMPLIANCE_CHANGED"}

    def changes(framework: str, control: str, resource: str) -> list[tuple[str | None, str, str]]:
        return [
            (e["previous_state"], e["state"], e["event_time"])
            for e in events
            if (e["framework_name"], e["control_name"], e["resource_id"]) == (framework, control, resource)
        ]

    first = (world.start - timedelta(minutes=10)).isoformat()
    assert changes(FRAMEWORK, "BACKUP_LAST_RECOVERY_POINT_CREATED", "legacy") == [
        (None, N, first),  # no point yet when the daemon started
        (N, C, world.at(0).isoformat()),
        (C, N, world.at(LEGACY_OFF_AFTER + 2).isoformat()),  # the dead-man's switch
    ]
    assert changes(FRAMEWORK, "BACKUP_RESOURCES_PROTECTED_BY_BACKUP_VAULT_LOCK", "app") == [
        (None, N, first),
        (N, C, world.at(3).isoformat()),
    ]
    assert changes(FRAMEWORK, "BACKUP_RESOURCES_PROTECTED_BY_BACKUP_PLAN", "legacy") == [
        (C, N, world.at(LEGACY_OFF_AFTER + 1).isoformat())
    ]
    assert changes(FRAMEWORK, "RESTORE_TIME_FOR_RESOURCES_MEET_TARGET", "app") == [
        (None, N, first),
        (N, C, run_of(world).final_at.isoformat()),
    ]
    assert changes(FRAMEWORK, "BACKUP_RECOVERY_POINT_ENCRYPTED", "app") == []  # compliant from its first point
    dead = [e for e in events if e["state"] == N and e["previous_state"] == C and e["resource_id"] == "legacy"]
    assert any("no recovery point in the last 1 day" in e["reason"] for e in dead)
    assert all(e["summary"].startswith(f"Now {e['state']}: {e['resource_id']} in vault locked") for e in events)


# Reports ---------------------------------------------------------------------------------------------------
def read_report(world: World, key: str) -> list[dict[str, str]]:
    """A report file as an auditor reads it: the stdlib's csv or json, nothing of Strongroom."""
    path = world.tmp / "reports" / key
    if key.endswith(".json"):
        items = json.loads(path.read_text())["reportItems"]
        return [{k: str(v) for k, v in item.items()} for item in items]
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def scheduled(world: World, plan: str) -> dict[datetime, Any]:
    jobs = [j for j in world.source.catalog.list_report_jobs(plan) if j.trigger == "SCHEDULED"]
    return {datetime.fromisoformat(j.creation_time): j for j in jobs}


def test_report_plans_run_once_a_day_on_schedule(world: World) -> None:
    daily = parse_schedule("cron(0 1 * * ? *)")
    due = [t for t in daily.fire_times(world.start - timedelta(minutes=10)) if t <= world.at(DAYS)]
    # One report per day, made at the first tick after 01:00 UTC (the ticks here are once a day).
    expected = sorted({min(world.at(d) for d in range(DAYS + 1) if world.at(d) >= t) for t in due})
    for plan, (template, formats) in TEMPLATES.items():
        jobs = scheduled(world, plan)
        assert sorted(jobs) == expected, plan
        for job in jobs.values():
            assert job.state == "COMPLETED" and job.report_template == template, job
            assert [k.rsplit(".", 1)[1] for k in job.keys] == [f.lower() for f in formats]
            for key in job.keys:
                assert key.startswith(f"Backup/{world.source.account_id}/local/") and f"/{plan}/{template}_" in key
                assert (world.tmp / "reports" / key).is_file()


def test_scheduled_job_reports_hold_the_previous_24_hours(world: World) -> None:
    made = world.at(3)
    [csv_key, json_key] = scheduled(world, "backup_jobs")[made].keys
    rows = read_report(world, csv_key)
    assert rows == read_report(world, json_key)  # the same items in both formats
    jobs = {j.id: j for j in world.source.catalog.list_jobs(job_type=JobType.BACKUP)}
    assert sorted((r["resourceName"], r["backupVaultName"], r["backupPlanName"]) for r in rows) == [
        ("app", "locked", "app-daily"),
        ("legacy", "gov", "legacy-daily"),
    ]
    # The period is the 24 hours before the report's scheduled time (01:00 UTC), not before the tick that made it.
    due = made.replace(hour=1)
    due -= timedelta(days=1) if due > made else timedelta(0)
    for row in rows:
        job = jobs[row["backupJobId"]]
        assert row["reportTimePeriodStart"] == (due - timedelta(days=1)).isoformat()
        assert row["reportTimePeriodEnd"] == due.isoformat()
        assert (row["jobStatus"], row["creationDate"], row["completionDate"]) == (
            "COMPLETED",
            world.at(2).isoformat(),
            world.at(2).isoformat(),
        )
        assert row["recoveryPointArn"] == job.recovery_point_arn and row["backupSizeInBytes"] == str(
            job.bytes_processed
        )
        assert row["accountId"] == world.source.account_id and row["region"] == "local"
        assert row["resourceType"] == "directory" and row["jobRunTime"] == "00:00:00"
        assert row["backupVaultArn"].endswith(f":backup-vault:{row['backupVaultName']}")
    [copy_key] = scheduled(world, "copy_jobs")[made].keys
    [copied] = read_report(world, copy_key)
    app_points = {p.creation_date: p.arn for p in world.source.catalog.list_recovery_points(resource_id="app")}
    assert copied["sourceRecoveryPointArn"] == app_points[world.at(2).isoformat()]
    assert copied["destinationBackupVaultArn"] == vault_arn(world.destination)
    assert copied["destinationRecoveryPointArn"].split(":")[4] == account_id(world.destination)
    assert (copied["jobStatus"], copied["resourceName"]) == ("COMPLETED", "app")
    [restore_key] = scheduled(world, "restore_jobs")[made].keys
    assert (world.tmp / "reports" / restore_key).read_text().startswith("reportTimePeriodStart,")
    assert read_report(world, restore_key) == []  # no restore in those 24 hours


def test_scheduled_compliance_reports_hold_that_days_verdicts(world: World) -> None:
    made = world.at(3)
    verdicts = run_of(world).history[3]
    [control_key] = scheduled(world, "control_compliance")[made].keys
    controls = read_report(world, control_key)
    assert [r["controlName"] for r in controls] == [c["name"] for c in CONTROLS]
    for row in controls:
        mine = [status for (control, _), (status, _) in verdicts.items() if control == row["controlName"]]
        assert row["frameworkName"] == FRAMEWORK and row["frameworkDescription"] == "Mavis audit"
        assert row["controlComplianceStatus"] == (N if N in mine else C)
        assert (int(row["numResourcesCompliant"]), int(row["numResourcesNonCompliant"])) == (
            mine.count(C),
            mine.count(N),
        )
        assert row["lastEvaluationTime"] == made.isoformat()
    parameters = {r["controlName"]: json.loads(r["controlParameters"]) for r in controls}
    assert parameters["RESTORE_TIME_FOR_RESOURCES_MEET_TARGET"] == {"maxRestoreTime": "60"}
    [csv_key, json_key] = scheduled(world, "resource_compliance")[made].keys
    rows = read_report(world, csv_key)
    assert rows == read_report(world, json_key)
    assert {
        (r["controlName"], r["resourceId"]): (r["resourceComplianceStatus"], r["complianceReason"]) for r in rows
    } == (verdicts)
    assert {r["frameworkName"] for r in rows} == {FRAMEWORK}  # the plan names only this framework


def test_on_demand_reports_and_commands_at_the_end(world: World) -> None:
    cli, run = world.source_cli, run_of(world)
    made = {plan: cli.json("reports", "start-job", plan, "--json") for plan in TEMPLATES}
    assert {job["status"] for job in made.values()} == {"COMPLETED"}
    assert {job["trigger"] for job in made.values()} == {"ON_DEMAND"}

    def rows(plan: str) -> list[dict[str, str]]:
        keys = made[plan]["report_destination"]["keys"]
        assert len(keys) == len(TEMPLATES[plan][1])
        return read_report(world, keys[0])

    [backup] = rows("backup_jobs")  # legacy's plan is off: app's last backup only
    assert (backup["resourceName"], backup["creationDate"]) == ("app", world.at(DAYS).isoformat())
    [copied] = rows("copy_jobs")
    assert copied["resourceName"] == "app" and copied["jobStatus"] == "COMPLETED"
    [restored] = rows("restore_jobs")
    assert restored["restoreJobId"] == run.restore["job_id"] and restored["jobStatus"] == "COMPLETED"
    assert restored["recoveryPointArn"] == run.restore["recovery_point_arn"] and restored["resourceName"] == "app"
    assert restored["validationStatus"] == ""  # a restore job, not a restore test
    found = {(r["controlName"], r["resourceId"]): r["resourceComplianceStatus"] for r in rows("resource_compliance")}
    assert found == {key: status for key, (status, _) in FINAL.items()}

    listed = cli.json("reports", "list-jobs", "--plan", "backup_jobs", "--json")["report_jobs"]
    assert listed[-1]["report_job_id"] == made["backup_jobs"]["report_job_id"]
    plans = {p["report_plan_name"]: p for p in cli.json("report-plans", "list", "--json")["report_plans"]}
    assert set(plans) == set(TEMPLATES)
    assert plans["backup_jobs"]["report_destination"] == (world.tmp / "reports").as_uri()
    described = cli.json("frameworks", "describe", FRAMEWORK, "--json")
    shown = {
        (c["control_name"], r["resource_id"]): r["compliance_status"]
        for c in described["controls"]
        for r in c["resources"]
    }
    assert shown == {key: status for key, (status, _) in FINAL.items()}
    listed_frameworks = cli.json("frameworks", "list", "--json")["frameworks"]
    assert {f["framework_name"]: f["framework_status"] for f in listed_frameworks} == {
        FRAMEWORK: N,
        "app_daily_framework": C,
    }
    text = cli.run("frameworks", "describe", FRAMEWORK).stdout
    assert "locked in governance mode" in text and "NON_COMPLIANT" in text
    assert_one_line_error(cli.run("frameworks", "describe", "nope", ok=False), 2, "no framework named 'nope'")
    assert_one_line_error(cli.run("reports", "start-job", "nope", ok=False), 2, "no report plan named 'nope'")


def test_compliance_per_control_in_metrics(world: World) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    with serving(world.source_cli, "--metrics-bind", str(port)), urllib.request.urlopen(url, timeout=30) as answer:
        body = answer.read().decode()
    samples = {
        (family.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }
    for control in (c["name"] for c in CONTROLS):
        mine = [status for (name, _), (status, _) in FINAL.items() if name == control]
        labels = (("control", control), ("framework", FRAMEWORK))
        assert samples[("strongroom_control_compliant", labels)] == (0 if N in mine else 1), control
        assert samples[("strongroom_control_resources", (*labels, ("status", N)))] == mine.count(N)
        assert samples[("strongroom_control_resources", (*labels, ("status", C)))] == mine.count(C)
    for plan in TEMPLATES:
        assert samples[("strongroom_report_last_job_failed", (("report_plan", plan),))] == 0
        assert ("strongroom_report_last_success_timestamp_seconds", (("report_plan", plan),)) in samples


def test_bad_framework_and_report_plan_config_is_refused_before_anything_changes(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    cli.run("init")
    bad = {
        "frameworks": {
            "audit": {
                "controls": [
                    {
                        "name": "BACKUP_LAST_RECOVERY_POINT_CREATED",
                        "input_parameters": {"recoveryPointAgeUnit": "weeks"},
                    }
                ]
            }
        },
        "report_plans": {
            "jobs": {
                "report_delivery_channel": {"formats": ["CSV"], "s3_bucket_name": "b", "store": "file:///tmp/x"},
                "report_setting": {"report_template": "BACKUP_JOB_REPORT"},
            }
        },
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    for command in ("plan", "apply"):
        result = cli.run(command, "-f", str(path), *(("--auto-approve",) if command == "apply" else ()), ok=False)
        assert_one_line_error(
            result, 2, "report_plans.jobs.report_delivery_channel: give exactly one of s3_bucket_name"
        )
    del bad["report_plans"]["jobs"]["report_delivery_channel"]["s3_bucket_name"]  # the shape is right now
    path.write_text(yaml.safe_dump(bad))
    result = cli.run("apply", "-f", str(path), "--auto-approve", ok=False)
    assert_one_line_error(
        result, 2, "frameworks.audit.controls[0].input_parameters:", "'weeks' must be one of hours, days"
    )
    assert cli.json("frameworks", "list", "--json") == {"frameworks": []}
    assert cli.json("report-plans", "list", "--json") == {"report_plans": []}
