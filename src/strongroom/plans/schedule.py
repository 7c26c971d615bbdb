"""AWS schedule expressions: ``cron(Minutes Hours Day-of-month Month Day-of-week Year)`` and ``rate(N unit)``.

The cron dialect is the one AWS Backup and EventBridge accept, exactly: six fields; ``* , - /`` in
Minutes, Hours, Day-of-month, Month and Year; ``?`` in exactly one of Day-of-month and Day-of-week;
``L`` and ``W`` (``nW``, ``LW``) in Day-of-month; ``L``, ``nL`` and ``n#k`` in Day-of-week, which counts
1-7 = SUN-SAT. Expressions are evaluated in UTC or in an IANA time zone (AWS Backup's
ScheduleExpressionTimezone) with EventBridge Scheduler's daylight-saving rules: a local time the clocks
skip does not fire, a local time the clocks repeat fires once (its first occurrence).

``rate(N minutes|hours|days)`` is a Strongroom extension (AWS Backup accepts only ``cron()``): fire times
are the Unix epoch (1970-01-01T00:00:00Z) plus whole multiples of the interval, whatever the time zone,
so they are the same on every machine and after every restart. See docs/schedules.md.
"""

from __future__ import annotations

import calendar
import re
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from itertools import islice
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from strongroom.errors import ConfigError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FIRST_YEAR, LAST_YEAR = 1970, 2199
MAX_RATE = 1_000_000
DEFAULT_TIMEZONE = "UTC"
SYNTAX = "use cron(Minutes Hours Day-of-month Month Day-of-week Year) or rate(N minutes|hours|days)"
MONTHS = {
    name: number
    for number, name in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1
    )
}
WEEKDAYS = {name: number for number, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"), 1)}
RATE_NOTE = "rate() is a Strongroom extension; AWS Backup accepts only cron()"
# Two minutes in the Minutes field fire twice within an hour; AWS Backup refuses rules under 60 minutes apart.
UNDER_AN_HOUR = "it fires less than 60 minutes apart, which AWS Backup refuses for a backup rule"
RATE_UNITS = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}
# Near an offset change, look this far back in local time for the first candidate (more than any change).
_DST_MARGIN = timedelta(hours=3)


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None
    steps: bool = True  # AWS allows '/' in every field but Day-of-week

    @property
    def span(self) -> str:
        return f"{self.low}-{self.high}"


MINUTES = _Field("Minutes", 0, 59)
HOURS = _Field("Hours", 0, 23)
DAY_OF_MONTH = _Field("Day-of-month", 1, 31)
MONTH = _Field("Month", 1, 12, MONTHS)
DAY_OF_WEEK = _Field("Day-of-week", 1, 7, WEEKDAYS, steps=False)
YEAR = _Field("Year", FIRST_YEAR, LAST_YEAR)


@dataclass(frozen=True)
class _Days:
    """Which days of a month fire: one of AWS's Day-of-month or Day-of-week forms."""

    kind: str  # "dom" (values), "last", "last_weekday", "nearest_weekday", "dow" (values), "last_dow", "nth_dow"
    values: frozenset[int] = frozenset()
    number: int = 0  # the day of nW, the weekday of nL / n#k
    nth: int = 0  # the k of n#k

    def in_month(self, year: int, month: int) -> tuple[int, ...]:
        return _days_in_month(self, year, month)


@dataclass(frozen=True)
class _Cron:
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: _Days
    months: tuple[int, ...]
    years: tuple[int, ...]


class _Problem(Exception):
    """A field-level reason; parse_schedule turns it into a ConfigError naming the expression."""


@dataclass(frozen=True)
class Schedule:
    """A parsed ``cron(...)`` or ``rate(...)`` expression and the time zone it is evaluated in.

    Build one with :func:`parse_schedule`; equal expressions in equal time zones compare equal."""

    expression: str
    timezone: str = DEFAULT_TIMEZONE
    portable: bool = True  # False for rate(...) and for cron(...) firing under 60 minutes apart
    portability_note: str = ""  # why it is not portable to AWS Backup ("" when it is)
    _cron: _Cron | None = field(default=None, repr=False, compare=False)
    _rate: timedelta | None = field(default=None, repr=False, compare=False)

    def next_after(self, moment: datetime) -> datetime:
        """The first fire time strictly after ``moment`` (an aware datetime), as an aware UTC datetime.

        Raises ConfigError when the schedule never fires again (its Year field has ended)."""
        for fire in self.fire_times(moment):
            return fire
        raise ConfigError(f"{self.expression} never fires after {_iso(moment)}: its Year field has ended")

    def fire_times(self, moment: datetime) -> Iterator[datetime]:
        """Every fire time strictly after ``moment``, in order, as aware UTC datetimes (ends with the years)."""
        moment = _aware_utc(moment)
        if self._rate is not None:
            return _rate_times(self._rate, moment)
        assert self._cron is not None
        return _cron_times(self._cron, _zone(self.timezone), moment)


