"""Restoring a ``directory`` tree: never outside the target, whatever the tree says and whoever races it.

The tree may be forged (a compromised source holds the keys and can store any records it likes) and
the restore may run as root on a machine where other users act while it runs. So:

- a record's path is relative, has no ``.``/``..``/empty components and lies under a directory this
  restore created or checked; a hard link may only name such a path and never a directory;
- every name is reached from a directory file descriptor, one component at a time, with ``O_NOFOLLOW``
  (``openat``, ``mkdirat``, ``symlinkat``, ``mkfifoat``, ``linkat``, ``renameat``). A directory is used
  only while it is still the inode this restore created or checked (device and inode number): a
  component swapped for a symlink or for another directory mid-restore fails the restore with a
  TargetError, it never redirects a write;
- while content is written, every directory this restore creates (the target included) belongs to
  the restoring user with mode 0700, so no other user can enter it. Owners, modes and times of
  directories are applied at the end, deepest first, through their descriptors; files, symlinks and
  fifos get theirs under a temporary name inside such a directory, then are renamed into place;
- owners are applied only when restoring as root;
- a failed restore empties a target it created (nobody else could have put anything there);
- set-user-ID and set-group-ID bits of files and fifos are dropped when the recovery point arrived
  through a copy (:attr:`RestoreContext.from_copy`), unless the request's ``preserve_special`` option
  asks for them; directories keep theirs (set-group-ID on a directory passes its group to new entries,
  no privilege), the sticky bit is always kept. Device nodes are never restored: backups skip them and
  a record of any other type fails the restore.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, BinaryIO

from strongroom.adapters.base import RestoreContext, RestoreRequest, RestoreResult
from strongroom.errors import FormatError, IntegrityError, TargetError, TargetNotEmptyError
from strongroom.vault.manifest import ChunkRef
from strongroom.vault.reader import RecoveryPointReader

FORGED_HINT = "The recovery point is damaged or forged; nothing was written outside the target"
_REPLACED_HINT = "Another process changed the target while it was restored; restore into a new path only you can write"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Components passed on the way only need search permission (a traverse-only /home, 0711), not read.
_PASS_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_SETID = stat.S_ISUID | stat.S_ISGID
_SWAPPED = (errno.ELOOP, errno.ENOTDIR, errno.ENOENT)  # what opening a name that stopped being our directory gives
_COUNTS = ("files", "dirs", "symlinks", "hardlinks", "fifos", "bytes", "setid_bits_dropped")


def tree_records(reader: RecoveryPointReader) -> Iterator[dict[str, Any]]:
    """The ``tree`` stream's records, in order; IntegrityError on a line that is not a JSON object."""
    with reader.open_stream("tree") as lines:
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line.decode("utf-8"))
            except ValueError:  # UnicodeDecodeError included: a forged stream of junk is one line, no traceback
                raise IntegrityError(f"tree record {number} is not valid JSON", hint=FORGED_HINT) from None
            if not isinstance(record, dict):
                raise IntegrityError(f"tree record {number} is not an object", hint=FORGED_HINT)
            yield record


def restore_tree(ctx: RestoreContext, request: RestoreRequest) -> RestoreResult:
    """Recreate the recovery point's tree at ``request.target`` (absent or empty unless allowed)."""
    target, root_fd, created = _open_target(request)
    restorer = _Restorer(target, root_fd, ctx, request)
    try:
        for record in tree_records(ctx.reader):
            restorer.apply(_parse(record))
        restorer.finish()
    except BaseException:
        if created:  # private to this restore from the start: only what it wrote is there
            _empty(root_fd)
        raise
    finally:
        restorer.close()
    return RestoreResult(target=target, details=restorer.counts)


# Records --------------------------------------------------------------------------------------
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

    @property
    def name(self) -> str:
        return self.path.rpartition("/")[2]

    @property
    def parent(self) -> str:
        return self.path.rpartition("/")[0] or "."


