"""Direct base backups: a cluster on this machine, its files read between pg_backup_start and _stop.

``pg_basebackup`` sends every file through one walsender and the replication protocol; when the data
directory is on the machine Strongroom runs on, reading its files directly costs a fraction of that
CPU (``docs/performance.md``). The result is the same ``base.tar`` stream ``pg_basebackup --format=tar
--wal-method=fetch`` writes to stdout, so restore, copies and verification do not know the difference:

1. a temporary physical replication slot pins the WAL from now on (dropped with the session);
2. ``pg_backup_start(label, fast => true)`` (non-exclusive: if the session dies, the server ends the
   backup; nothing is left behind);
3. the data directory is walked in name order and written as tar members, with pg_basebackup's
   exclusions (``pg_wal`` and the runtime directories' contents, ``postmaster.pid``, temporary files,
   unlogged relations except their init forks); ``global/pg_control`` goes last. A file that shrinks
   while it is read is padded with zeros and one that grows is cut at the size first seen, as
   pg_basebackup does: WAL replay rewrites every page changed during the backup;
4. ``pg_backup_stop(wait_for_archive => false)`` gives ``backup_label`` (and ``tablespace_map``);
5. the WAL from the backup's start to its end is read from ``pg_wal`` (kept by the slot), with the
   timeline history files;
6. a ``backup_manifest`` in PostgreSQL's format (version 1, without per-file checksums: the vault
   authenticates every byte) lists every file and the WAL range, so ``pg_verifybackup`` can check a
   restored copy.

It needs what ``pg_basebackup`` needs (a role with REPLICATION) plus EXECUTE on ``pg_backup_start``
and ``pg_backup_stop``, ``pg_read_all_settings`` (to learn the data directory) and read access to the
files; the server must be a primary of PostgreSQL 15 or newer without extra tablespaces. ``eligibility``
says why a cluster does not qualify, so ``method: auto`` can fall back to pg_basebackup.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import stat
import struct
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from strongroom.errors import SourceError

BLOCK = 512
MIN_VERSION_NUM = 150000
# Directories whose contents pg_basebackup leaves out (kept as empty directories).
SKIP_CONTENTS = frozenset({
    "pg_wal", "pg_stat_tmp", "pg_replslot", "pg_dynshmem", "pg_notify", "pg_serial", "pg_snapshots",
    "pg_subtrans",
})  # fmt: skip
SKIP_FILES = frozenset({
    "postgresql.auto.conf.tmp", "current_logfiles", "current_logfiles.tmp", "backup_label", "tablespace_map",
    "backup_manifest", "postmaster.pid", "postmaster.opts", "pg_internal.init",
})  # fmt: skip
TEMP_PREFIX = "pgsql_tmp"
CONTROL_FILE = "global/pg_control"
RELATION_FILE = re.compile(r"(\d+)(?:_(?:fsm|vm|init))?(?:\.\d+)?")
WAL_SEGMENT = re.compile(r"[0-9A-F]{24}")
TIMELINE = re.compile(r"^START TIMELINE: (\d+)$", re.MULTILINE)
START_LOCATION = re.compile(r"^START WAL LOCATION: ([0-9A-F]+/[0-9A-F]+)", re.MULTILINE)

ELIGIBILITY = """
SELECT current_setting('server_version_num')::int,
       CASE WHEN pg_has_role('pg_read_all_settings', 'USAGE') THEN current_setting('data_directory') END,
       current_setting('wal_segment_size'),
       pg_is_in_recovery(),
       (SELECT system_identifier FROM pg_control_system())::text,
       (SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user),
       CASE WHEN current_setting('server_version_num')::int >= 150000
         THEN has_function_privilege('pg_catalog.pg_backup_start(text, boolean)', 'EXECUTE')
              AND has_function_privilege('pg_catalog.pg_backup_stop(boolean)', 'EXECUTE')
         ELSE false END,
       (SELECT count(*) FROM pg_replication_slots) < current_setting('max_replication_slots')::int
