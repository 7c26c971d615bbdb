"""AWS cron/rate schedules: next fire times worked out by hand from a calendar, and rejections with reasons.

Calendar facts used below (read off a printed calendar, weeks starting on Sunday):
2026-11-25 is a Wednesday; Nov 2026 has Fridays 6 13 20 27 and Thursdays 5 12 19 26; Dec 2026 starts on
a Tuesday (Fridays 4 11 18 25, Thursdays 3 10 17 24 31); Jan 2027 starts on a Friday (Mondays 4 11,
Tuesdays 5 12, Thursdays 7 14 21 28, Fridays 1 8 15 22 29); Feb 2027 starts on a Monday; Apr 2027 starts
on a Thursday (Thursdays 1 8 15 22 29). 2026: Jan 31 and Feb 28 are Saturdays, May 31 a Sunday, Aug 1
and Aug 15 Saturdays, Nov 1 and Nov 15 Sundays. Feb 2032 starts on a Sunday and has 29 days. Leap years:
2028, 2032, 2104; not 2100. Europe/London: BST starts 2026-03-29 01:00Z, ends 2026-10-25 01:00Z.
"""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from strongroom.config.loader import load_config
from strongroom.config.variables import AccountIdentity
from strongroom.errors import ConfigError
from strongroom.plans.schedule import Schedule, next_fire_times, parse_schedule

A = "2026-11-25T12:00:00Z"  # a Wednesday, noon UTC