def _safe_path(value: Any, *, root_allowed: bool = False) -> str:
    """A record path that stays inside the target (``"."``, the target itself, only if allowed), or IntegrityError."""
    if not isinstance(value, str) or not value or "\0" in value:
        raise IntegrityError(f"tree record path {value!r} is not a valid path", hint=FORGED_HINT)
    if value == "." and root_allowed:
        return value
    if value.startswith("/") or any(part in ("", ".", "..") for part in value.split("/")):
        raise IntegrityError(f"tree record path {value!r} would leave the restore target", hint=FORGED_HINT)
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
        number = {name: int(record.get(name, 0)) for name in ("mode", "uid", "gid", "atime_ns", "mtime_ns", "size")}
        return _Entry(
            path,
            kind,
            chunks=chunks,
            target=target,
            mode=number["mode"],
            uid=number["uid"],
            gid=number["gid"],
            atime_ns=number["atime_ns"],
            mtime_ns=number["mtime_ns"],
            size=number["size"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(f"tree record for {path!r} is malformed ({exc})", hint=FORGED_HINT) from None


def _data_refs(reader: RecoveryPointReader) -> Iterator[ChunkRef]:
    """The data stream's chunk list, read alongside the tree so a damaged index fails the restore too."""
    if "data" not in reader.manifest.streams:
        return iter(())
    return reader.iter_refs(reader.stream_ref("data"))


# The target -----------------------------------------------------------------------------------
def _open_target(request: RestoreRequest) -> tuple[str, int, bool]:
    """The target's path (for people), a descriptor of its directory, and whether this restore created it
    (0700, the restoring user's) because it was absent."""
    if not request.target:
        raise TargetError("a directory restore needs a target path", hint="Pass --target with a new directory path")
    target = os.path.abspath(os.path.expanduser(request.target))
    if not os.path.lexists(target):
        return target, _create_target(target), True
    if not os.path.isdir(target):
        raise TargetError(f"target {target} exists and is not a directory", hint="Choose a new path")
    fd = _open_path(target)
    if not request.allow_non_empty and _has_entries(fd):
        os.close(fd)
        raise TargetNotEmptyError(
            f"target directory {target} is not empty",
            hint="Choose a new path, or pass --allow-non-empty to restore over its content",
        )
    return target, fd, False


def _create_target(target: str) -> int:
    try:
        os.makedirs(target, mode=0o700)
    except OSError as exc:
        raise TargetError(f"cannot create target directory {target}: {exc.strerror or exc}") from exc
    fd = _open_path(target)
    if os.fstat(fd).st_uid != os.geteuid() or _has_entries(fd):
        os.close(fd)
        raise TargetError(f"target directory {target} was replaced while it was created", hint=_REPLACED_HINT)
    os.fchmod(fd, 0o700)  # whatever the umask: nobody else enters until the content is in
    return fd


def _open_path(path: str) -> int:
    """A descriptor of the directory ``path`` resolves to now, reached from ``/`` without following links."""
    parts = [part for part in os.path.realpath(path).split("/") if part]
    fd = os.open("/", _PASS_FLAGS if parts else _DIR_FLAGS)
    try:
        for number, part in enumerate(parts, 1):
            child = os.open(part, _DIR_FLAGS if number == len(parts) else _PASS_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except OSError as exc:
        os.close(fd)
        raise TargetError(f"cannot open target directory {path}: {exc.strerror or exc}", hint=_REPLACED_HINT) from exc
    return fd


def _empty(fd: int) -> None:
    """Remove what a failed restore wrote below ``fd``, never following a symlink; best effort."""
    with suppress(OSError), os.scandir(fd) as entries:
        for entry in list(entries):
            with suppress(OSError):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.name, dir_fd=fd)
                else:
                    os.unlink(entry.name, dir_fd=fd)


def _has_entries(fd: int) -> bool:
    with os.scandir(fd) as entries:
        return next(entries, None) is not None


def _temp_name() -> str:
    return f".strongroom-{secrets.token_hex(6)}.tmp"


def _unlink_quietly(name: str, dir_fd: int) -> None:
    with suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)


def _replaced(rel: str, kind: str = "directory") -> TargetError:
    return TargetError(f"{kind} '{rel}' of the target was replaced during the restore", hint=_REPLACED_HINT)


# The writer -----------------------------------------------------------------------------------
class _Restorer:
    """Applies tree records in order, each below a directory descriptor; directories are settled last."""

    def __init__(self, target: str, root_fd: int, ctx: RestoreContext, request: RestoreRequest) -> None:
        self.target = target
        self.root_fd = root_fd
        self.reader = ctx.reader
        self.progress = ctx.progress
        self.data_refs = _data_refs(ctx.reader)
        self.fsync = bool(request.options.get("fsync", True))
        self.as_root = os.geteuid() == 0
        self.keep_setid = not ctx.from_copy or bool(request.options.get("preserve_special"))
        root = os.fstat(root_fd)
        self.dirs: dict[str, tuple[int, int]] = {".": (root.st_dev, root.st_ino)}  # created or checked: identity
        self.dir_entries: list[_Entry] = []
        self.open_dir: tuple[str, int] | None = None  # the last parent opened, kept for its next entries
        self.counts = dict.fromkeys(_COUNTS, 0)
        self.handlers: dict[str, Callable[[_Entry, int], None]] = {
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
        try:
            if entry.path == ".":
                self._root(entry)
            else:
                handler(entry, self._parent_fd(entry.parent, entry.path))
        except OSError as exc:
            raise TargetError(
                f"cannot restore '{entry.path}' into {self.target}: {exc.strerror or exc}",
                hint="Check free space and permissions of the target, then restore into a new path",
            ) from exc

    def finish(self) -> None:
        if next(self.data_refs, None) is not None:
            raise IntegrityError("the data stream holds chunks that no tree record names", hint=FORGED_HINT)
        self._forget_open_dir()
        for entry in reversed(self.dir_entries):  # a directory's record precedes its content: deepest first
            try:
                self._settle_dir(entry)
            except OSError as exc:
                raise TargetError(f"cannot set owner, mode and times of '{entry.path}': {exc.strerror or exc}") from exc

    def close(self) -> None:
        self._forget_open_dir()
        os.close(self.root_fd)

    # Directory descriptors ---------------------------------------------------------------------
    def _parent_fd(self, parent: str, rel: str) -> int:
        """A descriptor of ``parent``, a directory this restore created or checked, for entry ``rel``."""
        if parent not in self.dirs:
            raise IntegrityError(f"tree record {rel!r} is not inside a directory restored before it", hint=FORGED_HINT)
        if parent == ".":
            return self.root_fd
        if self.open_dir is None or self.open_dir[0] != parent:
            self._forget_open_dir()
            self.open_dir = (parent, self._open_dir(parent))
        return self.open_dir[1]

    def _forget_open_dir(self) -> None:
        if self.open_dir is not None:
            os.close(self.open_dir[1])
            self.open_dir = None

    def _open_dir(self, rel: str) -> int:
        """A new descriptor of directory ``rel``, each component still the directory this restore knows."""
        fd, reached, parts = os.dup(self.root_fd), "", rel.split("/")
        try:
            for number, part in enumerate(parts, 1):
                reached = f"{reached}/{part}" if reached else part
                try:
                    child = os.open(part, _DIR_FLAGS if number == len(parts) else _PASS_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in _SWAPPED:
                        raise _replaced(reached) from exc
                    raise
                os.close(fd)
                fd = child
                self._check_known(reached, fd)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _check_known(self, rel: str, fd: int) -> None:
        info = os.fstat(fd)
        if self.dirs.get(rel) != (info.st_dev, info.st_ino):
            raise _replaced(rel)

    # Owners, modes, times ----------------------------------------------------------------------
    def _mode(self, entry: _Entry) -> int:
        mode = stat.S_IMODE(entry.mode)
        if mode & _SETID and not self.keep_setid:
            self.counts["setid_bits_dropped"] += 1
            return mode & ~_SETID
        return mode

    def _settle_fd(self, fd: int, entry: _Entry, mode: int) -> None:
        """Owner, then mode (a chown clears set-id bits), then times, through a descriptor."""
        if self.as_root:
            os.fchown(fd, entry.uid, entry.gid)
        os.fchmod(fd, mode)
        os.utime(fd, ns=(entry.atime_ns, entry.mtime_ns))

    def _settle_dir(self, entry: _Entry) -> None:
        fd = self.root_fd if entry.path == "." else self._open_dir(entry.path)
        try:
            if self.fsync:
                os.fsync(fd)
            self._settle_fd(fd, entry, stat.S_IMODE(entry.mode))
        finally:
            if fd != self.root_fd:
                os.close(fd)

    def _place(self, temp: str, entry: _Entry, dir_fd: int, settle: Callable[[], None]) -> None:
        try:
            settle()
            os.replace(temp, entry.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        finally:
            _unlink_quietly(temp, dir_fd)  # also when rename was a no-op: both names were links to one inode

    # Entry types -------------------------------------------------------------------------------
    def _root(self, entry: _Entry) -> None:
        self.dir_entries.append(entry)  # only a directory record may name "." (see _parse)
        self.counts["dirs"] += 1

    def _dir(self, entry: _Entry, dir_fd: int) -> None:
        try:
            os.mkdir(entry.name, 0o700, dir_fd=dir_fd)
            created = True
        except FileExistsError:
            created = False
        try:
            fd = os.open(entry.name, _DIR_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            raise TargetError(
                f"cannot restore directory '{entry.path}': something else exists there",
                hint="Restore into a new, empty path",
            ) from None
        try:
            info = os.fstat(fd)
            if created:
                if info.st_uid != os.geteuid():
                    raise _replaced(entry.path)
                os.fchmod(fd, 0o700)
        finally:
            os.close(fd)
        self.dirs[entry.path] = (info.st_dev, info.st_ino)
        self.dir_entries.append(entry)
        self.counts["dirs"] += 1

    def _file(self, entry: _Entry, dir_fd: int) -> None:
        if sum(ref.size for ref in entry.chunks) != entry.size:
            raise IntegrityError(f"tree record for {entry.path!r} lists chunks that do not add up to its size")
        refs = self._take_data_refs(entry)
        temp = _temp_name()
        fd = os.open(temp, _NEW_FILE_FLAGS, 0o600, dir_fd=dir_fd)
        with open(fd, "wb") as out:
            self._place(temp, entry, dir_fd, lambda: self._write_content(out, entry, refs))
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
                raise IntegrityError(what, hint=FORGED_HINT)
            refs.append(ref)
            covered += ref.size
        return refs

    def _write_content(self, out: BinaryIO, entry: _Entry, refs: list[ChunkRef]) -> None:
        for data in self.reader.iter_chunk_data(refs):
            out.write(data)
            if self.progress:
                self.progress(len(data))
        out.flush()
        self._settle_fd(out.fileno(), entry, self._mode(entry))
        if self.fsync:
            os.fsync(out.fileno())

    def _symlink(self, entry: _Entry, dir_fd: int) -> None:
        temp = _temp_name()
        os.symlink(entry.target or "", temp, dir_fd=dir_fd)
        self._place(temp, entry, dir_fd, lambda: self._settle_symlink(temp, entry, dir_fd))
        self.counts["symlinks"] += 1

    def _settle_symlink(self, temp: str, entry: _Entry, dir_fd: int) -> None:
        if self.as_root:
            os.chown(temp, entry.uid, entry.gid, dir_fd=dir_fd, follow_symlinks=False)
        os.utime(temp, ns=(entry.atime_ns, entry.mtime_ns), dir_fd=dir_fd, follow_symlinks=False)

    def _fifo(self, entry: _Entry, dir_fd: int) -> None:
        temp = _temp_name()
        os.mkfifo(temp, 0o600, dir_fd=dir_fd)
        self._place(temp, entry, dir_fd, lambda: self._settle_fifo(temp, entry, dir_fd))
        self.counts["fifos"] += 1

    def _settle_fifo(self, temp: str, entry: _Entry, dir_fd: int) -> None:
        # Opening a fifo to read without blocking needs no writer. Check what was opened: in a directory
        # someone else may write (--allow-non-empty), the name could now be their file, to be made root's.
        fd = os.open(temp, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                raise _replaced(entry.path, "fifo")
            self._settle_fd(fd, entry, self._mode(entry))
        finally:
            os.close(fd)

    def _hardlink(self, entry: _Entry, dir_fd: int) -> None:
        source_parent, _, source = (entry.link or "").rpartition("/")
        source_parent = source_parent or "."
        if source_parent not in self.dirs:
            what = f"tree record {entry.link!r} is not inside a directory restored before it"
            raise IntegrityError(what, hint=FORGED_HINT)
        if source_parent in (entry.parent, "."):
            self._link(entry, source, dir_fd if source_parent == entry.parent else self.root_fd, dir_fd)
        else:
            source_fd = self._open_dir(source_parent)
            try:
                self._link(entry, source, source_fd, dir_fd)
            finally:
                os.close(source_fd)
        self.counts["hardlinks"] += 1

    def _link(self, entry: _Entry, source: str, source_fd: int, dir_fd: int) -> None:
        if stat.S_ISDIR(os.stat(source, dir_fd=source_fd, follow_symlinks=False).st_mode):
            raise IntegrityError(f"tree record {entry.path!r} is a hard link to a directory", hint=FORGED_HINT)
        temp = _temp_name()
        os.link(source, temp, src_dir_fd=source_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        self._place(temp, entry, dir_fd, lambda: None)
