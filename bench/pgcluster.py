"""Throwaway PostgreSQL clusters for the benchmark, run as the ``postgres`` OS user.

initdb refuses root, so every server-side command goes through ``runuser -u postgres``.
Clients (pg_dump, psql, pgbench ...) run as the invoking user over TCP on 127.0.0.1 with
``trust`` authentication, which the throwaway clusters allow for normal and replication use.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

PG_OS_USER = "postgres"


def find_bindir() -> Path:
    env = os.environ.get("PG_BINDIR")
    if env:
        return Path(env)
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not candidates:
        raise SystemExit("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (set PG_BINDIR)")
    return candidates[-1].parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def as_postgres(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    if os.geteuid() == 0:
        argv = ["runuser", "-u", PG_OS_USER, "--", *argv]
    return subprocess.run(argv, **kwargs)


def chown_postgres(path: Path) -> None:
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam(PG_OS_USER)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.lchown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


def make_postgres_dir(path: Path, mode: int = 0o700) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    chown_postgres(path)
    return path


BASE_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "wal_level": "replica",
    "max_wal_senders": "10",
    "archive_mode": "on",
    "archive_command": "'/bin/true'",
    "max_wal_size": "'4GB'",
    "shared_buffers": "'256MB'",
    "maintenance_work_mem": "'256MB'",
    "logging_collector": "off",
    "log_min_messages": "warning",
}

HBA = """\
local   all          all                    trust
host    all          all    127.0.0.1/32    trust
local   replication  all                    trust
host    replication  all    127.0.0.1/32    trust
"""


class Cluster:
    """One cluster: a data directory, a port, a socket directory and a log file."""

    def __init__(self, datadir: Path, port: int, bindir: Path, sockdir: Path, log) -> None:
        self.datadir = Path(datadir)
        self.port = port
        self.bindir = bindir
        self.sockdir = sockdir
        self.logfile = self.datadir.parent / f"{self.datadir.name}.log"
        self.log = log

    # URIs and environment for clients ---------------------------------------------------------
    def uri(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def client_env(self) -> dict[str, str]:
        return {"PGHOST": "127.0.0.1", "PGPORT": str(self.port), "PGUSER": "postgres"}

    def bin(self, name: str) -> str:
        return str(self.bindir / name)

    # Life cycle -------------------------------------------------------------------------------
    def initdb(self, settings: dict[str, str] | None = None) -> None:
        make_postgres_dir(self.datadir.parent, 0o755)
        make_postgres_dir(self.sockdir, 0o777)
        as_postgres(
            [
                self.bin("initdb"),
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
        )
        conf = dict(BASE_SETTINGS)
        conf.update({"port": str(self.port), "unix_socket_directories": f"'{self.sockdir}'"})
        conf.update(settings or {})
        with open(self.datadir / "postgresql.conf", "a") as handle:
            handle.write("\n# strongroom bench\n")
            for key, value in conf.items():
                handle.write(f"{key} = {value}\n")
        (self.datadir / "pg_hba.conf").write_text(HBA)

    def start(self, extra_options: str = "") -> None:
        options = f"-p {self.port} -k {self.sockdir} {extra_options}".strip()
        as_postgres(
            [
                self.bin("pg_ctl"),
                "-D",
                str(self.datadir),
                "-l",
                str(self.logfile),
                "-o",
                options,
                "-w",
                "-t",
                "600",
                "start",
            ],
            check=True,
            capture_output=True,
        )

    def start_nowait(self, extra_options: str = "") -> None:
        options = f"-p {self.port} -k {self.sockdir} {extra_options}".strip()
        as_postgres(
            [self.bin("pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile), "-o", options, "-W", "start"],
            check=True,
            capture_output=True,
        )

    def stop(self, mode: str = "fast") -> None:
        stop_datadir(self.bindir, self.datadir, mode)

    def running(self) -> bool:
        return (self.datadir / "postmaster.pid").exists()

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.datadir, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            self.logfile.unlink()

    # SQL --------------------------------------------------------------------------------------
    def psql(self, sql: str, dbname: str = "postgres", *, quiet: bool = True) -> str:
        argv = [
            self.bin("psql"),
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            dbname,
        ]
        if quiet:
            argv.append("-q")
        result = subprocess.run(argv, input=sql, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"psql on {dbname} failed: {result.stderr.strip()[-2000:]}")
        return result.stdout.strip()

    def wait_select1(self, timeout: float = 600, dbname: str = "postgres") -> float:
        """Poll until ``SELECT 1`` answers; returns when it did (perf_counter)."""
        return wait_select1(self.bindir, self.port, timeout=timeout, dbname=dbname)


def wait_select1(
    bindir: Path, port: int, *, timeout: float = 600, dbname: str = "postgres", host: str = "127.0.0.1"
) -> float:
    deadline = time.monotonic() + timeout
    argv = [
        str(bindir / "psql"),
        "-X",
        "-At",
        "-h",
        host,
        "-p",
        str(port),
        "-U",
        "postgres",
        "-d",
        dbname,
        "-c",
        "SELECT 1",
    ]
    while True:
        result = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PGCONNECT_TIMEOUT": "2"})
        if result.returncode == 0 and result.stdout.strip() == "1":
            return time.perf_counter()
        if time.monotonic() > deadline:
            raise TimeoutError(f"no answer to SELECT 1 on port {port} within {timeout}s: {result.stderr.strip()}")
        time.sleep(0.05)


def stop_datadir(bindir: Path, datadir: Path, mode: str = "fast") -> bool:
    """Stop whatever postmaster runs on ``datadir``; True when one was running."""
    if not (Path(datadir) / "postmaster.pid").exists():
        return False
    result = as_postgres(
        [str(bindir / "pg_ctl"), "-D", str(datadir), "-m", mode, "-w", "-t", "120", "stop"], capture_output=True
    )
    if result.returncode != 0 and (Path(datadir) / "postmaster.pid").exists():
        # Not ours to stop through pg_ctl (e.g. a different owner): signal the postmaster directly.
        try:
            pid = int((Path(datadir) / "postmaster.pid").read_text().split()[0])
            os.kill(pid, 3)  # SIGQUIT: immediate shutdown
            for _ in range(200):
                os.kill(pid, 0)
                time.sleep(0.05)
        except (OSError, ValueError, IndexError):
            pass
    return True


def stop_all_under(bindir: Path, root: Path) -> list[str]:
    """Stop every cluster whose postmaster.pid lies below ``root`` (cleanup after failures)."""
    stopped = []
    if not root.exists():
        return stopped
    for pidfile in root.rglob("postmaster.pid"):
        if stop_datadir(bindir, pidfile.parent, "immediate"):
            stopped.append(str(pidfile.parent))
    return stopped
