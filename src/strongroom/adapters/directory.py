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

Restore (``directory_restore``) trusts no record: it never writes outside the target, even when the
tree is forged and another local user races it, and drops set-id bits of a copied recovery point.
"""

from __future__ import annotations

import errno
import grp
import json
import os
import pwd
import stat
import tempfile
import time
from contextlib import suppress
from dataclasses import dataclass
from typing import IO, Any, ClassVar

from strongroom.adapters.base import (
    BackupContext,
    ResourceAdapter,
    ResourceSpec,
    RestoreContext,
    RestoreRequest,
    RestoreResult,
    register_adapter,
)
from strongroom.adapters.directory_restore import restore_tree, tree_records
from strongroom.errors import (
    ConfigError,
    FormatError,
    SourceError,
    StrongroomError,
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
        for record in tree_records(previous):
            if record.get("type") != "file" or record.get("unsettled"):
                continue
            with suppress(KeyError, TypeError):
                found[record["path"]] = _Previous(
                    record["size"], record["mtime_ns"], record["ctime_ns"], record["inode"], record["chunks"]
                )
    except StrongroomError:
        return None  # a damaged previous recovery point must not block new backups: read every file
    return found


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
        self, root: str, writer: RecoveryPointWriter, previous: dict[str, _Previous], one_fs: bool, out: IO[bytes]
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
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX_BYTES, mode="w+b", dir=str(ctx.temp_dir)) as spool:
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
        return restore_tree(ctx, request)
