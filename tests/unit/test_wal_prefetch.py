"""WAL prefetch for point-in-time restores (services/wal_prefetch.py, adapters/postgres/recovery.py), attacked.

The spool must only ever hold authenticated WAL under WAL names, and the restore_command that takes files
from it runs through the shell: a path PostgreSQL or the restore chose must not become shell code.
"""

from __future__ import annotations

import os
import shlex
import struct
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from strongroom.adapters.postgres.recovery import RecoveryRequest
from strongroom.services.wal_archive import WalCredential
from strongroom.services.wal_prefetch import WANT, Position, prefetch
from strongroom.vault import Vault
from strongroom.vault.wal import WalArchive, WalKeys, wal_key

SYSTEM = "7441234567890123456"
SIZE = 1 << 20


def segment(number: int) -> bytes:
    header = struct.pack("<HHIQI4xQI", 0xD110, 2, 1, number * SIZE, 0, int(SYSTEM), SIZE)
    return header + bytes([number]) * (SIZE - len(header))


def name(number: int) -> str:
    return Position(1, number, SIZE).name


def test_the_prefetcher_spools_authenticated_segments_and_stops_at_a_damaged_one(vault: Vault, tmp_path: Path) -> None:
    keys = WalKeys.derive(vault.keys, SYSTEM)
    archive = WalArchive(vault.store, keys)
    for number in range(3, 9):
        archive.push(name(number), segment(number), datetime.now(UTC))
    key = wal_key(SYSTEM, name(6))
    damaged = bytearray(vault.store.get(key))
    damaged[len(damaged) // 2] ^= 0x01
    vault.store.delete(key)
    vault.store.put(key, bytes(damaged))
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    (spool / WANT).write_text(f"{name(3)} {SIZE}\n")  # PostgreSQL fetched segment 3 itself
    prefetch(WalCredential("db", "pg-wal", vault.store.url, keys), spool)
    spooled = sorted(entry for entry in os.listdir(spool) if not entry.startswith("."))
    assert spooled == [name(4), name(5)]  # not the damaged 6, nor 7 and 8 behind it
    assert all((spool / each).read_bytes() == segment(number) for each, number in zip(spooled, (4, 5), strict=True))


def test_restore_command_paths_never_become_shell_code(tmp_path: Path) -> None:
    """PostgreSQL replaces %f, %p and %% in restore_command, then runs it with sh: quoting must hold for both."""
    odd = tmp_path / "it's $(touch pwned) 100%f"
    odd.mkdir()
    spool, credential = odd / "spool", odd / "cred.json"
    spool.mkdir()
    recorder = odd / "fetch"
    recorder.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$(dirname "$0")/args"\nexit 1\n')
    recorder.chmod(0o755)
    request = RecoveryRequest("latest", None, None, credential, shlex.quote(str(recorder)), spool)
    command = request.restore_command()
    wal = tmp_path / "pg_wal"
    wal.mkdir()
    (spool / name(4)).write_bytes(b"spooled")
    assert run_as_postgresql_would(command, name(4), tmp_path) == 0
    assert (wal / "RECOVERYXLOG").read_bytes() == b"spooled" and not (spool / name(4)).exists()
    assert run_as_postgresql_would(command, name(5), tmp_path) == 1  # not spooled: wal fetch's own exit code
    assert (odd / "args").read_text().split("\n")[:-1] == [
        "wal", "fetch", "--config", str(credential), "--spool", str(spool), name(5), "pg_wal/RECOVERYXLOG",
    ]  # fmt: skip
    assert not (tmp_path / "pwned").exists() and not (odd / "pwned").exists()


def run_as_postgresql_would(command: str, wal_name: str, cwd: Path) -> int:
    """PostgreSQL's substitution (``%f``, ``%p``, ``%%``; other ``%x`` left as is), then ``sh -c``."""
    out, index = [], 0
    while index < len(command):
        pair = command[index : index + 2]
        if pair in ("%f", "%p", "%%"):
            out.append({"%f": wal_name, "%p": "pg_wal/RECOVERYXLOG", "%%": "%"}[pair])
            index += 2
        else:
            out.append(command[index])
            index += 1
    return subprocess.run(["sh", "-c", "".join(out)], cwd=cwd, check=False).returncode
