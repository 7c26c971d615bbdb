"""The ``directory`` resource type: a file tree with its metadata.

Backup walks the tree (names sorted by their bytes, symlinks never followed) and writes two streams:

- ``data``: the content of every regular file, each file chunked on its own, in walk order. It lists
  every chunk the files need, so verification and garbage collection see them;
- ``tree``: JSON lines, one record per entry in walk order (a directory always before its content).

Tree record fields: ``path`` (relative, ``/``-separated, ``"."`` for the root; names that are not
UTF-8 are kept with surrogate escapes), ``type`` (dir | file | symlink | hardlink | fifo), ``mode``
(the full ``st_mode``), ``uid``, ``gid``, ``user``, ``group``, ``atime_ns``, ``mtime_ns``,
``ctime_ns``, ``inode``; files add ``size`` and ``chunks`` (``[[hex id, size], ...]``) and maybe
``unsettled`` (never reuse); symlinks add ``target``; hard links only carry ``link``, the first path
of their inode.

Decisions:

- an entry that cannot be read (permission denied, I/O error) fails the backup with a SourceError
  naming it: a backup tool must not silently skip data. Entries that vanish during the walk,
  sockets and device files are skipped with a warning in the metadata (100 listed, all counted);
- a file whose size, mtime, ctime and inode match the previous recovery point is not read: its
  chunks are referenced again. A file whose ctime lies within ``RACY_WINDOW_NS`` of the moment it
  was read is marked unsettled and re-read next time, because a second change within the same
  timestamp tick would otherwise go unseen;
- a file that changes while it is read is stored as read, with a warning, and marked unsettled;
- a previous recovery point whose tree cannot be read only costs time: every file is read again;
- owners are always recorded and restored only when running as root.

Restore refuses records whose path is absolute, has ``.``/``..``/empty components, or lies under
anything but a directory this restore created or checked, so a forged tree cannot write outside
the target (a symlink in the tree is never traversed).
"""

from __future__ import annotations

import errno
import grp
import io
import json
import os
import pwd
import secrets
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, BinaryIO, ClassVar

from strongroom.adapters.base import (
    BackupContext,
    ResourceAdapter,
    ResourceSpec,
    RestoreContext,
    RestoreRequest,
    RestoreResult,
    register_adapter,
)
from strongroom.errors import (
    ConfigError,
    FormatError,
    IntegrityError,
    SourceError,
    StrongroomError,
    TargetError,
    TargetNotEmptyError,
)
from strongroom.vault.manifest import ChunkRef
from strongroom.vault.reader import RecoveryPointReader
from strongroom.vault.writer import RecoveryPointWriter

TREE_FORMAT = 1
SPOOL_MAX_BYTES = 16 * 1024 * 1024  # tree records stay in memory up to this size, then spill to temp_dir
MAX_WARNINGS = 100
RACY_WINDOW_NS = 1_000_000_000  # covers 1 s timestamp granularity (ext3, some network filesystems)
_O_NOATIME = getattr(os, "O_NOATIME", 0)
_SETTINGS = ("path", "one_file_system")
_BACKUP_COUNTS = (
    *("files", "dirs", "symlinks", "hardlinks", "fifos", "bytes"),
    *("files_reused", "files_read", "files_changed", "skipped"),
)
_FORGED_HINT = "The recovery point is damaged or forged; nothing was written outside the target"


# Settings -------------------------------------------------------------------------------------
def _settings(raw: dict[str, Any], error: type[StrongroomError]) -> dict[str, Any]:
    unknown = sorted(set(raw) - set(_SETTINGS))
    if unknown:
        raise ConfigError(f"unknown directory setting '{unknown[0]}'", hint=f"Known settings: {', '.join(_SETTINGS)}")
    settings: dict[str, Any] = {"path": _check_root(raw.get("path"), error)}
    if "one_file_system" in raw:  # optional, default false; only stored when given
        if not isinstance(raw["one_file_system"], bool):
            raise ConfigError("directory setting one_file_system must be true or false")
        settings["one_file_system"] = raw["one_file_system"]
    return settings


