"""A disaster-recovery run killed (SIGKILL) at every step boundary and in the middle of its restore, then
``dr resume``: the same final state as a run never interrupted, and no finished step repeated. Also the
dry run, the rehearsal that leaves nothing behind, and the clear errors (no matching recovery point,
identifier in use, secret missing, a failing hook that is resumable after the fix)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.e2e.dr_world import (
    CHECKSUM,
    RUNBOOK,
    add_rows,
    app_cluster,
    apply_source,
    checksum,
    latest_run,
    put_app_secret,
    runbook_vars,
    secret,
    stop_restored,
)
from tests.support.cli import Cli, assert_one_line_error
from tests.support.pgcluster import PgCluster, traversable_tempdir

# One worker runs the whole module: its module fixtures (a cluster, an account, the reference run) are built once.
pytestmark = [pytest.mark.postgres, pytest.mark.xdist_group("dr_resume")]

FAKE_DESTINATION = "arn:strongroom:backup:local:000000000000:backup-vault:mavis-destination"
STEPS = [
    "select",
    "restore",
    "wait",
    "credentials",
    "terraform-refresh",
    "adopt",
    "terraform-import",
    "terraform-apply",
    "deploy",
    "verify",
]  # managed-credentials is skipped (self-managed)


@dataclass
class Local:
    """One source account (no destination needed: points are selected in its own vault)."""

    base: Path
    cluster: PgCluster
    cli: Cli
    reports: list[dict[str, Any]] = field(default_factory=list)

    def case(self, name: str) -> dict[str, str]:
        """A fresh original resource, its recovery point and the app's secret, for one run of the runbook."""
        resource = f"db-{name}"
        self.cli.run(
            "resources",
            "add",
            resource,
            "--type",
            "postgres-cluster",
            "--dsn",
            self.cluster.dsn(),
            "--tag",
            "BackupSource=True",
            "--tag",
            f"environment={name}",
        )
        backup = self.cli.json(
            "backup", "start", "--resource", resource, "--vault", "mavis-production", "--delete-after", "60", "--wait"
        )
        assert backup["state"] == "COMPLETED", backup
        put_app_secret(self.cli, f"mavis/{name}/db", self.cluster.port)
        return {"ENV": name, "RESOURCE": resource, "DEPLOY_COMMAND": "true"}

    def run(self, variables: dict[str, str], *extra: str, env: dict[str, str] | None = None, ok: bool = True):
        return self.cli.run("dr", "run", str(RUNBOOK), *runbook_vars(**variables), "--json", *extra, env=env, ok=ok)

    def finish(self, report: dict[str, Any]) -> dict[str, Any]:
        self.reports.append(report)
        return report


@pytest.fixture(scope="module")
def local(pg_bindir: Path) -> Iterator[Local]:
    base = traversable_tempdir("strongroom-dr-resume-")
    cluster = app_cluster(base)
    cli = Cli(base / "source")
    cli.run("init")
    apply_source(cli, base, cluster, FAKE_DESTINATION)
    world = Local(base, cluster, cli)
    try:
        yield world
    finally:
        for report in world.reports:
            stop_restored(report)
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)


def final_state(local: Local, report: dict[str, Any], name: str) -> dict[str, Any]:
    """What a finished run leaves, with the run-specific values (ports, ids, times) taken out."""
    restored = report["restored"]
    value = secret(local.cli, f"mavis/{name}/db")
    adopted = local.cli.json("resources", "describe", restored["identifier"])
    points = local.cli.json("recovery-points", "list", "--resource", restored["identifier"])["recovery_points"]
    return {
        "state": report["state"],
        "steps": [(s["name"], s["state"]) for s in report["steps"]],
        "secret": {**value, "port": "restored" if value["port"] == restored["port"] else value["port"]},
        "adopted_tags": {k: v for k, v in adopted["tags"].items() if k != "environment"},
        "original_tags": local.cli.json("resources", "describe", f"db-{name}")["tags"],
        "adoption_backups": [p["status"] for p in points],
        "data": checksum(restored["port"]),
        "identifier": restored["identifier"].replace(f"-{name}-", "-NAME-"),
    }


@pytest.fixture(scope="module")
def baseline(local: Local) -> dict[str, Any]:
    """An uninterrupted run: the state every interrupted-and-resumed run must end in."""
    variables = local.case("ref")
    report = local.finish(local.run(variables).json())
    assert report["state"] == "COMPLETED", report
    assert [s["attempts"] for s in report["steps"] if s["state"] == "COMPLETED"] == [1] * len(STEPS)
    state = final_state(local, report, "ref")
    assert state["data"] == checksum(local.cluster.port)
    assert state["adoption_backups"] == ["COMPLETED"]
    return state


