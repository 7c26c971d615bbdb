"""Local-file primitives every layer shares: ``flock(2)`` locks and all-or-nothing small files.

This is the bottom layer (below the stores): it knows nothing of vaults, jobs or accounts. A lock is held by
an open file descriptor, so the kernel drops it when its holder dies, even by SIGKILL; that is what job
liveness, the vault writers lock and the apply lock rely on.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import time
from pathlib import Path

POLL_SECONDS = 0.05


class FileLock:
    """An ``flock(2)`` lock on ``path`` (created on first use, mode 0600), held until :meth:`release`.

    ``flock`` has no timeout and no queue: a bounded wait polls, and waiters are served in no order.
    """

    def __init__(self, path: Path, fd: int = -1) -> None:
        self.path = path
        self.fd = fd

    def acquire(self, *, shared: bool = False, timeout: float | None = None) -> bool:
        """Take the lock; ``timeout=None`` waits as long as it takes, otherwise False after ``timeout`` s."""
        self._open()
        flags = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        if timeout is None:
            fcntl.flock(self.fd, flags)
            return True
        deadline = time.monotonic() + max(timeout, 0)
        while True:
            try:
                fcntl.flock(self.fd, flags | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self.release()
                    return False
                time.sleep(POLL_SECONDS)

    def try_acquire(self, *, shared: bool = False) -> bool:
        """Take the lock now, or return False at once when another holder's mode conflicts."""
        self._open()
        try:
            fcntl.flock(self.fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            self.release()
            return False
        return True

    @property
    def held(self) -> bool:
        return self.fd >= 0

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> FileLock:
        self._open()  # the file exists from here on, locked or not
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _open(self) -> None:
        if self.fd < 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)


def is_held(path: Path) -> bool:
    """True while some live process holds a lock on ``path`` (a missing file is not held)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def holders(path: Path, *, shared: bool = True) -> int | None:
    """How many processes hold ``path`` shared (or, ``shared=False``, exclusively) now, from /proc/locks; None
    where that cannot be known."""
    try:
        info = path.stat()
        with open("/proc/locks") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    device = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    mode = "READ" if shared else "WRITE"
    return sum(1 for line in lines if _is_holder(line, device, mode))


def _is_holder(line: str, device: str, mode: str) -> bool:
    fields = line.split()
    # "1: FLOCK  ADVISORY  READ  4242 08:01:1234 0 EOF"; waiters are listed as "1: -> FLOCK ..."
    return len(fields) >= 6 and fields[1] == "FLOCK" and fields[3] == mode and fields[5] == device


def write_durably(path: Path, data: bytes, *, mode: int = 0o600, replace: bool = True) -> None:
    """Write ``data`` to ``path`` through a unique temporary file, fsynced, then renamed into place.

    With ``replace=False`` the file is linked into place instead and FileExistsError says that anything
    (even a dangling symlink) holds the name: an existing file is never overwritten.
    """
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(temp, path)
        else:
            os.link(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def write_private(path: Path, data: bytes) -> None:
    """:func:`write_durably` with mode 0600, making ``path``'s missing parent folders 0700 on the way
    (``mkdir(parents=True)`` would give them the umask's mode)."""
    for folder in reversed([path.parent, *path.parent.parents]):
        if not folder.exists():
            folder.mkdir(mode=0o700, exist_ok=True)
    write_durably(path, data, mode=0o600)


def fsync_dir(directory: Path) -> None:
    """Make the directory's entries (a rename, a link, an unlink) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