def _check_root(value: Any, error: type[StrongroomError]) -> str:
    if not isinstance(value, str) or not value:
        raise error("a directory resource needs a 'path' setting", hint="Set path to an absolute directory path")
    if not os.path.isabs(value):
        raise error(f"directory path '{value}' is not absolute", hint="Give the full path, starting with /")
    if not os.path.isdir(value):
        problem = "is not a directory" if os.path.lexists(value) else "does not exist"
        raise error(f"directory path {value} {problem}", hint="Check the path, or create the directory first")
    return os.path.normpath(value)


# Backup ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Previous:
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    chunks: list[list[Any]]


def _load_previous(previous: RecoveryPointReader | None, root: str) -> dict[str, _Previous] | None:
    """Files of the previous recovery point that may be reused, by path; None if it is damaged."""
    if previous is None or "tree" not in previous.manifest.streams:
        return {}
    if previous.manifest.metadata.get("source_path") != root:
        return {}
    found: dict[str, _Previous] = {}
    try:
        for record in _tree_records(previous):
            if record.get("type") != "file" or record.get("unsettled"):
                continue
            with suppress(KeyError, TypeError):
                found[record["path"]] = _Previous(
                    record["size"], record["mtime_ns"], record["ctime_ns"], record["inode"], record["chunks"]
                )
    except StrongroomError:
        return None  # a damaged previous recovery point must not block new backups: read every file
    return found


def _tree_records(reader: RecoveryPointReader) -> Iterator[dict[str, Any]]:
    with io.TextIOWrapper(reader.open_stream("tree"), encoding="utf-8", newline="\n") as lines:
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
            except ValueError:
                raise IntegrityError(f"tree record {number} is not valid JSON", hint=_FORGED_HINT) from None
            if not isinstance(record, dict):
                raise IntegrityError(f"tree record {number} is not an object", hint=_FORGED_HINT)
            yield record


class _OwnerNames:
    """uid/gid to names, looked up once each; None when the system has no name."""

    def __init__(self) -> None:
        self._users: dict[int, str | None] = {}
        self._groups: dict[int, str | None] = {}

    def user(self, uid: int) -> str | None:
        if uid not in self._users:
            try:
                self._users[uid] = pwd.getpwuid(uid).pw_name
            except KeyError:
                self._users[uid] = None
        return self._users[uid]

    def group(self, gid: int) -> str | None:
        if gid not in self._groups:
            try:
                self._groups[gid] = grp.getgrgid(gid).gr_name
            except KeyError:
                self._groups[gid] = None
        return self._groups[gid]


def _unreadable(rel: str, exc: OSError) -> SourceError:
    return SourceError(
        f"cannot read '{rel}': {exc.strerror or exc}",
        hint="Give the backup user read access (or run it as root); Strongroom never skips data silently",
    )