# (expression, time zone, after, expected next fire times in UTC)
CASES: list[tuple[str, str | None, str, list[str]]] = [
    # The seed's production plan: 07:00 and 19:00 UTC every day.
    ("cron(0 7,19 * * ? *)", None, A, ["2026-11-25T19:00", "2026-11-26T07:00", "2026-11-26T19:00"]),
    # Strictly after: a fire time equal to the instant is not returned.
    ("cron(0 7,19 * * ? *)", None, "2026-11-25T19:00:00Z", ["2026-11-26T07:00"]),
    ("cron(0 12 * * ? *)", None, "2026-12-31T12:00:00Z", ["2027-01-01T12:00"]),
    ("cron(30 23 ? * * *)", None, A, ["2026-11-25T23:30", "2026-11-26T23:30"]),
    ("cron(59 23 31 12 ? *)", None, A, ["2026-12-31T23:59", "2027-12-31T23:59"]),
    # Steps: */15, a/n, a-b/n, and in Hours.
    (
        "cron(*/15 * * * ? *)",
        None,
        "2026-11-25T12:07:30Z",
        ["2026-11-25T12:15", "2026-11-25T12:30", "2026-11-25T12:45", "2026-11-25T13:00"],
    ),
    ("cron(5/20 * * * ? *)", None, A, ["2026-11-25T12:05", "2026-11-25T12:25", "2026-11-25T12:45", "2026-11-25T13:05"]),
    (
        "cron(10-20/5 8 * * ? *)",
        None,
        A,
        ["2026-11-26T08:10", "2026-11-26T08:15", "2026-11-26T08:20", "2026-11-27T08:10"],
    ),
    ("cron(0 0-23/6 * * ? *)", None, A, ["2026-11-25T18:00", "2026-11-26T00:00", "2026-11-26T06:00"]),
    # Day-of-week numbering: 1 = SUN ... 7 = SAT; 2-6 is MON-FRI. After Friday 2026-11-27 10:00.
    ("cron(0 9 ? * MON-FRI *)", None, "2026-11-27T10:00:00Z", ["2026-11-30T09:00", "2026-12-01T09:00"]),
    ("cron(0 9 ? * 2-6 *)", None, "2026-11-27T10:00:00Z", ["2026-11-30T09:00", "2026-12-01T09:00"]),
    ("cron(0 9 ? * 1 *)", None, A, ["2026-11-29T09:00", "2026-12-06T09:00"]),  # Sundays
    ("cron(0 9 ? * 7 *)", None, A, ["2026-11-28T09:00", "2026-12-05T09:00"]),  # Saturdays
    ("cron(0 9 ? * sun,sat *)", None, A, ["2026-11-28T09:00", "2026-11-29T09:00", "2026-12-05T09:00"]),
    ("cron(0 12 ? JAN-MAR MON *)", None, A, ["2027-01-04T12:00", "2027-01-11T12:00"]),
    # Months: names in any case, steps (*/3 = JAN, APR, JUL, OCT), lists and ranges of days.
    ("cron(0 0 1 jan,Jul ? *)", None, A, ["2027-01-01T00:00", "2027-07-01T00:00"]),
    ("cron(0 0 1 */3 ? *)", None, A, ["2027-01-01T00:00", "2027-04-01T00:00", "2027-07-01T00:00"]),
    ("cron(0 0 1-3 * ? *)", None, A, ["2026-12-01T00:00", "2026-12-02T00:00", "2026-12-03T00:00", "2027-01-01T00:00"]),
    # 1/10 in Day-of-month = 1, 11, 21, 31; November has no 31st.
    ("cron(0 0 1/10 * ? *)", None, A, ["2026-12-01T00:00", "2026-12-11T00:00", "2026-12-21T00:00", "2026-12-31T00:00"]),
    # Month ends: the 31st skips February and April; the 30th skips February.
    ("cron(0 0 31 * ? *)", None, A, ["2026-12-31T00:00", "2027-01-31T00:00", "2027-03-31T00:00", "2027-05-31T00:00"]),
    ("cron(0 0 30 * ? *)", None, "2027-01-30T12:00:00Z", ["2027-03-30T00:00", "2027-04-30T00:00"]),
    # L: the last day of the month, 28 or 29 in February.
    ("cron(0 0 L * ? *)", None, A, ["2026-11-30T00:00", "2026-12-31T00:00", "2027-01-31T00:00", "2027-02-28T00:00"]),
    ("cron(0 0 L 2 ? *)", None, A, ["2027-02-28T00:00", "2028-02-29T00:00", "2029-02-28T00:00"]),
    # Feb 29: leap years 2028 and 2032 only.
    ("cron(0 0 29 2 ? *)", None, A, ["2028-02-29T00:00", "2032-02-29T00:00"]),
    # Year range 2097-2105: 2100 is not a leap year, so 2104 is the only Feb 29 (and the last fire time).
    ("cron(0 0 29 2 ? 2097-2105)", None, A, ["2104-02-29T00:00"]),
    # W: the weekday nearest the day, never leaving the month. Aug 15 2026 is a Saturday -> Friday 14;
    # Sep 15 Tue and Oct 15 Thu as they are; Nov 15 is a Sunday -> Monday 16.
    (
        "cron(0 0 15W * ? *)",
        None,
        "2026-08-01T00:00:00Z",
        ["2026-08-14T00:00", "2026-09-15T00:00", "2026-10-15T00:00", "2026-11-16T00:00"],
    ),
    # 1W: Aug 1 2026 is a Saturday -> Monday 3 (not Friday Jul 31); Nov 1 a Sunday -> Monday 2.
    (
        "cron(0 0 1W * ? *)",
        None,
        "2026-07-15T00:00:00Z",
        ["2026-08-03T00:00", "2026-09-01T00:00", "2026-10-01T00:00", "2026-11-02T00:00"],
    ),
    # 31W: May 31 2026 is a Sunday -> Friday 29 (not Monday Jun 1); June has no 31st; Jul 31 Fri; Aug 31 Mon.
    ("cron(0 0 31W * ? *)", None, "2026-05-01T00:00:00Z", ["2026-05-29T00:00", "2026-07-31T00:00", "2026-08-31T00:00"]),
    # LW: the last weekday. Jan 31 2026 Sat -> 30; Feb 28 Sat -> 27; Mar 31 Tue; Apr 30 Thu.
    (
        "cron(0 0 LW * ? *)",
        None,
        "2026-01-01T00:00:00Z",
        ["2026-01-30T00:00", "2026-02-27T00:00", "2026-03-31T00:00", "2026-04-30T00:00"],
    ),
    # nL: the last Friday (6) of the month: Nov 27, Dec 25 2026, Jan 29 2027.
    ("cron(0 10 ? * 6L *)", None, A, ["2026-11-27T10:00", "2026-12-25T10:00", "2027-01-29T10:00"]),
    # FRIL limited to 2026: Dec 25 is the last one there is.
    ("cron(15 10 ? * FRIL 2026)", None, "2026-12-01T00:00:00Z", ["2026-12-25T10:15"]),
    # L alone in Day-of-week is the last day of the week: every Saturday.
    ("cron(0 9 ? * L *)", None, A, ["2026-11-28T09:00", "2026-12-05T09:00"]),
    # #: 3#2 = the second Tuesday (Dec 1, 8 -> 8; Jan 5, 12 -> 12); MON#1 = the first Monday.
    ("cron(0 9 ? * 3#2 *)", None, A, ["2026-12-08T09:00", "2027-01-12T09:00"]),
    ("cron(0 9 ? * MON#1 *)", None, A, ["2026-12-07T09:00", "2027-01-04T09:00", "2027-02-01T09:00"]),
    # 5#5, the fifth Thursday: none in Nov 2026, Dec 31, none in Jan-Mar 2027, then Apr 29.
    ("cron(0 9 ? * 5#5 *)", None, A, ["2026-12-31T09:00", "2027-04-29T09:00"]),
    # A fifth Sunday in February needs a leap year starting on Sunday: 2032, then 28 years later.
    ("cron(0 0 ? 2 1#5 *)", None, A, ["2032-02-29T00:00", "2060-02-29T00:00"]),
    # Years: lists, steps, and the last ones AWS accepts (2199 is the end).
    ("cron(0 0 1 1 ? 2030,2035)", None, A, ["2030-01-01T00:00", "2035-01-01T00:00"]),
    ("cron(0 0 1 1 ? 2030/5)", None, A, ["2030-01-01T00:00", "2035-01-01T00:00", "2040-01-01T00:00"]),
    ("cron(0 0 1 1 ? 2198-2199)", None, A, ["2198-01-01T00:00", "2199-01-01T00:00"]),
    # rate(): multiples of the interval counted from 1970-01-01T00:00Z.
    ("rate(1 minute)", None, "2026-11-25T12:00:30Z", ["2026-11-25T12:01", "2026-11-25T12:02"]),
    ("rate(5 minutes)", None, A, ["2026-11-25T12:05", "2026-11-25T12:10"]),
    ("rate(1 hour)", None, "2026-11-25T12:34:00Z", ["2026-11-25T13:00", "2026-11-25T14:00"]),
    ("rate(12 hours)", None, A, ["2026-11-26T00:00", "2026-11-26T12:00"]),
    # 1970-01-01 was a Thursday, so rate(7 days) fires on Thursdays at 00:00 UTC.
    ("rate(7 days)", None, A, ["2026-11-26T00:00", "2026-12-03T00:00"]),
    # 2026-01-01 is day 20454 after the epoch (56*365 + 14 leap days); Nov 25 is day 20454 + 328 = 20782,
    # an even day, so rate(2 days) fires at its midnight (already past), then on the 27th and 29th.
    ("rate(2 days)", None, A, ["2026-11-27T00:00", "2026-11-29T00:00"]),
    # A time zone does not move rate(): still midnight UTC in London's summer (not 23:00Z).
    ("rate(1 day)", "Europe/London", "2026-07-01T12:00:00Z", ["2026-07-02T00:00"]),
    # Time zones. London 07:00 is 06:00Z in summer time and 07:00Z in winter.
    ("cron(0 7 * * ? *)", "Europe/London", "2026-03-28T12:00:00Z", ["2026-03-29T06:00", "2026-03-30T06:00"]),
    (
        "cron(0 7 * * ? *)",
        "Europe/London",
        "2026-10-24T00:00:00Z",
        ["2026-10-24T06:00", "2026-10-25T07:00", "2026-10-26T07:00"],
    ),
    # 01:30 does not exist in London on 2026-03-29 (01:00 GMT -> 02:00 BST): skipped, as EventBridge does.
    ("cron(30 1 * * ? *)", "Europe/London", "2026-03-28T00:00:00Z", ["2026-03-28T01:30", "2026-03-30T00:30"]),
    # 01:30 happens twice in London on 2026-10-25 (00:30Z BST, 01:30Z GMT): it fires once, the first time.
    (
        "cron(30 1 * * ? *)",
        "Europe/London",
        "2026-10-24T00:00:00Z",
        ["2026-10-24T00:30", "2026-10-25T00:30", "2026-10-26T01:30"],
    ),
    ("cron(30 1 * * ? *)", "Europe/London", "2026-10-25T00:45:00Z", ["2026-10-26T01:30"]),
    # New York is UTC-5 in late November; Kolkata is UTC+5:30, so its midnight is 18:30Z the day before.
    ("cron(0 9 ? * MON-FRI *)", "America/New_York", A, ["2026-11-25T14:00", "2026-11-26T14:00"]),
    ("cron(0 0 * * ? *)", "Asia/Kolkata", A, ["2026-11-25T18:30", "2026-11-26T18:30"]),
]


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _minutes(times: list[datetime]) -> list[str]:
    return [t.strftime("%Y-%m-%dT%H:%M") for t in times]


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize(
    ("expression", "zone", "after", "expected"), CASES, ids=[f"{c[0]}@{c[1] or 'UTC'}@{c[2]}" for c in CASES]
)
def test_next_fire_times(expression: str, zone: str | None, after: str, expected: list[str]) -> None:
    times = next_fire_times(expression, after=_utc(after), count=len(expected) + 1, timezone=zone)
    ends = expression.endswith(("2026)", "2035)", "2105)", "2199)"))  # the Year field runs out
    assert _minutes(times[: len(expected)]) == expected
    assert len(times) == len(expected) + (0 if ends else 1)
    assert all(t.tzinfo is UTC and t > _utc(after) for t in times)


