"""Point-in-time recovery of ``postgres-cluster`` resources: WAL set-up, archive status, restorable windows.

``wal setup`` writes the WAL credential file a cluster's ``archive_command`` uses (``wal_archive``) and says
which ``postgresql.conf`` lines to add. ``wal status`` reads the archive: per timeline the first and last
file, gaps, the last archived file's time and LSN, and, when the server answers, how far behind the
archive is. :func:`plan_recovery` turns a restore's target (a time, an LSN, a transaction id, a named
restore point, or the latest) into the base backup to start from and the window it must lie in, refusing
a target outside it before any job exists (docs/pitr.md).
"""

from __future__ import annotations

import itertools
import os
import shlex
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from strongroom.adapters.postgres.direct import format_lsn, parse_lsn
from strongroom.adapters.postgres.tools import OsUser, connect, parse_dsn, server_user
from strongroom.clock import now
from strongroom.errors import NotFoundError, RecoveryWindowError, SourceError, TargetError, UsageError
from strongroom.fsutil import write_durably
from strongroom.model import CONTINUOUS_MAX_DAYS, RecoveryPoint, RecoveryPointStatus, iso
from strongroom.services.account import Account
from strongroom.services.wal_archive import WalCredential
from strongroom.store.base import open_store
from strongroom.vault.wal import SEGMENT, WAL_PREFIX, WalArchive, WalKeys, list_systems

CLUSTER_TYPE = "postgres-cluster"
ENV_WAL_COMMAND = "STRONGROOM_WAL_COMMAND"  # how the server's OS user runs strongroom (default: this executable)
ARCHIVE_TIMEOUT = "60s"
SERVER_FACTS = """
SELECT (SELECT system_identifier FROM pg_control_system())::text, current_setting('wal_segment_size'),
       current_setting('archive_mode'), current_setting('archive_command'), pg_is_in_recovery()
"""
ARCHIVER = """
SELECT last_archived_wal, last_archived_time, last_failed_wal, last_failed_time, failed_count,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END
FROM pg_stat_archiver
"""


# Set-up -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WalSetup:
    resource_id: str
    vault_name: str
    system_identifier: str
    credential_file: Path
    settings: dict[str, str]
    notes: list[str]

    def conf_lines(self) -> str:
        return "".join(f"{key} = {quote_setting(value)}\n" for key, value in self.settings.items())