def parse_schedule(expression: str, timezone: str | None = None) -> Schedule:
    """Parse an AWS schedule expression; ConfigError names the field, the value and the reason."""
    text = expression.strip()
    zone_name = timezone or DEFAULT_TIMEZONE
    load_timezone(zone_name)
    if match := re.fullmatch(r"cron\((.*)\)", text):
        cron = _parse_cron(text, match.group(1))
        note = UNDER_AN_HOUR if len(cron.minutes) > 1 else ""
        return Schedule(text, zone_name, not note, note, _cron=cron)
    if match := re.fullmatch(r"rate\((.*)\)", text):
        return Schedule(text, zone_name, False, RATE_NOTE, _rate=_parse_rate(text, match.group(1)))
    raise ConfigError(f"'{text}' is not a schedule: {SYNTAX}")


def next_fire_times(expression: str, *, after: datetime, count: int = 1, timezone: str | None = None) -> list[datetime]:
    """The next ``count`` fire times strictly after ``after`` (fewer if the schedule's years end first)."""
    return list(islice(parse_schedule(expression, timezone).fire_times(after), max(count, 0)))


def load_timezone(name: str) -> ZoneInfo:
    """An IANA time zone by name (``UTC``, ``Europe/London``); ConfigError when there is no such zone."""
    try:
        return _zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"'{name}' is not an IANA time zone name (e.g. UTC, Europe/London)") from None


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    if not name or name != name.strip():
        raise ValueError(name)
    return ZoneInfo(name)


# rate(...) -------------------------------------------------------------------------------------
def _parse_rate(text: str, body: str) -> timedelta:
    match = re.fullmatch(r"\s*(\d+)\s+([a-z]+?)(s?)\s*", body)
    if not match or match.group(2) not in RATE_UNITS:
        raise ConfigError(f"{text}: write rate(N minutes|hours|days), e.g. rate(1 hour) or rate(15 minutes)")
    value, unit, plural = int(match.group(1)), match.group(2), match.group(3)
    if not 1 <= value <= MAX_RATE:
        raise ConfigError(f"{text}: the value must be a whole number from 1 to {MAX_RATE}, not {value}")
    if (value == 1) == bool(plural):
        wanted = f"rate(1 {unit})" if value == 1 else f"rate({value} {unit}s)"
        raise ConfigError(f"{text}: the unit is singular exactly when the value is 1; write {wanted}")
    return value * RATE_UNITS[unit]


