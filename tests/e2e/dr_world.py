"""The disaster-recovery tests' world: the sample app's PostgreSQL cluster, accounts configured from
examples/mavis/, the sample app itself, and helpers to look at what a run left behind."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import yaml

from strongroom import model
from strongroom.plans.schedule import parse_schedule
from strongroom.services.account import open_account
from strongroom.services.scheduler import Scheduler, ScheduleRun, list_runs
from tests.support.accounts import vault_arn
from tests.support.cli import PASSPHRASE, Cli
from tests.support.clock import ManualClock
from tests.support.pgcluster import PgCluster
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "mavis"
RUNBOOK = EXAMPLES / "dr-runbook.yaml"
SAMPLE_APP = ROOT / "examples" / "sample-app"
APP_PASSWORD = "app password that must never leak"
APP_SECRET_ENV = "APP_DB_SECRET"  # examples/mavis/dr-runbook.yaml's deploy step sets it from the secret store
CHECKSUM = "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY id), '')) FROM patients t"


def app_cluster(base: Path) -> PgCluster:
    """A cluster holding the sample app's database: role mavis (password over TCP), database mavis."""
    cluster = PgCluster.create(base / "pg")
    cluster.start()
    cluster.create_role("mavis", APP_PASSWORD)
    cluster.create_database("mavis", owner="mavis")
    with psycopg.connect(**app_params(cluster.port), autocommit=True) as conn:
        conn.execute((SAMPLE_APP / "schema.sql").read_text().encode())
    return cluster


def app_params(port: int, password: str = APP_PASSWORD) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": port, "user": "mavis", "password": password, "dbname": "mavis"}


def checksum(port: int, password: str = APP_PASSWORD) -> tuple[int, str]:
    with psycopg.connect(**app_params(port, password)) as conn:
        row = conn.execute(CHECKSUM).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def add_rows(port: int, count: int) -> None:
    with psycopg.connect(**app_params(port), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO patients (id, name) SELECT 100000 + i, 'after the backup' "
            "FROM generate_series(1, %s) i ON CONFLICT DO NOTHING",
            (count,),
        )


def put_app_secret(cli: Cli, name: str, port: int) -> None:
    value = {
        "engine": "postgres",
        "host": "127.0.0.1",
        "port": port,
        "username": "mavis",
        "password": APP_PASSWORD,
        "dbname": "mavis",
    }
    cli.run("secrets", "put", name, "--rds", env={"STRONGROOM_SECRET_VALUE": json.dumps(value)})


def secret(cli: Cli, name: str) -> dict[str, Any]:
    return dict(json.loads(cli.run("secrets", "get", name, "--json").stdout))


def apply_source(cli: Cli, base: Path, cluster: PgCluster, destination_vault: str) -> None:
    """examples/mavis/source with the cluster as the physical mavis-db resource."""
    values = yaml.safe_load((EXAMPLES / "source" / "env" / "production.yaml").read_text())
    values.update(
        destination_vault_arn=destination_vault,
        database_type="postgres-cluster",
        database_dsn=cluster.dsn(),
        people_notification_url=f"log://{base}/people.jsonl",
        events_log=f"log://{base}/events.jsonl",
        reports_store=(base / "reports").as_uri(),  # the report plans write here
    )
    var_file = base / f"source-{cli.home.name}.yaml"
    var_file.write_text(yaml.safe_dump(values))
    cli.run("apply", "-f", str(EXAMPLES / "source" / "source.yaml"), "--var-file", str(var_file), "--auto-approve")


def apply_destination(cli: Cli, source_account_id: str) -> str:
    cli.run(
        "apply",
        "-f",
        str(EXAMPLES / "destination" / "destination.yaml"),
        "--var-file",
        str(EXAMPLES / "destination" / "env" / "production.yaml"),
        "--var",
        f"source_account_id={source_account_id}",
        "--auto-approve",
    )
    return vault_arn(cli, "mavis-destination")


