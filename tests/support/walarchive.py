"""A cluster archiving its WAL into a Strongroom vault through the real CLI (point-in-time recovery tests).

The archiver runs ``archive_command`` as the server's OS user (``postgres`` when the suite runs as root), who
cannot run this checkout's virtualenv (its interpreter lives under ``/root``): the launcher script runs
``python -m strongroom.cli.main`` with a system Python 3.11 that user can run and this checkout on
``PYTHONPATH``. ``STRONGROOM_WAL_COMMAND`` hands the launcher to ``wal setup`` and to restores.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import sysconfig
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from psycopg import sql

from strongroom.adapters.postgres.tools import server_user
from tests.support.cli import Cli
from tests.support.pgcluster import PgCluster

SRC = Path(__file__).resolve().parents[2] / "src"
POLL_LIMIT = 600  # polls of 0.1 s for the archiver: bounded, never a timing assumption about one step


def launcher(directory: Path) -> Path:
    """A script the server's OS user can run that starts ``strongroom`` from this checkout."""
    python = sys.executable
    if server_user() is not None:
        python = shutil.which("python3.11", path="/usr/bin:/usr/local/bin") or ""
        if not python:
            pytest.skip("no system python3.11 the postgres user can run (the venv's lives under /root)")
    path = directory / "strongroom-launcher"
    site = sysconfig.get_paths()["purelib"]
    path.write_text(f'#!/bin/sh\nPYTHONPATH={SRC}:{site} exec {python} -m strongroom.cli.main "$@"\n')
    path.chmod(0o755)
    return path


def vault_directory(directory: Path) -> Path:
    """An empty directory for a vault the server's OS user may write WAL into."""
    directory.mkdir(mode=0o700)
    user = server_user()
    if user is not None:
        os.chown(directory, user.uid, user.gid)
    return directory


@dataclass
class ArchivingCluster:
    cluster: PgCluster
    cli: Cli
    resource: str
    vault: str
    archive_command: str

    def set_archive_command(self, command: str) -> None:
        self.cluster.execute(sql.SQL("ALTER SYSTEM SET archive_command = {}").format(sql.Literal(command)))
        self.cluster.execute("SELECT pg_reload_conf()")

    def switch_and_wait(self) -> str:
        """Close the current segment and wait until the archiver has archived it; its name."""
        with self.cluster.connect() as conn:
            row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
        assert row is not None
        return self.wait_archived(row[0])

    def wait_archived(self, name: str) -> str:
        for _ in range(POLL_LIMIT):
            last = self.cluster.query("SELECT last_archived_wal FROM pg_stat_archiver")[0][0]
            if last is not None and last[:24] >= name:
                return name
            time.sleep(0.1)
        raise AssertionError(f"{name} was not archived: {self.cluster.log_file.read_text()[-2000:]}")

    def log_size(self) -> int:
        return self.cluster.log_file.stat().st_size

    def wait_logged(self, offset: int, *texts: str) -> str:
        """Wait until the server logs one of ``texts`` after ``offset`` (a killed archive_command takes the archiver
        down with it: PostgreSQL restarts it, and pg_stat_archiver does not count that failure)."""
        for _ in range(POLL_LIMIT):
            with self.cluster.log_file.open("rb") as log:
                log.seek(offset)
                logged = log.read().decode("utf-8", "replace")
            if any(text in logged for text in texts):
                return logged
            time.sleep(0.1)
        raise AssertionError(f"the server never logged {texts!r}: {logged[-3000:]}")


def archived_object(vault_dir: Path, system_identifier: str, name: str) -> Path:
    return vault_dir / "wal" / system_identifier / name[:8] / name


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def commit_events(cluster: PgCluster, count: int) -> list[tuple[int, datetime]]:
    """Commit ``count`` rows into ``events``, one transaction each; then every row's (id, commit time), in id
    order (``track_commit_timestamp`` on)."""
    for _ in range(count):
        with cluster.connect() as conn:
            conn.execute("INSERT INTO events (note) VALUES (md5(random()::text))")
    rows = cluster.query("SELECT id, pg_xact_commit_timestamp(xmin) FROM events ORDER BY id")
    return [(row[0], row[1]) for row in rows]


def ids(cluster: PgCluster) -> list[int]:
    """The ids in ``events``, in order: what a restore holds."""
    return [row[0] for row in cluster.query("SELECT id FROM events ORDER BY id")]
