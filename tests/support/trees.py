"""Awkward directory trees for adapter tests, and snapshots to compare two trees exactly.

``make_awkward_tree`` builds everything a directory backup must survive; ``snapshot_tree`` captures
what a faithful restore must reproduce (type, permission bits, size, content hash, mtime in ns,
symlink target, owner, hard-link grouping); ``diff_snapshots`` names the differences readably.
"""

from __future__ import annotations

import hashlib
import os
import random
import stat
from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024
BASE_MTIME_NS = 1_500_000_000_123_456_789  # 2017-07-14, with every nanosecond digit set


@dataclass(frozen=True)
class Entry:
    type: str  # file | dir | symlink | fifo | socket | other
    mode: int  # full st_mode: type bits and permission bits (incl. setuid, setgid, sticky)
    size: int | None  # files only
    sha256: str | None  # files only
    mtime_ns: int
    target: str | None  # symlinks only
    uid: int
    gid: int
    link_group: str | None  # first path (in walk order) of a hard-linked inode, else None


def make_awkward_tree(root: Path, *, big_size: int = 5 * MIB + 123_457, seed: int = 7) -> Path:
    """Create an awkward tree under ``root`` (created if missing) and return ``root``.

    Holds nested and empty directories, empty / binary / incompressible (``big_size`` bytes) /
    compressible files, unicode, space, newline and non-UTF-8 names, relative, absolute, dangling
    and directory symlinks, a hard-link pair, a fifo, odd modes (0o600, 0o755, 0o4755, a sticky
    0o1777 directory, a 0o555 directory) and explicit old mtimes with nanosecond precision.
    """
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    _make_dirs(root)
    _make_files(root, rng, big_size)
    _make_links(root)
    _set_modes(root)
    _set_old_times(root)
    return root


def _make_dirs(root: Path) -> None:
    for rel in ("docs/reports/2024", "empty-dir", "sticky", "readonly-dir", "deep/a/b/c/d/e/f"):
        (root / rel).mkdir(parents=True, exist_ok=True)


def _make_files(root: Path, rng: random.Random, big_size: int) -> None:
    files = {
        "empty.txt": b"",
        "docs/readme.md": b"# Read me\n\nStrongroom test tree.\n",
        "docs/reports/2024/q1.bin": rng.randbytes(100_000),
        "docs/reports/2024/q2.bin": rng.randbytes(3_333),
        "big-random.bin": rng.randbytes(big_size),
        "compressible.log": b"2024-01-01T00:00:00Z INFO request served in 12ms\n" * 20_000,
        "unicode-ünïcødé-文件.txt": "héllo wörld ✓\n".encode(),
        "name with spaces.txt": b"spaces\n",
        "new\nline.txt": b"a newline in the name\n",
        "secret.key": rng.randbytes(64),
        "tool.sh": b"#!/bin/sh\necho tool\n",
        "setuid-tool": b"#!/bin/sh\necho setuid\n",
        "sticky/shared.txt": b"shared\n",
        "readonly-dir/inside.txt": b"inside a read-only directory\n",
        "deep/a/b/c/d/e/f/leaf.txt": b"leaf\n",
        "hard-a.bin": rng.randbytes(20_000),
    }
    for rel, data in files.items():
        (root / rel).write_bytes(data)
    Path(os.fsdecode(bytes(root) + b"/latin1-\xe9.bin")).write_bytes(b"not utf-8 name\n")


def _make_links(root: Path) -> None:
    os.link(root / "hard-a.bin", root / "docs" / "hard-b.bin")
    os.symlink("docs/readme.md", root / "link-to-readme")
    os.symlink("does/not/exist", root / "dangling")
    os.symlink("docs", root / "link-to-dir")
    os.symlink("/etc/hostname", root / "absolute-link")
    os.symlink("../../readme.md", root / "docs" / "reports" / "up-link")
    os.mkfifo(root / "pipe", 0o640)


def _set_modes(root: Path) -> None:
    modes = {
        "secret.key": 0o600,
        "tool.sh": 0o755,
        "setuid-tool": 0o4755,
        "sticky": 0o1777,
        "empty-dir": 0o750,
        "pipe": 0o640,
    }
    for rel, mode in modes.items():
        os.chmod(root / rel, mode)


def _set_old_times(root: Path) -> None:
    """Old, distinct mtimes (and atimes) with ns precision, deepest entries first."""
    paths = sorted(_walk(root), key=lambda rel: (-rel.count("/"), os.fsencode(rel)))
    for number, rel in enumerate(paths):
        mtime = BASE_MTIME_NS + number * 1_000_000_007
        os.utime(root / rel, ns=(mtime - 5_000, mtime), follow_symlinks=False)
    os.chmod(root / "readonly-dir", 0o555)  # after its content is in place
    os.utime(root / "readonly-dir", ns=(BASE_MTIME_NS, BASE_MTIME_NS + 42))
    os.utime(root, ns=(BASE_MTIME_NS, BASE_MTIME_NS + 7))


def snapshot_tree(root: Path) -> dict[str, Entry]:
    """Everything a faithful restore must reproduce, keyed by POSIX path relative to ``root``.

    The root itself is ``"."``. Directory sizes and all atimes are left out.
    """
    snapshot: dict[str, Entry] = {}
    first_path: dict[tuple[int, int], str] = {}
    for rel in [".", *sorted(_walk(root), key=os.fsencode)]:
        path = root if rel == "." else root / rel
        info = os.lstat(path)
        group = None
        if not stat.S_ISDIR(info.st_mode) and info.st_nlink > 1:
            group = first_path.setdefault((info.st_dev, info.st_ino), rel)
        snapshot[rel] = _entry(path, info, group)
    return snapshot


def _entry(path: Path, info: os.stat_result, group: str | None) -> Entry:
    kind = _kind(info.st_mode)
    size = info.st_size if kind == "file" else None
    digest = _sha256(path) if kind == "file" else None
    target = os.readlink(path) if kind == "symlink" else None
    return Entry(kind, info.st_mode, size, digest, info.st_mtime_ns, target, info.st_uid, info.st_gid, group)


def _kind(mode: int) -> str:
    for kind, test in (
        ("file", stat.S_ISREG),
        ("dir", stat.S_ISDIR),
        ("symlink", stat.S_ISLNK),
        ("fifo", stat.S_ISFIFO),
        ("socket", stat.S_ISSOCK),
    ):
        if test(mode):
            return kind
    return "other"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def _walk(root: Path) -> list[str]:
    """Every path under ``root`` (not following symlinks), relative, POSIX separators."""
    found = []
    for directory, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = os.path.relpath(directory, root)
        for name in dirnames + filenames:
            found.append(name if rel_dir == "." else f"{rel_dir}/{name}")
    return found


def diff_snapshots(expected: dict[str, Entry], actual: dict[str, Entry]) -> list[str]:
    """Human-readable differences between two snapshots; empty when they are equal."""
    problems = [f"missing: {rel!r}" for rel in expected if rel not in actual]
    problems += [f"unexpected: {rel!r}" for rel in actual if rel not in expected]
    for rel in expected.keys() & actual.keys():
        want, got = expected[rel], actual[rel]
        for name in Entry.__dataclass_fields__:
            before, after = getattr(want, name), getattr(got, name)
            if before != after:
                problems.append(f"{rel!r}: {name} {_show(name, before)} != {_show(name, after)}")
    return sorted(problems)


def _show(field: str, value: object) -> str:
    return oct(value) if field == "mode" and isinstance(value, int) else repr(value)