"""


@dataclass(frozen=True)
class LocalCluster:
    """A cluster whose data directory this process can read."""

    data_dir: Path
    wal_segment_size: int


def eligibility(conn: psycopg.Connection[Any]) -> LocalCluster | str:
    """The local cluster behind ``conn``, or why it cannot be backed up directly."""
    row = conn.execute(ELIGIBILITY).fetchone()
    assert row is not None
    version_num, data_dir, segment_size, in_recovery, system_identifier, replication, may_backup, free_slot = row
    if version_num < MIN_VERSION_NUM:
        return "the server is older than PostgreSQL 15"
    if in_recovery:
        return "the server is a standby"
    if not replication:
        return "the role has no REPLICATION attribute"
    if not may_backup:
        return "the role may not execute pg_backup_start and pg_backup_stop"
    if not free_slot:
        return "no replication slot is free (max_replication_slots)"
    if not data_dir:
        return "the role cannot read the data_directory setting (grant pg_read_all_settings)"
    root = Path(data_dir)
    try:
        with open(root / CONTROL_FILE, "rb") as control:
            local_identifier = struct.unpack("=Q", control.read(8))[0]
    except OSError as exc:
        return f"its data directory {root} is not readable here ({exc.strerror})"
    if str(local_identifier) != system_identifier:
        return f"{root} on this machine belongs to another cluster"
    tablespaces = root / "pg_tblspc"
    if tablespaces.is_dir() and any(tablespaces.iterdir()):
        return "the cluster has extra tablespaces"
    return LocalCluster(root, parse_size(segment_size))


def parse_size(setting: str) -> int:
    units = {"B": 1, "kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}
    found = re.fullmatch(r"(\d+)\s*(B|kB|MB|GB)?", setting.strip())
    if not found:
        raise SourceError(f"unexpected wal_segment_size '{setting}'", hint="")
    return int(found.group(1)) * units[found.group(2) or "B"]


def parse_lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def wal_segment_names(timeline: int, start_lsn: int, end_lsn: int, segment_size: int) -> list[str]:
    """The WAL files holding ``[start_lsn, end_lsn)`` on ``timeline``."""
    per_id = 0x100000000 // segment_size
    first, last = start_lsn // segment_size, max(start_lsn, end_lsn - 1) // segment_size
    return [f"{timeline:08X}{segno // per_id:08X}{segno % per_id:08X}" for segno in range(first, last + 1)]


# The tar stream ------------------------------------------------------------------------------------


class _Piece:
    def fill(self, view: memoryview) -> int:  # bytes written into view; 0 when exhausted
        raise NotImplementedError

    def release(self) -> None:
        """Free what the piece holds (a stream abandoned halfway)."""


class _Bytes(_Piece):
    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)

    def fill(self, view: memoryview) -> int:
        count = min(len(view), len(self._data))
        view[:count] = self._data[:count]
        self._data = self._data[count:]
        return count


class _File(_Piece):
    """``size`` bytes of an open file: zeros past its end if it shrank, nothing past ``size`` if it grew."""

    def __init__(self, handle: io.FileIO, size: int) -> None:
        self._handle, self._left = handle, size

    def fill(self, view: memoryview) -> int:
        if self._left == 0:
            self._handle.close()
            return 0
        want = view[: min(len(view), self._left)]
        count = 0 if self._handle.closed else self._handle.readinto(want)
        if not count:  # the file shrank while it was read: pad
            self._handle.close()
            count = len(want)
            want[:] = bytes(count)
        self._left -= count
        return count

    def release(self) -> None:
        self._handle.close()


class TarStream(io.RawIOBase):
    """A file-like object over tar pieces produced on demand."""

    def __init__(self, pieces: Iterator[_Piece]) -> None:
        self._pieces = pieces
        self._current: _Piece | None = None

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if self._current is not None:
            self._current.release()
            self._current = None
        self._pieces.close()  # type: ignore[attr-defined]
        super().close()

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view):
            if self._current is None:
                self._current = next(self._pieces, None)
                if self._current is None:
                    break
            count = self._current.fill(view[filled:])
            if count == 0:
                self._current = None
            filled += count
        return filled


@dataclass
class ManifestEntry:
    path: str
    size: int
    mtime: float


def header(name: str, st: os.stat_result | None, *, size: int = 0, directory: bool = False) -> bytes:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.size = 0 if directory else size
    info.mode = stat.S_IMODE(st.st_mode) if st else 0o600
    info.mtime = int(st.st_mtime) if st else int(time.time())
    info.uid, info.gid = (st.st_uid, st.st_gid) if st else (os.getuid(), os.getgid())
    return info.tobuf(format=tarfile.GNU_FORMAT, encoding="utf-8", errors="surrogateescape")


def padding(size: int) -> bytes:
    return bytes(-size % BLOCK)


@dataclass
class StopResult:
    stop_lsn: int
    label: str
    tablespace_map: str


class DirectBackup:
    """The pieces of the tar stream for one backup; ``stop`` ends the backup on the server."""

    def __init__(self, cluster: LocalCluster, stop: Callable[[], StopResult]) -> None:
        self.cluster = cluster
        self._stop = stop
        self.files: list[ManifestEntry] = []
        self.wal_segments: list[str] = []
        self.skipped: list[str] = []  # vanished while the backup ran

    def pieces(self) -> Iterator[_Piece]:
        yield from self._walk(self.cluster.data_dir, "")
        yield from self._file(CONTROL_FILE)
        result = self._stop()
        yield from self._text("backup_label", result.label)
        if result.tablespace_map:
            yield from self._text("tablespace_map", result.tablespace_map)
        yield from self._wal(result)
        yield from self._manifest(result)
        yield _Bytes(bytes(2 * BLOCK))

    def _walk(self, directory: Path, prefix: str) -> Iterator[_Piece]:
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise unreadable(prefix.rstrip("/") or ".", exc) from None
        init_forks = _init_forks(names) if prefix.startswith("base/") else set()
        for name in names:
            relative = f"{prefix}{name}"
            if name in SKIP_FILES or name.startswith(TEMP_PREFIX) or relative == CONTROL_FILE:
                continue
            if _unlogged(name, init_forks):
                continue
            path = directory / name
            try:
                st = path.lstat()
            except FileNotFoundError:
                self.skipped.append(relative)
                continue
            if stat.S_ISDIR(st.st_mode) or (relative == "pg_wal" and stat.S_ISLNK(st.st_mode)):
                yield _Bytes(header(relative + "/", path.stat(), directory=True))
                if relative == "pg_wal":
                    yield _Bytes(header("pg_wal/archive_status/", path.stat(), directory=True))
                elif name not in SKIP_CONTENTS or prefix:
                    yield from self._walk(path, relative + "/")
            elif stat.S_ISREG(st.st_mode):
                yield from self._file(relative)
            elif stat.S_ISLNK(st.st_mode):
                raise SourceError(
                    f"the data directory holds a symbolic link {relative}",
                    hint="set method: pg_basebackup for this resource, or replace the link with its target",
                )

    def _file(self, relative: str, *, in_manifest: bool = True) -> Iterator[_Piece]:
        try:
            handle = open(self.cluster.data_dir / relative, "rb", buffering=0)  # noqa: SIM115 (closed by _File)
        except FileNotFoundError:
            self.skipped.append(relative)
            return
        except OSError as exc:
            raise unreadable(relative, exc) from None
        st = os.fstat(handle.fileno())
        if in_manifest:
            self.files.append(ManifestEntry(relative, st.st_size, st.st_mtime))
        try:
            yield _Bytes(header(relative, st, size=st.st_size))
            yield _File(handle, st.st_size)
            yield _Bytes(padding(st.st_size))
        finally:
            handle.close()

    def _text(self, relative: str, text: str) -> Iterator[_Piece]:
        data = text.encode()
        now = time.time()
        self.files.append(ManifestEntry(relative, len(data), now))
        yield _Bytes(header(relative, None, size=len(data)) + data + padding(len(data)))

    def _wal(self, result: StopResult) -> Iterator[_Piece]:
        timeline, start_lsn = backup_start(result.label)
        wal_dir = self.cluster.data_dir / "pg_wal"
        names = wal_segment_names(timeline, start_lsn, result.stop_lsn, self.cluster.wal_segment_size)
        history = sorted(name for name in os.listdir(wal_dir) if name.endswith(".history"))
        for name in names:
            segment = wal_dir / name
            if not segment.is_file() or segment.stat().st_size != self.cluster.wal_segment_size:
                raise SourceError(
                    f"WAL segment {name} needed by the backup is missing or incomplete in {wal_dir}",
                    hint="the WAL was removed while the backup ran; check the server's WAL settings and retry",
                )
        for name in [*names, *history]:
            self.wal_segments.append(name)
            yield from self._file(f"pg_wal/{name}", in_manifest=False)

    def _manifest(self, result: StopResult) -> Iterator[_Piece]:
        data = backup_manifest(self.files, result)
        self.files.append(ManifestEntry("backup_manifest", len(data), time.time()))
        yield _Bytes(header("backup_manifest", None, size=len(data)) + data + padding(len(data)))


def unreadable(relative: str, exc: OSError) -> SourceError:
    return SourceError(
        f"cannot read {relative} in the data directory: {exc.strerror}",
        hint="give Strongroom read access to the data directory, or set method: pg_basebackup",
    )


def _unlogged(name: str, init_forks: set[str]) -> bool:
    """A fork of an unlogged relation other than its init fork (recovery rebuilds it from that)."""
    found = RELATION_FILE.fullmatch(name)
    return bool(found and found.group(1) in init_forks and not name.endswith("_init"))


def _init_forks(names: list[str]) -> set[str]:
    return {name[: -len("_init")] for name in names if name.endswith("_init") and name[:-5].isdigit()}


def backup_start(label: str) -> tuple[int, int]:
    timeline, start = TIMELINE.search(label), START_LOCATION.search(label)
    if not timeline or not start:
        raise SourceError("pg_backup_stop returned a backup_label without its start", hint="")
    return int(timeline.group(1)), parse_lsn(start.group(1))


def backup_manifest(files: list[ManifestEntry], result: StopResult) -> bytes:
    """PostgreSQL's backup manifest (version 1), byte for byte as the server writes it, minus checksums."""
    entries = []
    for entry in files:
        modified = time.strftime("%Y-%m-%d %H:%M:%S GMT", time.gmtime(entry.mtime))
        path = json.dumps(entry.path, ensure_ascii=False)
        entries.append(f'{{ "Path": {path}, "Size": {entry.size}, "Last-Modified": "{modified}" }}')
    timeline, start_lsn = backup_start(result.label)
    body = (
        '{ "PostgreSQL-Backup-Manifest-Version": 1,\n"Files": [\n' + ",\n".join(entries) + "\n],\n"
        '"WAL-Ranges": [\n'
        f'{{ "Timeline": {timeline}, "Start-LSN": "{format_lsn(start_lsn)}", '
        f'"End-LSN": "{format_lsn(result.stop_lsn)}" }}\n],\n'
    ).encode()
    return body + f'"Manifest-Checksum": "{hashlib.sha256(body).hexdigest()}"}}\n'.encode()


def run_direct_backup(
    conn: psycopg.Connection[Any], cluster: LocalCluster, label: str, consume: Callable[[io.RawIOBase], None]
) -> DirectBackup:
    """Hold a backup open on ``conn`` while ``consume`` reads the tar stream to its end."""
    slot = f"strongroom_{secrets.token_hex(6)}"
    conn.execute("SELECT pg_create_physical_replication_slot(%s, true, true)", (slot,))
    conn.execute("SELECT pg_backup_start(%s, true)", (label,))

    def stop() -> StopResult:
        row = conn.execute("SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(false)").fetchone()
        assert row is not None
        return StopResult(parse_lsn(row[0]), row[1], row[2] or "")

    backup = DirectBackup(cluster, stop)
    with TarStream(backup.pieces()) as stream:
        consume(stream)
    return backup