KILL_POINTS = ["dr.before:select", *(f"dr.after:{step}" for step in STEPS), "dr.restore:middle"]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_killed_run_resumes_to_the_same_final_state(local: Local, baseline: dict[str, Any], point: str) -> None:
    name = f"kill{KILL_POINTS.index(point)}"
    variables = local.case(name)
    killed = local.run(variables, env={"STRONGROOM_FAULT_KILL_AT": point}, ok=False)
    assert killed.returncode == -9, (killed.returncode, killed.stderr)
    run_id = latest_run(local.cli)
    listed = next(r for r in local.cli.json("dr", "list")["runs"] if r["run_id"] == run_id)
    assert listed["state"] == "INTERRUPTED"
    before = {s["name"]: s for s in local.cli.json("dr", "describe", run_id)["steps"]}

    report = local.finish(local.cli.json("dr", "resume", run_id))
    assert report["state"] == "COMPLETED", report
    state = final_state(local, report, name)
    assert {**state, "original_tags": None} == {**baseline, "original_tags": None}
    assert state["original_tags"] == {"strongroom:replaced-by": f"mavis-{name}-restored"}
    attempts = {s["name"]: s["attempts"] for s in report["steps"]}
    for step, row in before.items():
        if row["state"] == "COMPLETED":  # finished before the kill: not repeated
            assert attempts[step] == 1, (step, attempts)
    if point == "dr.restore:middle":
        assert before["restore"]["state"] == "RUNNING" and attempts["restore"] == 2
    else:
        assert all(count == 1 for step, count in attempts.items() if step != "managed-credentials")
    jobs = [j for j in local.cli.json("jobs", "list")["jobs"] if j["resource_id"] == f"mavis-{name}-restored"]
    assert [j["state"] for j in jobs] == ["COMPLETED"]  # the adoption's first backup, exactly once


def test_dry_run_prints_every_step_and_changes_nothing(local: Local) -> None:
    variables = local.case("dry")
    runs_before = local.cli.json("dr", "list")["runs"]
    result = local.cli.run("dr", "run", str(RUNBOOK), *runbook_vars(**variables), "--dry-run")
    lines = result.stdout.splitlines()
    numbered = [line for line in lines if line[:3].strip().rstrip(".").isdigit()]
    assert [line.split(".", 1)[1].split("(")[0].strip() for line in numbered] == [
        "select",
        "restore",
        "wait",
        "credentials",
        "managed-credentials",
        "terraform-refresh",
        "adopt",
        "terraform-import",
        "terraform-apply",
        "deploy",
        "verify",
    ]
    point = local.cli.json("recovery-points", "list", "--resource", "db-dry")["recovery_points"][0]
    assert point["recovery_point_arn"] in numbered[0]
    assert "mavis-dry-restored" in numbered[1] and "skip (when: CREDENTIALS = managed)" in numbered[4]
    assert "No problems found." in result.stdout
    assert local.cli.json("dr", "list")["runs"] == runs_before
    assert not (local.cli.home / "clusters" / "mavis-dry-restored").exists()

    planned = local.cli.run(
        "dr", "run", str(RUNBOOK), *runbook_vars(**{**variables, "ENV": "nosecret"}), "--dry-run", "--json", ok=False
    )
    assert planned.returncode == 2
    problems = [p for step in json.loads(planned.stdout)["steps"] for p in step["problems"]]
    assert "secret 'mavis/nosecret/db' does not exist" in problems


def test_rehearsal_runs_everything_and_leaves_nothing_behind(local: Local) -> None:
    variables = local.case("rh")
    resources = local.cli.json("resources", "list")
    secrets_before = local.cli.json("secrets", "list")
    clusters = restored_clusters(local)
    points = local.cli.json("recovery-points", "list", "--all")

    result = local.cli.run("dr", "rehearse", str(RUNBOOK), *runbook_vars(**variables))
    assert "Rehearsal" in result.stdout and "COMPLETED" in result.stdout
    report = local.cli.json("dr", "describe", latest_run(local.cli))
    assert report["rehearsal"] and report["state"] == "COMPLETED"
    states = {s["name"]: s["state"] for s in report["steps"]}
    assert states["verify"] == "COMPLETED" and states["restore"] == "COMPLETED"
    assert report["restored"]["identifier"].startswith("mavis-rh-restored-rehearsal-")
    assert any("stopped cluster" in item for item in report["cleanup"])
    assert any("deleted secret mavis/rh/db-rehearsal-" in item for item in report["cleanup"])

    assert local.cli.json("resources", "list") == resources
    assert local.cli.json("secrets", "list") == secrets_before
    assert restored_clusters(local) == clusters
    assert local.cli.json("recovery-points", "list", "--all") == points
    assert local.cli.json("resources", "describe", "db-rh")["tags"]["BackupSource"] == "True"


def restored_clusters(local: Local) -> list[str]:
    where = local.cli.home / "clusters"
    return sorted(p.name for p in where.iterdir()) if where.exists() else []


def test_no_matching_recovery_point_is_one_clear_line(local: Local) -> None:
    variables = local.case("old")
    result = local.run({**variables, "AT_OR_BEFORE": "2001-01-01T00:00:00Z"}, ok=False)
    assert_one_line_error(result, 2, "no recovery point matches")
    assert "at or before 2001-01-01" in result.stderr and "dr resume" in result.stderr


