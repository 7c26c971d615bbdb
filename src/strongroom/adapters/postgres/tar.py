"""Unpack a tar of regular files and directories into a new directory, writing files in parallel.

Restoring a cluster is mostly writing its files. ``tarfile`` copies every byte three times in Python
and writes one file at a time; this extractor parses the headers itself, hands the verified chunks'
bytes to ``os.pwrite`` without copying them, and lets two threads write at once (``pwrite`` puts
each piece at its offset, so the order in which they land does not matter).

Only what a base backup holds is accepted: regular files and directories (GNU long names allowed),
relative paths without ``..``; anything else (links, devices, pax headers, an absolute or escaping
path) is refused before it is written. Nothing here ever creates a link, so a path cannot lead
outside the root. Files and directories get their mode and mtime; owners are the caller's business.
"""

from __future__ import annotations

import os
import stat
import tarfile
import threading
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from strongroom.errors import IntegrityError, TargetError

BLOCK = 512
WRITERS = 2
MAX_PENDING_WRITES = 16
LONG_NAME = tarfile.GNUTYPE_LONGNAME


@dataclass(eq=False)
class _OpenFile:
    fd: int
    path: Path
    mode: int
    mtime: float
    outstanding: int = 0
    complete: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class TarExtractor:
    """Feed it the tar's bytes in order (:meth:`feed`), then :meth:`finish`; ``members`` lists what it wrote."""

    def __init__(self, root: Path, *, what: str = "the tar stream") -> None:
        self.root = root
        self.what = what
        self.members: list[str] = []
        self._header = bytearray()
        self._long_name: bytearray | None = None
        self._pending_name: str | None = None
        self._file: _OpenFile | None = None
        self._left = 0  # bytes of the current member's data still to come
        self._offset = 0
        self._skip = 0  # padding after a member's data
        self._padding = 0
        self._pool = ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="strongroom-untar")
        self._writes: deque[Future[None]] = deque()
        self._open: set[_OpenFile] = set()
        self._ended = False
        self._directories: list[tuple[Path, float]] = []

    # Input ---------------------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._skip:
                step = min(self._skip, len(view))
                self._skip -= step
                view = view[step:]
            elif self._left:
                step = min(self._left, len(view))
                self._data(view[:step])
                view = view[step:]
            elif self._ended:
                if any(view):
                    raise IntegrityError(f"{self.what} has data after its end", hint="")
                return
            else:
                step = min(BLOCK - len(self._header), len(view))
                self._header += view[:step]
                view = view[step:]
                if len(self._header) == BLOCK:
                    self._member(bytes(self._header))
                    self._header.clear()

    def finish(self) -> None:
        """Wait for every write; raise if the tar ended inside a member."""
        try:
            while self._writes:
                self._writes.popleft().result()
        finally:
            self._pool.shutdown(wait=True)
            for open_file in self._open:
                os.close(open_file.fd)
        if self._left or self._header or self._long_name is not None:
            raise IntegrityError(f"{self.what} ends in the middle of an entry", hint="")
        for path, mtime in reversed(self._directories):
            os.utime(path, (mtime, mtime))

    def abort(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for open_file in self._open:
            os.close(open_file.fd)
        self._open.clear()

    # Members --------------------------------------------------------------------------------------
    def _member(self, header: bytes) -> None:
        if not header.strip(b"\0"):
            self._ended = True  # end-of-archive blocks; only zeros may follow
            return
        try:
            info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
        except tarfile.HeaderError as exc:
            raise IntegrityError(f"{self.what} has a damaged header ({exc})", hint="") from None
        if info.type == LONG_NAME:
            self._long_name = bytearray()
            self._begin_data(info.size)
            return
        if self._long_name is not None:
            info.name = bytes(self._long_name).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            self._long_name = None
        name = self._checked_name(info)
        self.members.append(name)
        if info.isdir():
            self._directory(name, info)
        else:
            self._open_file(name, info)
            self._begin_data(info.size)
            if info.size == 0:
                self._close_current()

    def _checked_name(self, info: tarfile.TarInfo) -> str:
        path = PurePosixPath(info.name)
        parts = [part for part in path.parts if part not in ("", ".")]
        plain = info.type in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE)  # not sparse, not contiguous
        unsafe = path.is_absolute() or ".." in parts or not parts or not plain
        if unsafe:
            raise IntegrityError(
                f"{self.what} holds an unsafe entry '{info.name}'",
                hint="it was not written by pg_basebackup or Strongroom; nothing was started",
            )
        return "/".join(parts)

    def _directory(self, name: str, info: tarfile.TarInfo) -> None:
        path = self.root / name
        try:
            path.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise IntegrityError(f"{self.what} puts a directory over the file {name}", hint="") from None
        os.chmod(path, stat.S_IMODE(info.mode) | stat.S_IRWXU)
        self._directories.append((path, float(info.mtime)))  # set last: adding entries moves the mtime

    def _open_file(self, name: str, info: tarfile.TarInfo) -> None:
        path = self.root / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise IntegrityError(f"{self.what} puts {name} under a file", hint="") from None
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            raise IntegrityError(f"{self.what} holds {name} twice", hint="") from None
        except OSError as exc:
            raise TargetError(f"cannot create {path}: {exc.strerror}", hint="check the target's disk") from None
        self._file = _OpenFile(fd, path, stat.S_IMODE(info.mode), float(info.mtime))
        self._open.add(self._file)
        self._offset = 0

    def _begin_data(self, size: int) -> None:
        self._left = size
        self._skip = 0
        self._padding = -size % BLOCK

    def _data(self, piece: memoryview) -> None:
        self._left -= len(piece)
        if self._long_name is not None:
            self._long_name += piece
        elif self._file is not None:
            self._write(self._file, piece, self._offset)
            self._offset += len(piece)
        if self._left == 0:
            self._skip = self._padding
            if self._file is not None:
                self._close_current()

    # Writing --------------------------------------------------------------------------------------
    def _write(self, open_file: _OpenFile, piece: memoryview, offset: int) -> None:
        while len(self._writes) >= MAX_PENDING_WRITES:
            self._writes.popleft().result()
        with open_file.lock:
            open_file.outstanding += 1
        self._writes.append(self._pool.submit(self._pwrite, open_file, piece, offset))

    def _pwrite(self, open_file: _OpenFile, piece: memoryview, offset: int) -> None:
        try:
            while piece:
                written = os.pwrite(open_file.fd, piece, offset)
                piece, offset = piece[written:], offset + written
        except OSError as exc:
            raise TargetError(
                f"cannot write {open_file.path}: {exc.strerror}", hint="check the target's disk space"
            ) from None
        finally:
            with open_file.lock:
                open_file.outstanding -= 1
                last = open_file.complete and open_file.outstanding == 0
        if last:
            self._settle(open_file)

    def _close_current(self) -> None:
        open_file, self._file = self._file, None
        assert open_file is not None
        with open_file.lock:
            open_file.complete = True
            last = open_file.outstanding == 0
        if last:
            self._settle(open_file)

    def _settle(self, open_file: _OpenFile) -> None:
        """Mode and mtime once the last byte is written (writing would move the mtime again)."""
        os.fchmod(open_file.fd, open_file.mode)
        os.utime(open_file.fd, (open_file.mtime, open_file.mtime))
        os.close(open_file.fd)
        self._open.discard(open_file)


def extract(chunks: Iterable[bytes], root: Path, *, what: str = "the tar stream") -> list[str]:
    """Unpack the tar given as ``chunks`` into ``root``; returns the member names."""
    extractor = TarExtractor(root, what=what)
    try:
        for chunk in chunks:
            extractor.feed(chunk)
    except BaseException:
        extractor.abort()
        raise
    extractor.finish()
    return extractor.members
