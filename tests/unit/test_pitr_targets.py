"""Point-in-time targets as ``restore start`` takes them, and the window they must fall in (services/pitr.py)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from strongroom.errors import RecoveryWindowError, UsageError
from strongroom.model import RecoveryPoint, RecoveryPointStatus
from strongroom.services.pitr import (
    RecoveryTarget,
    RecoveryWindow,
    TargetKind,
    TimelineStep,
    check_in_window,
    on_path,
    segment_number,
    segment_timeline,
)


def parse(**given: object) -> RecoveryTarget | None:
    fields: dict[str, object] = {"time": None, "lsn": None, "xid": None, "name": None, "latest": False}
    fields.update(given)
    fields.setdefault("timeline", None)
    return RecoveryTarget.parse(**fields)  # type: ignore[arg-type]


def test_targets_are_normalised_and_one_at_most() -> None:
    assert parse() is None
    assert parse(time="2026-12-04T09:30:00") == RecoveryTarget(TargetKind.TIME, "2026-12-04T09:30:00+00:00")
    assert parse(lsn="0/3000060") == RecoveryTarget(TargetKind.LSN, "0/3000060")
    assert parse(latest=True, timeline="latest") == RecoveryTarget(TargetKind.LATEST, None, "latest")
    with pytest.raises(UsageError, match="give one of"):
        parse(time="2026-12-04T09:30:00Z", xid="5")


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"time": "yesterday"}, "not an ISO 8601 time"),
        ({"lsn": "3000060"}, "not an LSN"),
        ({"xid": "12a"}, "not a transaction id"),
        ({"name": "x' ; recovery_target_action = 'shutdown"}, "not a restore point name"),
        ({"latest": True, "timeline": "-1"}, "not a timeline"),
        ({"timeline": "2"}, "needs a target"),
    ],
)
def test_a_bad_target_is_one_line_naming_the_option(given: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse(**given)


def base(label: dict[str, str]) -> RecoveryPoint:
    return RecoveryPoint("p", "arn:p", "v", "db", "postgres-cluster", RecoveryPointStatus.COMPLETED,
                         "2026-12-04T07:00:00+00:00", metadata={"backup_label": label})  # fmt: skip


def test_the_window_refuses_before_the_first_backup_and_after_the_newest_wal_saying_the_window() -> None:
    window = RecoveryWindow("2026-12-04T07:00:10+00:00", "2026-12-04T18:59:58+00:00", "0/9000000", "7441")
    point = base({"start_wal_location": "0/2000028 (file 000000010000000000000002)", "start_timeline": "1"})
    check_in_window(window, point, RecoveryTarget(TargetKind.TIME, "2026-12-04T12:00:00+00:00"))
    # the end is a coarse mtime: a second past it may still be before the last commit (PostgreSQL decides)
    check_in_window(window, point, RecoveryTarget(TargetKind.TIME, "2026-12-04T18:59:58.900+00:00"))
    for moment in ("2026-12-04T07:00:09+00:00", "2026-12-04T18:59:59.001+00:00"):
        with pytest.raises(RecoveryWindowError, match=r"2026-12-04T07:00:10.* \.\. 2026-12-04T18:59:58") as refused:
            check_in_window(window, point, RecoveryTarget(TargetKind.TIME, moment))
        assert refused.value.exit_code == 2 and refused.value.code == "OUTSIDE_RECOVERY_WINDOW"
    with pytest.raises(RecoveryWindowError, match="LSN 0/9000001 is after the newest archived WAL"):
        check_in_window(window, point, RecoveryTarget(TargetKind.LSN, "0/9000001"))
    with pytest.raises(RecoveryWindowError, match="before the earliest base backup"):
        check_in_window(window, point, RecoveryTarget(TargetKind.LSN, "0/1000000"))


def test_segment_numbers_follow_the_segment_size() -> None:
    assert segment_number("000000010000000000000003", 16 << 20) == 3
    assert segment_number("000000010000000100000000", 16 << 20) == 256
    assert segment_number("000000010000000100000000", 1 << 20) == 4096


MIB = 1 << 20
# Timeline 2 forked from 1 at 0/3000100, 3 from 2 at 0/7800000 (segments of 16 MiB: 3 and 7).
PATH = [TimelineStep(1, 0, 0x3000100), TimelineStep(2, 0x3000100, 0x7800000), TimelineStep(3, 0x7800000, None)]


def test_each_segment_is_read_from_the_newest_timeline_begun_by_then() -> None:
    size = 16 * MIB
    assert [segment_timeline(PATH, number, size) for number in range(1, 10)] == [1, 1, 2, 2, 2, 2, 3, 3, 3]


def test_only_base_backups_on_the_target_timelines_way_are_chosen() -> None:
    on_one = base({"start_wal_location": "0/2000028", "start_timeline": "1"})
    parent_after_switch = base({"start_wal_location": "0/5000028", "start_timeline": "1"})
    on_two = base({"start_wal_location": "0/4000028", "start_timeline": "2"})
    sibling = base({"start_wal_location": "0/4000028", "start_timeline": "4"})
    backups = [on_one, parent_after_switch, on_two, sibling]
    assert on_path(backups, PATH) == [on_one, on_two]
    assert on_path(backups, None) == backups


def test_the_archive_command_runs_this_very_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from strongroom.services.pitr import wal_command

    script = tmp_path / "venv bin" / "strongroom"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.delenv("STRONGROOM_WAL_COMMAND", raising=False)
    monkeypatch.setattr(sys, "argv", [str(script), "wal", "setup"])
    assert shlex.split(wal_command()) == [str(script)]
    monkeypatch.setattr(sys, "argv", ["/src/strongroom/cli/main.py", "wal", "setup"])  # python -m strongroom…
    assert shlex.split(wal_command()) == [sys.executable, "-m", "strongroom"]
    monkeypatch.setenv("STRONGROOM_WAL_COMMAND", "/opt/sr/bin/strongroom")
    assert wal_command() == "/opt/sr/bin/strongroom"
