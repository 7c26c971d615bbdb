#!/usr/bin/env python3
"""PITR benchmark: WAL archiving under pgbench and point-in-time restore, Strongroom next to pgBackRest.

One throwaway cluster (``pgbench -i -s SCALE``), then for each archiver in turn, on the same cluster and
in the same run (docs/performance.md "Point-in-time recovery"; bench/README.md "pitr.py"):

1. **set-up**: its repository (pgBackRest ``stanza-create``; Strongroom ``init``, a vault the server's
   OS user can reach, ``resources add``, ``wal setup``), its ``archive_command``, a full base backup;
2. **backlog drain**: archiving paused (``archive_command = ''``), bulk updates make ``--backlog``
   completed segments, then the archiver's command is put back and the time to archive them all is
   the archive **throughput** (segments/s, MB/s) with its CPU (archiver children + async workers);
3. **steady state**: ``pgbench -T DURATION`` with the archiver on, sampling ``pg_current_wal_lsn()`` and
   ``pg_stat_archiver`` every ``--interval`` s: for each segment completed after the first quarter of the
   run, the time from its completion to its archiving (**lag in seconds**), the number of completed but
   unarchived segments (**lag in segments**), pgbench's TPS under that archiver, and how long the
   archiver needs after pgbench stops (drain); a target time T is taken at ``--target-fraction``;
4. **PITR restore** to T as a new cluster, timed until it has promoted and answers: pgBackRest
   ``restore --type=time --target=T --target-action=promote`` + ``pg_ctl start``; Strongroom
   ``restore start --recovery-point ARN --restore-time T --target-identifier … --port … --wait``. The
   restored ``pgbench_history`` is checked against the source: every transaction that started at least
   a second before T is there, none that started after T.

Archivers: ``pgbackrest-sync`` (``archive-push``, one process per segment), ``pgbackrest-async``
(``archive-async=y`` with a spool directory, ``process-max`` workers), ``strongroom`` (``strongroom wal
push``, one process per segment; ``wal fetch`` as restore_command). WAL-G is used if ``wal-g`` is on
PATH (it is not packaged for Debian bookworm nor on PyPI; the bench does not build it).

Needs root (clusters run as the ``postgres`` OS user), PostgreSQL server binaries and pgBackRest (installed
with ``apt-get install -y pgbackrest`` when missing and running as root). Uses psycopg from the
project's virtual environment for the sampling connection.

    .venv/bin/python bench/pitr.py --quick                 # smoke: scale 10, 20 s runs, ~3 minutes
    .venv/bin/python bench/pitr.py --scale 100 --duration 120
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import measure
import pgcluster
import psycopg
from psycopg import sql

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PASSPHRASE = "strongroom-bench-passphrase"
TOOLS = ("pgbackrest-sync", "pgbackrest-async", "strongroom", "wal-g")
HZ = os.sysconf("SC_CLK_TCK")
LAG_TARGET_SECONDS = 10.0
RESTORE_TARGET_RATIO = 1.2

SAMPLE_SQL = (
    "SELECT extract(epoch FROM clock_timestamp()), pg_current_wal_lsn()::text, archived_count, "
    "last_archived_wal, failed_count, last_failed_wal FROM pg_stat_archiver"
)


def lsn_int(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


@dataclass
class Sample:
    t: float  # server clock, epoch seconds
    lsn: int
    archived_count: int
    last_archived: str | None
    failed_count: int
    last_failed: str | None


@dataclass
class Phase:
    """The samples of one measured stretch and what the archiver's processes spent."""

    samples: list[Sample] = field(default_factory=list)
    cpu_seconds: float = 0.0
    marks: dict[str, float] = field(default_factory=dict)


