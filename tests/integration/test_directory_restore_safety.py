"""A directory restore never writes outside its target, even when a forged point and a local user race it.

The attacker holds the source's keys (so it can store any tree it likes) and an unprivileged account on
the machine that restores. The restore runs as root. The racing process is a real process running as
that account; it attacks in lockstep with the restore (the restore's progress callback hands it the
turn after every chunk written), so each attack lands at a known moment and the test is deterministic.
"""

from __future__ import annotations

import io
import json
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from strongroom.adapters.base import ResourceSpec, RestoreRequest
from strongroom.errors import FormatError, IntegrityError, StrongroomError, TargetError
from strongroom.vault import Vault
from strongroom.vault.writer import RecoveryPointWriter
from tests.support.trees import diff_snapshots, snapshot_tree
from tests.support.vaults import backup, make_vault, restore

AS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not AS_ROOT, reason="racing another user needs root to become that user")

# The racing user's program: one attack per line on stdin, one answer line per attack.
ATTACKER = r"""
import errno, os, sys
target, outside = sys.argv[1:3]
sub = os.path.join(target, "sub")
for number, _ in enumerate(sys.stdin):
    try:
        os.rename(sub, f"{sub}-moved-{number}")
        os.symlink(outside, sub)
        print("swapped", flush=True)
    except OSError as exc:
        print("denied", errno.errorcode.get(exc.errno, exc.errno), flush=True)
"""
MAX_ROUNDS = 64


@pytest.fixture
def racer() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no unprivileged 'nobody' account to race with")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user can traverse (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="strongroom-race-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def python_for(user: pwd.struct_passwd) -> str:
    """An interpreter the racing user may run (the test's own may live under a private home)."""
    for candidate in (os.path.realpath(sys.executable), "/usr/bin/python3"):
        try:
            subprocess.run(
                [candidate, "-I", "-c", "pass"],
                user=user.pw_uid,
                group=user.pw_gid,
                extra_groups=[],
                cwd="/",
                capture_output=True,
                check=True,
            )
        except (OSError, subprocess.CalledProcessError):
            continue
        return candidate
    pytest.skip(f"no Python interpreter that {user.pw_name} may run")


def forge(vault: Vault, records: list[dict[str, Any]], contents: dict[str, bytes]) -> str:
    """A recovery point holding exactly ``records``, file content from ``contents`` (what a key holder can store)."""
    rp_id = secrets.token_hex(8)
    with RecoveryPointWriter(vault, rp_id) as writer:
        data = writer.stream()
        for record in records:
            if record["type"] == "file":
                refs = data.write_from(io.BytesIO(contents.get(record["path"], b"")))
                record["size"] = sum(ref.size for ref in refs)
                record["chunks"] = [[ref.id.hex(), ref.size] for ref in refs]
        lines = b"".join(json.dumps(record).encode() + b"\n" for record in records)
        writer.store_stream("tree", io.BytesIO(lines))
        writer.add_stream("data", data)
        writer.commit("forged", "directory", {"tree_format": 1})
    return rp_id


def entry(path: str, kind: str, mode: int, uid: int = 0, gid: int = 0) -> dict[str, Any]:
    return {"path": path, "type": kind, "mode": mode, "uid": uid, "gid": gid, "mtime_ns": 0, "atime_ns": 0}


