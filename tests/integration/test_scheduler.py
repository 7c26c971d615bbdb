"""The scheduler with a driven clock, in-process jobs and real directory backups: when rules fire, what
happens to runs that cannot start or keep failing, downtime, two daemons on one account, rule dedupe."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from strongroom import model
from strongroom.model import JobState, JobType, RecoveryPointStatus
from strongroom.plans.schedule import parse_schedule
from strongroom.services.account import Account, create_vault, init_account, open_account
from strongroom.services.apply import apply_config
from strongroom.services.recovery_points import list_recovery_points
from strongroom.services.resources import add_resource
from strongroom.services.scheduler import Scheduler, ScheduleRun, describe_plans, list_runs
from tests.support.cli import PASSPHRASE, Cli
from tests.support.clock import ManualClock
from tests.support.vaults import FAST_SCRYPT

START = datetime(2031, 12, 30, 0, 30, tzinfo=UTC)


@dataclass
class Setup:
    account: Account
    clock: ManualClock
    tmp_path: Path

    def at(self, text: str) -> datetime:
        """``HH:MM`` on the first day, or a full ISO time (UTC)."""
        if len(text) == 5:
            return START.replace(hour=int(text[:2]), minute=int(text[3:]))
        return datetime.fromisoformat(text).replace(tzinfo=UTC)

    def tick(self, scheduler: Scheduler, when: str) -> dict[str, Any]:
        self.clock.moment = self.at(when)
        return scheduler.tick()

    def apply(self, config: dict[str, Any]) -> None:
        path = self.tmp_path / "account.yaml"
        path.write_text(yaml.safe_dump(config))
        apply_config(self.account, path)

    def tree(self, name: str, tags: dict[str, str] | None = None, resource_type: str = "directory") -> Path:
        """A small directory, registered as resource ``name`` tagged ``backup=True`` (or ``tags``)."""
        root = self.tmp_path / "trees" / name
        root.mkdir(parents=True)
        (root / "data.txt").write_text(f"{name} " * 2000)
        add_resource(self.account, name, resource_type, {"path": str(root)}, tags or {"backup": "True"})
        return root

    def runs(self, **where: Any) -> list[ScheduleRun]:
        found = sorted(list_runs(self.account, limit=None), key=lambda r: (r.occurrence, r.rule_name, r.resource_id))
        return [run for run in found if all(getattr(run, k) == v for k, v in where.items())]

    def points(self, resource_id: str | None = None) -> list[Any]:
        return self.account.catalog.list_recovery_points(resource_id=resource_id, status=RecoveryPointStatus.COMPLETED)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    clock = ManualClock(START)
    with model.driven_clock(clock):
        account = init_account(tmp_path / "home", PASSPHRASE, scrypt_params=FAST_SCRYPT)
        try:
            yield Setup(account, clock, tmp_path)
        finally:
            account.close()


def plan(*rules: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"selection_tag": "backup", **fields, "rules": list(rules)}


def rule(name: str, schedule: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "schedule": schedule, **fields}


def config(plans: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"backup_plans": plans, **extra}


HOURLY = rule("hourly", "cron(0 * * * ? *)", lifecycle={"delete_after": 7})


def test_a_rule_fires_each_occurrence_once_from_its_first_tick_on_also_across_restarts(setup: Setup) -> None:
    setup.tree("files")
    setup.apply(config({"hourly": plan(HOURLY)}))
    first = Scheduler(setup.account)
    assert setup.tick(first, "00:30")["acted"]
    assert setup.runs() == []  # the 00:00 occurrence came before the scheduler: no back-fill

    report = setup.tick(first, "01:00")
    assert report["runs_created"] == 1 and report["backups_completed"] == 1
    [point] = setup.points()
    assert point.creation_date == setup.at("01:00").isoformat()
    assert point.delete_after_days == 7
    assert point.delete_at == (setup.at("01:00") + timedelta(days=7)).isoformat()
    job = setup.account.catalog.get_job(point.backup_job_id or "")
    assert job.parameters["backup_plan_name"] == "hourly" and job.parameters["rule_name"] == "hourly"
    first.shutdown()  # a graceful stop gives up the lease: the next daemon starts at once

    for when in ("01:00", "01:20", "01:59"):
        assert setup.tick(Scheduler(setup.account), when).get("runs_created", 0) == 0
    setup.tick(Scheduler(setup.account), "02:05")
    assert [(r.occurrence[11:16], r.state) for r in setup.runs()] == [("01:00", "COMPLETED"), ("02:00", "COMPLETED")]
    assert len(setup.points()) == 2


def test_two_daemons_on_one_account_fire_each_occurrence_once_and_the_second_takes_over_the_lease(
    setup: Setup,
) -> None:
    setup.tree("files")
    setup.apply(config({"hourly": plan(HOURLY)}))
    other_account = open_account(setup.account.home, lambda: PASSPHRASE)
    try:
        one, two = Scheduler(setup.account, holder="one"), Scheduler(other_account, holder="two")
        assert setup.tick(one, "00:30")["acted"]
        waiting = setup.tick(two, "00:30")
        assert not waiting["acted"] and waiting["lease_holder"] == "one"
        assert setup.tick(one, "01:00")["runs_created"] == 1
        assert not setup.tick(two, "01:01")["acted"]
        assert describe_plans(setup.account)["scheduler"]["lease_holder"] == "one"
        # "one" stops without a word (killed): its lease ends 5 minutes after its last tick, then "two" acts.
        assert not setup.tick(two, "01:04")["acted"]
        taken = setup.tick(two, "02:00")
        assert taken["acted"] and taken["runs_created"] == 1
        assert not setup.tick(one, "02:01")["acted"]
        setup.tick(two, "03:00")
    finally:
        other_account.close()
    runs = setup.runs()
    assert [(r.occurrence[11:16], r.state) for r in runs] == [
        ("01:00", "COMPLETED"),
        ("02:00", "COMPLETED"),
        ("03:00", "COMPLETED"),
    ]
    assert len(setup.points()) == 3
    assert len({r.job_id for r in runs}) == 3


def test_a_failed_job_is_retried_with_backoff_a_bounded_number_of_times_within_the_start_window(
    setup: Setup,
) -> None:
    recovering, broken = setup.tree("recovering"), setup.tree("broken")
    setup.apply(config({"hourly": plan(rule("hourly", "cron(0 * * * ? *)", start_window=120))}))
    scheduler = Scheduler(setup.account)
    setup.tick(scheduler, "00:30")
    recovering.rename(recovering.with_name("away"))  # e.g. a volume not mounted yet
    shutil.rmtree(broken)

    first = setup.tick(scheduler, "01:00")
    assert first["runs_created"] == 2 and first["retries_scheduled"] == 2
    run = setup.runs(resource_id="recovering")[0]
    assert (run.state, run.attempts, run.next_attempt_at) == ("CREATED", 1, setup.at("01:05").isoformat())
    assert "does not exist" in run.details.message
    assert setup.tick(scheduler, "01:04").get("jobs_started", 0) == 0  # not before its next attempt
    second = setup.tick(scheduler, "01:05")
    assert second["jobs_started"] == 2
    assert setup.runs(resource_id="recovering")[0].next_attempt_at == setup.at("01:15").isoformat()  # doubled

    recovering.with_name("away").rename(recovering)
    setup.tick(scheduler, "01:15")
    setup.tick(scheduler, "01:59")
    [done] = setup.runs(resource_id="recovering", occurrence=setup.at("01:00").isoformat())
    [failed] = setup.runs(resource_id="broken", occurrence=setup.at("01:00").isoformat())
    assert (done.state, done.attempts) == ("COMPLETED", 3)
    assert (failed.state, failed.attempts) == ("FAILED", 3)
    assert failed.details.message.startswith("failed after 3 attempts")
    jobs = setup.account.catalog.list_jobs(job_type=JobType.BACKUP)
    assert [j.state for j in jobs if j.resource_id == "recovering"] == ["FAILED", "FAILED", "COMPLETED"]
    assert [j.state for j in jobs if j.resource_id == "broken"] == ["FAILED"] * 3
    assert len(done.details.jobs) == 3


def test_a_run_not_started_within_its_start_window_expires_with_an_expired_job_and_a_notification(
    setup: Setup,
) -> None:
    tree = setup.tree("files")
    sink = setup.tmp_path / "events.jsonl"
    notifications = {"events": ["BACKUP_JOB_COMPLETED"], "exclude_states": ["COMPLETED"], "sinks": [f"log://{sink}"]}
    create_vault(setup.account, "scheduled", scrypt_params=FAST_SCRYPT)
    setup.apply(
        config(
            {"hourly": plan(rule("hourly", "cron(0 * * * ? *)", target_vault_name="scheduled"))},
            vaults={"scheduled": {"notifications": notifications}},
        )
    )
    scheduler = Scheduler(setup.account)
    setup.tick(scheduler, "00:30")
    tree.rename(tree.with_name("away"))
    setup.tick(scheduler, "01:00")  # the first attempt fails; the next one is due at 01:05...
    tree.with_name("away").rename(tree)
    # ...but the daemon is down until after the window (01:00-02:00) has ended.
    report = setup.tick(scheduler, "02:30")
    assert report["runs_expired"] == 1

    [expired, ran] = setup.runs()
    assert expired.state == "EXPIRED" and ran.occurrence == setup.at("02:00").isoformat() and ran.state == "COMPLETED"
    job = setup.account.catalog.get_job(expired.job_id or "")
    assert job.state == JobState.EXPIRED and job.vault_name == "scheduled"
    assert "not started within the start window of 60 minutes" in (job.status_message or "")
    events = [json.loads(line) for line in sink.read_text().splitlines()]
    assert [(e["event"], e["state"]) for e in events] == [
        ("BACKUP_JOB_COMPLETED", "FAILED"),
        ("BACKUP_JOB_COMPLETED", "EXPIRED"),
    ]
    assert events[1]["job_id"] == job.id and events[1]["backup_plan_name"] == "hourly"
    assert events[1]["resource_id"] == "files" and events[1]["rule_name"] == "hourly"


def test_after_downtime_only_the_newest_occurrence_still_in_its_window_runs_and_the_others_are_missed(
    setup: Setup,
) -> None:
    setup.tree("files")
    setup.apply(
        config(
            {
                "hourly": plan(HOURLY),
                "nightly": plan(rule("nightly", "cron(0 3 * * ? *)", start_window=60)),
            }
        )
    )
    scheduler = Scheduler(setup.account)
    setup.tick(scheduler, "00:30")
    setup.tick(scheduler, "01:00")
    scheduler.shutdown()

    report = setup.tick(Scheduler(setup.account), "05:20")  # down from 01:00 to 05:20
    hourly = [(r.occurrence[11:16], r.state) for r in setup.runs(rule_name="hourly")]
    assert hourly == [
        ("01:00", "COMPLETED"),
        ("02:00", "MISSED"),
        ("03:00", "MISSED"),
        ("04:00", "MISSED"),
        ("05:00", "COMPLETED"),
    ]
    [nightly] = setup.runs(rule_name="nightly")  # its window (03:00-04:00) ended during the downtime
    assert (nightly.occurrence[11:16], nightly.state) == ("03:00", "MISSED")
    assert "start window ended at" in nightly.details.message
    assert report["runs_missed"] == 4 and report["runs_created"] == 1
    assert len(setup.points()) == 2
    missed = Cli(setup.account.home).json("plans", "runs", "--state", "MISSED")["schedule_runs"]
    assert [(r["rule_name"], r["scheduled_at"][11:16]) for r in missed] == [
        ("hourly", "04:00"),
        ("hourly", "03:00"),
        ("nightly", "03:00"),
        ("hourly", "02:00"),
    ]


def test_rules_firing_together_for_a_resource_take_one_backup_kept_by_the_longest_retention(setup: Setup) -> None:
    setup.tree("files")
    setup.apply(
        config(
            {
                "tiers": plan(
                    rule("daily", "cron(0 5 * * ? *)", lifecycle={"delete_after": 7}),
                    rule("monthly", "cron(0 5 1 * ? *)", lifecycle={"delete_after": 35}),
                    rule("yearly", "cron(0 5 1 1 ? *)"),  # no delete_after: kept forever, the longest of all
                )
            }
        )
    )
    scheduler = Scheduler(setup.account)
    for when in (
        "2031-12-30T04:00",
        "2031-12-31T05:00",
        "2032-01-01T05:00",
        "2032-01-02T05:00",
        "2032-01-31T05:00",
        "2032-02-01T05:00",
    ):
        setup.tick(scheduler, when)
    taken = [
        (p.creation_date[:10], p.delete_after_days, p.status.value)
        for p in setup.account.catalog.list_recovery_points()
    ]
    assert taken == [
        ("2031-12-31", 7, "DELETED"),
        ("2032-01-01", None, "COMPLETED"),
        ("2032-01-02", 7, "DELETED"),
        ("2032-01-31", 7, "COMPLETED"),
        ("2032-02-01", 35, "COMPLETED"),
    ]  # the sweep ran at each tick
    new_year = {r.rule_name: r for r in setup.runs(occurrence="2032-01-01T05:00:00+00:00")}
    assert {name: run.state for name, run in new_year.items()} == {
        "daily": "SKIPPED",
        "monthly": "SKIPPED",
        "yearly": "COMPLETED",
    }
    assert new_year["daily"].details.covered_by_rule == "yearly"
    february = {r.rule_name: r.state for r in setup.runs(occurrence="2032-02-01T05:00:00+00:00")}
    assert february == {"daily": "SKIPPED", "monthly": "COMPLETED"}


def test_resources_are_selected_at_every_tick_so_resources_added_after_apply_are_picked_up(setup: Setup) -> None:
    setup.tree("tagged")
    setup.tree("lowercase", {"backup": "true"})  # tag values are case-sensitive: not selected
    setup.tree("database-file", resource_type="directory", tags={"backup": "True", "kind": "db"})
    setup.apply(
        config(
            {
                "files": plan(
                    HOURLY, selection_tags=[{"key": "kind", "value": "db"}], compliance_resource_types=["directory"]
                ),
                "everything": plan(HOURLY, enable=False),
            }
        )
    )
    scheduler = Scheduler(setup.account)
    setup.tick(scheduler, "00:30")
    setup.tick(scheduler, "01:00")
    setup.tree("late", {"backup": "True", "kind": "db"})  # registered after the plan was applied
    setup.tick(scheduler, "02:00")
    assert [(r.occurrence[11:16], r.resource_id, r.state) for r in setup.runs()] == [
        ("01:00", "database-file", "COMPLETED"),
        ("02:00", "database-file", "COMPLETED"),
        ("02:00", "late", "COMPLETED"),
    ]

    described = describe_plans(setup.account)["backup_plans"]
    assert [(p["backup_plan_name"], p["selected_resources"]) for p in described] == [
        ("everything", []),
        ("files", ["database-file", "late"]),
    ]


def test_a_disabled_plan_stops_firing_and_starts_again_from_now_when_enabled(setup: Setup) -> None:
    setup.tree("files")
    setup.apply(config({"hourly": plan(HOURLY)}))
    scheduler = Scheduler(setup.account)
    setup.tick(scheduler, "00:30")
    setup.tick(scheduler, "01:00")
    setup.apply(config({"hourly": plan(HOURLY, enable=False)}))
    setup.tick(scheduler, "02:00")
    setup.tick(scheduler, "03:00")
    setup.apply(config({"hourly": plan(HOURLY)}))
    setup.tick(scheduler, "04:30")  # enabled again: 02:00-04:00 were not missed, the plan was off
    setup.tick(scheduler, "05:00")
    assert [(r.occurrence[11:16], r.state) for r in setup.runs()] == [("01:00", "COMPLETED"), ("05:00", "COMPLETED")]


def test_plans_commands_show_rules_windows_copies_selection_next_runs_and_runs(setup: Setup) -> None:
    setup.tree("files")
    destination = "arn:strongroom:backup:local:210987654321:backup-vault:offsite"
    other = "arn:strongroom:backup:local:210987654321:backup-vault:archive"
    setup.apply(
        config(
            {
                "mavis": plan(
                    rule(
                        "twice_daily",
                        "cron(0 7,19 * * ? *)",
                        start_window=480,
                        completion_window=1440,
                        lifecycle={"delete_after": 60},
                        copy_action={"delete_after": 90},
                        copy_actions=[{"destination_vault_arn": other, "delete_after": 365}],
                    ),
                    rule("weekly", "cron(30 2 ? * SUN *)", schedule_expression_timezone="Europe/London"),
                )
            },
            destination={"vault_arn": destination},
        )
    )
    cli = Cli(setup.account.home)
    before = model.system_clock()
    described = cli.json("plans", "describe", "mavis")
    after = model.system_clock()
    twice, weekly = described["rules"]
    assert described["selected_resources"] == ["files"] and described["enable"] is True
    assert described["selection"]["selection_tag"] == "backup"
    assert described["selection"]["selection_tag_value"] == "True"
    assert (twice["schedule_expression"], twice["start_window_minutes"], twice["completion_window_minutes"]) == (
        "cron(0 7,19 * * ? *)",
        480,
        1440,
    )
    assert twice["lifecycle"]["delete_after_days"] == 60
    assert twice["copy_actions"] == [
        {"destination_backup_vault_arn": destination, "lifecycle": {"delete_after_days": 90}},
        {"destination_backup_vault_arn": other, "lifecycle": {"delete_after_days": 365}},
    ]
    schedule = parse_schedule("cron(0 7,19 * * ? *)")
    assert twice["next_run"] in {schedule.next_after(before).isoformat(), schedule.next_after(after).isoformat()}
    assert weekly["schedule_expression_timezone"] == "Europe/London" and weekly["portable"] is True
    assert weekly["start_window_minutes"] == 60 and weekly["completion_window_minutes"] == 10080
    assert described["next_run"] == min(twice["next_run"], weekly["next_run"])

    listed = cli.json("plans", "list")
    assert [p["backup_plan_name"] for p in listed["backup_plans"]] == ["mavis"]
    assert listed["scheduler"] == {"lease_holder": None, "lease_expires_at": None}
    assert cli.json("plans", "runs") == {"schedule_runs": []}
    text = cli.run("plans", "describe", "mavis").stdout
    assert "cron(30 2 ? * SUN *) Europe/London" in text
    missing = cli.run("plans", "describe", "nope", ok=False)
    assert missing.returncode != 0 and "no backup plan named 'nope'" in missing.stderr


def test_a_rule_tags_the_points_it_makes_and_the_tags_select_them(setup: Setup) -> None:
    setup.tree("files")
    tagged = rule("tagged", "cron(0 * * * ? *)", recovery_point_tags={"owner": "mavis", "rule": "tagged"})
    setup.apply(config({"hourly": plan(tagged, HOURLY)}))
    scheduler = Scheduler(setup.account)
    setup.tick(scheduler, "00:30")
    setup.tick(scheduler, "01:00")
    setup.apply(config({"hourly": plan(HOURLY)}))  # a later apply does not re-tag the points already made
    setup.tick(scheduler, "02:00")
    points = setup.points("files")
    assert [p.tags for p in points] == [{"owner": "mavis", "rule": "tagged"}, {}]
    assert setup.account.catalog.get_job(points[0].backup_job_id or "").parameters["rule_name"] == "tagged"
    selected = list_recovery_points(setup.account, tags={"owner": "mavis"})
    assert [p.arn for p in selected] == [points[0].arn]
    assert list_recovery_points(setup.account, tags={"owner": "mavis", "rule": "other"}) == []


@pytest.mark.postgres
def test_a_continuous_rule_keeps_one_continuous_point_per_cluster_and_vault_and_none_for_other_types(
    setup: Setup, pg_cluster: Any
) -> None:
    from strongroom.config.runbook import SelectRecoveryPointStep
    from strongroom.services.dr.select import _choose
    from strongroom.services.pitr import continuous_points
    from strongroom.services.recovery_points import latest_intact_reader

    setup.tree("files")
    add_resource(setup.account, "db", "postgres-cluster", {"dsn": pg_cluster.dsn()}, {"backup": "True"})
    continuous = rule("hourly", "cron(0 * * * ? *)", lifecycle={"delete_after": 90}, enable_continuous_backup=True)
    setup.apply(config({"pitr": plan(continuous)}))
    scheduler = Scheduler(setup.account)
    setup.tick(scheduler, "00:30")
    for when in ("01:00", "02:00"):
        report = setup.tick(scheduler, when)
        assert report["backups_completed"] == 2 and not report.get("errors"), report
        if when == "01:00":  # the continuous point is now the newest point: neither reused nor picked by runbooks
            first = [p for p in setup.points("db") if not p.metadata.get("continuous")]
            assert setup.points("db")[-1].metadata.get("continuous") and len(first) == 1
            previous = latest_intact_reader(setup.account, "db", "Default")
            assert previous is not None and previous.manifest.recovery_point_id == first[0].id
            previous.close()
            step = SelectRecoveryPointStep(name="pick", type="select_recovery_point", resource="db")
            chosen = _choose([p.as_dict() for p in setup.account.catalog.list_recovery_points()], step)
            assert chosen is not None and chosen["recovery_point_arn"] == first[0].arn
    [point] = continuous_points(setup.account, "db", "Default")
    assert point.metadata["window_days"] == 35 and point.metadata["continuous"]
    assert point.metadata["system_identifier"] == setup.points("db")[0].metadata["system_identifier"]
    assert point.delete_after_days is None  # the window, not a retention, bounds what it restores
    assert continuous_points(setup.account, "files", "Default") == []
    snapshots = [p for p in setup.points("db") if not p.metadata.get("continuous")]
    assert len(snapshots) == 2 and all(p.delete_after_days == 90 for p in snapshots)
    scheduler.shutdown()
