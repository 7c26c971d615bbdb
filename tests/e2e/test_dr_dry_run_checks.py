"""The dry run finds, on the real target server, what the real run would trip over: a restoring role that may
not create databases or give objects to the dump's owners, roles and databases later steps name that will not
exist, secrets no step writes; it models secrets earlier steps write; and selection never picks a point taken
after the incident time (the report's RPO is never negative)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.support.cli import Cli, assert_one_line_error
from tests.support.pgcluster import PgCluster

pytestmark = pytest.mark.postgres

RESTORER_PASSWORD = "restorer password"


@pytest.fixture
def world(tmp_path: Path, pg_cluster: PgCluster) -> Iterator[dict[str, Any]]:
    """A logical point of database drc_app (owned by role drc_owner) and a restoring role without CREATEDB."""
    for role in ("drc_owner", "drc_restorer"):
        pg_cluster.drop_role(role)
    pg_cluster.drop_database("drc_app")
    pg_cluster.create_role("drc_owner", "owner password")
    pg_cluster.create_role("drc_restorer", RESTORER_PASSWORD)
    pg_cluster.create_database("drc_app", owner="drc_owner")
    with psycopg.connect(pg_cluster.dsn("drc_app", user="drc_owner"), password="owner password") as conn:
        conn.execute("CREATE TABLE patients (id int PRIMARY KEY, name text)")
        conn.execute("INSERT INTO patients VALUES (1, 'one')")
    cli = Cli(tmp_path / "home")
    cli.env["PGPASSWORD"] = RESTORER_PASSWORD  # the restoring role's; the superuser logs in by trust
    cli.run("init")
    cli.run("resources", "add", "drc-db", "--type", "postgres", "--dsn", pg_cluster.dsn("drc_app"))
    point = cli.json("backup", "start", "--resource", "drc-db", "--wait")
    assert point["state"] == "COMPLETED", point
    yield {"cli": cli, "cluster": pg_cluster, "base": tmp_path}
    for name in ("drc_restored", "drc_app"):
        pg_cluster.drop_database(name)
    for role in ("drc_owner", "drc_restorer"):
        pg_cluster.drop_role(role)


def runbook(base: Path, steps: list[dict[str, Any]], name: str = "checks") -> str:
    path = base / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"runbook": name, "steps": steps}))
    return str(path)


def select() -> dict[str, Any]:
    return {"name": "select", "type": "select_recovery_point", "resource": "drc-db"}


def restore(cluster: PgCluster, user: str) -> dict[str, Any]:
    target = cluster.dsn("postgres", user=user)
    return {"name": "restore", "type": "restore", "target_identifier": "drc_restored", "target": target}


def problems(result: Any) -> list[str]:
    return [p for step in json.loads(result.stdout)["steps"] for p in step["problems"]]


def test_dry_run_finds_what_the_real_run_trips_over(world: dict[str, Any]) -> None:
    cli, cluster = world["cli"], world["cluster"]
    steps = [
        select(),
        restore(cluster, "drc_restorer"),
        {"name": "creds", "type": "rotate_credentials", "secret": "drc/db", "username": "drc_ghost", "dbname": "mavis"},
        {
            "name": "verify",
            "type": "verify_sql",
            "secret": "drc/db",
            "database": "drc_nowhere",
            "checks": [{"sql": "SELECT 1", "expect": 1}],
        },
    ]
    path = runbook(world["base"], steps)
    planned = cli.run("dr", "run", path, "--dry-run", "--json", ok=False)
    assert planned.returncode == 2, planned.stderr
    found = problems(planned)
    assert any("drc_restorer" in p and "may not create databases" in p for p in found), found
    assert any("may not give objects to drc_owner" in p for p in found), found
    assert any("role drc_ghost will not exist on drc_restored" in p for p in found), found
    assert any("database drc_nowhere will not exist on drc_restored" in p for p in found), found
    assert not any("secret 'drc/db' does not exist" in p for p in found), found  # the rotate step writes it
    assert cli.json("dr", "list")["runs"] == []

    real = cli.run("dr", "run", path, ok=False)  # what the dry run announced: the restore stops
    assert real.returncode == 5, real.stderr
    assert cluster.query("SELECT count(*) FROM pg_database WHERE datname = 'drc_restored'") == [(0,)]


def test_dry_run_with_a_capable_target_and_right_names_finds_nothing(world: dict[str, Any]) -> None:
    cli, cluster = world["cli"], world["cluster"]
    steps = [
        select(),
        restore(cluster, "postgres"),
        {"name": "creds", "type": "rotate_credentials", "secret": "drc/ok", "username": "drc_owner"},
        {"name": "repoint", "type": "update_secret", "secret": "drc/ok"},  # written by the step before
        {"name": "verify", "type": "verify_sql", "secret": "drc/ok", "checks": [{"sql": "SELECT 1", "expect": 1}]},
    ]
    path = runbook(world["base"], steps, "capable")
    planned = cli.run("dr", "run", path, "--dry-run", "--json")
    assert problems(planned) == []
    report = cli.json("dr", "run", path)
    assert report["state"] == "COMPLETED", report
    assert report["rpo_seconds"] >= 0


def test_dry_run_reports_a_secret_no_step_writes(world: dict[str, Any]) -> None:
    steps = [
        select(),
        restore(world["cluster"], "postgres"),
        {"name": "hook", "type": "run", "command": "true", "env": {"X": "${secret.drc/never.password}"}},
    ]
    planned = world["cli"].run("dr", "run", runbook(world["base"], steps, "nosecret"), "--dry-run", "--json", ok=False)
    assert "secret 'drc/never' does not exist" in problems(planned)


def test_a_point_taken_after_the_incident_is_never_selected(world: dict[str, Any]) -> None:
    cli, cluster = world["cli"], world["cluster"]
    path = runbook(world["base"], [select(), restore(cluster, "postgres")], "incident")
    before = (datetime.now(UTC) - timedelta(days=9)).strftime("%Y-%m-%dT%H:%M:%SZ")
    planned = cli.run("dr", "run", path, "--incident-time", before, "--dry-run", "--json", ok=False)
    assert any("taken at or before the incident time" in p and "the earliest there is" in p for p in problems(planned))
    refused = cli.run("dr", "run", path, "--incident-time", before, ok=False)
    assert_one_line_error(refused, 2, "negative RPO")
    assert cluster.query("SELECT count(*) FROM pg_database WHERE datname = 'drc_restored'") == [(0,)]
    after = (datetime.now(UTC) + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    report = cli.json("dr", "run", path, "--incident-time", after)
    assert report["state"] == "COMPLETED" and report["rpo_seconds"] >= 0, report


def test_dry_run_follows_the_restore_steps_role_map(world: dict[str, Any]) -> None:
    """The dry run looks up the roles the restore will use: a role_map to a missing role is found before the run,
    a role_map to an existing one makes the dump's owner unneeded."""
    cli, cluster = world["cli"], world["cluster"]
    to_ghost = {**restore(cluster, "postgres"), "role_map": {"drc_owner": "drc_ghost"}}
    planned = cli.run(
        "dr", "run", runbook(world["base"], [select(), to_ghost], "ghost"), "--dry-run", "--json", ok=False
    )
    assert planned.returncode == 2, planned.stderr
    assert any("role_map maps to drc_ghost" in p for p in problems(planned)), problems(planned)
    to_restorer = {**restore(cluster, "postgres"), "role_map": {"drc_owner": "drc_restorer"}}
    path = runbook(world["base"], [select(), to_restorer], "mapped")
    assert problems(cli.run("dr", "run", path, "--dry-run", "--json")) == []
    report = cli.json("dr", "run", path)
    assert report["state"] == "COMPLETED", report
    owner = cluster.query("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'drc_restored'")
    assert owner == [("drc_restorer",)]