@needs_root
@pytest.mark.parametrize("target_owner", ["forged-root-record", "existing-target-of-the-racer"])
def test_a_racing_local_user_cannot_make_a_restore_write_outside_its_target(
    tmp_path: Path, shared_dir: Path, racer: pwd.struct_passwd, target_owner: str
) -> None:
    vault = make_vault(tmp_path / "vault", average_chunk=64 * 1024)
    records = [
        entry(".", "dir", stat.S_IFDIR | 0o755, racer.pw_uid, racer.pw_gid),  # the racer gets the target
        entry("sub", "dir", stat.S_IFDIR | 0o755),
        entry("big.bin", "file", stat.S_IFREG | 0o644),  # written while the racer attacks "sub"
        entry("sub/planted.txt", "file", stat.S_IFREG | 0o644),
    ]
    contents = {"big.bin": os.urandom(1024 * 1024), "sub/planted.txt": b"root wrote this\n"}
    rp_id = forge(vault, records, contents)
    outside = shared_dir / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_bytes(b"untouched\n")
    target = shared_dir / "target"
    if target_owner == "existing-target-of-the-racer":
        target.mkdir()
        os.chown(target, racer.pw_uid, racer.pw_gid)

    attacker = subprocess.Popen(
        [python_for(racer), "-I", "-c", ATTACKER, str(target), str(outside)],
        user=racer.pw_uid,
        group=racer.pw_gid,
        extra_groups=[],
        cwd="/",
        env={},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    rounds: list[str] = []

    def attack(_written: int) -> None:
        if len(rounds) < MAX_ROUNDS:
            assert attacker.stdin is not None and attacker.stdout is not None
            attacker.stdin.write("attack\n")
            attacker.stdin.flush()
            rounds.append(attacker.stdout.readline().strip())

    failure: StrongroomError | None = None
    try:
        restore(vault, rp_id, RestoreRequest(target=str(target)), tmp_path / "scratch", tmp_path, progress=attack)
    except StrongroomError as exc:
        failure = exc
    finally:
        attacker.communicate()  # closes its stdin: the racer stops after its last turn

    assert len(rounds) >= 8, rounds  # the racer really got its turns while content was written
    assert sorted(os.listdir(outside)) == ["keep.txt"], "root wrote outside the target"
    assert (outside / "keep.txt").read_bytes() == b"untouched\n"
    assert sorted(os.listdir(shared_dir)) == ["outside", "target"]
    if target_owner == "forged-root-record":
        # The target stays root's (mode 0700) until the content is in: the racer never gets in.
        assert failure is None, failure
        assert set(rounds) == {"denied EACCES"}, rounds
        assert (target / "sub" / "planted.txt").read_bytes() == contents["sub/planted.txt"]
        assert (os.stat(target).st_uid, stat.S_IMODE(os.stat(target).st_mode)) == (racer.pw_uid, 0o755)
    else:
        # The racer owns the target, so it can swap "sub"; the restore notices and stops.
        assert "swapped" in rounds, rounds
        assert isinstance(failure, TargetError), failure
        assert "replaced during the restore" in str(failure) and "\n" not in str(failure)


def setid_tree(root: Path) -> Path:
    root.mkdir()
    for name, mode in (("setuid-tool", 0o4755), ("setgid-tool", 0o2755), ("plain-tool", 0o755)):
        (root / name).write_bytes(b"#!/bin/sh\nid\n")
        (root / name).chmod(mode)
    (root / "shared").mkdir()
    (root / "shared").chmod(0o2775)  # a setgid directory: group inheritance, no privilege
    (root / "sticky").mkdir()
    (root / "sticky").chmod(0o1777)
    os.mkfifo(root / "queue", 0o620)
    return root


def modes(root: Path) -> dict[str, int]:
    return {entry: os.lstat(root / entry).st_mode for entry in sorted(os.listdir(root))}


@pytest.mark.parametrize(
    ("from_copy", "options", "dropped"),
    [(True, {}, True), (True, {"preserve_special": True}, False), (False, {}, False)],
    ids=["copy", "copy-preserve-special", "own-point"],
)
def test_set_id_bits_of_a_copied_point_are_dropped_unless_asked(
    tmp_path: Path, vault: Vault, from_copy: bool, options: dict[str, Any], dropped: bool
) -> None:
    source = setid_tree(tmp_path / "source")
    expected = snapshot_tree(source)
    manifest, _ = backup(vault, ResourceSpec("files", "directory", {"path": str(source)}), tmp_path / "tmp")
    target = tmp_path / "restored"
    result = restore(
        vault,
        manifest.recovery_point_id,
        RestoreRequest(target=str(target), options=options),
        tmp_path / "scratch",
        tmp_path,
        from_copy=from_copy,
    )

    restored = modes(target)
    if dropped:
        assert stat.S_IMODE(restored["setuid-tool"]) == stat.S_IMODE(restored["setgid-tool"]) == 0o755
        assert result.details["setid_bits_dropped"] == 2
        source_modes = modes(source)
        for name in ("plain-tool", "shared", "sticky", "queue"):
            assert restored[name] == source_modes[name], name
    else:
        assert diff_snapshots(expected, snapshot_tree(target)) == []
        assert result.details["setid_bits_dropped"] == 0


@pytest.mark.parametrize("preserve", [False, True])
def test_a_forged_point_cannot_plant_a_device_node(tmp_path: Path, vault: Vault, preserve: bool) -> None:
    options = {"preserve_special": True} if preserve else {}
    as_fifo = forge(
        vault,
        [
            entry(".", "dir", stat.S_IFDIR | 0o755),
            {**entry("mem", "fifo", stat.S_IFCHR | 0o666), "rdev": os.makedev(1, 1)},
        ],
        {},
    )
    restore(
        vault,
        as_fifo,
        RestoreRequest(target=str(tmp_path / "a"), options=options),
        tmp_path / "s",
        tmp_path,
        from_copy=True,
    )
    assert stat.S_ISFIFO(os.lstat(tmp_path / "a" / "mem").st_mode)  # a fifo, whatever its record claims

    as_device = forge(
        vault,
        [
            entry(".", "dir", stat.S_IFDIR | 0o755),
            {**entry("mem", "chardev", stat.S_IFCHR | 0o666), "rdev": os.makedev(1, 1)},
        ],
        {},
    )
    with pytest.raises(FormatError, match="unknown type 'chardev'"):
        restore(
            vault,
            as_device,
            RestoreRequest(target=str(tmp_path / "b"), options=options),
            tmp_path / "s",
            tmp_path,
            from_copy=True,
        )
    assert os.listdir(tmp_path / "b") == []


def test_hard_links_between_subdirectories_are_restored_and_links_to_directories_refused(
    tmp_path: Path, vault: Vault
) -> None:
    linked = forge(
        vault,
        [
            entry(".", "dir", stat.S_IFDIR | 0o755),
            entry("a", "dir", stat.S_IFDIR | 0o755),
            entry("b", "dir", stat.S_IFDIR | 0o755),
            entry("a/f", "file", stat.S_IFREG | 0o640),
            {"path": "b/g", "type": "hardlink", "link": "a/f"},
        ],
        {"a/f": b"shared\n"},
    )
    target = tmp_path / "linked"
    restore(vault, linked, RestoreRequest(target=str(target)), tmp_path / "s", tmp_path)
    assert os.stat(target / "a" / "f").st_ino == os.stat(target / "b" / "g").st_ino
    assert (target / "b" / "g").read_bytes() == b"shared\n"

    to_dir = forge(
        vault,
        [
            entry(".", "dir", stat.S_IFDIR | 0o755),
            entry("a", "dir", stat.S_IFDIR | 0o755),
            entry("a/d", "dir", stat.S_IFDIR | 0o755),
            entry("b", "dir", stat.S_IFDIR | 0o755),
            {"path": "b/g", "type": "hardlink", "link": "a/d"},
        ],
        {},
    )
    with pytest.raises(IntegrityError, match="hard link to a directory"):
        restore(vault, to_dir, RestoreRequest(target=str(tmp_path / "to-dir")), tmp_path / "s", tmp_path)
    assert os.listdir(tmp_path / "to-dir") == []


def test_a_failed_restore_leaves_the_target_it_created_empty(tmp_path: Path, vault: Vault) -> None:
    forged = forge(
        vault,
        [
            entry(".", "dir", stat.S_IFDIR | 0o755),
            entry("a", "dir", stat.S_IFDIR | 0o755),
            entry("a/f", "file", stat.S_IFREG | 0o644),
            entry("top.txt", "file", stat.S_IFREG | 0o644),
            entry("../escape.txt", "file", stat.S_IFREG | 0o644),
        ],
        {"a/f": b"x" * 100_000},
    )
    target = tmp_path / "new"
    with pytest.raises(IntegrityError, match="would leave the restore target"):
        restore(vault, forged, RestoreRequest(target=str(target)), tmp_path / "s", tmp_path)
    assert os.listdir(target) == []  # nothing half-written: a retry may use the same path
    assert not (tmp_path / "escape.txt").exists()
