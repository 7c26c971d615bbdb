"""``strongroom schedule next``: when an AWS cron/rate schedule expression fires (no account needed)."""

from __future__ import annotations

from datetime import UTC, datetime

import typer
from rich.markup import escape

from strongroom.cli import output
from strongroom.errors import ConfigError, UsageError
from strongroom.model import now
from strongroom.plans.schedule import Schedule, parse_schedule

MAX_COUNT = 10_000
schedule_app = typer.Typer(help="AWS cron/rate schedule expressions (see docs/schedules.md).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(schedule_app, name="schedule")


@schedule_app.command("next")
def next_(
    expression: str = typer.Argument(..., help="cron(M H DoM Mon DoW Y) or rate(N unit)."),
    count: int = typer.Option(1, "--count", help=f"How many fire times to print (1-{MAX_COUNT})."),
    after: str | None = typer.Option(None, "--after", help="Start after this ISO 8601 time (UTC if no zone)."),
    timezone: str | None = typer.Option(None, "--timezone", help="IANA time zone the cron fields are in."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Print the next fire times strictly after now (or --after), in UTC ISO 8601, one per line.

    A schedule AWS Backup would not accept (rate(), or cron() firing under 60 minutes apart) warns on stderr."""
    if not 1 <= count <= MAX_COUNT:
        raise UsageError(f"--count must be from 1 to {MAX_COUNT}, not {count}")
    schedule = parse_schedule(expression, timezone)
    start = _parse_after(after)
    times = [_iso(fire) for fire in _take(schedule, start, count)]
    if not times:
        raise ConfigError(f"{schedule.expression} never fires after {_iso(start)}: its Year field has ended")
    if not schedule.portable:
        _warn(f"{schedule.expression} is not portable to AWS Backup: {schedule.portability_note}")
    if len(times) < count:
        _warn(f"only {len(times)} fire times: the Year field of {schedule.expression} ends")
    if json_output:
        output.emit_json(
            {
                "expression": schedule.expression,
                "timezone": schedule.timezone,
                "portable": schedule.portable,
                "next": times,
            }
        )
    else:
        output.console.print("\n".join(times), highlight=False)


def _take(schedule: Schedule, start: datetime, count: int) -> list[datetime]:
    times = []
    for fire in schedule.fire_times(start):
        times.append(fire)
        if len(times) == count:
            break
    return times


def _parse_after(text: str | None) -> datetime:
    if text is None:
        return now()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--after '{text}' is not an ISO 8601 time", hint="Write e.g. 2026-11-25T07:00:00Z") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _warn(message: str) -> None:
    output.error_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)