# (expression, a fragment of the reason)
REJECTIONS = [
    ("cron(0 7 * * ?)", "has 5 fields; AWS cron needs six: Minutes Hours Day-of-month Month Day-of-week Year"),
    ("cron(0 0 7 * * ? *)", "has 7 fields"),
    ("cron(0 7 * * * *)", "Day-of-month '*' and Day-of-week '*' are both set; exactly one of them must be '?'"),
    ("cron(0 7 15 * MON *)", "Day-of-month '15' and Day-of-week 'MON' are both set"),
    ("cron(0 7 ? * ? *)", "Day-of-month and Day-of-week are both '?'; exactly one of them must be '?'"),
    ("cron(0 7 ? * 1,? *)", "'?' stands alone"),
    ("cron(60 * * * ? *)", "Minutes '60': 60 is outside 0-59"),
    ("cron(0 24 * * ? *)", "Hours '24': 24 is outside 0-23"),
    ("cron(0 0 32 * ? *)", "Day-of-month '32': 32 is outside 1-31"),
    ("cron(0 0 0 * ? *)", "Day-of-month '0': 0 is outside 1-31"),
    ("cron(0 0 1 13 ? *)", "Month '13': 13 is outside 1-12"),
    ("cron(0 0 1 JANUARY ? *)", "Month 'JANUARY': 'JANUARY' is not a value (1-12 or JAN-DEC)"),
    ("cron(0 0 ? * 8 *)", "Day-of-week '8': 8 is outside 1-7"),
    ("cron(0 0 ? * 0 *)", "Day-of-week '0': 0 is outside 1-7"),  # Unix's Sunday
    ("cron(0 0 ? * MONDAY *)", "Day-of-week 'MONDAY': 'MONDAY' is not a value (1-7 or SUN-SAT)"),
    ("cron(0 0 1 1 ? 1969)", "Year '1969': 1969 is outside 1970-2199"),
    ("cron(0 0 1 1 ? 2200)", "Year '2200': 2200 is outside 1970-2199"),
    (
        "cron(0 0 ? * FRI-MON *)",
        "the range FRI-MON runs backwards; ranges do not wrap around, write two ranges: FRI-SAT,SUN-MON",
    ),
    ("cron(0 22-2 * * ? *)", "write two ranges: 22-23,0-2"),
    ("cron(0 0 ? * */2 *)", "AWS does not allow '/' in Day-of-week"),
    ("cron(0/0 * * * ? *)", "the increment after '/' must be a whole number from 1 to 60"),
    ("cron(0 0 ,1 * ? *)", "Day-of-month ',1' has an empty list item"),
    ("cron(0 0 ? * 2#6 *)", "Day-of-week '2#6': the k of n#k must be 1 to 5"),
    ("cron(0 0 ? * 2#0 *)", "the k of n#k must be 1 to 5"),
    ("cron(0 0 ? * 2#1,3#2 *)", "n#k (the k-th weekday n of the month) stands alone"),
    ("cron(0 0 1-5W * ? *)", "Day-of-month '1-5W': L, LW and nW (one day, e.g. 15W) stand alone"),
    ("cron(0 0 1,15W * ? *)", "stand alone, without lists, ranges"),
    ("cron(0 0 L-3 * ? *)", "Day-of-month 'L-3'"),
    ("cron(0 0 ? * 2W *)", "W is allowed only in Day-of-month"),
    ("cron(0 0 ? * 1L,2 *)", "L and nL (the last weekday n of the month) stand alone"),
    ("cron(0 0 30 2 ? *)", "cron(0 0 30 2 ? *) never fires"),
    ("cron(0 0 31 4,6,9,11 ? *)", "never fires"),
    ("cron(0 0 29 2 ? 2100-2103)", "never fires"),  # 2100 is not a leap year
    ("cron(0 0 ? 2 6#5 2026)", "never fires"),  # February 2026 has four Fridays
    ("rate(1 hours)", "the unit is singular exactly when the value is 1; write rate(1 hour)"),
    ("rate(5 minute)", "write rate(5 minutes)"),
    ("rate(0 minutes)", "the value must be a whole number from 1 to 1000000, not 0"),
    ("rate(-5 minutes)", "write rate(N minutes|hours|days)"),
    ("rate(2 weeks)", "write rate(N minutes|hours|days)"),
    ("every day", "'every day' is not a schedule: use cron(Minutes Hours Day-of-month Month Day-of-week Year)"),
    ("cron 0 7 * * ? *", "is not a schedule"),
]


