"""WAL prefetch for point-in-time restores: segments fetched ahead into a spool, as pgBackRest's async archive-get.

A restore's ``restore_command`` (adapters/postgres/recovery.py) first moves ``SPOOL/%f`` into ``%p`` with the
shell (no Python start-up), and only when the spool lacks it runs ``strongroom wal fetch --spool SPOOL``. That
slow path fetches the file itself, then records which segment PostgreSQL asked for (``SPOOL/.want``) and
starts this module, detached, unless one already holds ``SPOOL/.lock``. The prefetcher keeps the segments
after the last one asked for in the spool (at most :data:`SPOOL_BYTES`), each written only after it was
authenticated (AES-GCM and the keyed BLAKE3, ``WalArchive.fetch``), to a temporary name, fsynced, then
renamed: a file under a WAL name in the spool is whole, authenticated plaintext. It stops at the first
segment never archived, at the first that fails to fetch or authenticate (never spooled: PostgreSQL's own
``wal fetch`` of it then exits 126), when the spool is removed (the restore ended) or after
:data:`IDLE_SECONDS` with nothing consumed. A segment asked for on another timeline (a switch) moves it there.

The spool is private to the restore (0700, the server's OS user's, beside the cluster) and removed when the
restore ends, after :func:`strongroom.adapters.postgres.recovery.stop_prefetch` stopped the prefetcher.
Imports stay as light as ``wal fetch``'s.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from strongroom.errors import StrongroomError
from strongroom.services.wal_archive import WalCredential
from strongroom.vault.wal import SEGMENT

WANT = ".want"  # "NAME SEGMENT_SIZE": the last segment PostgreSQL had to fetch itself
LOCK = ".lock"
PID = ".prefetch.pid"
COUNT = ".prefetched"  # how many segments were spooled (the restore reports it)
SPOOL_BYTES = 256 << 20
MAX_SEGMENTS = 64
IDLE_SECONDS = 60.0  # nothing consumed for that long: recovery ended or stalled; a later miss starts another
POLL_SECONDS = 0.02
# The long page header of a segment: magic, info, timeline, page address, remaining length, padding,
# system identifier, then the segment size (XLogLongPageHeaderData).
SEGMENT_SIZE = struct.Struct("<HHIQI4xQI")


@dataclass(frozen=True)
class Position:
    """A segment on a timeline, with the cluster's segment size (which names follow which)."""

    timeline: int
    number: int
    size: int

    @classmethod
    def of(cls, name: str, size: int) -> Position:
        per_id = 0x100000000 // size
        return cls(int(name[:8], 16), int(name[8:16], 16) * per_id + int(name[16:24], 16), size)

    @property
    def name(self) -> str:
        per_id = 0x100000000 // self.size
        return f"{self.timeline:08X}{self.number // per_id:08X}{self.number % per_id:08X}"

    def next(self) -> Position:
        return Position(self.timeline, self.number + 1, self.size)


def segment_size(data: bytes) -> int | None:
    """The segment size a segment's header gives, if it is a plausible one (a power of two, 1 MiB..1 GiB)."""
    if len(data) < SEGMENT_SIZE.size:
        return None
    size = SEGMENT_SIZE.unpack_from(data)[6]
    return size if (1 << 20) <= size <= (1 << 30) and size & (size - 1) == 0 else None


def request(spool: Path, config: Path, name: str, data: bytes) -> None:
    """After PostgreSQL fetched segment ``name`` itself: prefetch what follows it (start a prefetcher if none)."""
    size = segment_size(data)
    if not SEGMENT.fullmatch(name) or size is None or not spool.is_dir():
        return
    write_atomically(spool / WANT, f"{name} {size}\n".encode(), sync=False)
    if running(spool):
        return
    subprocess.Popen(
        [sys.executable, "-m", "strongroom.services.wal_prefetch", str(config.absolute()), str(spool.absolute())],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True,
    )  # fmt: skip


def running(spool: Path) -> bool:
    try:
        with (spool / LOCK).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    return False


def write_atomically(path: Path, data: bytes, *, sync: bool) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # never a WAL name: the shell never takes it
    with open(temporary, "wb", opener=lambda p, flags: os.open(p, flags, 0o600)) as out:
        out.write(data)
        if sync:
            out.flush()
            os.fsync(out.fileno())
    os.replace(temporary, path)


def read_want(spool: Path) -> Position | None:
    try:
        name, size = (spool / WANT).read_text().split()
        return Position.of(name, int(size)) if SEGMENT.fullmatch(name) else None
    except (OSError, ValueError):
        return None


def spooled(spool: Path) -> int:
    return sum(1 for entry in os.scandir(spool) if SEGMENT.fullmatch(entry.name))


def discard_before(spool: Path, want: Position) -> None:
    """Remove spooled segments PostgreSQL will not ask for: up to ``want``, or of another timeline."""
    for entry in os.scandir(spool):
        if SEGMENT.fullmatch(entry.name):
            found = Position.of(entry.name, want.size)
            if found.timeline != want.timeline or found.number <= want.number:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


def prefetch(credential: WalCredential, spool: Path) -> None:
    """Keep the segments after the last one asked for in the spool, until there is nothing left to do."""
    archive = credential.archive()
    count = read_count(spool)
    position: Position | None = None
    last_want: Position | None = None
    idle_since = time.monotonic()
    while spool.is_dir() and time.monotonic() - idle_since < IDLE_SECONDS:
        want = read_want(spool)
        if want is not None and want != last_want:
            last_want = want
            discard_before(spool, want)
            if position is None or position.timeline != want.timeline or position.number <= want.number:
                position = want.next()
            idle_since = time.monotonic()
        if position is None:
            return
        if spooled(spool) >= min(MAX_SEGMENTS, max(2, SPOOL_BYTES // position.size)):
            time.sleep(POLL_SECONDS)
            continue
        try:
            data = archive.fetch(position.name)
        except (StrongroomError, OSError):
            return  # never archived, damaged or unreachable: PostgreSQL's own fetch of it says which
        write_atomically(spool / position.name, data, sync=True)
        count += 1
        write_atomically(spool / COUNT, str(count).encode(), sync=False)
        position = position.next()
        idle_since = time.monotonic()


def read_count(spool: Path) -> int:
    try:
        return int((spool / COUNT).read_text())
    except (OSError, ValueError):
        return 0


def main(argv: list[str]) -> int:
    config, spool = Path(argv[0]), Path(argv[1])
    try:
        lock = (spool / LOCK).open("a")
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # another prefetcher runs, or the spool is gone
        return 0
    try:
        write_atomically(spool / PID, str(os.getpid()).encode(), sync=False)
        prefetch(WalCredential.load(config), spool)
    except (StrongroomError, OSError):
        return 0  # the spool went away or the credential is unreadable: PostgreSQL's own fetches report it
    finally:
        lock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