def quote_setting(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def credential_file(home: Path, resource_id: str) -> Path:
    from strongroom.services.resources import RESOURCE_ID

    if not RESOURCE_ID.match(resource_id):
        raise UsageError(f"'{resource_id}' is not a valid resource id", hint="see 'strongroom resources list'")
    return home / "wal" / f"{resource_id}.json"


def wal_command() -> str:
    """The command line that runs ``strongroom`` for the server's OS user (``STRONGROOM_WAL_COMMAND``)."""
    named = os.environ.get(ENV_WAL_COMMAND)
    if named:
        return named
    running = Path(sys.argv[0])
    if running.name == "strongroom" and os.access(running, os.X_OK):
        return shlex.quote(os.path.abspath(running))  # this very install, not whichever one PATH finds first
    return f"{shlex.quote(sys.executable)} -m strongroom"


def setup_wal(account: Account, resource_id: str, vault_name: str, os_user: str | None = None) -> WalSetup:
    """Write ``HOME/wal/RESOURCE.json`` (0600, owned by the server's OS user) and give the settings for it."""
    resource = account.catalog.get_resource(resource_id)
    if resource.type != CLUSTER_TYPE:
        raise UsageError(
            f"resource {resource_id} is a {resource.type}; WAL archiving is for {CLUSTER_TYPE} resources",
            hint="point-in-time recovery needs a physical cluster backup (docs/pitr.md)",
        )
    record = account.catalog.get_vault(vault_name)
    vault = account.vault(vault_name)
    dsn = parse_dsn(resource.settings["dsn"])
    with connect(dsn, None, SourceError) as conn:
        row = conn.execute(SERVER_FACTS).fetchone()
    assert row is not None
    system_identifier, _segment_size, archive_mode, archive_command, _standby = row
    user = server_user(os_user)
    from strongroom.services.object_lock import wal_lock_rule

    rule = wal_lock_rule(account, vault_name)  # a locked S3 vault: each pushed file under the lock's retention
    credential = WalCredential(
        resource_id, vault_name, record.store_url, WalKeys.derive(vault.keys, system_identifier), dsn.text,
        str(rule[0]) if rule else None, rule[1] if rule else None,
    )  # fmt: skip
    path = credential_file(account.home, resource_id)
    path.parent.mkdir(mode=0o711, exist_ok=True)
    write_durably(path, credential.to_json(), mode=0o600)
    notes = prepare_store(record.store_url, system_identifier, user)
    if user is not None:
        os.chown(path, user.uid, user.gid)
        if not user.can_traverse(path.parent):
            notes.append(f"the {user.name} OS user cannot reach {path}: make the directories above it searchable")
    command = f"{wal_command()} wal push --config {shlex.quote(str(path))} %p"
    settings = {"archive_mode": "on", "archive_command": command, "archive_timeout": ARCHIVE_TIMEOUT}
    if archive_mode not in ("on", "always"):
        notes.append("archive_mode is off on the server: changing it needs a restart")
    elif archive_command != command:
        notes.append("after changing archive_command, reload the server (SELECT pg_reload_conf())")
    return WalSetup(resource_id, vault_name, system_identifier, path, settings, notes)


def check_reachable(store_url: str, os_user: str | None) -> None:
    """Refuse a point-in-time restore whose local vault the restored server's OS user cannot reach: its
    restore_command would fail on the first WAL file (better now than after the base backup is unpacked)."""
    user = server_user(os_user)
    if user is None or not store_url.startswith("file://"):
        return
    root = Path(unquote(urlparse(store_url).path))
    if not user.can_traverse(root / "wal"):
        raise TargetError(
            f"the {user.name} OS user cannot reach the vault's WAL at {root / 'wal'}"
            "; restore_command runs as that user",
            hint="keep WAL in a vault that user can reach ('strongroom wal setup' prepares a local one; docs/pitr.md)",
        )


def grant_wal(store_url: str, system_identifier: str, os_user: str | None) -> None:
    """On a local vault, give the restored server's OS user the cluster's WAL it fetches (restore_command runs as
    that user): WAL this account's own ``serve`` received from a source account is this account's user's."""
    user = server_user(os_user)
    if user is None or not store_url.startswith("file://") or not system_identifier.isdigit():
        return
    top = Path(unquote(urlparse(store_url).path)) / WAL_PREFIX / system_identifier
    if not top.is_dir():
        return
    for directory, _subdirectories, files in os.walk(top):
        for path in (Path(directory), *(Path(directory) / name for name in files)):
            if path.lstat().st_uid != user.uid:
                os.lchown(path, user.uid, user.gid)


def prepare_store(store_url: str, system_identifier: str, user: OsUser | None) -> list[str]:
    """On a local vault, make the directories ``wal push`` writes (WAL and temporary files) the server user's."""
    if not store_url.startswith("file://") or user is None:
        return []
    root = Path(unquote(urlparse(store_url).path))
    for directory in (root / "tmp", root / "wal", root / WAL_PREFIX / system_identifier):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chown(directory, user.uid, user.gid)
    if not user.can_traverse(root):
        return [f"the {user.name} OS user cannot reach the vault at {root}: archiving will fail until it can"]
    return []


# Status -------------------------------------------------------------------------------------------


@dataclass
class TimelineStatus:
    timeline: str
    first: str | None
    last: str | None
    segments: int
    gaps: list[str] = field(default_factory=list)  # "FROM..TO" of missing segments


@dataclass
class WalStatus:
    resource_id: str
    vault_name: str
    system_identifier: str
    timelines: list[TimelineStatus]
    last_archived: str | None = None
    last_archived_lsn: str | None = None  # the end of the last archived segment
    last_archived_modified: str | None = None
    last_pushed_at: str | None = None
    server: dict[str, Any] | None = None  # pg_stat_archiver and the current LSN, when the server answers
    server_error: str | None = None
    lag_segments: int | None = None
    lag_seconds: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            **{key: value for key, value in self.__dict__.items() if key != "timelines"},
            "timelines": [timeline.__dict__ for timeline in self.timelines],
        }