def _rate_times(period: timedelta, moment: datetime) -> Iterator[datetime]:
    fire = EPOCH + ((moment - EPOCH) // period + 1) * period
    while fire.year <= LAST_YEAR:
        yield fire
        fire += period


# cron(...): parsing ------------------------------------------------------------------------------
def _parse_cron(text: str, body: str) -> _Cron:
    fields = body.split()
    if len(fields) != 6:
        raise ConfigError(
            f"{text} has {len(fields)} fields; AWS cron needs six: Minutes Hours Day-of-month Month"
            " Day-of-week Year (e.g. cron(0 7 * * ? *))"
        )
    try:
        cron = _Cron(
            minutes=_sorted(MINUTES, fields[0]),
            hours=_sorted(HOURS, fields[1]),
            days=_days(fields[2], fields[4]),
            months=_sorted(MONTH, fields[3]),
            years=_sorted(YEAR, fields[5]),
        )
    except _Problem as problem:
        raise ConfigError(f"{text}: {problem}") from None
    if not _ever_fires(cron):
        raise ConfigError(
            f"{text} never fires: no day from {FIRST_YEAR} to {LAST_YEAR} matches its Day-of-month,"
            " Day-of-week, Month and Year fields"
        )
    return cron


def _sorted(spec: _Field, text: str) -> tuple[int, ...]:
    return tuple(sorted(_values(spec, text)))


def _values(spec: _Field, text: str) -> set[int]:
    items = text.split(",")
    if any(not item for item in items):
        raise _Problem(f"{spec.name} '{text}' has an empty list item")
    return {value for item in items for value in _item(spec, text, item)}


def _item(spec: _Field, text: str, item: str) -> range:
    base, slash, step_text = item.partition("/")
    if slash and not spec.steps:
        raise _Problem(f"{spec.name} '{text}': AWS does not allow '/' in {spec.name}")
    if base == "*":
        first, last = spec.low, spec.high
    elif "-" in base:
        first, last = _range(spec, text, base)
    else:
        first = _number(spec, text, base)
        last = spec.high if slash else first
    step = _step(spec, text, step_text) if slash else 1
    return range(first, last + 1, step)


def _range(spec: _Field, text: str, base: str) -> tuple[int, int]:
    start, end = base.split("-", 1)
    first, last = _number(spec, text, start), _number(spec, text, end)
    if first > last:
        raise _Problem(
            f"{spec.name} '{text}': the range {base} runs backwards; ranges do not wrap around,"
            f" write two ranges: {start}-{_bound(spec, start, spec.high)},{_bound(spec, start, spec.low)}"
            f"-{end}"
        )
    return first, last


def _bound(spec: _Field, like: str, number: int) -> str:
    """``number`` written the way the user wrote ``like``: as a name or as digits."""
    if spec.names and not like.isdigit():
        return next(name for name, value in spec.names.items() if value == number)
    return str(number)


def _step(spec: _Field, text: str, step_text: str) -> int:
    if not (step_text.isascii() and step_text.isdigit()) or not 1 <= int(step_text) <= spec.high - spec.low + 1:
        raise _Problem(
            f"{spec.name} '{text}': the increment after '/' must be a whole number from 1 to {spec.high - spec.low + 1}"
        )
    return int(step_text)


def _number(spec: _Field, text: str, token: str) -> int:
    if spec.names and token.upper() in spec.names:
        return spec.names[token.upper()]
    if not (token.isascii() and token.isdigit()):
        names = f" or {_bound(spec, 'X', spec.low)}-{_bound(spec, 'X', spec.high)}" if spec.names else ""
        raise _Problem(f"{spec.name} '{text}': '{token}' is not a value ({spec.span}{names})")
    if not spec.low <= int(token) <= spec.high:
        raise _Problem(f"{spec.name} '{text}': {int(token)} is outside {spec.span}")
    return int(token)


def _days(day_of_month: str, day_of_week: str) -> _Days:
    if day_of_month == "?" and day_of_week == "?":
        raise _Problem("Day-of-month and Day-of-week are both '?'; exactly one of them must be '?'")
    if day_of_month != "?" and day_of_week != "?":
        raise _Problem(
            f"Day-of-month '{day_of_month}' and Day-of-week '{day_of_week}' are both set; exactly one"
            " of them must be '?' (e.g. cron(0 7 * * ? *) or cron(0 7 ? * MON-FRI *))"
        )
    if any("?" in text and text != "?" for text in (day_of_month, day_of_week)):
        raise _Problem("'?' stands alone in Day-of-month or Day-of-week")
    return _day_of_month(day_of_month) if day_of_week == "?" else _day_of_week(day_of_week)


def _day_of_month(text: str) -> _Days:
    upper = text.upper()
    if "L" not in upper and "W" not in upper:
        return _Days("dom", frozenset(_values(DAY_OF_MONTH, text)))
    if upper == "L":
        return _Days("last")
    if upper == "LW":
        return _Days("last_weekday")
    match = re.fullmatch(r"(\d+)W", upper)
    if match:
        return _Days("nearest_weekday", number=_number(DAY_OF_MONTH, text, match.group(1)))
    raise _Problem(
        f"Day-of-month '{text}': L, LW and nW (one day, e.g. 15W) stand alone, without lists, ranges,"
        " increments or offsets"
    )


def _day_of_week(text: str) -> _Days:
    upper = text.upper()
    if upper == "L":  # the last day of the week: Saturday
        return _Days("dow", frozenset({WEEKDAYS["SAT"]}))
    if "#" in upper:
        return _nth_weekday(text, upper)
    if "L" in upper:
        if any(mark in upper for mark in ",-*/") or not upper.endswith("L"):
            raise _Problem(
                f"Day-of-week '{text}': L and nL (the last weekday n of the month) stand alone, without lists or ranges"
            )
        return _Days("last_dow", number=_number(DAY_OF_WEEK, text, upper[:-1]))
    if "W" in upper.replace("WED", ""):
        raise _Problem(f"Day-of-week '{text}': W is allowed only in Day-of-month")
    return _Days("dow", frozenset(_values(DAY_OF_WEEK, text)))


def _nth_weekday(text: str, upper: str) -> _Days:
    weekday, _, nth = upper.partition("#")
    if any(mark in upper for mark in ",-*/L") or "#" in nth:
        raise _Problem(f"Day-of-week '{text}': n#k (the k-th weekday n of the month) stands alone")
    if not (nth.isascii() and nth.isdigit()) or not 1 <= int(nth) <= 5:
        raise _Problem(f"Day-of-week '{text}': the k of n#k must be 1 to 5 (a month has at most five of a weekday)")
    return _Days("nth_dow", number=_number(DAY_OF_WEEK, text, weekday), nth=int(nth))


# cron(...): evaluation ---------------------------------------------------------------------------
def _aws_weekday(day: date) -> int:
    """1 = SUN ... 7 = SAT, from Python's 0 = Monday ... 6 = Sunday."""
    return (day.weekday() + 1) % 7 + 1


@lru_cache(maxsize=4096)
def _days_in_month(days: _Days, year: int, month: int) -> tuple[int, ...]:
    last = calendar.monthrange(year, month)[1]
    if days.kind == "dom":
        return tuple(day for day in sorted(days.values) if day <= last)
    if days.kind == "dow":
        return tuple(day for day in range(1, last + 1) if _aws_weekday(date(year, month, day)) in days.values)
    if days.kind == "last":
        return (last,)
    if days.kind == "last_weekday":
        return (_nearest_weekday(year, month, last, last),)
    if days.kind == "nearest_weekday":
        return (_nearest_weekday(year, month, days.number, last),) if days.number <= last else ()
    return _weekday_in_month(days, year, month, last)


def _nearest_weekday(year: int, month: int, day: int, last: int) -> int:
    """The weekday (MON-FRI) nearest ``day`` without leaving the month (AWS's nW)."""
    weekday = _aws_weekday(date(year, month, day))
    if weekday == WEEKDAYS["SAT"]:
        return day - 1 if day > 1 else day + 2
    if weekday == WEEKDAYS["SUN"]:
        return day + 1 if day < last else day - 2
    return day


def _weekday_in_month(days: _Days, year: int, month: int, last: int) -> tuple[int, ...]:
    first = 1 + (days.number - _aws_weekday(date(year, month, 1))) % 7
    if days.kind == "last_dow":
        return (first + 7 * ((last - first) // 7),)
    day = first + 7 * (days.nth - 1)
    return (day,) if day <= last else ()


def _ever_fires(cron: _Cron) -> bool:
    return any(cron.days.in_month(year, month) for year in cron.years for month in cron.months)


def _local_times(cron: _Cron, start: datetime) -> Iterator[datetime]:
    """Every local wall-clock time the fields match, from ``start`` (naive) on, in order."""
    for year in cron.years[bisect_left(cron.years, start.year) :]:
        for month in cron.months:
            if (year, month) < (start.year, start.month):
                continue
            for day in cron.days.in_month(year, month):
                yield from _times_of_day(cron, date(year, month, day), start)


def _times_of_day(cron: _Cron, day: date, start: datetime) -> Iterator[datetime]:
    if day < start.date():
        return
    today = day == start.date()
    for hour in cron.hours[bisect_left(cron.hours, start.hour) if today else 0 :]:
        first = bisect_left(cron.minutes, start.minute) if today and hour == start.hour else 0
        for minute in cron.minutes[first:]:
            yield datetime(day.year, day.month, day.day, hour, minute)


def _cron_times(cron: _Cron, zone: ZoneInfo, moment: datetime) -> Iterator[datetime]:
    for wall in _local_times(cron, _local_start(zone, moment)):
        fire = _to_utc(wall, zone)
        if fire is not None and fire > moment:
            yield fire


def _local_start(zone: ZoneInfo, moment: datetime) -> datetime:
    """A local time no later than any fire time after ``moment``.

    Local times map to instants in order (a skipped one has none, a repeated one its first), so the local
    time of ``moment`` will do; near an offset change start a little earlier, which costs nothing."""
    local = moment.astimezone(zone)
    offsets = {(moment + shift).astimezone(zone).utcoffset() for shift in (-_DST_MARGIN, _DST_MARGIN)}
    margin = timedelta(0) if offsets == {local.utcoffset()} else _DST_MARGIN
    return local.replace(tzinfo=None, second=0, microsecond=0) - margin


def _to_utc(wall: datetime, zone: ZoneInfo) -> datetime | None:
    """The instant of a local time; None when the clocks skip it; the first of two when they repeat it."""
    instant = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) != wall:
        return None
    return instant


def _aware_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{moment.isoformat()} has no time zone; schedules take aware datetimes")
    return moment.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return _aware_utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")
