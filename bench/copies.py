"""The ``copy`` section: copies between two Strongroom accounts next to ``restic copy``, on pgbench.

(The module is not called ``copy.py``: ``bench/`` is first on ``sys.path``, so that name would hide the
standard library's ``copy`` module from everything the bench imports.)

One repetition, on the pgbench database reset to the baseline:

1. restic: repository A (``restic init``) and repository B (``restic init --from-repo A
   --copy-chunker-params``); first backup ``pg_dump -Fc -Z0 | restic backup --stdin`` into A, then
   ``restic copy --from-repo A`` into B (time, bytes added to B).
2. Strongroom: two accounts (two homes). The destination gets the blueprint's destination policy
   (``vaults put-access-policy Default --default-destination``), runs ``strongroom serve`` on a free
   loopback port and issues a credential to the source account; the source registers it
   (``accounts add destination``). First backup in the source, then ``copy start --wait --json`` into
   the destination's Default vault (time, ``bytes_on_wire``, chunks sent / skipped, bytes added to the
   destination vault on disk, CPU seconds the ``serve`` process spent).
3. The application-like 1% change (the same one as the logical section).
4. Second backups and second copies, measured the same way.
5. ``strongroom verify --read-data`` in the destination (not timed into the comparison).

The ``serve`` process is always stopped: SIGTERM, then SIGKILL after 20 s, in a ``finally`` that
also runs on Ctrl-C / SIGTERM of the bench; it is started with ``PR_SET_PDEATHSIG`` so that even a
SIGKILL of the bench takes it down.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import measure
import pgcluster
import report

if TYPE_CHECKING:  # run.py imports this module; only the type checker needs the other direction
    from run import Bench, Dataset

SECTION = "copy"
PR_SET_PDEATHSIG = 1
CLK_TCK = os.sysconf("SC_CLK_TCK")


# The destination's `strongroom serve` ----------------------------------------------------------------
class Serve:
    """``strongroom serve`` of one account on a loopback port, as a context manager that always stops it."""

    def __init__(self, bench: Bench, home: Path, log_path: Path) -> None:
        self.bench, self.home, self.log_path = bench, home, log_path
        self.port = pgcluster.free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self._log = None

    def __enter__(self) -> Serve:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 60) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        env = {**os.environ, **self.bench.sr_env(self.home)}
        self.proc = subprocess.Popen(
            [self.bench.strongroom, "serve", "--port", str(self.port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.bench.log(f"  strongroom serve (pid {self.proc.pid}) for {self.home.name} on {self.endpoint}")
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"strongroom serve exited with {self.proc.returncode}: {self.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"strongroom serve not listening on {self.port} after {timeout}s: {self.log_tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                self.bench.note("strongroom serve ignored SIGTERM for 20 s; the bench killed it")
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
            self.bench.log(f"  strongroom serve (pid {proc.pid}) stopped, exit {proc.returncode}")
        if self._log:
            self._log.close()
            self._log = None

    def cpu_seconds(self) -> float | None:
        """User + system CPU of the serve process so far (it runs no child processes)."""
        if self.proc is None:
            return None
        try:
            with open(f"/proc/{self.proc.pid}/stat", "rb") as handle:
                data = handle.read()
        except OSError:
            return None
        fields = data[data.rfind(b")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime

    def peak_rss(self) -> int | None:
        """VmHWM: the serve process's peak resident set since it started."""
        if self.proc is None:
            return None
        with contextlib.suppress(OSError), open(f"/proc/{self.proc.pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return None

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace").strip()[-1500:]
        return ""


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


# Accounts ----------------------------------------------------------------------------------------------
def _identity(home: Path) -> tuple[str, str]:
    """(account id, ARN of its Default vault) from the home's account.json."""
    identity = json.loads((home / "account.json").read_text())
    account_id, region = identity["account_id"], identity["region"]
    return account_id, f"arn:strongroom:backup:{region}:{account_id}:backup-vault:Default"


def _destination_policy(bench: Bench, dst: Path, src_id: str, src_vault: str, dst_id: str) -> None:
    bench.sr(
        dst,
        "vaults",
        "put-access-policy",
        "Default",
        "--default-destination",
        "--source-account-id",
        src_id,
        "--source-vault-arn",
        src_vault,
        "--admin",
        f"arn:strongroom:iam::{dst_id}:root",
        "--json",
    )


def _connect(bench: Bench, src: Path, dst: Path, src_id: str, dst_id: str, endpoint: str) -> None:
    """The destination issues a credential to the source account; the source registers the destination."""
    issued = json.loads(
        bench.sr(dst, "credentials", "create", "--principal", "copier", "--account-id", src_id, "--json").stdout
    )
    bench.run(
        [
            bench.strongroom,
            "accounts",
            "add",
            "destination",
            "--endpoint",
            endpoint,
            "--key-id",
            issued["access_key_id"],
            "--account-id",
            dst_id,
            "--json",
        ],
        env={**bench.sr_env(src), "STRONGROOM_REMOTE_SECRET": issued["secret_access_key"]},
    )


# Measured steps ------------------------------------------------------------------------------------------
def sr_copy(
    bench: Bench,
    ctx: dict[str, Any],
    op: str,
    src: Path,
    dst: Path,
    dst_vault_arn: str,
    serve: Serve,
    recovery_point_arn: str,
) -> dict[str, Any] | None:
    vault = dst / "vaults" / "Default"
    before = measure.dir_bytes(vault)
    cpu_before = serve.cpu_seconds()
    try:
        res = bench.sr(
            src,
            "copy",
            "start",
            "--recovery-point",
            recovery_point_arn,
            "--destination-vault",
            dst_vault_arn,
            "--wait",
            "--json",
        )
        job = json.loads(res.stdout)
        if job.get("state") != "COMPLETED":
            raise RuntimeError(f"copy job {job.get('job_id')} is {job.get('state')}: {job.get('status_message')}")
        added = measure.delta(before, measure.dir_bytes(vault))
        cpu_after = serve.cpu_seconds()
        result = job.get("result") or {}
        job_seconds = job.get("duration_seconds")
        return bench.record(
            ctx,
            "strongroom",
            op,
            res,
            bytes=added["disk"],
            bytes_apparent=added["apparent"],
            bytes_on_wire=result.get("bytes_on_wire"),
            chunks_sent=result.get("chunks_sent"),
            chunks_skipped=result.get("chunks_skipped"),
            plaintext_bytes_sent=result.get("plaintext_bytes_sent"),
            bytes_transferred=result.get("bytes_transferred"),
            destination_recovery_point_arn=result.get("destination_recovery_point_arn"),
            server_cpu_seconds=(
                round(cpu_after - cpu_before, 3) if cpu_before is not None and cpu_after is not None else None
            ),
            server_peak_rss=serve.peak_rss(),
            job_seconds=job_seconds,
            overhead_seconds=round(res.seconds - job_seconds, 4) if job_seconds is not None else None,
            job=job,
            description="strongroom copy start --recovery-point ARN --destination-vault ARN --wait --json "
            "(push to the destination's strongroom serve on loopback)",
        )
    except Exception as exc:
        bench.failed(ctx, "strongroom", op, exc)
        if serve.proc is not None and serve.proc.poll() is not None:
            bench.note(f"strongroom serve died during {op}: {serve.log_tail()[-500:]}")
        return None


def restic_copy_env(bench: Bench, repo_a: Path, repo_b: Path) -> dict[str, str]:
    """Environment for ``restic`` on B with A as the secondary (``--from-repo``) repository."""
    env = bench.restic_env(repo_b)
    password_file = bench.work / "restic-password"
    if not password_file.exists():
        password_file.write_text(env["RESTIC_PASSWORD"] + "\n")
        password_file.chmod(0o600)
    return {**env, "RESTIC_FROM_REPOSITORY": str(repo_a), "RESTIC_FROM_PASSWORD_FILE": str(password_file)}


def restic_setup(bench: Bench, ctx: dict[str, Any], repo_a: Path, repo_b: Path) -> bool:
    try:
        bench.restic_init(repo_a)
        shutil.rmtree(repo_b, ignore_errors=True)
        bench.run(["restic", "init", "-q", "--copy-chunker-params"], env=restic_copy_env(bench, repo_a, repo_b))
        return True
    except Exception as exc:
        bench.failed(ctx, "restic", "init", exc)
        return False


def restic_copy(bench: Bench, ctx: dict[str, Any], op: str, repo_a: Path, repo_b: Path) -> None:
    """``restic copy`` of every snapshot of A that B does not hold yet (the one just taken)."""
    before = measure.dir_bytes(repo_b)
    try:
        res = bench.run(["restic", "copy", "--host", "bench"], env=restic_copy_env(bench, repo_a, repo_b))
        added = measure.delta(before, measure.dir_bytes(repo_b))
        bench.record(
            ctx,
            "restic",
            op,
            res,
            bytes=added["disk"],
            bytes_apparent=added["apparent"],
            output=res.stdout.strip()[-800:],
            description="restic -r B copy --from-repo A (local repositories)",
        )
    except Exception as exc:
        bench.failed(ctx, "restic", op, exc)


def sr_verify_destination(bench: Bench, ctx: dict[str, Any], dst: Path) -> None:
    try:
        res = bench.sr(dst, "verify", "--read-data", "--json")
        bench.record(
            ctx,
            "strongroom",
            "verify_destination",
            res,
            verify=json.loads(res.stdout),
            bytes=measure.dir_bytes(dst / "vaults" / "Default")["disk"],
        )
    except Exception as exc:
        bench.failed(ctx, "strongroom", "verify_destination", exc)


# The sequence --------------------------------------------------------------------------------------------
def copy_sequence(bench: Bench, r: int, pgbench: Dataset) -> None:
    """One repetition; ``pgbench`` is run.py's dataset object (its workloads are matched by identity)."""
    assert bench.cluster
    bench.log(f"== copy: pgbench, workload applike, repeat {r + 1}/{bench.args.repeat}")
    bench.reset()
    ctx = {"section": SECTION, "dataset": "pgbench", "workload": "applike", "repeat": r}
    base = bench.work / "copy" / f"r{r}"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    repo_a, repo_b = base / "restic-a", base / "restic-b"
    serve: Serve | None = None
    try:
        restic_ok = restic_setup(bench, ctx, repo_a, repo_b)
        if restic_ok:
            bench.restic_backup(ctx, "backup1", pgbench, repo_a)
            restic_copy(bench, ctx, "copy1", repo_a, repo_b)

        src = bench.sr_new_home(f"copy-src-{r}")
        dst = bench.sr_new_home(f"copy-dst-{r}")
        src_id, src_vault = _identity(src)
        dst_id, dst_vault = _identity(dst)
        ready = False
        try:
            _destination_policy(bench, dst, src_id, src_vault, dst_id)
            serve = Serve(bench, dst, base / "serve.log")
            serve.start()
            _connect(bench, src, dst, src_id, dst_id, serve.endpoint)
            ready = bench.sr_add(src, "db", "postgres", bench.cluster.uri(pgbench.dbname))
        except Exception as exc:
            bench.failed(ctx, "strongroom", "copy_setup", exc)
        first = bench.sr_backup(ctx, "backup1", src, "db") if ready else None
        copied = None
        if first and first.get("recovery_point_arn") and serve:
            copied = sr_copy(bench, ctx, "copy1", src, dst, dst_vault, serve, first["recovery_point_arn"])

        bench.apply_workload(ctx, pgbench, "applike")

        if restic_ok:
            bench.restic_backup(ctx, "backup2", pgbench, repo_a)
            restic_copy(bench, ctx, "copy2", repo_a, repo_b)
        second = bench.sr_backup(ctx, "backup2", src, "db") if first else None
        copied_again = None
        if second and second.get("recovery_point_arn") and serve and copied:
            copied_again = sr_copy(bench, ctx, "copy2", src, dst, dst_vault, serve, second["recovery_point_arn"])
        if copied_again:
            sr_verify_destination(bench, ctx, dst)
    finally:
        if serve is not None:
            serve.stop()
        if not bench.args.keep_work:
            shutil.rmtree(base, ignore_errors=True)
            for name in (f"copy-src-{r}", f"copy-dst-{r}"):
                home = bench.work / "strongroom" / name
                pgcluster.stop_all_under(bench.bindir, home)
                shutil.rmtree(home, ignore_errors=True)


# Report ----------------------------------------------------------------------------------------------------
def markdown_lines(rec: report.Records) -> list[str]:
    """The "Copies between accounts" table, or nothing when the run had no copy section."""
    if not rec.select(section=SECTION):
        return []
    w = {"section": SECTION, "dataset": "pgbench"}

    def med(field: str, tool: str, op: str) -> float | None:
        return rec.median(field, tool=tool, op=op, **w)

    m = {
        f"{t}_{op}_{f}": med(f, tool, op)
        for t, tool in (("r", "restic"), ("s", "strongroom"))
        for op in ("backup1", "copy1", "backup2", "copy2")
        for f in ("seconds", "bytes")
    }
    for op in ("copy1", "copy2"):
        for f in (
            "bytes_on_wire",
            "chunks_sent",
            "chunks_skipped",
            "plaintext_bytes_sent",
            "server_cpu_seconds",
            "server_peak_rss",
            "peak_rss_tree",
            "overhead_seconds",
            "bytes_transferred",
        ):
            m[f"s_{op}_{f}"] = med(f, "strongroom", op)
    for op in ("backup1", "backup2"):
        for f in ("new_bytes", "stored_bytes", "new_chunks", "chunks", "source_bytes"):
            m[f"s_{op}_{f}"] = med(f, "strongroom", op)
    for op in ("backup1", "backup2"):
        values = [
            ((r.get("job") or {}).get("result") or {}).get("delta_chunks")
            for r in rec.select(tool="strongroom", op=op, **w)
        ]
        values = [v for v in values if v is not None]
        m[f"s_{op}_delta_chunks"] = statistics.median(values) if values else None
    verify_ok = [r.get("verify") for r in rec.select(tool="strongroom", op="verify_destination", **w)]
    runs = sorted({r["repeat"] for r in rec.select(**w) if "repeat" in r})

    def one(tool: str, op: str, field: str, repeat: int) -> float | None:
        found = [r.get(field) for r in rec.select(tool=tool, op=op, repeat=repeat, **w)]
        return found[0] if found else None

    def n(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.0f}"

    lines: list[str] = []
    add = lines.append
    add("### Copies between accounts (pgbench, application-like 1% change) vs restic copy")
    add("")
    add(
        "Strongroom: source account → destination account's `strongroom serve` on loopback (HTTP, signed "
        "requests); bytes on the wire as counted by the copy job. restic: local repository A → local "
        "repository B (`restic copy --from-repo A`, B initialised with `--copy-chunker-params`); its "
        "upload equals B's growth. Bytes added = growth on disk (allocated blocks)."
    )
    add("")
    add(
        "| Step | restic: time | restic: bytes added | Strongroom: time | Strongroom: bytes added | "
        "Strongroom: bytes on the wire |"
    )
    add("|---|---|---|---|---|---|")
    add(
        f"| first backup (into the source) | {report.secs(m['r_backup1_seconds'])} | "
        f"{report.mib(m['r_backup1_bytes'])} (repo A) | {report.secs(m['s_backup1_seconds'])} | "
        f"{report.mib(m['s_backup1_bytes'])} (source vault) | — |"
    )
    add(
        f"| **first copy** | {report.secs(m['r_copy1_seconds'])} | {report.mib(m['r_copy1_bytes'])} (repo B) | "
        f"{report.secs(m['s_copy1_seconds'])} | {report.mib(m['s_copy1_bytes'])} (destination vault) | "
        f"{report.mib(m['s_copy1_bytes_on_wire'])} |"
    )
    add(
        f"| second backup, after the 1% change | {report.secs(m['r_backup2_seconds'])} | "
        f"{report.mib(m['r_backup2_bytes'])} | {report.secs(m['s_backup2_seconds'])} | "
        f"{report.mib(m['s_backup2_bytes'])} | — |"
    )
    add(
        f"| **second copy** | {report.secs(m['r_copy2_seconds'])} | {report.mib(m['r_copy2_bytes'])} | "
        f"{report.secs(m['s_copy2_seconds'])} | {report.mib(m['s_copy2_bytes'])} | "
        f"{report.mib(m['s_copy2_bytes_on_wire'])} |"
    )
    add(
        f"| second copy as % of the first | {report.pct(report.ratio(m['r_copy2_seconds'], m['r_copy1_seconds']))} "
        f"| {report.pct(report.ratio(m['r_copy2_bytes'], m['r_copy1_bytes']))} | "
        f"{report.pct(report.ratio(m['s_copy2_seconds'], m['s_copy1_seconds']))} | "
        f"{report.pct(report.ratio(m['s_copy2_bytes'], m['s_copy1_bytes']))} | "
        f"{report.pct(report.ratio(m['s_copy2_bytes_on_wire'], m['s_copy1_bytes_on_wire']))} |"
    )
    add("")
    add(
        f"Second copy, Strongroom / restic: time "
        f"{report.times(report.ratio(m['s_copy2_seconds'], m['r_copy2_seconds']))}, bytes added to the "
        f"destination {report.times(report.ratio(m['s_copy2_bytes'], m['r_copy2_bytes']))}, bytes on the wire "
        f"(against restic's upload) {report.times(report.ratio(m['s_copy2_bytes_on_wire'], m['r_copy2_bytes']))}. "
        f"First copy: time {report.times(report.ratio(m['s_copy1_seconds'], m['r_copy1_seconds']))}, "
        f"bytes added {report.times(report.ratio(m['s_copy1_bytes'], m['r_copy1_bytes']))}."
    )
    add("")
    add("| Strongroom copy detail | first copy | second copy |")
    add("|---|---|---|")
    add(
        f"| chunks sent / skipped (already held by the destination) | {n(m['s_copy1_chunks_sent'])} / "
        f"{n(m['s_copy1_chunks_skipped'])} | {n(m['s_copy2_chunks_sent'])} / {n(m['s_copy2_chunks_skipped'])} |"
    )
    add(
        f"| chunks in the recovery point (cut points depend on the vault's chunker key) | {n(m['s_backup1_chunks'])} "
        f"| {n(m['s_backup2_chunks'])} |"
    )
    add(
        f"| new objects the backup being copied wrote (`new_chunks`) | {n(m['s_backup1_new_chunks'])} | "
        f"{n(m['s_backup2_new_chunks'])} |"
    )
    add(
        "| of those, stored as deltas in the source (`delta_chunks`; they cross as delta frames when the destination "
        f"holds the base) | {n(m['s_backup1_delta_chunks'])} | {n(m['s_backup2_delta_chunks'])} |"
    )
    add(
        f"| plaintext of the chunks sent | {report.mib(m['s_copy1_plaintext_bytes_sent'])} | "
        f"{report.mib(m['s_copy2_plaintext_bytes_sent'])} |"
    )
    add(
        f"| recovery point size (dump) | {report.mib(m['s_copy1_bytes_transferred'])} | "
        f"{report.mib(m['s_copy2_bytes_transferred'])} |"
    )
    add(
        f"| backup's `new_bytes` in the source vault | {report.mib(m['s_backup1_new_bytes'])} | "
        f"{report.mib(m['s_backup2_new_bytes'])} |"
    )
    add(
        f"| destination `serve` CPU time during the copy | {report.secs(m['s_copy1_server_cpu_seconds'])} | "
        f"{report.secs(m['s_copy2_server_cpu_seconds'])} |"
    )
    add(
        f"| peak RSS: source CLI process / destination `serve` (since start) | "
        f"{report.mib(m['s_copy1_peak_rss_tree'])} / {report.mib(m['s_copy1_server_peak_rss'])} | "
        f"{report.mib(m['s_copy2_peak_rss_tree'])} / {report.mib(m['s_copy2_server_peak_rss'])} |"
    )
    add(
        f"| CLI overhead (wall time minus the job's own duration) | {report.secs(m['s_copy1_overhead_seconds'])} | "
        f"{report.secs(m['s_copy2_overhead_seconds'])} |"
    )
    add("")
    if len(runs) > 1:
        parts = []
        for k in runs:
            parts.append(
                f"{n(one('strongroom', 'backup2', 'chunks', k))} chunks, "
                f"{report.mib(one('strongroom', 'copy2', 'bytes_on_wire', k))} on the wire, "
                f"{report.mib(one('strongroom', 'copy2', 'bytes', k))} added vs restic "
                f"{report.mib(one('restic', 'copy2', 'bytes', k))}, "
                f"{report.secs(one('strongroom', 'copy2', 'seconds', k))} vs "
                f"{report.secs(one('restic', 'copy2', 'seconds', k))}"
            )
        add(
            "Second copy per repetition (fresh accounts and repositories each time, so fresh chunker keys): "
            + "; ".join(parts)
            + "."
        )
        add("")
    if verify_ok:
        good = sum(1 for v in verify_ok if v and v.get("ok"))
        points = sorted({v.get("recovery_points_checked") for v in verify_ok if v})
        add(
            f"`strongroom verify --read-data` in the destination after the second copy: clean in {good} of "
            f"{len(verify_ok)} repetition(s) ({'/'.join(str(p) for p in points)} recovery points read and re-hashed)."
        )
        add("")
    return lines