class CpuWatch(threading.Thread):
    """CPU of archiving: the archiver's waited-for children (cutime+cstime: every synchronous
    archive_command) plus processes whose command line holds a marker (pgBackRest's detached
    ``archive-push:async`` process, which the archiver never waits for, with the local workers it
    waits for), sampled from /proc; what such a process spends in its last interval before it exits
    is missed, so its CPU is a lower bound."""

    def __init__(self, archiver_pid: int, markers: tuple[bytes, ...], interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.archiver_pid = archiver_pid
        self.markers = markers
        self.interval = interval
        self.seen: dict[int, float] = {}
        self.stop_event = threading.Event()
        self.start_children = self.children_cpu()

    def children_cpu(self) -> float:
        try:
            fields = Path(f"/proc/{self.archiver_pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
        except OSError:
            return 0.0
        # after ")": state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14)
        return (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / HZ

    def sample(self) -> None:
        if not self.markers:
            return
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
                if not any(marker in cmdline for marker in self.markers):
                    continue
                fields = Path(f"/proc/{name}/stat").read_bytes().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            # its own time and that of the children it waited for (pgBackRest's archive-push:local workers)
            self.seen[int(name)] = sum(int(value) for value in fields[11:15]) / HZ

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.sample()

    def finish(self) -> float:
        self.sample()
        self.stop_event.set()
        self.join()
        return self.children_cpu() - self.start_children + sum(self.seen.values())


class PitrBench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.work = Path(args.workdir).resolve() / f"pitr-{self.stamp}"
        self.out = Path(args.out).resolve()
        self.bindir = pgcluster.find_bindir()
        self.strongroom = str(Path(args.strongroom).absolute())
        self.cluster: pgcluster.Cluster | None = None
        self.conn: psycopg.Connection[Any] | None = None
        self.seg_size = 16 * 1024 * 1024
        self.results: dict[str, dict[str, Any]] = {}
        self.notes: list[str] = []
        self.meta: dict[str, Any] = {}
        self.t0 = time.perf_counter()
        self.logfile: Any = None
        self.aid_cursor = 1
        self.archive_dir = self.work

    # Logging ------------------------------------------------------------------------------------
    def log(self, message: str) -> None:
        line = f"[{time.perf_counter() - self.t0:7.1f}s] {message}"
        print(line, flush=True)
        if self.logfile:
            self.logfile.write(line + "\n")
            self.logfile.flush()

    def note(self, message: str) -> None:
        self.notes.append(message)
        self.log(f"NOTE: {message}")

    def run(self, argv: list[str], *, env: dict[str, str] | None = None, check: bool = True) -> measure.RunResult:
        return measure.run(argv, env=env, check=check, log=self.log if self.args.verbose else None, timeout=3600)

    # Cluster ------------------------------------------------------------------------------------
    def sql(self, query: str | sql.Composed, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
        assert self.conn is not None
        cur = self.conn.execute(query, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []

    def start_cluster(self) -> None:
        self.cluster = pgcluster.Cluster(
            self.work / "pgdata", pgcluster.free_port(), self.bindir, self.work / "sock", self.log
        )
        self.cluster.initdb({"archive_command": "''", "checkpoint_timeout": "'5min'"})
        self.cluster.start()
        self.conn = psycopg.connect(self.cluster.uri(), autocommit=True)
        self.seg_size = int(self.sql("SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'")[0][0])
        self.meta["postgresql"] = self.sql("SELECT version()")[0][0]
        self.log(f"cluster on port {self.cluster.port}; {self.meta['postgresql']}")

    def load(self) -> None:
        assert self.cluster
        started = time.perf_counter()
        env = {**os.environ, **self.cluster.client_env()}
        subprocess.run(
            [self.cluster.bin("pgbench"), "-i", "-q", "-s", str(self.args.scale), "postgres"],
            env=env,
            check=True,
            capture_output=True,
        )
        self.sql("VACUUM ANALYZE")
        self.sql("CHECKPOINT")
        size = self.sql("SELECT pg_database_size('postgres')")[0][0]
        self.meta["database_bytes"] = size
        self.log(f"pgbench -i -s {self.args.scale}: {size / 2**20:.0f} MiB in {time.perf_counter() - started:.1f}s")

    def archiver_pid(self) -> int:
        return int(self.sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'archiver'")[0][0])

    def set_archive_command(self, command: str) -> None:
        self.sql(sql.SQL("ALTER SYSTEM SET archive_command = {}").format(sql.Literal(command)))
        self.sql("SELECT pg_reload_conf()")
        time.sleep(0.3)

    def sample(self) -> Sample:
        row = self.sql(SAMPLE_SQL)[0]
        return Sample(float(row[0]), lsn_int(row[1]), int(row[2]), row[3], int(row[4]), row[5])

    def segno(self, walname: str | None) -> int:
        if not walname or len(walname) < 24 or not walname[:24].isalnum():
            return -1
        per_log = 0x100000000 // self.seg_size
        return int(walname[8:16], 16) * per_log + int(walname[16:24], 16)

    def completed_segment(self, lsn: int) -> int:
        """The last segment wholly written below ``lsn``."""
        return lsn // self.seg_size - 1

    def wait_archived(self, segment: int, timeout: float, phase: Phase | None = None) -> float | None:
        """Sample until ``segment`` is archived; when it was (server clock), or None on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            current = self.sample()
            if phase is not None:
                phase.samples.append(current)
            if self.segno(current.last_archived) >= segment:
                return current.t
            time.sleep(self.args.interval)
        return None

    def switch_and_wait(self, timeout: float = 120) -> bool:
        """Close the current segment and wait until the archiver has it (the archive works, no backlog)."""
        self.sql("SELECT txid_current()")  # something to switch away from
        name = self.sql("SELECT pg_walfile_name(pg_switch_wal())")[0][0]
        return self.wait_archived(self.segno(name), timeout) is not None

    # Workloads ----------------------------------------------------------------------------------
    def make_backlog(self, segments: int) -> int:
        """Bulk updates of pgbench_accounts until ``segments`` more segments are complete."""
        start = self.completed_segment(self.sample().lsn)
        rows = self.args.scale * 100000
        batch = 50000
        for _ in range(100000):
            if self.completed_segment(self.sample().lsn) - start >= segments:
                break
            low = self.aid_cursor
            self.sql(
                "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid >= %s AND aid < %s", (low, low + batch)
            )
            self.aid_cursor = low + batch if low + batch <= rows else 1
        return self.completed_segment(self.sample().lsn)

    def pgbench(self, seconds: int) -> subprocess.Popen[str]:
        assert self.cluster
        argv = [
            self.cluster.bin("pgbench"),
            "-n",
            "-c",
            str(self.args.clients),
            "-j",
            str(self.args.threads),
            "-T",
            str(seconds),
            "postgres",
        ]
        env = {**os.environ, **self.cluster.client_env()}
        return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # Measurements -------------------------------------------------------------------------------
    def measure_backlog(self, tool: str, command: str, markers: tuple[bytes, ...]) -> dict[str, Any]:
        self.set_archive_command("")
        begin = self.completed_segment(self.sample().lsn)
        last = self.make_backlog(self.args.backlog)
        pending = last - max(self.segno(self.sample().last_archived), begin)
        watch = CpuWatch(self.archiver_pid(), markers)
        watch.start()
        stored_before = measure.dir_bytes(self.archive_dir)["disk"]
        started = self.sample().t
        self.set_archive_command(command)
        done = self.wait_archived(last, self.args.drain_timeout)
        cpu = watch.finish()
        if done is None:
            self.note(f"{tool}: backlog of {pending} segments not archived within {self.args.drain_timeout}s")
            return {"segments": pending, "completed": False}
        seconds = done - started
        result = {
            "segments": pending,
            "seconds": round(seconds, 3),
            "segments_per_second": round(pending / seconds, 2) if seconds > 0 else None,
            "mb_per_second": round(pending * self.seg_size / 1e6 / seconds, 1) if seconds > 0 else None,
            "cpu_seconds": round(cpu, 3),
            "cpu_seconds_per_segment": round(cpu / pending, 4) if pending else None,
            "stored_bytes_per_segment": _per(measure.dir_bytes(self.archive_dir)["disk"] - stored_before, pending),
            "completed": True,
        }
        self.log(f"{tool}: backlog {json.dumps(result)}")
        return result

    def measure_steady(self, tool: str, markers: tuple[bytes, ...]) -> dict[str, Any]:
        phase = Phase()
        self.sql("CHECKPOINT")
        if not self.switch_and_wait():
            self.note(f"{tool}: the archive did not take a switched segment before the steady-state run")
        watch = CpuWatch(self.archiver_pid(), markers)
        watch.start()
        stored_before = measure.dir_bytes(self.archive_dir)["disk"]
        before = self.sample()
        duration = self.args.duration
        proc = self.pgbench(duration)
        started = time.monotonic()
        target_at = started + duration * self.args.target_fraction
        target_time: float | None = None
        while proc.poll() is None and time.monotonic() < started + duration + 120:
            phase.samples.append(self.sample())
            if target_time is None and time.monotonic() >= target_at:
                target_time = phase.samples[-1].t
            time.sleep(self.args.interval)
        out, err = proc.communicate()
        ended = self.sample()
        phase.samples.append(ended)
        last_completed = self.completed_segment(ended.lsn)
        drained = self.wait_archived(last_completed, self.args.drain_timeout, phase)
        cpu = watch.finish()
        # The segment holding T may still be open: close it, as archive_timeout would, so every archiver's
        # archive covers T before the restore (outside the measured numbers).
        if not self.switch_and_wait(self.args.drain_timeout):
            self.note(f"{tool}: the archive did not take the last switched segment")
        tps = next((line.split("=")[1].split()[0] for line in out.splitlines() if line.startswith("tps")), None)
        if proc.returncode != 0:
            self.note(f"{tool}: pgbench failed: {err.strip()[-300:]}")
        lag = self.segment_lags(phase.samples, before, started_fraction=0.25, end=ended.t)
        generated = last_completed - self.completed_segment(before.lsn)
        run_seconds = ended.t - before.t
        pending = [p for _, p in lag["pending"]]
        result = {
            "pgbench_tps": float(tps) if tps else None,
            "seconds": round(run_seconds, 1),
            "segments_generated": generated,
            "generated_per_second": round(generated / run_seconds, 2),
            "segments_archived": ended.archived_count - before.archived_count,
            "archived_per_second": round((ended.archived_count - before.archived_count) / run_seconds, 2),
            "lag_seconds_median": _round(_median(lag["seconds"])),
            "lag_seconds_p95": _round(_pct(lag["seconds"], 0.95)),
            "lag_seconds_max": _round(max(lag["seconds"], default=None)),
            "lag_segments_median": _median(pending),
            "lag_segments_max": max(pending, default=None),
            "lag_segments_at_end": max(0, last_completed - self.segno(ended.last_archived)),
            "segments_measured": len(lag["seconds"]),
            "drain_seconds_after_end": _round(drained - ended.t) if drained is not None else None,
            "failed_count": ended.failed_count - before.failed_count,
            "cpu_seconds": round(cpu, 3),
            "cpu_seconds_per_segment": round(cpu / generated, 4) if generated else None,
            "cpu_share_of_one_core": round(cpu / run_seconds, 3),
            "stored_bytes_per_segment": _per(measure.dir_bytes(self.archive_dir)["disk"] - stored_before, generated),
            "target_time": _iso(target_time) if target_time else None,
            "target_epoch": target_time,
        }
        self.log(f"{tool}: steady state {json.dumps(result)}")
        return result

    def segment_lags(
        self, samples: list[Sample], before: Sample, *, started_fraction: float, end: float
    ) -> dict[str, list[Any]]:
        """Per segment completed in the measured window: seconds from completion to archiving (sample
        resolution); per sample: completed segments not yet archived."""
        window_start = before.t + (end - before.t) * started_fraction
        completed_at: dict[int, float] = {}
        archived_at: dict[int, float] = {}
        pending = []
        first = self.completed_segment(before.lsn) + 1
        for s in samples:
            done = self.completed_segment(s.lsn)
            for seg in range(first, done + 1):
                completed_at.setdefault(seg, s.t)
            archived = self.segno(s.last_archived)
            for seg in range(first, archived + 1):
                archived_at.setdefault(seg, s.t)
            if window_start <= s.t <= end:
                pending.append((s.t, max(0, done - archived)))
        seconds = [
            archived_at[seg] - t for seg, t in completed_at.items() if window_start <= t <= end and seg in archived_at
        ]
        return {"seconds": seconds, "pending": pending}

    # Verification -------------------------------------------------------------------------------
    def history_bounds(self, target: float) -> tuple[int, int]:
        """Rows of pgbench_history a restore to ``target`` must hold: at least those of transactions that
        started a second before it, at most those that started by then (mtime is the start time)."""
        low = self.sql(
            "SELECT count(*) FROM pgbench_history WHERE mtime <= to_timestamp(%s) - interval '1 second'", (target,)
        )[0][0]
        high = self.sql("SELECT count(*) FROM pgbench_history WHERE mtime <= to_timestamp(%s)", (target,))[0][0]
        return int(low), int(high)

    def check_restored(self, port: int, bounds: tuple[int, int]) -> dict[str, Any]:
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True) as conn:
            in_recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]  # type: ignore[index]
            count = conn.execute("SELECT count(*) FROM pgbench_history").fetchone()[0]  # type: ignore[index]
        ok = not in_recovery and bounds[0] <= count <= bounds[1]
        return {"verified": ok, "history_rows": count, "expected_between": list(bounds), "promoted": not in_recovery}

    def wait_promoted(self, port: int, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        last_error = ""
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(
                    f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True, connect_timeout=2
                ) as conn:
                    if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:  # type: ignore[index]
                        return time.perf_counter()
            except psycopg.Error as exc:
                last_error = str(exc).strip()
            time.sleep(0.05)
        raise TimeoutError(f"the restored cluster on port {port} did not promote within {timeout}s: {last_error}")

    # pgBackRest ---------------------------------------------------------------------------------
    def pgbackrest_conf(self, name: str, async_push: bool) -> Path:
        assert self.cluster
        base = pgcluster.make_postgres_dir(self.work / name, 0o755)
        repo = pgcluster.make_postgres_dir(base / "repo", 0o750)
        lines = [
            "[global]",
            f"repo1-path={repo}",
            "repo1-retention-full=10",
            f"compress-type={self.args.pgbackrest_compress}",
            f"process-max={self.args.pgbackrest_process_max}",
            "start-fast=y",
            "log-level-console=warn",
            "log-level-file=off",
            f"lock-path={base / 'lock'}",
        ]
        if async_push:
            spool = pgcluster.make_postgres_dir(base / "spool", 0o750)
            lines += ["archive-async=y", f"spool-path={spool}"]
        lines += [
            "",
            "[bench]",
            f"pg1-path={self.cluster.datadir}",
            f"pg1-port={self.cluster.port}",
            f"pg1-socket-path={self.cluster.sockdir}",
            "pg1-user=postgres",
        ]
        conf = base / "pgbackrest.conf"
        conf.write_text("\n".join(lines) + "\n")
        pgcluster.chown_postgres(base)
        return conf

    def pgbackrest(self, conf: Path, *argv: str, check: bool = True) -> measure.RunResult:
        return self.run(
            ["runuser", "-u", "postgres", "--", "pgbackrest", f"--config={conf}", "--stanza=bench", *argv], check=check
        )

    def pgbackrest_setup(self, tool: str) -> tuple[str, Path]:
        conf = self.pgbackrest_conf(tool, async_push=tool == "pgbackrest-async")
        self.pgbackrest(conf, "stanza-create")
        command = f"pgbackrest --config={conf} --stanza=bench archive-push %p"
        self.set_archive_command(command)
        self.pgbackrest(conf, "check")
        res = self.pgbackrest(conf, "--type=full", "backup")
        self.log(f"{tool}: full backup in {res.seconds:.1f}s")
        return command, conf

    def pgbackrest_restore(self, tool: str, conf: Path, target: str, bounds: tuple[int, int]) -> dict[str, Any]:
        restored = self.work / f"{tool}-restored"
        port = pgcluster.free_port()
        started = time.perf_counter()
        try:
            pgcluster.make_postgres_dir(restored)
            self.pgbackrest(
                conf,
                f"--pg1-path={restored}",
                "--archive-mode=off",
                "--type=time",
                f"--target={target}",
                "--target-action=promote",
                "restore",
            )
            files_done = time.perf_counter()
            options = f"-p {port} -k {self.work / 'sock'} -c archive_mode=off -c listen_addresses=127.0.0.1"
            pgcluster.as_postgres(
                [
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(restored),
                    "-l",
                    str(self.work / f"{tool}-restored.log"),
                    "-o",
                    options,
                    "-W",
                    "start",
                ],
                check=True,
                capture_output=True,
            )
            promoted = self.wait_promoted(port, self.args.drain_timeout)
            result = {
                "seconds": round(promoted - started, 3),
                "restore_command_seconds": round(files_done - started, 3),
                **self.check_restored(port, bounds),
                **replay_stats(self.work / f"{tool}-restored.log"),
            }
        finally:
            pgcluster.stop_datadir(self.bindir, restored, "immediate")
            shutil.rmtree(restored, ignore_errors=True)
        self.log(f"{tool}: restore {json.dumps(result)}")
        return result

    # Strongroom ---------------------------------------------------------------------------------
    def sr_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
        return {
            **env,
            "STRONGROOM_HOME": str(self.work / "strongroom" / "home"),
            "STRONGROOM_PASSPHRASE": PASSPHRASE,
            "STRONGROOM_WAL_COMMAND": self.strongroom,
        }

    def sr(self, *argv: str, check: bool = True) -> measure.RunResult:
        return self.run([self.strongroom, *argv], env=self.sr_env(), check=check)

    def strongroom_setup(self) -> tuple[str, str]:
        assert self.cluster
        base = self.work / "strongroom"
        base.mkdir(parents=True, exist_ok=True)
        os.chmod(base, 0o755)
        self.sr("init", "--json")
        os.chmod(base / "home", 0o711)  # the server's OS user reaches the WAL credential file below it
        store = base / "vault"
        self.sr("vaults", "create", "pg-wal", "--store", f"file://{store}", "--json")
        os.chmod(store, 0o711)
        dsn = f"postgresql://postgres@127.0.0.1:{self.cluster.port}/postgres"
        self.sr("resources", "add", "db", "--type", "postgres-cluster", "--dsn", dsn, "--json")
        setup = json.loads(self.sr("wal", "setup", "--resource", "db", "--vault", "pg-wal", "--json").stdout)
        command = setup["settings"]["archive_command"]
        self.set_archive_command(command)
        if not self.switch_and_wait(60):
            raise RuntimeError(f"strongroom wal push does not archive; server log: {self.server_log_tail()}")
        res = self.sr("backup", "start", "--resource", "db", "--vault", "pg-wal", "--wait", "--json")
        job = json.loads(res.stdout)
        if job.get("state") != "COMPLETED":
            raise RuntimeError(f"base backup {job.get('job_id')} is {job.get('state')}: {job.get('status_message')}")
        self.log(f"strongroom: base backup in {res.seconds:.1f}s")
        return command, str(job["recovery_point_arn"])

    def strongroom_restore(self, arn: str, target: str, bounds: tuple[int, int]) -> dict[str, Any]:
        port = pgcluster.free_port()
        identifier = f"pitr{int(time.time())}"
        started = time.perf_counter()
        try:
            res = self.sr(
                "restore",
                "start",
                "--recovery-point",
                arn,
                "--target-identifier",
                identifier,
                "--port",
                str(port),
                "--restore-time",
                target,
                "--wait",
                "--json",
                check=False,
            )
            if not res.ok:
                raise RuntimeError(f"strongroom restore start failed ({res.returncode}): {res.stderr.strip()[-800:]}")
            job = json.loads(res.stdout)
            if job.get("state") != "COMPLETED":
                raise RuntimeError(
                    f"restore job {job.get('job_id')} is {job.get('state')}: {job.get('status_message')}"
                )
            promoted = self.wait_promoted(port, 300)
            result = {
                "seconds": round(promoted - started, 3),
                "restore_command_seconds": round(res.seconds, 3),
                "job_seconds": job.get("duration_seconds"),
                "recovery": (job.get("result") or {}).get("recovery"),
                **self.check_restored(port, bounds),
                **replay_stats(self.work / "strongroom" / "home" / "clusters" / f"{identifier}.log"),
            }
        finally:
            stopped = pgcluster.stop_all_under(self.bindir, self.work / "strongroom")
            if stopped:
                self.log(f"stopped restored cluster(s): {stopped}")
        self.log(f"strongroom: restore {json.dumps(result, default=str)}")
        return result

    # WAL-G --------------------------------------------------------------------------------------
    def walg_setup(self) -> str:
        """WAL-G into a local directory (archiving only; used when ``wal-g`` is on PATH)."""
        store = pgcluster.make_postgres_dir(self.work / "wal-g" / "store", 0o750)
        return f"WALG_FILE_PREFIX={store} WALG_COMPRESSION_METHOD=zstd wal-g wal-push %p"

    # The sequence -------------------------------------------------------------------------------
    def measure_tool(self, tool: str) -> None:
        entry: dict[str, Any] = {}
        self.results[tool] = entry
        markers: tuple[bytes, ...] = ()
        conf: Path | None = None
        arn = ""
        try:
            if tool.startswith("pgbackrest"):
                command, conf = self.pgbackrest_setup(tool)
                if tool == "pgbackrest-async":
                    markers = (b"archive-push:async",)
            elif tool == "strongroom":
                command, arn = self.strongroom_setup()
            else:
                command = self.walg_setup()
            entry["archive_command"] = command
            self.archive_dir = {
                "strongroom": self.work / "strongroom" / "vault" / "wal",
                "wal-g": self.work / "wal-g" / "store",
            }.get(tool, self.work / tool / "repo" / "archive")
            entry["backlog"] = self.measure_backlog(tool, command, markers)
            entry["steady"] = self.measure_steady(tool, markers)
        except Exception as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
            self.note(f"{tool}: {entry['error']}")
            self.log(traceback.format_exc())
            self.set_archive_command("")
            return
        target_epoch = entry["steady"].get("target_epoch")
        if self.args.no_restore or tool == "wal-g" or target_epoch is None:
            self.set_archive_command("")
            return
        target_epoch = int(target_epoch * 1000) / 1000  # pgBackRest takes milliseconds at most
        bounds = self.history_bounds(target_epoch)
        try:
            if conf is not None:
                entry["restore"] = self.pgbackrest_restore(tool, conf, _pgbackrest_time(target_epoch), bounds)
            else:
                entry["restore"] = self.strongroom_restore(arn, _iso(target_epoch), bounds)
        except Exception as exc:
            entry["restore"] = {"error": f"{type(exc).__name__}: {exc}"}
            self.note(f"{tool}: restore failed: {exc}")
            self.log(traceback.format_exc())
        finally:
            self.set_archive_command("")

    def server_log_tail(self) -> str:
        assert self.cluster
        with contextlib.suppress(OSError):
            return "\n".join(self.cluster.logfile.read_text(errors="replace").splitlines()[-15:])
        return ""

    def main(self) -> int:
        self.work.mkdir(parents=True, exist_ok=True)
        os.chmod(self.work, 0o755)
        self.out.mkdir(parents=True, exist_ok=True)
        self.logfile = open(self.out / f"pitr-{self.stamp}.log", "w")  # noqa: SIM115
        self.meta["machine"] = {
            "cpus": os.cpu_count(),
            "pgbackrest": _output(["pgbackrest", "version"]),
            "strongroom_commit": _output(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
        }
        status = "completed"
        try:
            self.start_cluster()
            self.load()
            for tool in self.args.tools:
                self.log(f"--- {tool}")
                self.measure_tool(tool)
        except KeyboardInterrupt:
            status = "interrupted"
            self.log("interrupted; cleaning up")
        except Exception:
            status = "failed"
            self.log("FAILED:\n" + traceback.format_exc())
        finally:
            self.cleanup()
            self.write_results(status)
        return 0 if status == "completed" else 1

    def cleanup(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        with contextlib.suppress(Exception):
            stopped = pgcluster.stop_all_under(self.bindir, self.work)
            if stopped:
                self.log(f"stopped clusters: {stopped}")
        _kill_matching(str(self.work).encode())  # pgBackRest's detached async workers
        if not self.args.keep_work:
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            self.log(f"kept {self.work}")

    def write_results(self, status: str) -> None:
        data = {
            "format": 1,
            "status": status,
            "started_at": self.stamp,
            "total_seconds": round(time.perf_counter() - self.t0, 1),
            "arguments": vars(self.args),
            "meta": self.meta,
            "notes": self.notes,
            "results": self.results,
        }
        path = self.out / f"pitr-{self.stamp}.json"
        path.write_text(json.dumps(data, indent=2, default=str) + "\n")
        text = markdown(data)
        path.with_suffix(".md").write_text(text)
        print()
        print(text)
        self.log(f"results: {path} and {path.with_suffix('.md')}")
        if self.logfile:
            self.logfile.close()
            self.logfile = None


# Report -----------------------------------------------------------------------------------------
def markdown(data: dict[str, Any]) -> str:
    args, results = data["arguments"], data["results"]
    lines = [
        f"# PITR benchmark {data['started_at']} ({data['status']})",
        "",
        f"pgbench scale {args['scale']} ({(data['meta'].get('database_bytes') or 0) / 2**20:.0f} MiB), "
        f"{args['clients']} clients, {args['duration']} s per archiver; backlog {args['backlog']} segments; "
        f"{data['meta'].get('postgresql', '')}; {data['meta']['machine'].get('pgbackrest', '')}; "
        f"{data['meta']['machine'].get('cpus')} CPUs.",
        "",
        "## Archiving under pgbench (steady state)",
        "",
        "| archiver | pgbench TPS | WAL made (seg/s) | archived (seg/s) | lag s median / p95 / max | "
        "lag segments median / max | drain after pgbench (s) | CPU s/segment | CPU, share of one core | "
        "stored KiB/segment | failures |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for tool, entry in results.items():
        s = entry.get("steady")
        if not s:
            lines.append(f"| {tool} | {entry.get('error', 'not run')[:300]} | | | | | | | | | |")
            continue
        lines.append(
            f"| {tool} | {s['pgbench_tps']} | {s['generated_per_second']} | {s['archived_per_second']} | "
            f"{s['lag_seconds_median']} / {s['lag_seconds_p95']} / {s['lag_seconds_max']} | "
            f"{s['lag_segments_median']} / {s['lag_segments_max']} | {s['drain_seconds_after_end']} | "
            f"{s['cpu_seconds_per_segment']} | {s['cpu_share_of_one_core']} | {_kib(s['stored_bytes_per_segment'])} | "
            f"{s['failed_count']} |"
        )
    lines += [
        "",
        "## Archive throughput (backlog drain)",
        "",
        "| archiver | segments | seconds | segments/s | MB/s | CPU s/segment | stored KiB/segment |",
        "|---|---|---|---|---|---|---|",
    ]
    for tool, entry in results.items():
        b = entry.get("backlog")
        if b and b.get("completed"):
            lines.append(
                f"| {tool} | {b['segments']} | {b['seconds']} | {b['segments_per_second']} | {b['mb_per_second']} | "
                f"{b['cpu_seconds_per_segment']} | {_kib(b.get('stored_bytes_per_segment'))} |"
            )
        elif b:
            lines.append(f"| {tool} | {b['segments']} | not drained | | | | |")
    lines += [
        "",
        "## PITR restore to a time (until promoted and answering)",
        "",
        "| archiver | total s | restore command s | WAL files replayed | replay s (per file) | verified | "
        "rows (expected range) |",
        "|---|---|---|---|---|---|---|",
    ]
    for tool, entry in results.items():
        r = entry.get("restore")
        if not r:
            continue
        if "error" in r:
            lines.append(f"| {tool} | failed: {r['error'][:300]} | | | | | |")
            continue
        lines.append(
            f"| {tool} | {r['seconds']} | {r['restore_command_seconds']} | {r.get('wal_files_replayed')} | "
            f"{r.get('replay_seconds')} ({r.get('replay_seconds_per_file')}) | {r['verified']} | "
            f"{r['history_rows']} ({r['expected_between'][0]}..{r['expected_between'][1]}) |"
        )
    lines += ["", "## Targets", "", *targets(results)]
    if data["notes"]:
        lines += ["", "## Notes", "", *[f"- {note}" for note in data["notes"]]]
    return "\n".join(lines) + "\n"


def targets(results: dict[str, Any]) -> list[str]:
    out = []
    sr = results.get("strongroom", {})
    steady = sr.get("steady")
    if steady:
        p95, worst = steady["lag_seconds_p95"], steady["lag_seconds_max"]
        keeps = worst is not None and worst < LAG_TARGET_SECONDS and (steady["drain_seconds_after_end"] or 0) < 10
        out.append(
            f"- Archiving keeps up with lag under {LAG_TARGET_SECONDS:.0f} s: p95 {p95} s, max {worst} s, "
            f"{steady['drain_seconds_after_end']} s to drain after pgbench — {'met' if keeps else 'MISSED'}"
        )
    restore = (sr.get("restore") or {}).get("seconds")
    for base in ("pgbackrest-sync", "pgbackrest-async"):
        theirs = ((results.get(base) or {}).get("restore") or {}).get("seconds")
        if restore and theirs:
            ratio = restore / theirs
            verdict = "met" if ratio <= RESTORE_TARGET_RATIO else "MISSED"
            out.append(
                f"- Restore within {RESTORE_TARGET_RATIO}x of {base}: {ratio:.2f}x "
                f"({restore} s vs {theirs} s) — {verdict}"
            )
    return out or ["- no Strongroom result to judge"]


# Helpers ----------------------------------------------------------------------------------------
def replay_stats(logfile: Path) -> dict[str, Any]:
    """From the restored server's log: WAL files restore_command delivered, and the seconds from the first
    one to "ready to accept connections" (fetching and replaying them, the end-of-recovery checkpoint)."""
    try:
        lines = logfile.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    restored = [line for line in lines if "restored log file" in line]
    ready = next((line for line in lines if "ready to accept connections" in line and restored), None)
    if not restored or ready is None:
        return {"wal_files_replayed": len(restored)}
    seconds = (_log_time(ready) - _log_time(restored[0])).total_seconds()
    return {
        "wal_files_replayed": len(restored),
        "replay_seconds": round(seconds, 2),
        "replay_seconds_per_file": round(seconds / len(restored), 3),
    }


def _log_time(line: str) -> datetime:
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f")


def _median(values: list[Any]) -> Any:
    return statistics.median(values) if values else None


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _kib(value: int | None) -> str:
    return "" if value is None else f"{value / 1024:.0f}"


def _per(total: int, count: int) -> int | None:
    return round(total / count) if count else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _utc(epoch: float) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=epoch)


def _iso(epoch: float) -> str:
    return _utc(epoch).isoformat(timespec="milliseconds")


def _pgbackrest_time(epoch: float) -> str:
    """pgBackRest's --target format: ``YYYY-MM-DD HH:MM:SS.mmm+00``."""
    return _utc(epoch).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "+00"


def _output(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
    except OSError:
        return ""


def _kill_matching(marker: bytes) -> None:
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker in Path(f"/proc/{name}/cmdline").read_bytes():
                os.kill(int(name), signal.SIGTERM)


def ensure_pgbackrest() -> bool:
    if shutil.which("pgbackrest"):
        return True
    if os.geteuid() != 0:
        return False
    print("pgbackrest is missing: apt-get install -y pgbackrest", flush=True)
    subprocess.run(["apt-get", "install", "-y", "-q", "pgbackrest"], check=False, capture_output=True)
    return shutil.which("pgbackrest") is not None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Smoke mode: scale 10, 20 s runs, 8-segment backlog.")
    parser.add_argument("--scale", type=int, default=None, help="pgbench scale (default 100; --quick 10).")
    parser.add_argument("--duration", type=int, default=None, help="pgbench seconds per archiver (default 120).")
    parser.add_argument("--backlog", type=int, default=None, help="Segments in the backlog drain (default 64).")
    parser.add_argument("--clients", type=int, default=4, help="pgbench clients. Default 4.")
    parser.add_argument("--threads", type=int, default=2, help="pgbench threads. Default 2.")
    parser.add_argument(
        "--tools",
        default="pgbackrest-sync,pgbackrest-async,strongroom",
        help=f"Comma-separated, in order, from {', '.join(TOOLS)}.",
    )
    parser.add_argument("--interval", type=float, default=0.25, help="Sampling interval, seconds. Default 0.25.")
    parser.add_argument("--target-fraction", type=float, default=0.75, help="Where in the run T is taken.")
    parser.add_argument("--drain-timeout", type=float, default=900, help="Longest wait for the archive, seconds.")
    parser.add_argument("--no-restore", action="store_true", help="Archiving only.")
    parser.add_argument("--pgbackrest-process-max", type=int, default=2, help="pgBackRest process-max. Default 2.")
    parser.add_argument("--pgbackrest-compress", default="zst", help="pgBackRest compress-type. Default zst.")
    parser.add_argument(
        "--strongroom", default=str(REPO / ".venv" / "bin" / "strongroom"), help="strongroom executable."
    )
    parser.add_argument("--out", default=str(BENCH / "results"), help="Directory for the JSON, Markdown and log.")
    parser.add_argument("--workdir", default=str(BENCH / "work"), help="Scratch directory (removed at the end).")
    parser.add_argument("--keep-work", action="store_true", help="Keep the scratch directory (debugging).")
    parser.add_argument("-v", "--verbose", action="store_true", help="Log every command.")
    args = parser.parse_args(argv)
    defaults = (10, 20, 8) if args.quick else (100, 120, 64)
    args.scale = args.scale or defaults[0]
    args.duration = args.duration or defaults[1]
    args.backlog = args.backlog or defaults[2]
    args.tools = [tool.strip() for tool in args.tools.split(",") if tool.strip()]
    unknown = [tool for tool in args.tools if tool not in TOOLS]
    if unknown:
        parser.error(f"unknown tools {unknown}; choose from {', '.join(TOOLS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("run as root: the clusters run as the postgres OS user (runuser)", file=sys.stderr)
        return 2
    if any(tool.startswith("pgbackrest") for tool in args.tools) and not ensure_pgbackrest():
        print("pgBackRest is not installed and could not be (apt-get install -y pgbackrest)", file=sys.stderr)
        return 2
    if "wal-g" in args.tools and not shutil.which("wal-g"):
        print("wal-g is not on PATH (not packaged for Debian bookworm nor on PyPI); dropped from --tools", flush=True)
        args.tools.remove("wal-g")
    if "strongroom" in args.tools and not Path(args.strongroom).exists():
        print(f"no strongroom executable at {args.strongroom}", file=sys.stderr)
        return 2
    bench = PitrBench(args)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    return bench.main()


if __name__ == "__main__":
    sys.exit(main())
