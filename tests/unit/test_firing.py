"""The scheduler's pure firing rules (plans/firing.py) and the plan and run records (plans/records.py),
without a catalog or a clock: occurrences in, schedule runs out."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from strongroom.plans.firing import MISSED_KEPT, Firing, classify, new_runs, retention, rule_firings, rule_snapshot
from strongroom.plans.records import BackupPlan, BackupRule, CopyAction, CopyAttempt, CopyState, RunState, ScheduleRun
from strongroom.plans.schedule import parse_schedule

DESTINATION = "arn:strongroom:backup:eu-west-2:222222222222:backup-vault:offsite"
OTHER = "arn:strongroom:backup:eu-west-2:333333333333:backup-vault:elsewhere"


def at(text: str) -> datetime:
    return datetime.fromisoformat(f"2031-03-01T{text}:00+00:00")


def stored_rule(name: str = "nightly", **fields: Any) -> dict[str, Any]:
    """A rule as the loader stores it (config/schema.py RuleConfig dumped, target resolved)."""
    return {
        "name": name,
        "schedule": "cron(0 1 * * ? *)",
        "schedule_expression_timezone": None,
        "target_vault_name": "Default",
        "start_window": 60,
        "completion_window": 180,
        "lifecycle": {"delete_after": 35, "cold_storage_after": None},
        "copy_action": None,
        "copy_actions": [],
        "enable_continuous_backup": False,
        "recovery_point_tags": {},
        **fields,
    }


def rule(name: str = "nightly", **fields: Any) -> BackupRule:
    return BackupRule.of(stored_rule(name, **fields))


# Occurrences into firings ---------------------------------------------------------------------------------
def test_the_newest_occurrence_runs_while_its_start_window_is_open_and_older_ones_are_missed() -> None:
    firings = classify(rule(), [at("01:00"), at("02:00"), at("03:00")], at("03:30"))
    assert [(f.occurrence, f.missed is None) for f in firings] == [
        (at("01:00"), False),
        (at("02:00"), False),
        (at("03:00"), True),
    ]
    assert firings[0].missed == f"a later occurrence ({at('03:00').isoformat()}) was due when the scheduler ran"


def test_an_occurrence_whose_start_window_has_ended_is_missed_even_when_it_is_the_newest() -> None:
    [late] = classify(rule(), [at("01:00")], at("02:00"))  # start window: 60 minutes, ended at 02:00 exactly
    assert late.missed == f"no scheduler ran before its start window ended at {at('02:00').isoformat()}"
    [in_time] = classify(rule(), [at("01:00")], at("01:59"))
    assert in_time.missed is None
    assert classify(rule(), [], at("01:59")) == []


def test_occurrences_are_taken_after_the_cursor_up_to_now_and_old_missed_ones_are_only_counted() -> None:
    hourly = rule(schedule="rate(1 hour)")
    since = at("00:00") - timedelta(hours=MISSED_KEPT + 50)
    fired = rule_firings(hourly, parse_schedule("rate(1 hour)"), since, at("00:30"))
    assert len(fired.firings) == MISSED_KEPT + 1 and fired.not_recorded == 49
    assert fired.firings[-1] == Firing(hourly, at("00:00"))  # the newest runs
    assert all(f.missed for f in fired.firings[:-1])
    nothing = rule_firings(hourly, parse_schedule("rate(1 hour)"), at("00:00"), at("00:30"))
    assert (nothing.firings, nothing.not_recorded) == ([], 0)  # the cursor's own instant is not fired again


# Firings into runs ----------------------------------------------------------------------------------------
def test_rules_firing_together_run_once_kept_by_the_longest_retention_and_the_others_are_skipped() -> None:
    daily, yearly, forever = (
        rule("daily"),
        rule("yearly", lifecycle={"delete_after": 365}),
        rule("forever", lifecycle={"delete_after": None, "cold_storage_after": None}),
    )
    runs = new_runs("mavis", [Firing(r, at("05:00")) for r in (daily, yearly, forever)], ["db"], at("05:01"), None)
    assert {run.rule_name: run.state for run in runs} == {
        "daily": RunState.SKIPPED,
        "yearly": RunState.SKIPPED,
        "forever": RunState.CREATED,
    }
    skipped = next(run for run in runs if run.rule_name == "daily")
    assert skipped.details.covered_by_rule == "forever"
    assert "rule forever of the plan fired for this resource at the same time" in skipped.details.message
    assert retention(forever) > retention(yearly) > retention(daily)


def test_a_missed_firing_never_covers_another_rule() -> None:
    longer = rule("longer", lifecycle={"delete_after": 365})
    firings = [Firing(rule("daily"), at("05:00")), Firing(longer, at("05:00"), missed="no scheduler ran")]
    runs = new_runs("mavis", firings, ["db"], at("06:30"), None)
    assert [(run.rule_name, run.state) for run in runs] == [("daily", RunState.CREATED), ("longer", RunState.MISSED)]
    assert runs[1].details.message == "missed: no scheduler ran"


def test_each_firing_becomes_one_run_per_selected_resource_with_its_windows_and_the_rule_as_it_fired() -> None:
    copying = rule(
        copy_action={"delete_after": 60},
        copy_actions=[{"destination_vault_arn": OTHER, "delete_after": None}],
        recovery_point_tags={"owner": "mavis"},
    )
    runs = new_runs("mavis", [Firing(copying, at("01:00"))], ["db", "files"], at("01:02"), DESTINATION)
    assert [run.key for run in runs] == [("mavis", "nightly", at("01:00").isoformat(), r) for r in ("db", "files")]
    run = runs[0]
    assert (run.state, run.attempts, run.job_id, run.created_at) == (RunState.CREATED, 0, None, at("01:02").isoformat())
    assert (run.start_window_ends, run.completion_window_ends) == (at("02:00").isoformat(), at("04:00").isoformat())
    assert run.details.rule is not None and run.details.rule.as_dict() == {
        "target_vault_name": "Default",
        "delete_after_days": 35,
        "start_window": 60,
        "completion_window": 180,
        "copies": [
            {"destination_vault_arn": DESTINATION, "delete_after_days": 60},
            {"destination_vault_arn": OTHER, "delete_after_days": None},
        ],
        "recovery_point_tags": {"owner": "mavis"},
    }
    assert run.rule.copies == (CopyAction(DESTINATION, 60), CopyAction(OTHER, None))
    assert ScheduleRun.of(run.columns()) == run  # what the catalog stores reads back the same


def test_the_destination_copy_follows_the_destination_of_the_moment_the_rule_fires() -> None:
    copying = rule(copy_action={"delete_after": 7})
    assert rule_snapshot(copying, DESTINATION).copies == (CopyAction(DESTINATION, 7),)
    assert rule_snapshot(copying, OTHER).copies == (CopyAction(OTHER, 7),)
    assert rule_snapshot(rule(), DESTINATION).copies == ()


# Records: the stored JSON and the shown JSON stay what they were --------------------------------------
def test_a_stored_plan_reads_and_writes_back_unchanged() -> None:
    stored = {
        "enable": True,
        "selection_tag": "BackupSource",
        "selection_tag_value": "True",
        "selection_tags": [{"key": "team", "value": "mavis"}],
        "compliance_resource_types": ["postgres"],
        "rules": [
            stored_rule(
                copy_action={"delete_after": 60},
                copy_actions=[{"destination_vault_arn": OTHER, "delete_after": 14}],
                recovery_point_tags={"owner": "mavis"},
                schedule_expression_timezone="Europe/London",
            )
        ],
    }
    plan = BackupPlan.of(stored)
    assert plan.as_dict() == stored and list(plan.as_dict()) == list(stored)
    assert list(plan.rules[0].as_dict()) == list(stored["rules"][0])
    assert plan.selection_tags == (("team", "mavis"),)


def test_a_plan_written_by_hand_takes_the_schema_defaults() -> None:
    plan = BackupPlan.of(
        {
            "selection_tag": "backup",
            "rules": [{"name": "hourly", "schedule": "rate(1 hour)", "target_vault_name": "Default"}],
        }
    )
    assert (plan.enable, plan.selection_tag_value, plan.compliance_resource_types) == (True, "True", ())
    [hourly] = plan.rules
    assert (hourly.start_window, hourly.completion_window, hourly.lifecycle.delete_after) == (60, 10080, None)
    assert retention(hourly) == float("inf")


def test_a_copy_attempt_shows_its_pid_once_it_has_a_job_and_its_point_once_completed() -> None:
    copy = CopyAttempt(OTHER, 14)
    assert copy.as_dict() == {
        "destination_vault_arn": OTHER,
        "delete_after_days": 14,
        "state": "CREATED",
        "job_id": None,
        "attempts": 0,
        "next_attempt_at": None,
        "message": None,
    }
    copy.state, copy.job_id, copy.attempts, copy.pid = CopyState.RUNNING, "job-1", 1, 4242
    assert copy.as_dict()["pid"] == 4242 and "destination_recovery_point_arn" not in copy.as_dict()
    copy.state, copy.destination_recovery_point_arn = CopyState.COMPLETED, "arn:point"
    shown = copy.as_dict()
    assert list(shown)[-2:] == ["pid", "destination_recovery_point_arn"]
    assert CopyAttempt.of(shown) == copy and copy.state.final and not CopyState.RUNNING.final