def test_at_least_fifteen_rejections() -> None:
    assert len(REJECTIONS) >= 15


@pytest.mark.parametrize(("expression", "reason"), REJECTIONS, ids=[r[0] for r in REJECTIONS])
def test_rejections_give_the_reason(expression: str, reason: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_schedule(expression)
    assert reason in raised.value.message
    assert raised.value.exit_code == 2


def test_an_unknown_time_zone_is_refused() -> None:
    with pytest.raises(ConfigError, match="'Mars/Olympus' is not an IANA time zone name"):
        parse_schedule("cron(0 7 * * ? *)", "Mars/Olympus")


def test_schedule_attributes() -> None:
    cron = parse_schedule("  cron(0 7,19 * * ? *) ")
    assert (cron.expression, cron.timezone, cron.portable) == ("cron(0 7,19 * * ? *)", "UTC", True)
    rate = parse_schedule("rate(1 day)", "Europe/London")
    assert (rate.expression, rate.timezone, rate.portable) == ("rate(1 day)", "Europe/London", False)
    assert isinstance(cron, Schedule) and cron.portability_note == ""
    assert rate.portability_note == "rate() is a Strongroom extension; AWS Backup accepts only cron()"


@pytest.mark.parametrize(
    ("expression", "portable"),
    [
        ("cron(0 * * * ? *)", True),  # hourly: exactly 60 minutes apart
        ("cron(15 0-23/2 ? * MON *)", True),
        ("cron(0,30 * * * ? *)", False),  # twice an hour
        ("cron(*/5 * * * ? *)", False),
        ("rate(1 hour)", False),  # rate() itself is not AWS Backup's
    ],
)
def test_what_aws_backup_would_refuse_is_not_portable(expression: str, portable: bool) -> None:
    schedule = parse_schedule(expression)
    assert schedule.portable is portable
    assert ("less than 60 minutes apart" in schedule.portability_note) is (not portable and "cron" in expression)


def test_next_after_is_strictly_after_and_takes_any_aware_time() -> None:
    schedule = parse_schedule("cron(0 7,19 * * ? *)")
    plus_two = timezone(timedelta(hours=2))
    assert schedule.next_after(datetime(2026, 11, 25, 21, 0, tzinfo=plus_two)) == datetime(2026, 11, 26, 7, tzinfo=UTC)
    assert schedule.next_after(datetime(2026, 11, 25, 19, 0, 0, 1, tzinfo=UTC)) == datetime(2026, 11, 26, 7, tzinfo=UTC)
    with pytest.raises(ValueError, match="no time zone"):
        schedule.next_after(datetime(2026, 11, 25, 12))


def test_a_schedule_whose_years_have_passed_says_it_never_fires_again() -> None:
    schedule = parse_schedule("cron(0 0 1 1 ? 2020-2021)")  # valid: it fired in 2020 and 2021
    assert schedule.next_after(_utc("2020-06-01T00:00:00Z")) == _utc("2021-01-01T00:00:00Z")
    with pytest.raises(ConfigError, match=r"never fires after 2026-11-25T12:00:00Z: its Year field has ended"):
        schedule.next_after(_utc(A))
    assert next_fire_times("cron(0 0 1 1 ? 2020-2021)", after=_utc(A), count=5) == []


def test_far_and_rare_fire_times_are_found_without_scanning_minutes() -> None:
    # From 1970 to the last possible minute, and a schedule firing once in 28 years, many times over.
    last = parse_schedule("cron(59 23 31 12 ? 2199)").next_after(_utc("1970-01-01T00:00:00Z"))
    assert last == _utc("2199-12-31T23:59:00Z")
    rare = next_fire_times("cron(0 0 ? 2 1#5 *)", after=_utc("1970-01-01T00:00:00Z"), count=100)
    # 1901-2099 repeat every 28 years; Feb 1 2032 is a Sunday.
    assert [t.year for t in rare[:5]] == [1976, 2004, 2032, 2060, 2088]
    assert all((t.month, t.day) == (2, 29) for t in rare)


def test_successive_fire_times_of_every_minute_across_a_dst_change() -> None:
    times = next_fire_times("cron(* * * * ? *)", after=_utc("2026-10-25T00:58:00Z"), count=4, timezone="Europe/London")
    # 01:59 BST (00:59Z), then the repeated hour 01:00-01:59 GMT is not fired again: 02:00 GMT is 02:00Z.
    assert _minutes(times) == ["2026-10-25T00:59", "2026-10-25T02:00", "2026-10-25T02:01", "2026-10-25T02:02"]


# The configuration file: schedules are checked when plan/apply load it, with file:line.
ACCOUNT = AccountIdentity("111111111111", "local", frozenset({"Default"}))
PLAN = """
backup_plans:
  daily:
    selection_tag: BackupSource
    rules:
      - name: r1
        schedule: {schedule}
        schedule_expression_timezone: {zone}
"""


def _load_error(tmp_path: Path, schedule: str, zone: str = "Europe/London") -> str:
    path = tmp_path / "account.yaml"
    path.write_text(textwrap.dedent(PLAN.format(schedule=schedule, zone=zone)).lstrip())
    with pytest.raises(ConfigError) as raised:
        load_config(path, identity=ACCOUNT)
    return raised.value.one_line()


def test_the_configuration_refuses_a_bad_schedule_with_file_and_line(tmp_path: Path) -> None:
    message = _load_error(tmp_path, '"cron(0 7 * * MON *)"')
    assert (
        f"{tmp_path / 'account.yaml'}:6: backup_plans.daily.rules[0].schedule: cron(0 7 * * MON *):"
        " Day-of-month '*' and Day-of-week 'MON' are both set"
    ) in message


def test_the_configuration_refuses_an_unknown_time_zone(tmp_path: Path) -> None:
    message = _load_error(tmp_path, '"cron(0 7 * * ? *)"', zone="Europe/Londres")
    assert (
        f"{tmp_path / 'account.yaml'}:7: backup_plans.daily.rules[0].schedule_expression_timezone:"
        " 'Europe/Londres' is not an IANA time zone name"
    ) in message


def test_the_configuration_keeps_a_valid_schedule_and_its_time_zone(tmp_path: Path) -> None:
    path = tmp_path / "account.yaml"
    path.write_text(textwrap.dedent(PLAN.format(schedule="rate(2 hours)", zone="Europe/London")).lstrip())
    loaded = load_config(path, identity=ACCOUNT)
    rule = loaded.stored_backup_plans()["daily"]["rules"][0]
    assert (rule["schedule"], rule["schedule_expression_timezone"]) == ("rate(2 hours)", "Europe/London")
    assert any("rate() is a Strongroom extension" in warning for warning in loaded.warnings)
