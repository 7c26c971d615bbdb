"""Data offsets written into a piped pg_dump archive equal the ones pg_dump writes to a seekable file."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from strongroom.adapters.pgdump_format import add_data_offsets, data_offsets
from strongroom.adapters.pgtools import find_tool
from tests.support.pgcluster import PgCluster, sample_database

pytestmark = pytest.mark.postgres


def test_offsets_match_a_seekable_dump(pg_cluster: PgCluster, pg_databases: Callable[..., str], tmp_path: Path) -> None:
    name = sample_database(pg_cluster, pg_databases("fmt", create=False))
    pg_dump = find_tool("pg_dump")
    seekable = tmp_path / "seekable.dump"
    subprocess.run([pg_dump, "-Fc", "-Z0", "-f", seekable, f"--dbname={pg_cluster.dsn(name)}"], check=True)
    piped = tmp_path / "piped.dump"
    with subprocess.Popen([pg_dump, "-Fc", "-Z0", f"--dbname={pg_cluster.dsn(name)}"], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        with piped.open("wb") as out:
            shutil.copyfileobj(proc.stdout, out)
    assert proc.returncode == 0
    with piped.open("rb") as handle:
        before = data_offsets(handle)
    assert before and not any(before.values())  # written through a pipe: no offsets

    with piped.open("r+b") as handle:
        assert add_data_offsets(handle)
    with piped.open("rb") as patched, seekable.open("rb") as expected:
        assert data_offsets(patched) == data_offsets(expected)
    assert piped.stat().st_size == seekable.stat().st_size


def test_anything_else_is_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "not-a-dump"
    path.write_bytes(b"PGDMP\x01\x0e\x00\x04\x08\x01" + b"\x00" * 3)
    before = path.read_bytes()
    with path.open("r+b") as handle:
        assert not add_data_offsets(handle)
    assert path.read_bytes() == before
