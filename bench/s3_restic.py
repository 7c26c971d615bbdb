#!/usr/bin/env python3
"""Strongroom on S3 next to restic's S3 backend, against the same S3 server in the same run (issue 11).

moto's S3 server on 127.0.0.1 (tests/support/s3server.py), behind bench/s3proxy.py: a counting proxy on
loopback that adds ``--rtt`` seconds to every request (a network round trip moto does not have) and counts
requests by S3's billing class for both tools alike. Data: ``pgbench -i -s SCALE``; restic is fed
``pg_dump -Fc -Z0 | restic backup --stdin`` (what Strongroom's ``postgres`` resource runs itself), as in
bench/run.py's logical section. Steps, each measured for both tools (wall time, requests, peak RSS):

1. first backup; 2. second backup after the application-like 1% change (bench/run.py); 3. restore into a new
database (Strongroom ``restore start --target postgresql://…``; restic ``restic dump latest db.dump |
pg_restore -d NEW``); 4. copy to a second bucket (Strongroom: both points pushed to a destination account's
S3 vault through its ``serve``; restic: ``restic copy --from-repo A`` into repository B, both snapshots).
Then the objects and bytes each tool left in its buckets, per GB of source database. Strongroom's first and
second backups and restore also run into a local vault: the local-vs-S3 ratio.

    .venv/bin/python bench/s3_restic.py --quick           # pgbench -s 5, a minute or two: checks it all works
    .venv/bin/python bench/s3_restic.py --scale 100       # the issue's size (about 1.5 GB)

Needs root (the cluster runs as postgres) and ``apt-get install -y restic``. Results: bench/results/s3-*.json
and .md (printed too). Numbers and their reading: docs/performance.md and docs/storage.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

import copies  # noqa: E402
import measure  # noqa: E402
import run  # noqa: E402
from s3proxy import CountingProxy  # noqa: E402
from tests.support.s3server import REGION, S3_TEST_ENV, start_s3_server  # noqa: E402

GB = 1e9
MAXRSS = [sys.executable, "-c", "import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
          "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)); "
          "sys.exit(rc)"]  # fmt: skip


class S3Bench(run.Bench):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.results: dict[str, dict[str, Any]] = {}
        self.proxy: CountingProxy | None = None
        self.moto: Any = None

    # Environment: every Strongroom home and restic get the AWS chain's variables (the S3 server's keys).
    def sr_env(self, home: Path) -> dict[str, str]:
        return {**super().sr_env(home), **S3_TEST_ENV}

    def restic_s3_env(self, bucket: str) -> dict[str, str]:
        assert self.proxy
        return {
            **self.client_env(),
            **S3_TEST_ENV,
            "RESTIC_PASSWORD": run.RESTIC_PASSWORD,
            "RESTIC_REPOSITORY": f"s3:{self.proxy.endpoint}/{bucket}/restic",
            "RESTIC_CACHE_DIR": str(self.work / "restic-cache"),
        }

    def s3_url(self, bucket: str) -> str:
        assert self.proxy
        return f"s3://{bucket}/vault?endpoint={self.proxy.endpoint}&region={REGION}"

    # One measured step: wall time, requests at the proxy, the largest process's peak RSS (ru_maxrss = VmHWM).
    def step(self, tool: str, op: str, command: list[str] | str, env: dict[str, str]) -> measure.RunResult:
        assert self.proxy
        hwm = self.work / "maxrss"
        argv = [
            *MAXRSS,
            str(hwm),
            *(["bash", "-c", "set -euo pipefail; " + command] if isinstance(command, str) else command),
        ]
        before = self.proxy.snapshot()
        if log_path := os.environ.get("S3PROXY_LOG"):  # a marker line per step in the proxy's request log
            with open(log_path, "a") as log:
                log.write(f"{time.monotonic():.3f} === {tool} {op}\n")
        result = self.run(argv, env=env)
        requests = self.proxy.snapshot().minus(before)
        self.results.setdefault(tool, {})[op] = {
            "seconds": round(result.seconds, 3),
            "requests": requests,
            "peak_rss": int(hwm.read_text()),
        }
        self.log(
            f"  {tool} {op}: {result.seconds:.1f}s, {requests['total']} requests, {int(hwm.read_text()) >> 20} MiB"
        )
        return result

    def bucket_usage(self, bucket: str) -> dict[str, int]:
        client = self.moto.client()
        objects = size = 0
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", ()):
                objects, size = objects + 1, size + item["Size"]
        return {"objects": objects, "bytes": size}

    # Strongroom ---------------------------------------------------------------------------------------------
    def sr_json(self, home: Path, *argv: str) -> dict[str, Any]:
        return dict(json.loads(self.sr(home, *argv, "--json").stdout))

    def sr_step(self, tool: str, op: str, home: Path, *argv: str) -> dict[str, Any]:
        result = self.step(tool, op, [self.strongroom, *argv, "--json"], self.sr_env(home))
        answer = json.loads(result.stdout)
        for job in answer.get("copy_jobs", [answer]):  # several points copied in one command: a job each
            if job.get("state") != "COMPLETED":
                raise RuntimeError(f"{tool} {op}: {job.get('state')}: {job.get('status_message')}")
        return dict(answer)

    def sr_home(self, name: str, bucket: str | None) -> tuple[Path, str]:
        home = self.sr_new_home(name)
        vault = "Default"
        if bucket:
            vault = "S3"
            self.sr(home, "vaults", "create", vault, "--store", self.s3_url(bucket), "--json")
        return home, vault

    def restore_check(self, tool: str, op: str, home: Path, arn: str) -> None:
        assert self.cluster
        target = self.unique("pgbench_restored_")
        self.sr_step(
            tool, op, home, "restore", "start", "--recovery-point", arn, "--target", self.cluster.uri(target), "--wait"
        )
        self.results[tool][op]["verified"] = self.check_restored(run.PGBENCH, target)
        self.drop_db(target)

    # The sequence ---------------------------------------------------------------------------------------------
    def sequence(self) -> None:
        assert self.cluster
        s3_home, s3_vault = self.sr_home("s3-source", "sr-source")
        local_home, _ = self.sr_home("local", None)
        for home in (s3_home, local_home):
            self.sr(
                home, "resources", "add", "db", "--type", "postgres", "--dsn", self.cluster.uri("pgbench"), "--json"
            )
        restic_a = self.restic_s3_env("restic-a")
        self.run(["restic", "init", "-q"], env=restic_a)
        restic_backup = (
            f"{self.pg('pg_dump')} -Fc -Z0 pgbench | restic backup -q --host bench --stdin --stdin-filename db.dump"
        )

        points: list[str] = []
        for op in ("backup", "backup2"):
            if op == "backup2":
                self.apply_workload({"section": "s3"}, run.PGBENCH, "applike")
            self.step("restic", op, restic_backup, restic_a)
            job = self.sr_step(
                "strongroom-s3", op, s3_home, "backup", "start", "--resource", "db", "--vault", s3_vault, "--wait"
            )
            points.append(job["recovery_point_arn"])
            local = self.sr_step("strongroom-local", op, local_home, "backup", "start", "--resource", "db", "--wait")
            if op == "backup2":
                self.restore_check("strongroom-local", "restore", local_home, local["recovery_point_arn"])
        self.results["storage"] = {
            "restic": self.bucket_usage("restic-a"),
            "strongroom-s3": self.bucket_usage("sr-source"),
        }

        target = self.unique("pgbench_restic_")
        self.cluster.psql(f"CREATE DATABASE {target}")
        self.step("restic", "restore", f"restic dump -q latest db.dump | {self.pg('pg_restore')} -d {target}", restic_a)
        self.results["restic"]["restore"]["verified"] = self.check_restored(run.PGBENCH, target)
        self.drop_db(target)
        self.restore_check("strongroom-s3", "restore", s3_home, points[-1])

        # Copies: restic A -> B; Strongroom source -> a destination account's S3 vault through its serve.
        password = self.work / "restic-password"
        password.write_text(run.RESTIC_PASSWORD + "\n")
        restic_b = {
            **self.restic_s3_env("restic-b"),
            "RESTIC_FROM_REPOSITORY": restic_a["RESTIC_REPOSITORY"],
            "RESTIC_FROM_PASSWORD_FILE": str(password),
        }
        self.run(["restic", "init", "-q", "--copy-chunker-params"], env=restic_b)
        self.step("restic", "copy", ["restic", "copy", "-q", "--host", "bench"], restic_b)

        dst_home, dst_vault = self.sr_home("s3-destination", "sr-destination")
        src_id, _ = copies._identity(s3_home)
        dst_id, _ = copies._identity(dst_home)
        src_vault_arn = self.sr_json(s3_home, "vaults", "describe", s3_vault)["backup_vault_arn"]
        dst_vault_arn = self.sr_json(dst_home, "vaults", "describe", dst_vault)["backup_vault_arn"]
        self.sr(
            dst_home, "vaults", "put-access-policy", dst_vault, "--default-destination", "--source-account-id", src_id,
            "--source-vault-arn", src_vault_arn, "--admin", f"arn:strongroom:iam::{dst_id}:root", "--json",
        )  # fmt: skip
        with copies.Serve(self, dst_home, self.work / "serve.log") as serve:
            copies._connect(self, s3_home, dst_home, src_id, dst_id, serve.endpoint)
            # Both points in one command, as `restic copy` copies every snapshot in one (a job each).
            every_point = [arg for point in points for arg in ("--recovery-point", point)]
            self.sr_step("strongroom-s3", "copy", s3_home, "copy", "start", *every_point,
                         "--destination-vault", dst_vault_arn, "--wait")  # fmt: skip
            self.results["strongroom-s3"]["serve_peak_rss"] = serve.peak_rss()
        self.results["storage"].update(
            {"restic-copy": self.bucket_usage("restic-b"), "strongroom-s3-copy": self.bucket_usage("sr-destination")}
        )
        vault = local_home / "vaults" / "Default"
        self.results["storage"]["strongroom-local"] = {
            "objects": sum(1 for path in vault.rglob("*") if path.is_file()),
            "bytes": measure.dir_bytes(vault)["apparent"],
        }

    def main(self) -> int:
        self.work.mkdir(parents=True, exist_ok=True)
        os.chmod(self.work, 0o755)
        self.out.mkdir(parents=True, exist_ok=True)
        self.logfile = open(self.out / f"s3-{self.stamp}.log", "w")  # noqa: SIM115
        os.environ.update(S3_TEST_ENV)
        status = "completed"
        self.moto = start_s3_server(self.work)
        try:
            client = self.moto.client()
            for bucket in ("sr-source", "sr-destination", "restic-a", "restic-b"):
                client.create_bucket(Bucket=bucket)
            with CountingProxy(self.moto.endpoint, self.args.rtt) as proxy:
                self.proxy = proxy
                self.start_cluster()
                self.load_data()
                self.sequence()
        except KeyboardInterrupt:
            status = "interrupted"
        except Exception:
            status = "failed"
            self.log("FAILED:\n" + traceback.format_exc())
        finally:
            self.moto.stop()
            self.cleanup()
            self.write_s3_results(status)
        return 0 if status == "completed" else 1

    def write_s3_results(self, status: str) -> None:
        data = {
            "status": status,
            "arguments": vars(self.args),
            "machine": self.machine(),
            "sizes": self.sizes,
            "server": f"moto {moto_version()} on 127.0.0.1 behind bench/s3proxy.py, "
            f"{self.args.rtt * 1000:.0f} ms added per request",
            "results": self.results,
            "self_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        }
        path = self.out / f"s3-{self.stamp}.json"
        path.write_text(json.dumps(data, indent=2, default=str) + "\n")
        markdown = render(data)
        path.with_suffix(".md").write_text(markdown)
        print(markdown)
        if self.logfile:
            self.logfile.close()
            self.logfile = None


def moto_version() -> str:
    from importlib.metadata import version

    return version("moto")


def render(data: dict[str, Any]) -> str:
    """The Markdown tables: per step Strongroom next to restic (time, requests, memory), then storage per GB."""
    results, gb = data["results"], data["sizes"].get("pgbench_database_bytes", 0) / GB
    lines = [
        f"pgbench -s {data['arguments']['scale']} ({gb:.2f} GB database); {data['server']}; status {data['status']}",
        "",
    ]
    lines += [
        "| step | Strongroom s | restic s | time ratio | Strongroom tier-1 (PUT/POST/LIST) | restic tier-1 | "
        "Strongroom tier-2 (GET/HEAD) | restic tier-2 | DELETE S/r | Strongroom peak RSS MiB | restic peak RSS MiB | "
        "Strongroom local s | S3/local |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    sr, restic, local = results.get("strongroom-s3", {}), results.get("restic", {}), results.get("strongroom-local", {})
    for op in ("backup", "backup2", "restore", "copy"):
        a, b, c = sr.get(op), restic.get(op), local.get(op)
        if not a or not b:
            continue
        ra, rb = a["requests"], b["requests"]
        lines.append(
            f"| {op} | {a['seconds']:.1f} | {b['seconds']:.1f} | {a['seconds'] / b['seconds']:.2f} | "
            f"{ra['tier1_put_post_list']} | {rb['tier1_put_post_list']} | "
            f"{ra['tier2_get_head']} | {rb['tier2_get_head']} | "
            f"{ra.get('delete', 0)}/{rb.get('delete', 0)} | {a['peak_rss'] >> 20} | {b['peak_rss'] >> 20} | "
            + (f"{c['seconds']:.1f} | {a['seconds'] / c['seconds']:.2f} |" if c else "- | - |")
        )
    storage = results.get("storage", {})
    if storage and gb:
        lines += ["", "| stored after both backups | objects | MB | objects per GB of source | MB per GB of source |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for name, usage in storage.items():
            lines.append(
                f"| {name} | {usage['objects']} | {usage['bytes'] / 1e6:.1f} | {usage['objects'] / gb:.1f} | "
                f"{usage['bytes'] / 1e6 / gb:.1f} |"
            )
    if sr.get("serve_peak_rss"):
        lines += ["", f"Destination `serve` peak RSS during the copies: {sr['serve_peak_rss'] >> 20} MiB."]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=100, help="pgbench scale (100 = about 1.5 GB). Default 100.")
    parser.add_argument("--quick", action="store_true", help="pgbench -s 5: checks the whole sequence works.")
    parser.add_argument("--rtt", type=float, default=0.02, help="Seconds the proxy adds to each request. Default 0.02.")
    parser.add_argument("--out", default=str(BENCH / "results"))
    parser.add_argument("--workdir", default=str(BENCH / "work"))
    parser.add_argument("--keep-work", action="store_true")
    parser.add_argument("--strongroom", default=str(BENCH.parent / ".venv" / "bin" / "strongroom"))
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.scale = 5
    # What run.Bench's helpers read.
    args.only, args.app_mb, args.chunk_size, args.timeout, args.restore_jobs = ["copy"], 0, None, 4 * 3600, None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0 or not shutil.which("restic"):
        print(
            "s3_restic.py needs root (the cluster runs as postgres) and restic (apt-get install restic)",
            file=sys.stderr,
        )
        return 2
    return S3Bench(args).main()


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"s3_restic.py: {time.monotonic() - started:.0f} s", file=sys.stderr)
    sys.exit(code)
