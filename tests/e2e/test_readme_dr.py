"""README.md's disaster-recovery lines, read from README.md and run as written by bash, in their order, on
the state scripts/demo.sh leaves (two accounts from examples/mavis/, the database a logical ``postgres``
resource, role ``mavis``, the app's secret, a backup copied to the destination): the dry run finds no
problem, the rehearsal and the real run succeed (the real run killed once and finished by ``dr resume``),
and the report's RPO is not negative."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import yaml

from tests.e2e.dr_world import APP_PASSWORD, EXAMPLES, SAMPLE_APP, apply_destination, latest_run
from tests.support.accounts import account_id, issue_credential, register, serving
from tests.support.cli import Cli
from tests.support.pgcluster import PgCluster, traversable_tempdir

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def readme_dr_lines() -> list[str]:
    """The ``$S dr …`` lines of README.md's disaster-recovery block, as written (comments included)."""
    text = README.read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.DOTALL)
    block = next(b for b in blocks if "$S dr rehearse" in b)
    lines = [line for line in block.splitlines() if line.strip()]
    assert all(line.startswith("$S dr ") for line in lines), lines
    return lines


@dataclass
class Demo:
    base: Path
    cluster: PgCluster
    source: Cli
    destination: Cli

    def run_line(self, line: str, run_id: str = "", fault: str = "") -> subprocess.CompletedProcess[str]:
        """One README line through bash, with $S the source account's strongroom (as . .demo/env.sh sets it)."""
        env = {**self.source.env, "S": shlex.join(self.source.command("--home", str(self.source.home)))}
        if fault:
            env["STRONGROOM_FAULT_KILL_AT"] = fault
        script = line.replace("RUN_ID", run_id) if run_id else line
        return subprocess.run(
            ["bash", "-c", script], env=env, capture_output=True, text=True, cwd=ROOT, stdin=subprocess.DEVNULL
        )


def demo_cluster(base: Path) -> PgCluster:
    """As scripts/demo.sh's: database clinic (not named like the app) with patients, role mavis reading it."""
    cluster = PgCluster.create(base / "pg")
    cluster.start()
    cluster.create_role("mavis", APP_PASSWORD)
    cluster.create_database("clinic", owner="mavis")
    with psycopg.connect(
        host="127.0.0.1", port=cluster.port, user="mavis", password=APP_PASSWORD, dbname="clinic"
    ) as conn:
        conn.execute((SAMPLE_APP / "schema.sql").read_text().encode())
    return cluster


@pytest.fixture
def demo(pg_bindir: Path) -> Iterator[Demo]:
    base = traversable_tempdir("strongroom-readme-dr-")
    cluster = demo_cluster(base)
    source, destination = Cli(base / "source"), Cli(base / "destination")
    source.run("init")
    destination.run("init")
    try:
        destination_vault = apply_destination(destination, account_id(source))
        with serving(destination) as server:
            register(
                source,
                "destination",
                server,
                issue_credential(destination, "source-copier", "--account-id", account_id(source)),
            )
            values = yaml.safe_load((EXAMPLES / "source" / "env" / "production.yaml").read_text())
            values.update(
                destination_vault_arn=destination_vault,
                database_dsn=cluster.dsn("clinic"),  # logical (the default database_type), as the demo
                people_notification_url=f"log://{base}/people.jsonl",
                events_log=f"log://{base}/events.jsonl",
                reports_store=(base / "reports").as_uri(),  # the report plans write here
            )
            (base / "source-vars.yaml").write_text(yaml.safe_dump(values))
            source.run(
                "apply", "-f", str(EXAMPLES / "source" / "source.yaml"), "--var-file", str(base / "source-vars.yaml"),
                "--auto-approve",
            )  # fmt: skip
            app_secret = {
                "engine": "postgres", "host": "127.0.0.1", "port": cluster.port, "username": "mavis",
                "password": APP_PASSWORD, "dbname": "clinic",
            }  # fmt: skip
            source.run(
                "secrets",
                "put",
                "mavis/production/db",
                "--rds",
                env={"STRONGROOM_SECRET_VALUE": json.dumps(app_secret)},
            )
            backup = source.json(
                "backup", "start", "--resource", "mavis-db", "--vault", "mavis-production", "--delete-after", "60",
                "--wait",
            )  # fmt: skip
            assert backup["state"] == "COMPLETED", backup
            copy = source.json("copy", "start", "--recovery-point", backup["recovery_point_arn"], "--wait")
            assert copy["state"] == "COMPLETED", copy
            yield Demo(base, cluster, source, destination)
    finally:
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)


def test_readme_dr_lines_run_as_written(demo: Demo) -> None:
    dry_run, rehearse, real, resume, describe = readme_dr_lines()
    assert "--dry-run" in dry_run and "dr rehearse" in rehearse and "--incident-time" in real
    assert "dr resume RUN_ID" in resume and "dr describe RUN_ID" in describe

    planned = demo.run_line(dry_run)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert "No problems found." in planned.stdout

    rehearsed = demo.run_line(rehearse)
    assert rehearsed.returncode == 0, rehearsed.stdout + rehearsed.stderr
    assert demo.cluster.query("SELECT datname FROM pg_database WHERE datname LIKE '%rehearsal%'") == []

    killed = demo.run_line(real, fault="dr.after:managed-credentials")  # a crash half-way: resume finishes it
    assert killed.returncode == -9 or killed.returncode == 128 + 9, killed.stdout + killed.stderr
    run_id = latest_run(demo.source)
    resumed = demo.run_line(resume, run_id=run_id)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr

    described = demo.run_line(describe, run_id=run_id)
    assert described.returncode == 0, described.stderr
    assert re.search(r"RPO: [0-9]", described.stdout), described.stdout  # never "RPO: -792756.2 s"
    report = demo.source.json("dr", "describe", run_id)
    assert report["state"] == "COMPLETED", report
    assert report["rpo_seconds"] >= 0, report
    assert report["restored"]["dbname"] == "mavis-production-restored"
    value = demo.source.json("secrets", "get", "mavis/production/db")  # managed: a new password, the new database
    assert value["dbname"] == "mavis-production-restored" and value["password"] != APP_PASSWORD
