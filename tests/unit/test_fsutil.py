"""fsutil: flock(2) locks across real processes, and all-or-nothing files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from strongroom.fsutil import FileLock, holders, is_held, write_durably

HOLDER = """
import sys
from pathlib import Path
from strongroom.fsutil import FileLock
lock = FileLock(Path(sys.argv[1]))
assert lock.acquire(shared=sys.argv[2] == "shared")
print("held", flush=True)
sys.stdin.read()  # hold until the test closes our stdin
"""


class Holder:
    """Another process holding the lock at ``path`` until :meth:`stop`."""

    def __init__(self, path: Path, mode: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path), mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None and self.process.stdout.readline() == "held\n"

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        assert self.process.wait() == 0
        assert self.process.stdout is not None
        self.process.stdout.close()


@pytest.fixture
def lock_path(tmp_path: Path) -> Path:
    return tmp_path / "locks" / "x.lock"


def test_an_exclusive_holder_keeps_everyone_out_until_it_ends(lock_path: Path) -> None:
    assert not is_held(lock_path)
    holder = Holder(lock_path, "exclusive")
    try:
        assert is_held(lock_path)
        assert holders(lock_path, shared=False) == 1
        assert not FileLock(lock_path).try_acquire(shared=True)
        assert not FileLock(lock_path).acquire(timeout=0)
    finally:
        holder.stop()
    assert not is_held(lock_path)  # the kernel dropped the lock of the ended process
    with FileLock(lock_path) as lock:
        assert lock.acquire(timeout=0) and lock.held


def test_shared_holders_admit_each_other_and_are_counted(lock_path: Path) -> None:
    first, second = Holder(lock_path, "shared"), Holder(lock_path, "shared")
    try:
        assert holders(lock_path) == 2
        with FileLock(lock_path) as mine:
            assert mine.try_acquire(shared=True)
            assert holders(lock_path) == 3
        assert not FileLock(lock_path).try_acquire()
    finally:
        first.stop()
        second.stop()
    assert holders(lock_path) == 0


def test_a_failed_acquire_holds_nothing(lock_path: Path) -> None:
    holder = Holder(lock_path, "exclusive")
    try:
        lock = FileLock(lock_path)
        assert not lock.try_acquire()
        assert not lock.held
    finally:
        holder.stop()


def test_holders_of_a_missing_file_are_unknown(tmp_path: Path) -> None:
    assert holders(tmp_path / "missing") is None


def test_write_durably_replaces_or_refuses_to(tmp_path: Path) -> None:
    target = tmp_path / "f"
    write_durably(target, b"one", mode=0o640)
    assert target.read_bytes() == b"one" and target.stat().st_mode & 0o777 == 0o640
    write_durably(target, b"two")
    assert target.read_bytes() == b"two"
    with pytest.raises(FileExistsError):
        write_durably(target, b"three", replace=False)
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # no temporary file left behind