def test_target_identifier_in_use_is_refused_and_nothing_is_touched(local: Local) -> None:
    variables = local.case("busy")
    occupied = local.cli.home / "clusters" / "mavis-busy-restored"
    occupied.mkdir(parents=True)
    (occupied / "PG_VERSION").write_text("15\n")
    result = local.run(variables, ok=False)
    assert_one_line_error(result, 5, "mavis-busy-restored is already in use")
    assert (occupied / "PG_VERSION").read_text() == "15\n"


def test_missing_secret_stops_the_run_and_resume_finishes_it(local: Local) -> None:
    variables = local.case("nosec")
    local.cli.run("secrets", "delete", "mavis/nosec/db")
    result = local.run(variables, ok=False)
    assert_one_line_error(result, 2, "secret 'mavis/nosec/db' does not exist")
    run_id = latest_run(local.cli)
    put_app_secret(local.cli, "mavis/nosec/db", local.cluster.port)
    report = local.finish(local.cli.json("dr", "resume", run_id))
    assert report["state"] == "COMPLETED"
    attempts = {s["name"]: s["attempts"] for s in report["steps"]}
    assert attempts["credentials"] == 2 and attempts["restore"] == 1


def test_failing_hook_stops_at_its_step_and_is_resumable_after_the_fix(local: Local) -> None:
    variables = local.case("hook")
    flag = local.base / "state-lock-released"
    apply_command = f"test -f {flag} || {{ echo 'Error acquiring the state lock' >&2; exit 3; }}"
    result = local.run({**variables, "TERRAFORM_APPLY": apply_command}, ok=False)
    assert_one_line_error(result, 10, "exited with status 3: Error acquiring the state lock")
    run_id = latest_run(local.cli)
    report = local.cli.json("dr", "describe", run_id)
    states = {s["name"]: s["state"] for s in report["steps"]}
    assert states["terraform-apply"] == "FAILED" and states["deploy"] == "PENDING"
    assert states["adopt"] == "COMPLETED"
    assert local.cli.run("dr", "resume", run_id, ok=False).returncode == 10  # not fixed yet

    flag.write_text("")
    report = local.finish(local.cli.json("dr", "resume", run_id))
    assert report["state"] == "COMPLETED"
    attempts = {s["name"]: s["attempts"] for s in report["steps"]}
    assert attempts["terraform-apply"] == 3 and attempts["restore"] == 1 and attempts["adopt"] == 1
    again = local.cli.run("dr", "resume", run_id, ok=False)
    assert_one_line_error(again, 2, "already COMPLETED")


def test_data_written_after_the_recovery_point_is_not_restored(local: Local) -> None:
    variables = local.case("rpo")
    at_backup = checksum(local.cluster.port)
    add_rows(local.cluster.port, 10)
    report = local.finish(local.run(variables).json())
    assert checksum(report["restored"]["port"]) == at_backup != checksum(local.cluster.port)
    assert report["rpo_seconds"] > 0


def test_logical_recovery_point_is_restored_as_a_new_database_beside_the_original(local: Local) -> None:
    """postgres (pg_dump) resources: the identifier is a NEW database on the original's server; the
    original database is not touched; owners and grants come back, so the app's role reads its tables."""
    dsn = local.cluster.dsn("mavis")
    local.cli.run(
        "resources",
        "add",
        "db-logical",
        "--type",
        "postgres",
        "--dsn",
        dsn,
        "--tag",
        "BackupSource=True",
        "--tag",
        "environment=logical",
    )
    backup = local.cli.json("backup", "start", "--resource", "db-logical", "--vault", "mavis-production", "--wait")
    assert backup["state"] == "COMPLETED", backup
    put_app_secret(local.cli, "mavis/logical/db", local.cluster.port)
    original = checksum(local.cluster.port)

    report = local.finish(local.run({"ENV": "logical", "RESOURCE": "db-logical", "DEPLOY_COMMAND": "true"}).json())
    assert report["state"] == "COMPLETED", report
    assert report["restored"]["dbname"] == "mavis-logical-restored"
    value = secret(local.cli, "mavis/logical/db")
    assert (value["dbname"], value["port"]) == ("mavis-logical-restored", local.cluster.port)
    restored = psycopg.connect(
        host="127.0.0.1",
        port=local.cluster.port,
        user="mavis",
        password=value["password"],
        dbname="mavis-logical-restored",
    )
    with restored as conn:
        row = conn.execute(CHECKSUM).fetchone()
    assert (int(row[0]), str(row[1])) == original == checksum(local.cluster.port)
    again = local.run({"ENV": "logical", "RESOURCE": "db-logical", "DEPLOY_COMMAND": "true"}, ok=False)
    assert_one_line_error(again, 5, "mavis-logical-restored is already in use")