class _Scanner:
    """One walk of the source tree: writes tree records to ``out`` and file content to the data stream."""

    def __init__(
        self, root: str, writer: RecoveryPointWriter, previous: dict[str, _Previous], one_fs: bool, out: BinaryIO
    ) -> None:
        self.root = root
        self.writer = writer
        self.builder = writer.stream()
        self.previous = previous
        self.one_file_system = one_fs
        self.out = out
        self.owners = _OwnerNames()
        self.links: dict[tuple[int, int], str] = {}
        self.warnings: list[str] = []
        self.warnings_total = 0
        self.root_dev = 0
        self.counts = dict.fromkeys(_BACKUP_COUNTS, 0)

    def run(self) -> None:
        try:
            info = os.stat(self.root)
        except OSError as exc:
            raise _unreadable(".", exc) from exc
        self.root_dev = info.st_dev
        self._emit(self._base(".", info, "dir"))
        self.counts["dirs"] += 1
        stack = ["."]
        while stack:
            stack.extend(reversed(self._scan_dir(stack.pop())))

    def metadata(self) -> dict[str, Any]:
        return {
            "tree_format": TREE_FORMAT,
            "source_path": self.root,
            **self.counts,
            "warnings": self.warnings,
            "warnings_total": self.warnings_total,
        }

    # Walking -------------------------------------------------------------------------------------
    def _abs(self, rel: str) -> str:
        return self.root if rel == "." else os.path.join(self.root, rel)

    def warn(self, message: str) -> None:
        self.warnings_total += 1
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(message)

    def _skip(self, rel: str, why: str) -> None:
        self.counts["skipped"] += 1
        self.warn(f"{rel}: {why}; skipped")

    def _scan_dir(self, rel: str) -> list[str]:
        """Record every entry of one directory; return its subdirectories to descend into, in order."""
        subdirs = []
        for name, info in self._list(rel):
            child = name if rel == "." else f"{rel}/{name}"
            if self._add(child, info):
                subdirs.append(child)
        return subdirs

    def _list(self, rel: str) -> list[tuple[str, os.stat_result]]:
        try:
            fd = os.open(self._abs(rel), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            self._skip(rel, "vanished during the backup")
            return []
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                self._skip(rel, "stopped being a directory during the backup")
                return []
            raise _unreadable(rel, exc) from exc
        try:
            return self._list_fd(rel, fd)
        finally:
            os.close(fd)

    def _list_fd(self, rel: str, fd: int) -> list[tuple[str, os.stat_result]]:
        listed = []
        try:
            with os.scandir(fd) as entries:
                for entry in sorted(entries, key=lambda e: os.fsencode(e.name)):
                    try:
                        listed.append((entry.name, entry.stat(follow_symlinks=False)))
                    except FileNotFoundError:
                        self._skip(entry.name if rel == "." else f"{rel}/{entry.name}", "vanished during the backup")
        except OSError as exc:
            raise _unreadable(rel, exc) from exc
        return listed

    def _add(self, rel: str, info: os.stat_result) -> bool:
        """Record one entry; True when it is a directory to descend into."""
        mode = info.st_mode
        if stat.S_ISDIR(mode):
            return self._add_dir(rel, info)
        key = (info.st_dev, info.st_ino)
        if info.st_nlink > 1 and key in self.links:
            self._emit({"path": rel, "type": "hardlink", "link": self.links[key]})
            self.counts["hardlinks"] += 1
            return False
        record = self._record(rel, info)
        if record is None:
            return False
        self._emit(record)
        if info.st_nlink > 1:
            self.links[(info.st_dev, record["inode"])] = rel
        return False

    def _add_dir(self, rel: str, info: os.stat_result) -> bool:
        self._emit(self._base(rel, info, "dir"))
        self.counts["dirs"] += 1
        if self.one_file_system and info.st_dev != self.root_dev:
            self.warn(f"{rel}: another filesystem is mounted here; its content was not backed up")
            return False
        return True

    def _record(self, rel: str, info: os.stat_result) -> dict[str, Any] | None:
        mode = info.st_mode
        if stat.S_ISREG(mode):
            return self._file(rel, info)
        if stat.S_ISLNK(mode):
            return self._symlink(rel, info)
        if stat.S_ISFIFO(mode):
            self.counts["fifos"] += 1
            return self._base(rel, info, "fifo")
        kind = "socket" if stat.S_ISSOCK(mode) else "device file" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else ""
        self._skip(rel, f"is a {kind or 'special file'}, which is not backed up")
        return None

    def _symlink(self, rel: str, info: os.stat_result) -> dict[str, Any] | None:
        try:
            target = os.readlink(self._abs(rel))
        except FileNotFoundError:
            self._skip(rel, "vanished during the backup")
            return None
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                self._skip(rel, "stopped being a symlink during the backup")
                return None
            raise _unreadable(rel, exc) from exc
        self.counts["symlinks"] += 1
        return {**self._base(rel, info, "symlink"), "target": target}

    def _base(self, rel: str, info: os.stat_result, kind: str) -> dict[str, Any]:
        return {
            "path": rel,
            "type": kind,
            "mode": info.st_mode,
            "uid": info.st_uid,
            "gid": info.st_gid,
            "user": self.owners.user(info.st_uid),
            "group": self.owners.group(info.st_gid),
            "atime_ns": info.st_atime_ns,
            "mtime_ns": info.st_mtime_ns,
            "ctime_ns": info.st_ctime_ns,
            "inode": info.st_ino,
        }

    def _emit(self, record: dict[str, Any]) -> None:
        self.out.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")

    # Files ---------------------------------------------------------------------------------------
    def _file(self, rel: str, info: os.stat_result) -> dict[str, Any] | None:
        record = self._reuse(rel, info)
        if record is None:
            record = self._read(rel)
        if record is not None:
            self.counts["files"] += 1
            self.counts["bytes"] += record["size"]
        return record

    def _reuse(self, rel: str, info: os.stat_result) -> dict[str, Any] | None:
        """The record of an unchanged file whose chunks are all still in the vault, else None."""
        prev = self.previous.pop(rel, None)
        if prev is None:
            return None
        if (prev.size, prev.mtime_ns, prev.ctime_ns, prev.inode) != _identity(info):
            return None
        try:
            refs = [ChunkRef(bytes.fromhex(chunk_id), int(size)) for chunk_id, size in prev.chunks]
        except (TypeError, ValueError):
            return None
        if sum(ref.size for ref in refs) != info.st_size or not self.writer.reference_existing(refs):
            return None
        self.builder.append_refs(refs)
        self.counts["files_reused"] += 1
        return {**self._base(rel, info, "file"), "size": info.st_size, "chunks": prev.chunks}

    def _read(self, rel: str) -> dict[str, Any] | None:
        started_ns = time.time_ns()
        fd = self._open(rel)
        if fd is None:
            return None
        with open(fd, "rb", buffering=0) as handle:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                self._skip(rel, "stopped being a regular file during the backup")
                return None
            try:
                refs = self.builder.write_from(handle)
            except OSError as exc:
                raise _unreadable(rel, exc) from exc
            after = os.fstat(fd)
        self.counts["files_read"] += 1
        size = sum(ref.size for ref in refs)
        record = {**self._base(rel, before, "file"), "size": size, "chunks": [[r.id.hex(), r.size] for r in refs]}
        changed = size != before.st_size or _changed(before, after)
        if changed:
            self.counts["files_changed"] += 1
            self.warn(f"{rel}: changed while it was read; stored as read")
        if changed or before.st_ctime_ns >= started_ns - RACY_WINDOW_NS:
            record["unsettled"] = True
        return record

    def _open(self, rel: str) -> int | None:
        # O_NONBLOCK: never hang on a fifo swapped in after the scan; O_NOFOLLOW: never read through a symlink.
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        path = self._abs(rel)
        try:
            try:
                return os.open(path, flags | _O_NOATIME)
            except PermissionError:
                if not _O_NOATIME:
                    raise
                return os.open(path, flags)  # O_NOATIME needs ownership of the file
        except FileNotFoundError:
            self._skip(rel, "vanished during the backup")
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise _unreadable(rel, exc) from exc
            self._skip(rel, "became a symlink during the backup")
        return None


def _identity(info: os.stat_result) -> tuple[int, int, int, int]:
    """What must match the previous recovery point for a file to be reused without reading it."""
    return info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino


def _changed(before: os.stat_result, after: os.stat_result) -> bool:
    return _identity(before) != _identity(after)


# Restore --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Entry:
    path: str
    type: str
    mode: int = 0
    uid: int = 0
    gid: int = 0
    atime_ns: int = 0
    mtime_ns: int = 0
    size: int = 0
    chunks: tuple[ChunkRef, ...] = ()
    target: str | None = None
    link: str | None = None


def _data_refs(reader: RecoveryPointReader) -> Iterator[ChunkRef]:
    """The data stream's chunk list, read alongside the tree so a damaged index fails the restore too."""
    if "data" not in reader.manifest.streams:
        return iter(())
    return reader.iter_refs(reader.stream_ref("data"))


def _safe_path(value: Any, *, root_allowed: bool = False) -> str:
    """A record path that stays inside the target (``"."``, the target itself, only if allowed), or IntegrityError."""
    if not isinstance(value, str) or not value or "\0" in value:
        raise IntegrityError(f"tree record path {value!r} is not a valid path", hint=_FORGED_HINT)
    if value == "." and root_allowed:
        return value
    if value.startswith("/") or any(part in ("", ".", "..") for part in value.split("/")):
        raise IntegrityError(f"tree record path {value!r} would leave the restore target", hint=_FORGED_HINT)
    return value


def _parse(record: dict[str, Any]) -> _Entry:
    kind = str(record.get("type"))
    path = _safe_path(record.get("path"), root_allowed=kind == "dir")
    try:
        if kind == "hardlink":
            return _Entry(path, kind, link=_safe_path(record.get("link")))
        chunks = tuple(ChunkRef(bytes.fromhex(h), int(n)) for h, n in record.get("chunks", []))
        target = record.get("target")
        if kind == "symlink" and not isinstance(target, str):
            raise TypeError("symlink without a target")
        fields = ("mode", "uid", "gid", "atime_ns", "mtime_ns", "size")
        numbers = {name: int(record.get(name, 0)) for name in fields}
        return _Entry(path, kind, chunks=chunks, target=target, **numbers)
    except (KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(f"tree record for {path!r} is malformed ({exc})", hint=_FORGED_HINT) from None


def _prepare_target(request: RestoreRequest) -> str:
    if not request.target:
        raise TargetError("a directory restore needs a target path", hint="Pass --target with a new directory path")
    target = os.path.abspath(os.path.expanduser(request.target))
    if os.path.lexists(target):
        if not os.path.isdir(target):
            raise TargetError(f"target {target} exists and is not a directory", hint="Choose a new path")
        if not request.allow_non_empty and _has_entries(target):
            raise TargetNotEmptyError(
                f"target directory {target} is not empty",
                hint="Choose a new path, or pass --allow-non-empty to restore over its content",
            )
        return target
    try:
        os.makedirs(target, mode=0o700)
    except OSError as exc:
        raise TargetError(f"cannot create target directory {target}: {exc.strerror or exc}") from exc
    return target


def _has_entries(directory: str) -> bool:
    with os.scandir(directory) as entries:
        return next(entries, None) is not None


def _unlink_quietly(path: str) -> None:
    with suppress(FileNotFoundError):
        os.unlink(path)


class _Restorer:
    """Applies tree records in order; directory modes and times are set last, deepest first."""

    def __init__(self, target: str, ctx: RestoreContext, fsync: bool) -> None:
        self.target = target
        self.reader = ctx.reader
        self.progress = ctx.progress
        self.data_refs = _data_refs(ctx.reader)
        self.fsync = fsync
        self.as_root = os.geteuid() == 0
        self.dirs: set[str] = {"."}  # real directories created or checked by this restore
        self.dir_entries: list[_Entry] = []
        self.counts = dict.fromkeys(("files", "dirs", "symlinks", "hardlinks", "fifos", "bytes"), 0)
        self.handlers: dict[str, Callable[[_Entry], None]] = {
            "dir": self._dir,
            "file": self._file,
            "symlink": self._symlink,
            "hardlink": self._hardlink,
            "fifo": self._fifo,
        }

    def apply(self, entry: _Entry) -> None:
        handler = self.handlers.get(entry.type)
        if handler is None:
            what = f"tree record for {entry.path!r} has unknown type '{entry.type}'"
            raise FormatError(what, hint="Restore with a newer Strongroom")
        if entry.path != ".":
            self._check_parent(entry.path)
        try:
            handler(entry)
        except OSError as exc:
            raise TargetError(
                f"cannot restore '{entry.path}' into {self.target}: {exc.strerror or exc}",
                hint="Check free space and permissions of the target, then restore into a new path",
            ) from exc

    def finish(self) -> None:
        if next(self.data_refs, None) is not None:
            raise IntegrityError("the data stream holds chunks that no tree record names", hint=_FORGED_HINT)
        for entry in reversed(self.dir_entries):
            try:
                self._settle_dir(entry)
            except OSError as exc:
                raise TargetError(f"cannot set mode and times of '{entry.path}': {exc.strerror or exc}") from exc

    # Helpers -------------------------------------------------------------------------------------
    def _abs(self, rel: str) -> str:
        return self.target if rel == "." else os.path.join(self.target, rel)

    def _check_parent(self, rel: str) -> None:
        parent = rel.rpartition("/")[0] or "."
        if parent not in self.dirs:
            raise IntegrityError(f"tree record {rel!r} is not inside a directory restored before it", hint=_FORGED_HINT)

    def _temp_beside(self, rel: str) -> str:
        parent = os.path.dirname(self._abs(rel))
        return os.path.join(parent, f".strongroom-{secrets.token_hex(6)}.tmp")

    def _chown(self, path: str | int, entry: _Entry) -> None:
        if not self.as_root:
            return
        if isinstance(path, int):
            os.fchown(path, entry.uid, entry.gid)
        else:
            os.lchown(path, entry.uid, entry.gid)

    def _settle(self, path: str, entry: _Entry) -> None:
        """Owner, then mode (chown clears setuid), then times, of a fifo or symlink at ``path``."""
        self._chown(path, entry)
        if entry.type != "symlink":
            os.chmod(path, stat.S_IMODE(entry.mode))
        os.utime(path, ns=(entry.atime_ns, entry.mtime_ns), follow_symlinks=False)

    def _place(self, temp: str, rel: str, settle: Callable[[], None]) -> None:
        try:
            settle()
            os.replace(temp, self._abs(rel))
        finally:
            _unlink_quietly(temp)  # also when rename was a no-op: both names were links to one inode

    # Entry types ---------------------------------------------------------------------------------
    def _dir(self, entry: _Entry) -> None:
        path = self._abs(entry.path)
        if entry.path != ".":
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    raise TargetError(
                        f"cannot restore directory '{entry.path}': something else exists there",
                        hint="Restore into a new, empty path",
                    ) from None
        self._chown(path, entry)
        self.dirs.add(entry.path)
        self.dir_entries.append(entry)
        self.counts["dirs"] += 1

    def _settle_dir(self, entry: _Entry) -> None:
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | (0 if entry.path == "." else os.O_NOFOLLOW)
        fd = os.open(self._abs(entry.path), flags)
        try:
            if self.fsync:
                os.fsync(fd)
            os.chmod(fd, stat.S_IMODE(entry.mode))
            os.utime(fd, ns=(entry.atime_ns, entry.mtime_ns))
        finally:
            os.close(fd)

    def _file(self, entry: _Entry) -> None:
        if sum(ref.size for ref in entry.chunks) != entry.size:
            raise IntegrityError(f"tree record for {entry.path!r} lists chunks that do not add up to its size")
        refs = self._take_data_refs(entry)
        temp = self._temp_beside(entry.path)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as out:
            self._place(temp, entry.path, lambda: self._write_content(out, entry, refs))
        self.counts["files"] += 1
        self.counts["bytes"] += entry.size

    def _take_data_refs(self, entry: _Entry) -> list[ChunkRef]:
        """The file's chunks from the data stream: files are chunked on their own, so they end on a boundary.

        The content comes from the data stream, not from the chunk ids in the tree record: those name
        chunks of the vault that made the backup, and a copy in another vault has other ids.
        """
        refs: list[ChunkRef] = []
        covered = 0
        while covered < entry.size:
            ref = next(self.data_refs, None)
            if ref is None or covered + ref.size > entry.size:
                what = f"tree record for {entry.path!r} disagrees with the recovery point's data stream"
                raise IntegrityError(what, hint=_FORGED_HINT)
            refs.append(ref)
            covered += ref.size
        return refs

    def _write_content(self, out: BinaryIO, entry: _Entry, refs: list[ChunkRef]) -> None:
        for data in self.reader.iter_chunk_data(refs):
            out.write(data)
            if self.progress:
                self.progress(len(data))
        out.flush()
        fd = out.fileno()
        self._chown(fd, entry)
        os.chmod(fd, stat.S_IMODE(entry.mode))
        os.utime(fd, ns=(entry.atime_ns, entry.mtime_ns))
        if self.fsync:
            os.fsync(fd)

    def _symlink(self, entry: _Entry) -> None:
        temp = self._temp_beside(entry.path)
        os.symlink(entry.target or "", temp)
        self._place(temp, entry.path, lambda: self._settle(temp, entry))
        self.counts["symlinks"] += 1

    def _fifo(self, entry: _Entry) -> None:
        temp = self._temp_beside(entry.path)
        os.mkfifo(temp, 0o600)
        self._place(temp, entry.path, lambda: self._settle(temp, entry))
        self.counts["fifos"] += 1

    def _hardlink(self, entry: _Entry) -> None:
        first = entry.link or ""
        self._check_parent(first)
        source = self._abs(first)
        if stat.S_ISDIR(os.lstat(source).st_mode):
            raise IntegrityError(f"tree record {entry.path!r} is a hard link to a directory", hint=_FORGED_HINT)
        temp = self._temp_beside(entry.path)
        os.link(source, temp, follow_symlinks=False)
        self._place(temp, entry.path, lambda: None)
        self.counts["hardlinks"] += 1


# The adapter ----------------------------------------------------------------------------------
@register_adapter
class DirectoryAdapter(ResourceAdapter):
    type_name: ClassVar[str] = "directory"
    description: ClassVar[str] = "A directory tree: files, symlinks, hard links, fifos, modes, owners and times"

    def validate_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        return _settings(settings, ConfigError)

    def backup(self, resource: ResourceSpec, ctx: BackupContext) -> dict[str, Any]:
        settings = _settings(resource.settings, SourceError)
        root = settings["path"]
        previous = _load_previous(ctx.previous, root)
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX_BYTES, dir=ctx.temp_dir) as spool:
            scanner = _Scanner(root, ctx.writer, previous or {}, settings.get("one_file_system", False), spool)
            if previous is None:
                scanner.warn("the previous recovery point is damaged; every file was read again")
            scanner.run()
            spool.seek(0)
            ctx.writer.store_stream("tree", spool)
        ctx.writer.add_stream("data", scanner.builder)
        return scanner.metadata()

    def restore(self, metadata: dict[str, Any], ctx: RestoreContext, request: RestoreRequest) -> RestoreResult:
        version = metadata.get("tree_format", TREE_FORMAT)
        if version != TREE_FORMAT:
            raise FormatError(f"directory tree format {version} is unknown; this Strongroom reads {TREE_FORMAT}")
        target = _prepare_target(request)
        restorer = _Restorer(target, ctx, fsync=bool(request.options.get("fsync", True)))
        for record in _tree_records(ctx.reader):
            restorer.apply(_parse(record))
        restorer.finish()
        return RestoreResult(target=target, details=restorer.counts)
