#!/usr/bin/env python3
"""Strongroom benchmark: Strongroom next to pg_dump, restic, pg_basebackup and pgBackRest, on the same data.

Run from the repository root with the project's virtual environment (stdlib + psycopg only)::

    .venv/bin/python bench/run.py --scale 2 --app-mb 50 --repeat 1          # smoke, a few minutes
    .venv/bin/python bench/run.py --scale 100 --app-mb 1000 --repeat 3      # full scale (quiet machine)

Sections (``--only``): ``logical`` (pg_dump floor, pg_dump -Fc file, pg_restore -j2, restic, Strongroom
postgres backup/second backup/restore on both datasets), ``dedup`` (pgbench worst-case and
application-like 1% changes: bytes added by the second backup), ``physical`` (pg_basebackup, pgBackRest,
Strongroom postgres-cluster backup, restore and incremental), ``copy`` (copies between two Strongroom
accounts through ``strongroom serve`` next to ``restic copy``, first and after the 1% change; bench/copies.py).
See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

import appdb  # noqa: E402
import copies  # noqa: E402
import measure  # noqa: E402
import pgcluster  # noqa: E402
import report  # noqa: E402

SECTIONS = ("logical", "dedup", "physical", "copy")
PASSPHRASE = "strongroom-bench-passphrase"
RESTIC_PASSWORD = "restic-bench-password"


class Dataset:
    def __init__(self, name: str, dbname: str, check_sql: str, workloads: list[str]) -> None:
        self.name, self.dbname, self.check_sql, self.workloads = name, dbname, check_sql, workloads


PGBENCH = Dataset(
    "pgbench", "pgbench", "SELECT count(*) || ' ' || sum(abalance) FROM pgbench_accounts", ["applike", "worst"]
)
APP = Dataset(
    "app",
    "appdb",
    "SELECT (SELECT count(*) FROM people) || ' ' || (SELECT count(*) || ' ' || coalesce(sum(amount), 0) "
    "FROM events) || ' ' || (SELECT count(*) FROM documents)",
    ["applike"],
)

WORKLOAD_TEXT = {
    ("pgbench", "worst"): "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 100 = 0",
    ("pgbench", "applike"): "1% new pgbench_accounts rows appended; 1% of rows updated in one contiguous aid range",
    ("app", "applike"): "1% new rows appended to people/events/documents; "
    "1% of each updated in one contiguous id range",
}


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.work = Path(args.workdir).resolve() / f"run-{self.stamp}"
        self.out = Path(args.out).resolve()
        self.bindir = pgcluster.find_bindir()
        self.strongroom = str(Path(args.strongroom).resolve())
        self.records: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.t0 = time.perf_counter()
        self.cluster: pgcluster.Cluster | None = None
        self.baseline: Path | None = None
        self.meta: dict[str, Any] = {}
        self.sizes: dict[str, Any] = {}
        self.counter = 0
        self.logfile = None

    # Logging and records ----------------------------------------------------------------------
    def log(self, message: str) -> None:
        line = f"[{time.perf_counter() - self.t0:8.1f}s] {message}"
        print(line, flush=True)
        if self.logfile:
            self.logfile.write(line + "\n")
            self.logfile.flush()

    def note(self, message: str) -> None:
        if message not in self.notes:
            self.notes.append(message)
        self.log(f"NOTE: {message}")

    def record(
        self, ctx: dict[str, Any], tool: str, op: str, result: measure.RunResult | None = None, **fields: Any
    ) -> dict[str, Any]:
        rec: dict[str, Any] = {**ctx, "tool": tool, "op": op, "ok": True}
        if result is not None:
            rec.update(
                seconds=round(result.seconds, 4),
                peak_rss_tree=result.peak_rss_tree,
                peak_rss_max_proc=result.peak_rss_max_proc,
                command=result.command,
            )
        rec.update(fields)
        rec["at"] = round(time.perf_counter() - self.t0, 1)
        self.records.append(rec)
        shown = {k: v for k, v in rec.items() if k in ("seconds", "bytes", "new_bytes", "stored_bytes", "error")}
        self.log(f"  {ctx.get('dataset', '-')}/{ctx.get('workload', '-')} r{ctx.get('repeat')} {tool} {op}: {shown}")
        return rec

    def failed(self, ctx: dict[str, Any], tool: str, op: str, exc: BaseException) -> dict[str, Any]:
        if isinstance(exc, measure.CommandFailed):
            res = exc.result
            message = (res.stderr or res.stdout).strip()[-1500:]
            return self.record(ctx, tool, op, res, ok=False, error=message)
        return self.record(ctx, tool, op, ok=False, error=f"{type(exc).__name__}: {exc}"[-1500:])

    def run(self, command: list[str] | str, **kwargs: Any) -> measure.RunResult:
        kwargs.setdefault("timeout", self.args.timeout)
        return measure.run(command, log=self.log if self.args.verbose else None, **kwargs)

    def unique(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    # Environment ------------------------------------------------------------------------------
    def pg(self, name: str) -> str:
        return str(self.bindir / name)

    def client_env(self) -> dict[str, str]:
        assert self.cluster
        return self.cluster.client_env()

    def machine(self) -> dict[str, Any]:
        def out(argv: list[str]) -> str:
            try:
                return subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout.strip()
            except (OSError, subprocess.TimeoutExpired):
                return "unavailable"

        cpu = "unknown"
        with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        mem = "unknown"
        with contextlib.suppress(OSError), open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal"):
                    mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
        strongroom_version = out(
            [str(Path(sys.executable)), "-c", "import importlib.metadata as m; print(m.version('strongroom'))"]
        )
        return {
            "nproc": os.cpu_count(),
            "cpu_model": cpu,
            "memory": mem,
            "kernel": platform.release(),
            "python": platform.python_version(),
            "postgresql": out([self.pg("postgres"), "--version"]),
            "pg_dump": out([self.pg("pg_dump"), "--version"]),
            "restic": out(["restic", "version"]),
            "pgbackrest": out(["pgbackrest", "version"]) if shutil.which("pgbackrest") else "not installed",
            "strongroom": strongroom_version,
            "strongroom_commit": out(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
            "strongroom_dirty": bool(out(["git", "-C", str(REPO), "status", "--porcelain", "--", "src"])),
            "load_average_at_start": os.getloadavg(),
        }

    # Cluster ----------------------------------------------------------------------------------
    def start_cluster(self) -> None:
        port = pgcluster.free_port()
        self.cluster = pgcluster.Cluster(self.work / "main" / "pgdata", port, self.bindir, self.work / "sock", self.log)
        self.cluster.initdb()
        self.cluster.start()
        self.log(f"cluster on 127.0.0.1:{port}, data {self.cluster.datadir}")

    def load_data(self) -> None:
        assert self.cluster
        env = self.client_env()
        datasets = self.datasets()
        if PGBENCH in datasets:
            self.cluster.psql("CREATE DATABASE pgbench")
            res = self.run([self.pg("pgbench"), "-i", "-q", "-s", str(self.args.scale), "pgbench"], env=env)
            self.log(f"pgbench -i -s {self.args.scale}: {res.seconds:.1f}s")
            self.sizes["pgbench_init_seconds"] = round(res.seconds, 2)
        if APP in datasets:
            self.cluster.psql("CREATE DATABASE appdb")
            started = time.perf_counter()
            self.generate_app()
            self.sizes["app_generate_seconds"] = round(time.perf_counter() - started, 2)
        self.cluster.psql("VACUUM ANALYZE", "pgbench") if PGBENCH in datasets else None
        self.cluster.psql("VACUUM ANALYZE", "appdb") if APP in datasets else None
        for ds in datasets:
            size = int(self.cluster.psql(f"SELECT pg_database_size('{ds.dbname}')"))
            self.sizes[f"{ds.name}_database_bytes"] = size
            self.log(f"{ds.name}: database {report.mib(size)}")
        self.cluster.psql("CHECKPOINT")
        self.sizes["cluster_bytes"] = measure.dir_bytes(self.cluster.datadir)["disk"]

    def generate_app(self) -> None:
        assert self.cluster
        target = self.args.app_mb * 1024 * 1024
        batch_people = max(2000, min(20000, self.args.app_mb * 20))
        self.cluster.psql(appdb.setup_sql(), "appdb")
        batch = 0
        # Tables without indexes reach ~87% of the final size; the indexes make up the rest.
        while int(self.cluster.psql("SELECT pg_database_size('appdb')")) < target * 0.87:
            for statement in appdb.batch_sql(batch, batch_people):
                self.cluster.psql(statement, "appdb")
            batch += 1
            if batch % 5 == 0:
                size = int(self.cluster.psql("SELECT pg_database_size('appdb')"))
                self.log(f"  app: {batch} batches, {report.mib(size)}")
        self.cluster.psql(appdb.FINISH_SQL, "appdb")
        self.sizes["app_batches"] = batch
        self.sizes["app_people"] = batch * batch_people

    def snapshot_baseline(self) -> None:
        assert self.cluster
        self.cluster.stop()
        self.baseline = self.work / "main" / "baseline"
        subprocess.run(["cp", "-a", "--reflink=auto", str(self.cluster.datadir), str(self.baseline)], check=True)
        self.cluster.start()

    def reset(self) -> None:
        """Put the cluster back to the state right after data load (a copy of the stopped data directory)."""
        assert self.cluster and self.baseline
        started = time.perf_counter()
        self.cluster.stop()
        shutil.rmtree(self.cluster.datadir)
        subprocess.run(["cp", "-a", "--reflink=auto", str(self.baseline), str(self.cluster.datadir)], check=True)
        self.cluster.start()
        self.log(f"reset to baseline in {time.perf_counter() - started:.1f}s")

    def datasets(self) -> list[Dataset]:
        chosen = []
        if set(self.args.only) & {"logical", "dedup", "physical", "copy"}:
            chosen.append(PGBENCH)
        if set(self.args.only) & {"logical", "physical"} and self.args.app_mb > 0:
            chosen.append(APP)
        return chosen

    # Workloads --------------------------------------------------------------------------------
    def apply_workload(self, ctx: dict[str, Any], ds: Dataset, workload: str) -> None:
        assert self.cluster
        started = time.perf_counter()
        if ds is PGBENCH and workload == "worst":
            self.cluster.psql("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 100 = 0", ds.dbname)
        elif ds is PGBENCH and workload == "applike":
            n = int(self.cluster.psql("SELECT max(aid) FROM pgbench_accounts", ds.dbname))
            k = max(1, n // 100)
            start = n // 2
            self.cluster.psql(
                f"INSERT INTO pgbench_accounts (aid, bid, abalance, filler) "
                f"SELECT a, (a - 1) / 100000 + 1, 0, '' FROM generate_series({n + 1}, {n + k}) AS a;"
                f"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid BETWEEN {start} AND {start + k - 1};",
                ds.dbname,
            )
        elif ds is APP and workload == "applike":
            ids = appdb.parse_max_ids(self.cluster.psql(appdb.MAX_IDS_SQL, ds.dbname))
            for statement in appdb.change_sql(ids):
                self.cluster.psql(statement, ds.dbname)
        else:
            raise ValueError(f"no workload {workload} for {ds.name}")
        self.record(
            ctx,
            "workload",
            "apply",
            seconds=round(time.perf_counter() - started, 3),
            description=WORKLOAD_TEXT[(ds.name, workload)],
        )

    # pg_dump / pg_restore -----------------------------------------------------------------------
    def floor(self, ctx: dict[str, Any], op: str, ds: Dataset) -> None:
        try:
            res = self.run(f"{self.pg('pg_dump')} -Fc -Z0 {ds.dbname} > /dev/null", env=self.client_env())
            self.record(ctx, "pg_dump_floor", op, res)
        except Exception as exc:
            self.failed(ctx, "pg_dump_floor", op, exc)

    def dump_file(self, ctx: dict[str, Any], ds: Dataset) -> Path | None:
        path = self.work / "dumps" / f"{ds.name}.dump"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        try:
            res = self.run([self.pg("pg_dump"), "-Fc", "-f", str(path), ds.dbname], env=self.client_env())
            self.record(ctx, "pg_dump_fc", "dump", res, bytes=path.stat().st_size)
            uncompressed = self.run(f"{self.pg('pg_dump')} -Fc -Z0 {ds.dbname} | wc -c", env=self.client_env())
            self.sizes[f"{ds.name}_dump_z0_bytes"] = int(uncompressed.stdout.strip())
            return path
        except Exception as exc:
            self.failed(ctx, "pg_dump_fc", "dump", exc)
            return None

    def pg_restore(self, ctx: dict[str, Any], ds: Dataset, dump: Path) -> None:
        assert self.cluster
        target = self.unique(f"{ds.dbname}_pgrestore_")
        try:
            res = self.run(
                f"{self.pg('createdb')} {target} && {self.pg('pg_restore')} -j2 -d {target} {dump}",
                env=self.client_env(),
            )
            ok = self.check_restored(ds, target)
            self.record(ctx, "pg_restore_j2", "restore", res, verified=ok)
        except Exception as exc:
            self.failed(ctx, "pg_restore_j2", "restore", exc)
        finally:
            self.drop_db(target)

    def check_restored(self, ds: Dataset, dbname: str) -> bool:
        assert self.cluster
        try:
            return self.cluster.psql(ds.check_sql, dbname) == self.cluster.psql(ds.check_sql, ds.dbname)
        except RuntimeError as exc:
            self.log(f"  check of {dbname} failed: {exc}")
            return False

    def drop_db(self, dbname: str) -> None:
        assert self.cluster
        with contextlib.suppress(RuntimeError):
            self.cluster.psql(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")

    # restic -----------------------------------------------------------------------------------
    def restic_env(self, repo: Path) -> dict[str, str]:
        return {
            **self.client_env(),
            "RESTIC_PASSWORD": RESTIC_PASSWORD,
            "RESTIC_REPOSITORY": str(repo),
            "RESTIC_CACHE_DIR": str(self.work / "restic-cache"),
        }

    def restic_init(self, repo: Path) -> None:
        shutil.rmtree(repo, ignore_errors=True)
        self.run(["restic", "init", "-q"], env=self.restic_env(repo))
        if "restic_config" not in self.meta:
            config = json.loads(self.run(["restic", "cat", "config"], env=self.restic_env(repo)).stdout)
            version = config.get("version")
            self.meta["restic_config"] = {
                "repository_version": version,
                "compression": "auto (zstd)" if version and version >= 2 else "none (repository format 1)",
            }

    def restic_backup(self, ctx: dict[str, Any], op: str, ds: Dataset, repo: Path) -> None:
        before = measure.dir_bytes(repo)
        try:
            res = self.run(
                f"{self.pg('pg_dump')} -Fc -Z0 {ds.dbname} | restic backup --json --host bench "
                f"--stdin --stdin-filename db.dump",
                env=self.restic_env(repo),
            )
            summary = {}
            for line in res.stdout.splitlines():
                with contextlib.suppress(ValueError):
                    message = json.loads(line)
                    if message.get("message_type") == "summary":
                        summary = message
            added = measure.delta(before, measure.dir_bytes(repo))
            self.record(
                ctx,
                "restic",
                op,
                res,
                bytes=added["disk"],
                bytes_apparent=added["apparent"],
                restic_data_added=summary.get("data_added"),
                restic_summary=summary,
            )
        except Exception as exc:
            self.failed(ctx, "restic", op, exc)

    # Strongroom -------------------------------------------------------------------------------
    def sr_env(self, home: Path) -> dict[str, str]:
        return {**self.client_env(), "STRONGROOM_PASSPHRASE": PASSPHRASE, "STRONGROOM_HOME": str(home)}

    def sr(self, home: Path, *argv: str, check: bool = True) -> measure.RunResult:
        return self.run([self.strongroom, *argv], env=self.sr_env(home), check=check)

    def sr_new_home(self, name: str) -> Path:
        home = self.work / "strongroom" / name
        shutil.rmtree(home, ignore_errors=True)
        home.parent.mkdir(parents=True, exist_ok=True)
        argv = ["init", "--json"]
        if self.args.chunk_size:
            argv += ["--chunk-size", str(self.args.chunk_size)]
        self.sr(home, *argv)
        # The restored clusters live below the home; the postgres user must be able to reach them.
        os.chmod(home, 0o711)
        return home

    def sr_add(self, home: Path, resource: str, type_name: str, dsn: str) -> bool:
        res = self.sr(home, "resources", "add", resource, "--type", type_name, "--dsn", dsn, "--json", check=False)
        if not res.ok:
            self.note(f"strongroom resources add --type {type_name} failed: {res.stderr.strip()[-500:]}")
        return res.ok

    def sr_backup(
        self, ctx: dict[str, Any], op: str, home: Path, resource: str, tool: str = "strongroom"
    ) -> dict[str, Any] | None:
        vault = home / "vaults" / "Default"
        before = measure.dir_bytes(vault)
        try:
            res = self.sr(home, "backup", "start", "--resource", resource, "--wait", "--json")
            job = json.loads(res.stdout)
            added = measure.delta(before, measure.dir_bytes(vault))
            result = job.get("result") or {}
            if job.get("state") != "COMPLETED":
                raise RuntimeError(f"job {job.get('job_id')} is {job.get('state')}: {job.get('status_message')}")
            job_seconds = job.get("duration_seconds")
            overhead = round(res.seconds - job_seconds, 4) if job_seconds is not None else None
            rec = self.record(
                ctx,
                tool,
                op,
                res,
                new_bytes=result.get("new_bytes"),
                stored_bytes=result.get("stored_bytes"),
                source_bytes=result.get("source_bytes"),
                chunks=result.get("chunks"),
                new_chunks=result.get("new_chunks"),
                bytes=added["disk"],
                bytes_apparent=added["apparent"],
                recovery_point_arn=job.get("recovery_point_arn"),
                job_seconds=job_seconds,
                overhead_seconds=overhead,
                job=job,
            )
            return rec
        except Exception as exc:
            self.failed(ctx, tool, op, exc)
            return None

    def sr_restore_logical(self, ctx: dict[str, Any], ds: Dataset, home: Path, arn: str) -> None:
        assert self.cluster
        target = self.unique(f"{ds.dbname}_srrestore_")
        argv = ["restore", "start", "--recovery-point", arn, "--target", self.cluster.uri(target), "--wait", "--json"]
        if self.args.restore_jobs:
            argv += ["--jobs", str(self.args.restore_jobs)]
        try:
            res = self.sr(home, *argv)
            job = json.loads(res.stdout)
            if job.get("state") != "COMPLETED":
                raise RuntimeError(f"job {job.get('job_id')} is {job.get('state')}: {job.get('status_message')}")
            ok = self.check_restored(ds, target)
            if not ok:
                self.note(f"Strongroom logical restore of {ds.name} does not match the source ({ds.check_sql})")
            self.record(ctx, "strongroom", "restore", res, verified=ok, job=job)
        except Exception as exc:
            self.failed(ctx, "strongroom", "restore", exc)
        finally:
            self.drop_db(target)

    def sr_verify(self, ctx: dict[str, Any], home: Path) -> None:
        """``strongroom verify --read-data``: decrypt and re-hash every chunk of both recovery points."""
        try:
            res = self.sr(home, "verify", "--read-data", "--json")
            report_ = json.loads(res.stdout)
            self.record(
                ctx,
                "strongroom",
                "verify",
                res,
                verify=report_,
                bytes=measure.dir_bytes(home / "vaults" / "Default")["disk"],
            )
        except Exception as exc:
            self.failed(ctx, "strongroom", "verify", exc)

    # Logical section --------------------------------------------------------------------------
    def logical_sequence(self, section: str, ds: Dataset, workload: str, r: int, baselines: bool) -> None:
        """Fresh restic repo and Strongroom vault: first backup, the change, second backup (and the
        pg_dump / pg_restore baselines and Strongroom restore when ``baselines``)."""
        self.log(f"== {section}: {ds.name}, workload {workload}, repeat {r + 1}/{self.args.repeat}")
        self.reset()
        ctx = {"section": section, "dataset": ds.name, "workload": workload, "repeat": r}
        dump = None
        if baselines:
            self.floor(ctx, "floor1", ds)
            dump = self.dump_file(ctx, ds)
            if dump:
                self.pg_restore(ctx, ds, dump)
        repo = self.work / "restic" / f"{ds.name}-{workload}-{r}"
        try:
            self.restic_init(repo)
            restic_ok = True
        except Exception as exc:
            self.failed(ctx, "restic", "init", exc)
            restic_ok = False
        if restic_ok:
            self.restic_backup(ctx, "backup1", ds, repo)
        home = self.sr_new_home(f"{ds.name}-{workload}-{r}")
        added = self.sr_add(home, "db", "postgres", self.cluster.uri(ds.dbname))  # type: ignore[union-attr]
        first = self.sr_backup(ctx, "backup1", home, "db") if added else None
        if baselines and first and first.get("recovery_point_arn"):
            self.sr_restore_logical(ctx, ds, home, first["recovery_point_arn"])
        self.apply_workload(ctx, ds, workload)
        self.floor(ctx, "floor2", ds)
        if restic_ok:
            self.restic_backup(ctx, "backup2", ds, repo)
        if added:
            second = self.sr_backup(ctx, "backup2", home, "db")
            if baselines and second:
                self.sr_verify(ctx, home)
        if not self.args.keep_work:
            shutil.rmtree(repo, ignore_errors=True)
            pgcluster.stop_all_under(self.bindir, home)
            shutil.rmtree(home, ignore_errors=True)
            if dump:
                dump.unlink(missing_ok=True)

    # Physical section -------------------------------------------------------------------------
    def verify_cluster(self, port: int) -> bool:
        """The restored cluster holds what the source held at backup time (checked before the change)."""
        assert self.cluster
        ok = True
        for ds in self.datasets():
            argv = [
                self.pg("psql"),
                "-X",
                "-At",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "postgres",
                "-d",
                ds.dbname,
                "-c",
                ds.check_sql,
            ]
            got = subprocess.run(argv, capture_output=True, text=True, timeout=self.args.timeout).stdout.strip()
            ok = ok and got == self.cluster.psql(ds.check_sql, ds.dbname)
        return ok

    def start_restored(self, datadir: Path, port: int) -> None:
        options = f"-p {port} -k {self.work / 'sock'} -c archive_mode=off -c listen_addresses=127.0.0.1"
        pgcluster.as_postgres(
            [
                self.pg("pg_ctl"),
                "-D",
                str(datadir),
                "-l",
                str(datadir.parent / f"{datadir.name}.log"),
                "-o",
                options,
                "-W",
                "start",
            ],
            check=True,
            capture_output=True,
        )

    def physical_basebackup(self, ctx: dict[str, Any]) -> None:
        assert self.cluster
        phys = pgcluster.make_postgres_dir(self.work / "physical", 0o755)
        backup = phys / "basebackup"
        shutil.rmtree(backup, ignore_errors=True)
        self.cluster.psql("CHECKPOINT")
        try:
            res = self.run(
                [
                    "runuser",
                    "-u",
                    "postgres",
                    "--",
                    self.pg("pg_basebackup"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.cluster.port),
                    "-U",
                    "postgres",
                    "-D",
                    str(backup),
                    "-Ft",
                    "-X",
                    "fetch",
                    "-c",
                    "fast",
                ]
            )
            self.record(ctx, "pg_basebackup", "backup1", res, bytes=measure.dir_bytes(backup)["disk"])
        except Exception as exc:
            self.failed(ctx, "pg_basebackup", "backup1", exc)
            return
        restored = phys / "basebackup-restored"
        port = pgcluster.free_port()
        started = time.perf_counter()
        try:
            pgcluster.make_postgres_dir(restored)
            pgcluster.as_postgres(
                ["tar", "-xf", str(backup / "base.tar"), "-C", str(restored)], check=True, capture_output=True
            )
            self.start_restored(restored, port)
            answered = pgcluster.wait_select1(self.bindir, port, timeout=self.args.timeout)
            self.record(
                ctx,
                "pg_basebackup",
                "restore",
                seconds=round(answered - started, 4),
                verified=self.verify_cluster(port),
                description="tar -xf base.tar, pg_ctl start, until SELECT 1 answers",
            )
        except Exception as exc:
            self.failed(ctx, "pg_basebackup", "restore", exc)
        finally:
            pgcluster.stop_datadir(self.bindir, restored, "immediate")
            shutil.rmtree(restored, ignore_errors=True)
            shutil.rmtree(backup, ignore_errors=True)

    def pgbackrest_conf(self, repo: Path) -> Path:
        assert self.cluster
        base = pgcluster.make_postgres_dir(self.work / "pgbackrest", 0o755)
        conf = base / "pgbackrest.conf"
        conf.write_text(
            "[global]\n"
            f"repo1-path={repo}\n"
            "repo1-retention-full=10\n"
            f"compress-type={self.args.pgbackrest_compress}\n"
            f"process-max={self.args.pgbackrest_process_max}\n"
            "start-fast=y\n"
            "log-level-console=warn\n"
            "log-level-file=off\n"
            f"lock-path={base / 'lock'}\n"
            "\n[bench]\n"
            f"pg1-path={self.cluster.datadir}\n"
            f"pg1-port={self.cluster.port}\n"
            f"pg1-socket-path={self.cluster.sockdir}\n"
            "pg1-user=postgres\n"
        )
        pgcluster.chown_postgres(base)
        return conf

    def pgbackrest(self, conf: Path, *argv: str, check: bool = True) -> measure.RunResult:
        return self.run(
            ["runuser", "-u", "postgres", "--", "pgbackrest", f"--config={conf}", "--stanza=bench", *argv], check=check
        )

    def set_archive_command(self, command: str) -> None:
        assert self.cluster
        self.cluster.psql(f"ALTER SYSTEM SET archive_command = '{command}'; SELECT pg_reload_conf();")
        time.sleep(0.5)

    def physical_pgbackrest_setup(self, ctx: dict[str, Any], r: int) -> Path | None:
        if not shutil.which("pgbackrest") or self.args.no_pgbackrest:
            self.note("pgBackRest is not installed (apt-get install pgbackrest); skipped")
            return None
        repo = self.work / "pgbackrest" / f"repo-{r}"
        shutil.rmtree(repo, ignore_errors=True)
        conf = self.pgbackrest_conf(repo)
        pgcluster.make_postgres_dir(repo, 0o750)
        try:
            self.pgbackrest(conf, "stanza-create")
            self.set_archive_command(f"pgbackrest --config={conf} --stanza=bench archive-push %p")
            self.pgbackrest(conf, "check")
            self.meta["pgbackrest_config"] = conf.read_text()
            return conf
        except Exception as exc:
            self.failed(ctx, "pgbackrest", "setup", exc)
            self.set_archive_command("/bin/true")
            return None

    def physical_pgbackrest_backup(self, ctx: dict[str, Any], conf: Path, op: str) -> None:
        assert self.cluster
        repo = Path(
            next(line.split("=", 1)[1] for line in conf.read_text().splitlines() if line.startswith("repo1-path="))
        )
        self.cluster.psql("CHECKPOINT")
        before = measure.dir_bytes(repo)
        try:
            res = self.pgbackrest(conf, f"--type={'full' if op == 'backup1' else 'incr'}", "backup")
            added = measure.delta(before, measure.dir_bytes(repo))
            self.record(ctx, "pgbackrest", op, res, bytes=added["disk"], bytes_apparent=added["apparent"])
        except Exception as exc:
            self.failed(ctx, "pgbackrest", op, exc)

    def physical_pgbackrest_restore(self, ctx: dict[str, Any], conf: Path) -> None:
        restored = self.work / "physical" / "pgbackrest-restored"
        shutil.rmtree(restored, ignore_errors=True)
        port = pgcluster.free_port()
        started = time.perf_counter()
        try:
            pgcluster.make_postgres_dir(restored)
            res = self.pgbackrest(conf, f"--pg1-path={restored}", "--archive-mode=off", "restore")
            self.start_restored(restored, port)
            answered = pgcluster.wait_select1(self.bindir, port, timeout=self.args.timeout)
            self.record(
                ctx,
                "pgbackrest",
                "restore",
                seconds=round(answered - started, 4),
                restore_command_seconds=round(res.seconds, 4),
                peak_rss_tree=res.peak_rss_tree,
                verified=self.verify_cluster(port),
                description="pgbackrest restore, pg_ctl start, until SELECT 1 answers",
            )
        except Exception as exc:
            self.failed(ctx, "pgbackrest", "restore", exc)
        finally:
            pgcluster.stop_datadir(self.bindir, restored, "immediate")
            shutil.rmtree(restored, ignore_errors=True)

    def physical_strongroom_restore(self, ctx: dict[str, Any], home: Path, arn: str) -> None:
        port = pgcluster.free_port()
        identifier = self.unique("benchrestore")
        started = time.perf_counter()
        try:
            res = self.sr(
                home,
                "restore",
                "start",
                "--recovery-point",
                arn,
                "--target-identifier",
                identifier,
                "--port",
                str(port),
                "--wait",
                "--json",
            )
            job = json.loads(res.stdout)
            if job.get("state") != "COMPLETED":
                raise RuntimeError(f"job {job.get('job_id')} is {job.get('state')}: {job.get('status_message')}")
            command_done = time.perf_counter()
            answered = pgcluster.wait_select1(self.bindir, port, timeout=min(self.args.timeout, 300))
            ok = self.verify_cluster(port)
            if not ok:
                self.note("a Strongroom postgres-cluster restore does not match the source")
            self.record(
                ctx,
                "strongroom_cluster",
                "restore",
                res,
                seconds=round(answered - started, 4),
                verified=ok,
                restore_command_seconds=round(command_done - started, 4),
                job=job,
                description="strongroom restore start --target-identifier --port --wait, until SELECT 1",
            )
        except Exception as exc:
            self.failed(ctx, "strongroom_cluster", "restore", exc)
        finally:
            stopped = pgcluster.stop_all_under(self.bindir, home)
            if stopped:
                self.log(f"  stopped restored cluster(s): {stopped}")
            else:
                self.stop_by_port(port)

    def stop_by_port(self, port: int) -> None:
        """A restored cluster outside the home: find its data directory through SQL and stop it."""
        try:
            datadir = subprocess.run(
                [
                    self.pg("psql"),
                    "-X",
                    "-At",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-c",
                    "SHOW data_directory",
                ],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        except subprocess.TimeoutExpired:
            return
        if datadir:
            self.note(f"Strongroom restored a cluster outside its home ({datadir}); the bench stopped it")
            pgcluster.stop_datadir(self.bindir, Path(datadir), "immediate")

    def physical_sequence(self, r: int) -> None:
        assert self.cluster
        self.log(f"== physical: repeat {r + 1}/{self.args.repeat}")
        self.reset()
        ctx = {"section": "physical", "dataset": "cluster", "workload": "applike", "repeat": r}
        self.physical_basebackup(ctx)
        home = self.sr_new_home(f"cluster-{r}")
        added = self.sr_add(home, "cluster", "postgres-cluster", self.cluster.uri("postgres"))
        first = None
        if added:
            self.cluster.psql("CHECKPOINT")
            first = self.sr_backup(ctx, "backup1", home, "cluster", tool="strongroom_cluster")
            if first and first.get("recovery_point_arn"):
                self.physical_strongroom_restore(ctx, home, first["recovery_point_arn"])
        conf = self.physical_pgbackrest_setup(ctx, r)
        if conf:
            self.physical_pgbackrest_backup(ctx, conf, "backup1")
            self.physical_pgbackrest_restore(ctx, conf)
        self.apply_workload(ctx, PGBENCH, "applike")
        if added and first:
            self.cluster.psql("CHECKPOINT")
            self.sr_backup(ctx, "backup2", home, "cluster", tool="strongroom_cluster")
        if conf:
            self.physical_pgbackrest_backup(ctx, conf, "backup2")
            self.set_archive_command("/bin/true")
        if not self.args.keep_work:
            pgcluster.stop_all_under(self.bindir, home)
            shutil.rmtree(home, ignore_errors=True)
            shutil.rmtree(self.work / "pgbackrest", ignore_errors=True)

    # Driver -----------------------------------------------------------------------------------
    def plan(self) -> list[tuple]:
        steps: list[tuple] = []
        for r in range(self.args.repeat):
            if "logical" in self.args.only:
                steps.append(("logical", PGBENCH, "applike", r, True))
                if APP in self.datasets():
                    steps.append(("logical", APP, "applike", r, True))
            if "dedup" in self.args.only:
                steps.append(("dedup", PGBENCH, "worst", r, False))
                if "logical" not in self.args.only:
                    steps.append(("dedup", PGBENCH, "applike", r, False))
            if "physical" in self.args.only:
                steps.append(("physical", r))
            if "copy" in self.args.only:
                steps.append(("copy", r))
        return steps

    def main(self) -> int:
        self.work.mkdir(parents=True, exist_ok=True)
        os.chmod(self.work, 0o755)
        self.out.mkdir(parents=True, exist_ok=True)
        self.logfile = open(self.out / f"bench-{self.stamp}.log", "w")  # noqa: SIM115
        self.meta["machine"] = self.machine()
        self.log("machine: " + json.dumps(self.meta["machine"]))
        self.log(f"work directory {self.work}")
        status = "completed"
        try:
            self.start_cluster()
            self.load_data()
            self.snapshot_baseline()
            for step in self.plan():
                if step[0] == "physical":
                    self.physical_sequence(step[1])
                elif step[0] == "copy":
                    copies.copy_sequence(self, step[1], PGBENCH)
                else:
                    self.logical_sequence(*step)
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
        with contextlib.suppress(Exception):
            stopped = pgcluster.stop_all_under(self.bindir, self.work)
            if stopped:
                self.log(f"stopped clusters: {stopped}")
        if not self.args.keep_work:
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            self.log(f"kept {self.work}")

    def write_results(self, status: str) -> None:
        data = {
            "format": 1,
            "status": status,
            "started_at": self.stamp,
            "finished_at": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
            "total_seconds": round(time.perf_counter() - self.t0, 1),
            "arguments": {k: v for k, v in vars(self.args).items()},
            "meta": self.meta,
            "sizes": self.sizes,
            "workloads": {f"{d}/{w}": text for (d, w), text in WORKLOAD_TEXT.items()},
            "notes": self.notes,
            "records": self.records,
        }
        path = self.out / f"bench-{self.stamp}.json"
        path.write_text(json.dumps(data, indent=2, default=str) + "\n")
        markdown = report.markdown(data)
        (self.out / f"bench-{self.stamp}.md").write_text(markdown)
        print()
        print(markdown)
        self.log(f"results: {path} and {path.with_suffix('.md')}")
        if self.logfile:
            self.logfile.close()
            self.logfile = None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=100, help="pgbench scale factor (100 = 1.6 GB). Default 100.")
    parser.add_argument(
        "--app-mb",
        type=int,
        default=1000,
        help="Size of the generated application-like database in MB (0 = skip). Default 1000.",
    )
    parser.add_argument("--repeat", type=int, default=3, help="Repetitions of every measurement (medians). Default 3.")
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"Comma-separated sections out of {','.join(SECTIONS)}. Default: all.",
    )
    parser.add_argument("--out", default=str(BENCH / "results"), help="Directory for the JSON, Markdown and log.")
    parser.add_argument("--workdir", default=str(BENCH / "work"), help="Scratch directory (removed at the end).")
    parser.add_argument("--keep-work", action="store_true", help="Keep the scratch directory (debugging).")
    parser.add_argument(
        "--strongroom", default=str(REPO / ".venv" / "bin" / "strongroom"), help="The strongroom executable."
    )
    parser.add_argument("--chunk-size", type=int, default=None, help="strongroom init --chunk-size (default: its own).")
    parser.add_argument(
        "--restore-jobs",
        type=int,
        default=None,
        help="Pass --jobs N to strongroom restore (postgres). Default: Strongroom's own default.",
    )
    parser.add_argument("--no-pgbackrest", action="store_true", help="Skip pgBackRest in the physical section.")
    parser.add_argument("--pgbackrest-process-max", type=int, default=2, help="pgBackRest process-max. Default 2.")
    parser.add_argument("--pgbackrest-compress", default="zst", help="pgBackRest compress-type. Default zst.")
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="Timeout of one command, seconds.")
    parser.add_argument("--report", metavar="JSON", help="Only re-render the Markdown of an earlier results file.")
    parser.add_argument("-v", "--verbose", action="store_true", help="Log every command.")
    args = parser.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        data = json.loads(Path(args.report).read_text())
        markdown = report.markdown(data)
        Path(args.report).with_suffix(".md").write_text(markdown)
        print(markdown)
        return 0
    if os.geteuid() != 0:
        print("run.py needs root (clusters run as the postgres OS user through runuser)", file=sys.stderr)
        return 2
    for tool in ("restic",):
        if not shutil.which(tool):
            print(f"{tool} is missing: apt-get install {tool}", file=sys.stderr)
            return 2
    if not Path(args.strongroom).exists():
        print(f"no strongroom executable at {args.strongroom}", file=sys.stderr)
        return 2
    bench = Bench(args)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    return bench.main()


if __name__ == "__main__":
    sys.exit(main())
