"""``strongroom schedule next`` in a real process: lines, JSON, warnings and one-line errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.cli import Cli, assert_one_line_error


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "no-account-needed")


def test_next_fire_times_one_per_line_in_utc(cli: Cli) -> None:
    result = cli.run("schedule", "next", "cron(0 7,19 * * ? *)", "--after", "2026-11-25T12:00:00Z", "--count", "3")
    assert result.stdout.splitlines() == ["2026-11-25T19:00:00Z", "2026-11-26T07:00:00Z", "2026-11-26T19:00:00Z"]
    assert result.stderr == ""


def test_after_is_strict_and_a_time_without_zone_is_utc(cli: Cli) -> None:
    result = cli.run("schedule", "next", "cron(0 7,19 * * ? *)", "--after", "2026-11-25T19:00:00")
    assert result.stdout.splitlines() == ["2026-11-26T07:00:00Z"]


def test_json_shape_with_a_time_zone(cli: Cli) -> None:
    data = cli.json(
        "schedule",
        "next",
        "cron(30 1 * * ? *)",
        "--timezone",
        "Europe/London",
        "--after",
        "2026-03-28T00:00:00Z",
        "--count",
        "2",
    )
    # 01:30 does not exist in London on 2026-03-29 (clocks jump 01:00 -> 02:00): that day is skipped.
    assert data == {
        "expression": "cron(30 1 * * ? *)",
        "timezone": "Europe/London",
        "portable": True,
        "next": ["2026-03-28T01:30:00Z", "2026-03-30T00:30:00Z"],
    }


def test_a_rate_expression_warns_it_is_not_portable(cli: Cli) -> None:
    result = cli.run("schedule", "next", "rate(5 minutes)", "--after", "2026-11-25T12:00:00Z", "--count", "2", "--json")
    assert result.json() == {
        "expression": "rate(5 minutes)",
        "timezone": "UTC",
        "portable": False,
        "next": ["2026-11-25T12:05:00Z", "2026-11-25T12:10:00Z"],
    }
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "AWS Backup accepts only cron()" in lines[0]


def test_default_is_now(cli: Cli) -> None:
    before = datetime.now(UTC)
    fire = datetime.fromisoformat(cli.run("schedule", "next", "cron(* * * * ? *)").stdout.strip())
    assert before < fire <= datetime.now(UTC) + timedelta(minutes=1)


def test_a_bad_expression_is_one_line_and_exit_2(cli: Cli) -> None:
    result = cli.run("schedule", "next", "cron(0 7 * * * *)", ok=False)
    assert_one_line_error(result, 2, "cron(0 7 * * * *)", "exactly one of them must be '?'")
    result = cli.run("schedule", "next", "rate(1 hours)", ok=False)
    assert_one_line_error(result, 2, "write rate(1 hour)")


def test_bad_options_are_one_line_and_exit_2(cli: Cli) -> None:
    assert_one_line_error(
        cli.run("schedule", "next", "cron(0 7 * * ? *)", "--after", "tomorrow", ok=False),
        2,
        "--after 'tomorrow' is not an ISO 8601 time",
    )
    assert_one_line_error(
        cli.run("schedule", "next", "cron(0 7 * * ? *)", "--count", "0", ok=False), 2, "--count must be from 1 to"
    )
    assert_one_line_error(
        cli.run("schedule", "next", "cron(0 7 * * ? *)", "--timezone", "Mars/Base", ok=False),
        2,
        "'Mars/Base' is not an IANA time zone name",
    )


def test_a_schedule_whose_years_ended(cli: Cli) -> None:
    result = cli.run("schedule", "next", "cron(0 0 1 1 ? 2020)", "--after", "2026-01-01T00:00:00Z", ok=False)
    assert_one_line_error(result, 2, "cron(0 0 1 1 ? 2020) never fires after 2026-01-01T00:00:00Z")
    fewer = cli.run("schedule", "next", "cron(0 0 1 1 ? 2027-2028)", "--after", "2026-01-01T00:00:00Z", "--count", "5")
    assert fewer.stdout.splitlines() == ["2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"]
    assert "only 2 fire times" in fewer.stderr