def segment_number(name: str, segment_size: int) -> int:
    return int(name[8:16], 16) * (0x100000000 // segment_size) + int(name[16:24], 16)


def segment_name(timeline: str, number: int, segment_size: int) -> str:
    per_id = 0x100000000 // segment_size
    return f"{timeline}{number // per_id:08X}{number % per_id:08X}"


def wal_status(home: Path, resource_id: str) -> WalStatus:
    credential = WalCredential.load(credential_file(home, resource_id))
    archive = credential.archive()
    names = archive.names()
    segments = [name for name in names if SEGMENT.fullmatch(name)]
    size = archive.header(segments[-1]).size if segments else 16 << 20
    timelines = [timeline_status(tli, [n for n in segments if n.startswith(tli)], size) for tli in archive.timelines()]
    status = WalStatus(resource_id, credential.vault_name, credential.system_identifier, timelines)
    if segments:
        last = max(segments, key=lambda name: (segment_number(name, size), name))
        header = archive.header(last)
        status.last_archived = last
        status.last_archived_lsn = format_lsn((segment_number(last, size) + 1) * size)
        status.last_archived_modified, status.last_pushed_at = header.modified, header.pushed_at
        status.lag_seconds = round((now() - datetime.fromisoformat(header.modified)).total_seconds(), 1)
    if credential.dsn:
        read_server(status, credential.dsn, size)
    return status


def timeline_status(timeline: str, segments: list[str], size: int) -> TimelineStatus:
    numbers = sorted(segment_number(name, size) for name in segments)
    gaps = []
    for before, after in itertools.pairwise(numbers):
        if after > before + 1:
            gaps.append(f"{segment_name(timeline, before + 1, size)}..{segment_name(timeline, after - 1, size)}")
    return TimelineStatus(
        timeline, segments[0] if segments else None, segments[-1] if segments else None, len(segments), gaps
    )


def read_server(status: WalStatus, dsn_text: str, size: int) -> None:
    try:
        with connect(parse_dsn(dsn_text), None, SourceError) as conn:
            row = conn.execute(ARCHIVER).fetchone()
    except SourceError as exc:
        status.server_error = exc.one_line()
        return
    assert row is not None
    keys = (
        "last_archived_wal",
        "last_archived_time",
        "last_failed_wal",
        "last_failed_time",
        "failed_count",
        "current_lsn",
        "current_wal_file",
    )
    status.server = {
        key: iso(value) if isinstance(value, datetime) else value for key, value in zip(keys, row, strict=True)
    }
    current = status.server["current_wal_file"]
    if current and status.last_archived:
        # the segment being written is not archivable yet: lag counts the completed ones not archived
        status.lag_segments = max(0, segment_number(current, size) - segment_number(status.last_archived, size) - 1)


# Recovery targets and windows ----------------------------------------------------------------------


class TargetKind(StrEnum):
    TIME = "time"
    LSN = "lsn"
    XID = "xid"
    NAME = "name"
    LATEST = "latest"


@dataclass(frozen=True)
class RecoveryTarget:
    kind: TargetKind
    value: str | None = None
    timeline: str | None = None  # recovery_target_timeline: a number, 'latest'; None: the base backup's

    @classmethod
    def parse(
        cls,
        *,
        time: str | None,
        lsn: str | None,
        xid: str | None,
        name: str | None,
        latest: bool,
        timeline: str | None,
    ) -> RecoveryTarget | None:
        given = [
            (kind, value)
            for kind, value in (
                (TargetKind.TIME, time),
                (TargetKind.LSN, lsn),
                (TargetKind.XID, xid),
                (TargetKind.NAME, name),
                (TargetKind.LATEST, "latest" if latest else None),
            )
            if value is not None
        ]
        if len(given) > 1:
            raise UsageError(
                "give one of --restore-time, --lsn, --xid, --name and --latest",
                hint="a point-in-time restore stops at exactly one target",
            )
        if not given:
            if timeline is not None:
                raise UsageError("--timeline needs a target (--restore-time, --lsn, --xid, --name or --latest)")
            return None
        kind, value = given[0]
        check_timeline(timeline)
        if kind == TargetKind.TIME:
            value = iso(parse_time(value)) or value
        elif kind == TargetKind.LSN:
            try:
                value = format_lsn(parse_lsn(value))
            except ValueError:
                raise UsageError(
                    f"--lsn {value!r} is not an LSN", hint="write it as PostgreSQL does, e.g. 0/3000060"
                ) from None
        elif kind == TargetKind.XID and not value.isdigit():
            raise UsageError(f"--xid {value!r} is not a transaction id", hint="a number, e.g. from txid_current()")
        elif kind == TargetKind.NAME and (not value or len(value) >= 64 or "'" in value or "\n" in value):
            raise UsageError(
                f"--name {value!r} is not a restore point name", hint="the name given to pg_create_restore_point"
            )
        return cls(kind, None if kind == TargetKind.LATEST else value, timeline)

    @classmethod
    def of_options(cls, options: dict[str, Any]) -> RecoveryTarget:
        """The target a restore request's ``recovery`` option holds, checked and normalised as ``parse`` does."""
        kind, value = TargetKind(options["target"]), options.get("value")
        parsed = cls.parse(
            time=value if kind == TargetKind.TIME else None, lsn=value if kind == TargetKind.LSN else None,
            xid=value if kind == TargetKind.XID else None, name=value if kind == TargetKind.NAME else None,
            latest=kind == TargetKind.LATEST, timeline=options.get("timeline"),
        )  # fmt: skip
        assert parsed is not None
        return parsed

    def as_options(self) -> dict[str, Any]:
        return {"target": self.kind.value, "value": self.value, "timeline": self.timeline}


def check_timeline(timeline: str | None) -> None:
    if timeline is not None and timeline != "latest" and not (timeline.isdigit() and 0 < int(timeline) < 1 << 32):
        raise UsageError(f"--timeline {timeline!r} is not a timeline", hint="a number (e.g. 2) or 'latest'")


def parse_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--restore-time {text!r} is not an ISO 8601 time",
            hint="e.g. 2026-12-04T18:30:00Z (UTC unless an offset is given)",
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class RecoveryWindow:
    earliest: str  # the earliest base backup's completion
    latest: str | None  # the newest archived WAL (its last change), reachable without a gap; None: no WAL
    latest_lsn: str | None
    system_identifier: str

    def describe(self) -> str:
        return f"{self.earliest} .. {self.latest or '(no WAL archived yet)'}"


@dataclass(frozen=True)
class RecoveryPlan:
    base: RecoveryPoint  # the base backup the restore starts from
    window: RecoveryWindow
    target: RecoveryTarget


def base_backups(account: Account, point: RecoveryPoint, moment: datetime | None = None) -> list[RecoveryPoint]:
    """The base backups a point-in-time restore of ``point``'s resource may start from, oldest first: COMPLETED
    snapshots of the resource and cluster in its vault, from the anchor of the continuous window on
    (:func:`window_anchor`)."""
    system = point.metadata.get("system_identifier")
    found = [
        candidate
        for candidate in account.catalog.list_recovery_points(
            resource_id=point.resource_id, vault_name=point.vault_name, status=RecoveryPointStatus.COMPLETED
        )
        if candidate.resource_type == CLUSTER_TYPE
        and candidate.metadata.get("system_identifier") == system
        and not candidate.metadata.get("continuous")
    ]
    ordered = sorted(found, key=completed_at)
    continuous = continuous_points(account, point.resource_id, point.vault_name)
    if not continuous:
        return ordered
    days = int(continuous[0].metadata.get("window_days") or CONTINUOUS_MAX_DAYS)
    return from_anchor(ordered, (moment or now()) - timedelta(days=days))


def completed_at(point: RecoveryPoint) -> datetime:
    """When the cluster was as the base backup holds it. A copy's ``completion_date`` is when it arrived here,
    so a copied base backup counts from its ``creation_date``: the source's start of the backup (bounded by
    this account's clock when it arrived). A target in the seconds the backup ran is then refused by
    PostgreSQL itself (before the consistent point), never restored wrong."""
    if point.source_recovery_point_arn:
        return parse_time(point.creation_date)
    return parse_time(point.completion_date or point.creation_date)


def from_anchor(ordered: list[RecoveryPoint], opening: datetime) -> list[RecoveryPoint]:
    """The base backups a window opening at ``opening`` needs: the newest one finished by then (the anchor,
    so that ``opening`` itself stays restorable) and every later one."""
    before = [index for index, point in enumerate(ordered) if completed_at(point) <= opening]
    return ordered[before[-1] :] if before else ordered


def plan_recovery(account: Account, point: RecoveryPoint, target: RecoveryTarget) -> RecoveryPlan:
    """The base backup and window of a point-in-time restore; RecoveryWindowError outside the window."""
    if point.resource_type != CLUSTER_TYPE:
        raise UsageError(
            f"recovery point {point.id} is a {point.resource_type} point"
            f"; point-in-time targets need a {CLUSTER_TYPE} one"
        )
    system = str(point.metadata.get("system_identifier") or "")
    backups = base_backups(account, point)
    if not system or not backups:
        raise UsageError(f"recovery point {point.id} does not say which cluster it holds", hint="take a new backup")
    archive = WalArchive(
        open_store(account.catalog.get_vault(point.vault_name).store_url),
        WalKeys.derive(account.vault(point.vault_name).keys, system),
    )
    path = timeline_path(archive, int(target.timeline)) if target.timeline and target.timeline.isdigit() else None
    candidates = on_path(backups, path)
    if not candidates:
        raise RecoveryWindowError(
            f"no base backup of {point.resource_id} in vault {point.vault_name} is on timeline {target.timeline}'s way",
            hint="restore without --timeline, or take a base backup of the cluster that writes that timeline",
        )
    base = choose_base(candidates, point, target)
    window = recovery_window(archive, backups[0], base, path or timeline_path(archive, base_timeline(base)))
    check_in_window(window, base, target)
    return RecoveryPlan(base, window, target)


def choose_base(backups: list[RecoveryPoint], point: RecoveryPoint, target: RecoveryTarget) -> RecoveryPoint:
    """As pgBackRest: for a time, the newest base backup finished by then; for an LSN, the newest started
    before it; for the latest, the newest; for a transaction id or a name, the point given."""
    if target.kind == TargetKind.TIME:
        moment = parse_time(target.value or "")
        before = [b for b in backups if completed_at(b) <= moment]
        return before[-1] if before else backups[0]
    if target.kind == TargetKind.LSN:
        wanted = parse_lsn(target.value or "0/0")
        before = [b for b in backups if start_lsn(b) is not None and (start_lsn(b) or 0) <= wanted]
        return before[-1] if before else backups[0]
    if target.kind == TargetKind.LATEST:
        return backups[-1]
    return backups[0] if point.metadata.get("continuous") else point


def start_lsn(point: RecoveryPoint) -> int | None:
    label = point.metadata.get("backup_label") or {}
    text = str(label.get("start_wal_location") or "").split(" ")[0]
    try:
        return parse_lsn(text) if text else None
    except ValueError:
        return None


@dataclass(frozen=True)
class TimelineStep:
    """One timeline on the way to a recovery target: WAL from ``begin`` up to ``end`` (the switch point to the
    next timeline; None for the target's own timeline) is read from this timeline's files."""

    timeline: int
    begin: int
    end: int | None


def timeline_path(archive: WalArchive, timeline: int) -> list[TimelineStep]:
    """The timelines recovery onto ``timeline`` reads, oldest first, from its archived history file (lines of
    ``parentTLI switchpoint reason``, as PostgreSQL writes them). Without a history file: the timeline alone."""
    try:
        history = archive.fetch(f"{timeline:08X}.history").decode("utf-8", "replace") if timeline > 1 else ""
    except NotFoundError:
        history = ""
    steps, begin = [], 0
    for line in history.splitlines():
        fields = line.split()
        if len(fields) < 2 or not fields[0].isdigit():
            continue  # blank lines and comments, as PostgreSQL skips them
        switch = parse_lsn(fields[1])
        steps.append(TimelineStep(int(fields[0]), begin, switch))
        begin = switch
    return [*steps, TimelineStep(timeline, begin, None)]


def base_timeline(point: RecoveryPoint) -> int:
    label = point.metadata.get("backup_label") or {}
    return int(label.get("start_timeline") or 1)


def on_path(backups: list[RecoveryPoint], path: list[TimelineStep] | None) -> list[RecoveryPoint]:
    """The base backups recovery along ``path`` can start from: taken on one of its timelines before that
    timeline ended (a backup of a sibling timeline, or of a parent after the switch, cannot reach the target)."""
    if path is None:
        return backups
    found = []
    for backup in backups:
        begin = start_lsn(backup)
        step = next((step for step in path if step.timeline == base_timeline(backup)), None)
        if begin is not None and step is not None and step.begin <= begin and (step.end is None or begin < step.end):
            found.append(backup)
    return found


def segment_timeline(path: list[TimelineStep], number: int, size: int) -> int:
    """The timeline whose file holds segment ``number`` on ``path``: the newest one begun by then (the
    segment a switch happened in is read from the new timeline, as PostgreSQL does)."""
    return [step.timeline for step in path if step.begin // size <= number][-1]


def recovery_window(
    archive: WalArchive, earliest: RecoveryPoint, base: RecoveryPoint, path: list[TimelineStep]
) -> RecoveryWindow:
    """From the earliest base backup to the newest WAL reachable from ``base`` along ``path`` without a gap."""
    copied = earliest.source_recovery_point_arn  # as completed_at: a copy counts from the source's time
    opening = earliest.creation_date if copied else (earliest.completion_date or earliest.creation_date)
    begin = start_lsn(base)
    names = set(archive.names())
    segments = sorted(name for name in names if SEGMENT.fullmatch(name))
    if begin is None or not segments:
        return RecoveryWindow(opening, None, None, archive.system_identifier)
    size = archive.header(segments[-1]).size

    def file_of(number: int) -> str:
        return segment_name(f"{segment_timeline(path, number, size):08X}", number, size)

    current = begin // size
    if file_of(current) not in names:
        return RecoveryWindow(opening, None, None, archive.system_identifier)
    while file_of(current + 1) in names:
        current += 1
    header = archive.header(file_of(current))
    return RecoveryWindow(opening, header.modified, format_lsn((current + 1) * size), archive.system_identifier)


# The window's end is a file's mtime, which the kernel stamps from a coarse clock (a few ms behind): a target
# just after it may still be before the segment's last commit. PostgreSQL itself refuses one that is not.
MTIME_SLACK = timedelta(seconds=1)


def check_in_window(window: RecoveryWindow, base: RecoveryPoint, target: RecoveryTarget) -> None:
    message = None
    if window.latest is None:
        message = "no WAL is archived from the base backup on (is archive_command set? see 'strongroom wal status')"
    elif target.kind == TargetKind.TIME:
        moment = parse_time(target.value or "")
        if moment < parse_time(window.earliest):
            message = f"{target.value} is before the earliest base backup"
        elif moment > parse_time(window.latest) + MTIME_SLACK:
            message = f"{target.value} is after the newest archived WAL"
    elif target.kind == TargetKind.LSN:
        wanted, begin = parse_lsn(target.value or "0/0"), start_lsn(base)
        if begin is not None and wanted < begin:
            message = f"LSN {target.value} is before the earliest base backup"
        elif window.latest_lsn and wanted > parse_lsn(window.latest_lsn):
            message = f"LSN {target.value} is after the newest archived WAL"
    if message:
        raise RecoveryWindowError(
            f"cannot restore to that target: {message}; the restorable window is {window.describe()}"
            + (f" (LSN up to {window.latest_lsn})" if window.latest_lsn else ""),
            hint="choose a target inside the window ('strongroom wal status' shows the archive)",
        )


# Continuous recovery points (enable_continuous_backup) ----------------------------------------------


def continuous_points(account: Account, resource_id: str, vault_name: str) -> list[RecoveryPoint]:
    return [
        point
        for point in account.catalog.list_recovery_points(
            resource_id=resource_id, vault_name=vault_name, status=RecoveryPointStatus.COMPLETED
        )
        if point.metadata.get("continuous")
    ]


def window_days(delete_after_days: int | None) -> int:
    """The continuous window a rule's ``delete_after`` gives: at most 35 days, as AWS Backup."""
    return min(delete_after_days or CONTINUOUS_MAX_DAYS, CONTINUOUS_MAX_DAYS)


def ensure_continuous_point(
    account: Account, resource_id: str, vault_name: str, delete_after_days: int | None
) -> RecoveryPoint | None:
    """The resource's one continuous recovery point in the vault, made by a (data-less) backup job the first
    time; None for a resource type without WAL archiving (the rule's snapshots are all it gets)."""
    from strongroom.model import JobType
    from strongroom.services.job_runner import execute_job
    from strongroom.services.jobs import create_job

    resource = account.catalog.get_resource(resource_id)
    if resource.type != CLUSTER_TYPE:
        return None
    days = window_days(delete_after_days)
    existing = continuous_points(account, resource_id, vault_name)
    if existing:
        point = existing[0]
        if point.metadata.get("window_days") != days:
            account.catalog.update_recovery_point(point.id, metadata={**point.metadata, "window_days": days})
        return account.catalog.get_recovery_point(point.id)
    parameters = {"continuous": True, "window_days": days}
    job, lock = create_job(account, JobType.BACKUP, resource_id=resource_id, vault_name=vault_name,
                           parameters=parameters)  # fmt: skip
    done = execute_job(account, job, lock)
    return account.catalog.get_recovery_point(done.recovery_point_arn or "")


def continuous_metadata(
    account: Account, resource_id: str, vault_name: str, parameters: dict[str, Any]
) -> dict[str, Any]:
    """What the continuous point's manifest says: the cluster (its newest base backup's) and the window size."""
    backups = [
        point
        for point in account.catalog.list_recovery_points(
            resource_id=resource_id, vault_name=vault_name, status=RecoveryPointStatus.COMPLETED
        )
        if point.resource_type == CLUSTER_TYPE and not point.metadata.get("continuous")
    ]
    if not backups:
        raise SourceError(
            f"{resource_id} has no base backup in vault {vault_name} yet",
            hint="a continuous recovery point starts from a base backup: run 'strongroom backup start' first",
        )
    newest = max(backups, key=lambda point: point.completion_date or point.creation_date).metadata
    keep = ("server_version", "server_major", "system_identifier", "user", "server")
    return {**{key: newest.get(key) for key in keep}, "continuous": True, "window_days": int(parameters["window_days"])}


# Lifecycle: WAL no kept base backup needs ---------------------------------------------------------


def prune_wal(account: Account, vault_name: str, moment: datetime | None = None) -> list[dict[str, Any]]:
    """Delete archived WAL no kept base backup of its cluster needs; never WAL a kept one (or a continuous
    window) needs. Per cluster: what was kept from where, and how many files went (docs/pitr.md, lifecycle)."""
    record = account.catalog.get_vault(vault_name)
    store = open_store(record.store_url)
    systems = list_systems(store)
    if not systems:
        return []
    points = account.catalog.list_recovery_points(vault_name=vault_name, status=RecoveryPointStatus.COMPLETED)
    keys = account.vault(vault_name).keys
    reports = []
    for system in systems:
        needed = needed_backups(account, points, vault_name, system, moment or now())
        starts = [backup_start_of(point) for point in needed]
        if not needed or None in starts:
            reports.append(
                {"system_identifier": system, "deleted": 0, "kept": "all (no base backup says where to start)"}
            )
            continue
        archive = WalArchive(store, WalKeys.derive(keys, system))
        reports.append(prune_system(archive, [start for start in starts if start is not None]))
    return reports


def needed_backups(
    account: Account, points: list[RecoveryPoint], vault_name: str, system: str, moment: datetime
) -> list[RecoveryPoint]:
    backups = [
        point
        for point in points
        if point.resource_type == CLUSTER_TYPE
        and point.metadata.get("system_identifier") == system
        and not point.metadata.get("continuous")
    ]
    needed: list[RecoveryPoint] = []
    for resource_id in sorted({point.resource_id for point in backups}):
        ordered = sorted((point for point in backups if point.resource_id == resource_id), key=completed_at)
        continuous = continuous_points(account, resource_id, vault_name)
        if continuous:
            days = int(continuous[0].metadata.get("window_days") or CONTINUOUS_MAX_DAYS)
            ordered = from_anchor(ordered, moment - timedelta(days=days))
        needed += ordered
    return needed


def backup_start_of(point: RecoveryPoint) -> tuple[int, int] | None:
    """(timeline, start LSN) of a base backup, from its backup_label."""
    label = point.metadata.get("backup_label") or {}
    begin = start_lsn(point)
    if begin is None or not str(label.get("start_timeline") or "").isdigit():
        return None
    return int(label["start_timeline"]), begin


def prune_system(archive: WalArchive, starts: list[tuple[int, int]]) -> dict[str, Any]:
    names = archive.names()
    segments = [name for name in names if SEGMENT.fullmatch(name)]
    if not segments:
        return {"system_identifier": archive.system_identifier, "deleted": 0, "kept": "all"}
    size = archive.header(segments[-1]).size

    def needed(name: str) -> bool:  # on the backup's timeline or a later one, from its start segment on
        number = segment_number(name[:24], size)
        return any(int(name[:8], 16) >= timeline and number >= begin // size for timeline, begin in starts)

    doomed = [name for name in names if not name.endswith(".history") and not needed(name)]
    removal = archive.remove(doomed)
    earliest = min(starts, key=lambda start: start[1])
    report: dict[str, Any] = {
        "system_identifier": archive.system_identifier,
        "deleted": removal.deleted,
        "kept_from": segment_name(f"{earliest[0]:08X}", earliest[1] // size, size),
    }
    if removal.retained:  # a locked vault's WAL (Object Lock): deleted by a run after its retention ends
        report["retained"] = removal.retained
        report["retained_until"] = iso(removal.retained_until)
    return report