@dataclass
class App:
    """The sample app, run through appctl.py as a runbook's restart_app step runs it."""

    state: Path
    port: int

    @classmethod
    def at(cls, base: Path) -> App:
        return cls(base / "app-state.json", free_port())

    def start_command(self, secret_name: str) -> list[str]:
        """The app reads its secret from APP_DB_SECRET: the runbook's deploy step sets it (hooks never get
        the passphrase, so the app cannot ask the secret store itself)."""
        return [
            sys.executable,
            str(SAMPLE_APP / "appctl.py"),
            "start",
            "--state",
            str(self.state),
            "--",
            "--secret-env",
            APP_SECRET_ENV,
            "--secret",
            secret_name,
            "--port",
            str(self.port),
        ]

    def restart_command(self) -> str:
        return shlex.join([sys.executable, str(SAMPLE_APP / "appctl.py"), "restart", "--state", str(self.state)])

    def start(self, cli: Cli, secret_name: str) -> None:
        env = {name: value for name, value in cli.env.items() if name != "STRONGROOM_PASSPHRASE"}
        env[APP_SECRET_ENV] = json.dumps(secret(cli, secret_name))
        subprocess.run(self.start_command(secret_name), env=env, check=True, timeout=60, capture_output=True)

    def pid(self) -> int:
        return int(json.loads(self.state.read_text())["pid"])

    def stop(self) -> None:
        if self.state.exists():
            subprocess.run(
                [sys.executable, str(SAMPLE_APP / "appctl.py"), "stop", "--state", str(self.state)],
                check=False,
                timeout=60,
                capture_output=True,
            )

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"

    def checksum(self) -> tuple[int, str]:
        data = httpx.get(f"http://127.0.0.1:{self.port}/checksum", timeout=10).raise_for_status().json()
        return int(data["rows"]), str(data["md5"])

    def healthy(self) -> bool:
        try:
            return httpx.get(self.health_url, timeout=5).status_code == 200
        except httpx.HTTPError:
            return False


def environ_of(pid: int) -> dict[str, str]:
    """A running process's environment, from /proc (we are its user or root)."""
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(pair.decode(errors="replace").partition("=")[::2] for pair in pairs if pair)


def postmaster_pid(data_directory: str) -> int:
    return int(Path(data_directory, "postmaster.pid").read_text().splitlines()[0])


def stop_restored(report: dict[str, Any]) -> None:
    """Stop a cluster a run restored (tests leave no server running)."""
    restored = report.get("restored") or {}
    command = restored.get("stop_command")
    if command and Path(restored["data_directory"], "postmaster.pid").exists():
        subprocess.run([*shlex.split(command), "-m", "immediate"], check=False, capture_output=True, timeout=60)


def runbook_vars(**values: Any) -> list[str]:
    args: list[str] = []
    for name, value in values.items():
        args += ["--var", f"{name}={value}"]
    return args


def latest_run(cli: Cli) -> str:
    runs = cli.json("dr", "list")["runs"]
    return str(runs[-1]["run_id"])


def scheduled_runs(cli: Cli, schedule: str = "cron(0 7,19 * * ? *)") -> list[ScheduleRun]:
    """The account's scheduler (in this process, clock driven) at the plan's next fire time: what it ran."""
    account = open_account(cli.home, lambda: PASSPHRASE)
    try:
        # A day back: the fire time is then in the past, as the destination requires of a copy's creation date
        # (it refuses one from its future; docs/lifecycle.md).
        start = model.now() - timedelta(days=1)
        fire = next(iter(parse_schedule(schedule).fire_times(start)))
        clock = ManualClock(start)
        with model.driven_clock(clock):
            scheduler = Scheduler(account)
            scheduler.tick()  # a rule's cursor starts at the first tick
            for minutes in range(4):  # the backup, then its copy to the destination
                clock.moment = fire + timedelta(minutes=minutes)
                scheduler.tick()
        return list_runs(account, limit=None)
    finally:
        account.close()
