"""Restore testing plans against real PostgreSQL, real directories and the real CLI (docs/restore-testing.md).

- a plan on a driven clock over several simulated days: the scheduler backs the database up at 07:00 and
  restore-tests the newest point at 09:00, validating SQL and the row counts the point recorded; the test's
  restore time becomes the resource's RTO (``resources describe``, ``/metrics`` families);
- a tampered point (one chunk flipped in the vault): the test is FAILED naming the damage, the scratch
  database is gone;
- a validation hook that reports FAILED: the test is FAILED with the hook's message, the scratch directory gone;
- the runner killed with the restored cluster up: the next run stops and deletes it (its port is free again);
- configuration refusals, one line each.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from strongroom import model
from strongroom.adapters.postgres.tools import port_is_free
from strongroom.config.restore_testing import RestoreTestingPlan
from strongroom.services.account import open_account
from strongroom.services.apply import apply_config
from strongroom.services.metrics import collect, resource_recovery
from strongroom.services.restore_testing import SETTING_CURSORS, list_tests, selected_points
from strongroom.services.scheduler import Scheduler
from tests.e2e.test_cli_signals import paused, signalled
from tests.e2e.test_copy import copy, two_accounts
from tests.support.accounts import serving
from tests.support.cli import PASSPHRASE, Cli, assert_one_line_error, edit_catalog_as_owner
from tests.support.clock import ManualClock
from tests.support.pgcluster import Janitor, PgCluster, traversable_tempdir
from tests.support.ports import free_port
from tests.support.scrape import scrape, value


@dataclass
class Received:
    url: str
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)


@contextmanager
def validation_server(status: str, message: str) -> Iterator[Received]:
    """A real HTTP endpoint on 127.0.0.1 that records what it is sent and answers as PutRestoreValidationResult."""
    received = Received("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            received.bodies.append(json.loads(self.rfile.read(length)))
            received.headers.append(dict(self.headers))
            answer = json.dumps({"status": status, "message": message}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    received.url = f"http://127.0.0.1:{server.server_address[1]}/validate"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()


pytestmark = [pytest.mark.postgres, pytest.mark.xdist_group("restore_testing")]

DAYS = 4
DAEMON_POLLS = 1500


TOKEN = "Bearer hook-token-5b1c0e"  # a hook header that carries a secret


def _write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _shop_database(pg_cluster: PgCluster, name: str, rows: int) -> str:
    pg_cluster.execute(f"DROP DATABASE IF EXISTS {name}")
    pg_cluster.create_database(name)
    pg_cluster.execute("CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL)", dbname=name)
    pg_cluster.execute("CREATE TABLE orders (id serial PRIMARY KEY, item int REFERENCES items)", dbname=name)
    _add_rows(pg_cluster, name, rows)
    return name


def _add_rows(pg_cluster: PgCluster, name: str, rows: int) -> None:
    pg_cluster.execute(
        f"INSERT INTO items (name) SELECT 'item ' || g FROM generate_series(1, {rows}) g; "
        f"INSERT INTO orders (item) SELECT id FROM items ORDER BY id DESC LIMIT {rows // 2}",
        dbname=name,
    )


def _databases(pg_cluster: PgCluster, prefix: str) -> list[str]:
    rows = pg_cluster.query("SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix + "%",))
    return [row[0] for row in rows]


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    path = traversable_tempdir("strongroom-rtest-")  # the postgres OS user must reach HOME/clusters/
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _plan(selection: dict[str, Any], schedule: str = "cron(0 9 * * ? *)") -> dict[str, Any]:
    return {
        "schedule_expression": schedule,
        "start_window_hours": 1,
        "recovery_point_selection": {
            "algorithm": "LATEST_WITHIN_WINDOW",
            "include_vaults": ["*"],
            "recovery_point_types": ["SNAPSHOT"],
            "selection_window_days": 7,
        },
        "selections": selection,
    }


# A scheduled plan over several days ------------------------------------------------------------------
def test_a_scheduled_plan_restores_validates_and_removes_the_newest_point_every_day(
    workdir: Path, pg_cluster: PgCluster
) -> None:
    database = _shop_database(pg_cluster, "rt_daily_shop", 200)
    cli = Cli(workdir / "daily")
    cli.run("init")
    config = {
        "resources": {
            "shop": {"type": "postgres", "settings": {"dsn": pg_cluster.dsn(database)}, "tags": {"Backup": "True"}}
        },
        "backup_plans": {
            "daily": {
                "selection_tag": "Backup",
                "restore_testing_overrides": '{"no_privileges": "true"}',  # the blueprint's Aurora shape: JSON text
                "validation_window_hours": 2,
                "rules": [{"name": "morning", "schedule": "cron(0 7 * * ? *)", "lifecycle": {"delete_after": 30}}],
            }
        },
        "restore_testing_plans": {
            "daily-test": _plan(
                {
                    "shop": {
                        "protected_resource_type": "postgres",
                        "backup_plan": "daily",
                        "validation": {
                            "sql": [{"sql": "SELECT count(*) > 0 FROM orders", "expect": True}],
                            "hook": {
                                "command": [
                                    sys.executable,
                                    "-c",
                                    "import json, os; print(json.dumps({'status': 'SUCCESSFUL', 'message':"
                                    " 'app checks passed on ' + os.environ['STRONGROOM_RESTORE_TEST_DBNAME']}))",
                                ]
                            },
                        },
                    }
                }
            )
        },
    }
    path = _write_config(workdir / "daily.yaml", config)
    start = datetime(2026, 3, 2, 6, tzinfo=UTC)
    clock = ManualClock(start)
    with model.driven_clock(clock):
        account = open_account(cli.home, lambda: PASSPHRASE)
        try:
            apply_config(account, path)
            scheduler = Scheduler(account)
            scheduler.tick()
            seen: list[str] = []
            for day in range(DAYS):
                for hour in (7, 9):
                    clock.moment = start + timedelta(days=day, hours=hour - 6)
                    report = scheduler.tick()
                    assert report["acted"] and not report["errors"], report
                tests = list_tests(account, "daily-test")
                assert len(tests) == day + 1
                test = tests[-1]
                assert test.outcome is not None
                assert test.outcome.status == "SUCCESSFUL", test.as_dict()
                points = account.catalog.list_recovery_points(resource_id="shop")
                assert test.job.recovery_point_arn == points[-1].arn  # the newest: LATEST_WITHIN_WINDOW
                assert test.spec.scheduled_for == (start + timedelta(days=day, hours=3)).isoformat()
                checks = {c["kind"]: c for c in test.outcome.validations}
                assert checks["row_counts"]["status"] == "SUCCESSFUL", checks
                assert checks["sql"]["status"] == "SUCCESSFUL"
                assert checks["hook"]["message"].startswith("app checks passed on restoretest_")
                assert test.job.parameters["options"]["no_privileges"] is True  # the plan's overrides
                assert test.spec.validation_window_hours == 2
                assert test.outcome.cleanup == "DONE"
                seen.append(test.spec.scratch.identifier)
                _add_rows(pg_cluster, database, 50)  # the next day's point holds more rows
            assert len(set(seen)) == DAYS
            assert _databases(pg_cluster, "restoretest_") == []  # every scratch database dropped
            recorded = [p.metadata["row_counts"]["public.items"] for p in account.catalog.list_recovery_points()]
            assert recorded == [200 + 50 * day for day in range(DAYS)]
            measured = resource_recovery(account, "shop", clock.moment)["last_rto"]
            assert measured["measured_by"] == "restore_test"
            families = {f.full_name: f for f in collect(account, clock.moment)}
            [success] = families["strongroom_restore_test_last_success"].samples
            assert success.value == 1.0 and success.labels == {
                "resource_id": "shop",
                "resource_type": "postgres",
                "plan": "daily-test",
            }
            [rto] = families["strongroom_resource_last_rto_seconds"].samples
            assert rto.labels["source"] == "restore_test"
        finally:
            account.close()
    described = cli.json("resources", "describe", "shop")
    assert described["last_rto"]["measured_by"] == "restore_test"
    jobs = cli.json("restore-testing", "list-jobs", "--plan", "daily-test")["restore_jobs"]
    assert [j["status"] for j in jobs] == ["SUCCESSFUL"] * DAYS
    assert all(j["restore_testing_plan_name"] == "daily-test" for j in jobs)
    plans = cli.json("restore-testing", "list-plans")["restore_testing_plans"]
    assert [p["restore_testing_plan_name"] for p in plans] == ["daily-test"]
    described_plan = cli.json("restore-testing", "describe-plan", "daily-test")
    shop = described_plan["selections"]["shop"]
    assert shop["protected_resource_conditions"]["string_equals"] == [
        {"key": "aws:ResourceTag/Backup", "value": "True"}
    ]
    assert shop["restore_metadata_overrides"] == {"no_privileges": "true"}
    assert cli.run("plan", "-f", str(path)).stdout.startswith("No changes.")


def test_a_wrong_row_count_fails_the_test(workdir: Path, pg_cluster: PgCluster) -> None:
    """The point says 10 rows; a point whose recorded count disagrees with what is restored is FAILED."""
    database = _shop_database(pg_cluster, "rt_counted_shop", 10)
    cli = Cli(workdir / "counted")
    cli.run("init")
    cli.run("resources", "add", "shop", "--type", "postgres", "--dsn", pg_cluster.dsn(database))
    arn = cli.backup("shop")["recovery_point_arn"]
    config = {
        "resources": {"shop": {"type": "postgres", "settings": {"dsn": pg_cluster.dsn(database)}}},
        "restore_testing_plans": {"now": _plan({"all": {"protected_resource_type": "postgres"}})},
    }
    cli.run("apply", "-f", str(_write_config(workdir / "counted.yaml", config)), "--auto-approve")
    ok = cli.json("restore-testing", "start-run", "now")["restore_jobs"]
    assert [(j["status"], j["validation_status"]) for j in ok] == [("SUCCESSFUL", "SUCCESSFUL")]
    # What the catalog says the point holds is what a restore test checks against.
    point = cli.json("recovery-points", "describe", "--recovery-point", arn)
    metadata = {**point["metadata"], "row_counts": {**point["metadata"]["row_counts"], "public.items": 11}}
    edit_catalog_as_owner(cli, "UPDATE recovery_points SET metadata = ? WHERE arn = ?", json.dumps(metadata), arn)
    failed = cli.run("restore-testing", "start-run", "now", "--json", ok=False)
    assert failed.returncode == 11
    [job] = failed.json()["restore_jobs"]
    assert (job["status"], job["validation_status"]) == ("FAILED", "FAILED")
    assert "table public.items has 10 rows, the point recorded 11" in job["validation_status_message"]
    assert _databases(pg_cluster, "restoretest_") == []


# A tampered point ------------------------------------------------------------------------------------
def test_a_tampered_point_fails_its_restore_test_and_leaves_nothing_behind(
    workdir: Path, pg_cluster: PgCluster
) -> None:
    database = _shop_database(pg_cluster, "rt_tampered_shop", 2000)
    cli = Cli(workdir / "tampered")
    cli.run("init")
    config = {
        "resources": {"shop": {"type": "postgres", "settings": {"dsn": pg_cluster.dsn(database)}}},
        "restore_testing_plans": {
            "weekly": _plan({"shop": {"protected_resource_type": "postgres", "protected_resource_arns": ["shop"]}})
        },
    }
    cli.run("apply", "-f", str(_write_config(workdir / "tampered.yaml", config)), "--auto-approve")
    arn = cli.backup("shop")["recovery_point_arn"]
    chunks = sorted(p for p in (cli.home / "vaults" / "Default" / "chunks").rglob("*") if p.is_file())
    for victim in chunks:  # one flipped bit in each chunk of the point (its dump and its roles)
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0x01
        victim.write_bytes(bytes(data))

    result = cli.run("restore-testing", "start-run", "weekly", ok=False)
    assert_one_line_error(result, 11, "1 of 1 restore tests did not succeed", "shop: FAILED, SKIPPED: restore failed")
    named = [victim.name for victim in chunks if victim.name in result.stderr]
    assert len(named) == 1, result.stderr  # the damaged chunk is named
    [job] = cli.json("restore-testing", "list-jobs")["restore_jobs"]
    assert job["recovery_point_arn"] == arn
    assert (job["state"], job["status"], job["validation_status"]) == ("FAILED", "FAILED", "SKIPPED")
    assert (
        job["validation_status_message"].startswith("restore failed") and named[0] in job["validation_status_message"]
    )
    assert job["cleanup"] == "DONE"
    assert _databases(pg_cluster, "restoretest_") == []
    assert cli.json("resources", "describe", "shop")["last_rto"] is None  # a failed test measures no RTO


# A validation hook that reports FAILED -------------------------------------------------------------------
def test_a_validation_hook_reporting_failed_fails_the_test(workdir: Path, tmp_path: Path) -> None:
    tree = tmp_path / "uploads"
    tree.mkdir()
    (tree / "consent-form.pdf").write_bytes(b"%PDF-1.4 signed" * 1000)
    hook = tmp_path / "check.py"
    hook.write_text(
        "import json, os, pathlib\n"
        "target = pathlib.Path(os.environ['STRONGROOM_RESTORE_TEST_TARGET'])\n"
        "pathlib.Path(os.environ['SEEN']).write_text(str(target))\n"
        "ok = (target / 'consent-form.pdf').read_bytes().startswith(b'%PDF')\n"
        "print(json.dumps({'status': 'FAILED', 'message': f'uploads restored (pdf ok: {ok}) but the app says no'}))\n"
    )
    seen = tmp_path / "seen"
    cli = Cli(workdir / "hooked")
    cli.run("init")
    config = {
        "resources": {"uploads": {"type": "directory", "settings": {"path": str(tree)}}},
        "restore_testing_plans": {
            "files": _plan(
                {
                    "uploads": {
                        "protected_resource_type": "directory",
                        "validation": {"hook": {"command": [sys.executable, str(hook)]}},
                    }
                }
            )
        },
    }
    cli.run("apply", "-f", str(_write_config(workdir / "hooked.yaml", config)), "--auto-approve")
    cli.backup("uploads")
    result = cli.run("restore-testing", "start-run", "files", env={"SEEN": str(seen)}, ok=False)
    assert_one_line_error(
        result, 11, "uploads: FAILED, FAILED: hook: uploads restored (pdf ok: True) but the app says no"
    )
    [job] = cli.json("restore-testing", "list-jobs")["restore_jobs"]
    assert (job["state"], job["status"], job["validation_status"]) == ("COMPLETED", "FAILED", "FAILED")
    restored = Path(seen.read_text())
    assert restored.name == "uploads" and restored.parent.parent == cli.home / "restore-testing"
    assert not restored.parent.exists()  # the scratch directory is removed
    assert cli.json("resources", "describe", "uploads")["last_rto"] is None


# A runner killed mid-test ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fault", "restored_state"),
    [("restore_test:restored", "COMPLETED"), ("restore_test.restore:middle", "FAILED")],
    ids=["cluster-running", "mid-restore"],
)
def test_a_killed_run_leaves_a_scratch_cluster_that_the_next_run_stops_and_removes(
    workdir: Path, pg_bindir: Path, pg_janitor: Janitor, fault: str, restored_state: str
) -> None:
    source = PgCluster.create(traversable_tempdir("strongroom-rtest-source-"))
    try:
        source.start()
        source.create_database("app")
        source.execute("CREATE TABLE t AS SELECT g AS n FROM generate_series(1, 1000) g", dbname="app")
        cli = Cli(workdir / f"crash-{restored_state.lower()}")
        cli.run("init")
        selection = {
            "protected_resource_type": "postgres-cluster",
            "validation": {"sql": [{"sql": "SELECT count(*) FROM pg_database WHERE datname = 'app'", "expect": 1}]},
        }
        config = {
            "resources": {"cluster": {"type": "postgres-cluster", "settings": {"dsn": source.dsn("postgres")}}},
            "restore_testing_plans": {"nightly": _plan({"cluster": selection})},
        }
        cli.run("apply", "-f", str(_write_config(workdir / "crash.yaml", config)), "--auto-approve")
        cli.backup("cluster")

        killed = cli.run("restore-testing", "start-run", "nightly", env={"STRONGROOM_FAULT_KILL_AT": fault}, ok=False)
        assert killed.returncode == -9, killed.stderr
        [job] = cli.json("restore-testing", "list-jobs")["restore_jobs"]
        scratch = job["scratch"]
        data_dir, port = cli.home / "clusters" / scratch["identifier"], scratch["port"]
        assert (job["state"], job["status"], job["cleanup"]) == (restored_state, None, "PENDING")
        assert data_dir.is_dir()  # what the dead run left
        if restored_state == "COMPLETED":
            leftover = pg_janitor.adopt(data_dir, port)  # stopped by the janitor if the test fails
            assert leftover.is_running() and not port_is_free(port)
            assert leftover.query("SELECT count(*) FROM t", dbname="app") == [(1000,)]

        again = cli.json("restore-testing", "start-run", "nightly")["restore_jobs"]
        assert [(j["status"], j["cleanup"]) for j in again] == [("SUCCESSFUL", "DONE")]
        first, second = cli.json("restore-testing", "list-jobs")["restore_jobs"]
        assert (first["status"], first["validation_status"], first["cleanup"]) == ("FAILED", "SKIPPED", "DONE")
        assert "stopped before it finished" in first["validation_status_message"]
        assert first["state"] == "FAILED" or restored_state == "COMPLETED"
        assert second["restore_job_id"] == again[0]["restore_job_id"]
        assert not data_dir.exists()  # the scratch cluster is stopped and gone, and nothing of it listens:
        assert port_is_free(port) or _served_directory(port) != str(data_dir)  # (another test may reuse the port)
        assert not (cli.home / "clusters" / second["scratch"]["identifier"]).exists()
        assert not port_is_free(source.port)  # the source cluster was never touched
    finally:
        source.destroy()


def _served_directory(port: int) -> str | None:
    """The data directory of the server listening on ``port``, if it is a PostgreSQL server we can ask."""
    try:
        with psycopg.connect(
            host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=5
        ) as conn:
            row = conn.execute("SHOW data_directory").fetchone()
    except psycopg.Error:
        return None
    return str(row[0]) if row else None


# Configuration refusals ---------------------------------------------------------------------------------
REFUSALS = [
    ({"protected_resource_type": "Aurora"}, {}, "protected_resource_type: unknown resource type 'Aurora'"),
    (
        {"protected_resource_type": "postgres", "restore_metadata_overrides": {"dbsubnetgroupname": "x"}},
        {},
        "'dbsubnetgroupname' is not a restore override of postgres resources (known: create_roles",
    ),
    (
        {"protected_resource_type": "postgres-cluster", "restore_metadata_overrides": {"port": "high"}},
        {},
        "override 'port' must be int, not 'high'",
    ),
    ({"protected_resource_type": "postgres", "backup_plan": "nope"}, {}, "no backup plan 'nope'"),
    (
        {
            "protected_resource_type": "sqlite",
            "protected_resource_conditions": {"string_equals": [{"key": "Backup", "value": "True"}]},
        },
        {},
        "condition key 'Backup' must be aws:ResourceTag/TAG",
    ),
    (
        {"protected_resource_type": "directory", "validation": {"hook": {"command": ["true"], "url": "http://x"}}},
        {},
        "a validation hook needs exactly one of command or url",
    ),
    ({"protected_resource_type": "directory"}, {"algorithm": "NEWEST"}, "recovery_point_selection.algorithm"),
    ({"protected_resource_type": "directory"}, {"recovery_point_types": ["CONTINUOUS"]}, "CONTINUOUS recovery points"),
    ({"protected_resource_type": "directory"}, {"include_vaults": ["missing"]}, "no vault 'missing'"),
    ({"protected_resource_type": "directory"}, {"selection_window_days": 0}, "greater than or equal to 1"),
    ({"protected_resource_type": "directory", "surprise": 1}, {}, "surprise: Extra inputs are not permitted"),
]


@pytest.mark.parametrize(("selection", "points", "message"), REFUSALS)
def test_a_bad_restore_testing_plan_is_refused_in_one_line(
    tmp_path: Path, selection: dict[str, Any], points: dict[str, Any], message: str
) -> None:
    cli = Cli(tmp_path / "home")
    cli.run("init")
    plan = _plan({"bad": selection})
    plan["recovery_point_selection"].update(points)
    config = {"restore_testing_plans": {"p": plan}}
    result = cli.run("plan", "-f", str(_write_config(tmp_path / "bad.yaml", config)), ok=False)
    assert_one_line_error(result, 2, "bad.yaml:", "restore_testing_plans.p.", message)
    assert cli.json("restore-testing", "list-plans")["restore_testing_plans"] == []


def test_a_bad_restore_testing_override_of_a_backup_plan_is_refused(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    cli.run("init")
    config = {
        "backup_plans": {"db": {"selection_tag": "B", "restore_testing_overrides": "{not json"}},
        "restore_testing_plans": {"p": _plan({"db": {"protected_resource_type": "postgres", "backup_plan": "db"}})},
    }
    result = cli.run("plan", "-f", str(_write_config(tmp_path / "bad.yaml", config)), ok=False)
    assert_one_line_error(result, 2, "backup_plans.db.restore_testing_overrides", "is not a JSON object")


def test_start_run_of_an_unknown_plan_is_one_line(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    cli.run("init")
    assert_one_line_error(
        cli.run("restore-testing", "start-run", "nope", ok=False), 2, "no restore testing plan 'nope'"
    )


def test_a_runner_killed_between_copy_back_and_its_test_leaves_no_copied_point(tmp_path: Path) -> None:
    """A point copied back from the destination is only named by its test once the test is recorded; a runner
    killed in between leaves the copy, which the next run finds by its copy job and deletes."""
    with two_accounts(tmp_path) as pair:
        source = pair.source
        point = source.backup("files")["recovery_point_arn"]
        copy(source, point, pair.destination_vault)
        selection = {"files": {"protected_resource_type": "directory"}}
        config = {"restore_testing_plans": {"offsite": _plan(selection)}}
        config["restore_testing_plans"]["offsite"]["recovery_point_selection"]["include_vaults"] = [
            pair.destination_vault
        ]
        source.run("apply", "-f", str(_write_config(tmp_path / "offsite.yaml", config)), "--auto-approve")
        killed = source.run("restore-testing", "start-run", "offsite", ok=False,
                            env={"STRONGROOM_FAULT_KILL_AT": "restore_test:copied-back"})  # fmt: skip
        assert killed.returncode == -9, killed.stderr

        def copied_back() -> list[dict[str, Any]]:
            points = source.json("recovery-points", "list", "--vault", "Default", "--all")["recovery_points"]
            return [p for p in points if p.get("source_recovery_point_arn") and p["status"] != "DELETED"]

        [left] = copied_back()  # no restore test names it
        assert source.json("restore-testing", "list-jobs")["restore_jobs"] == []
        [job] = source.json("restore-testing", "start-run", "offsite")["restore_jobs"]
        assert job["status"] == "SUCCESSFUL", job
        assert copied_back() == []  # the orphan and the new test's own copy are both gone
        back = source.json("recovery-points", "describe", "--recovery-point", left["recovery_point_arn"])
        assert back["status"] == "DELETED"


# The destination's copies, an HTTP validation hook, sqlite, and the metrics over HTTP -----------------------
def test_a_plan_including_the_destination_vault_tests_the_copy_there_and_removes_what_it_copied_back(
    tmp_path: Path,
) -> None:
    """The include_vaults entry is the destination vault's ARN: its newest copy is copied back, restored,
    validated by a real HTTP hook, and the copied-back point deleted again; /metrics shows the test."""
    with two_accounts(tmp_path) as pair:
        source = pair.source
        first = source.backup("files")["recovery_point_arn"]
        copied = copy(source, first, pair.destination_vault)["result"]["destination_recovery_point_arn"]
        with validation_server("SUCCESSFUL", "the restored files open") as received:
            config = {
                "restore_testing_plans": {
                    "offsite": _plan(
                        {
                            "files": {
                                "protected_resource_type": "directory",
                                "validation": {"hook": {"url": received.url, "headers": {"X-Check": TOKEN}}},
                            }
                        }
                    )
                }
            }
            config["restore_testing_plans"]["offsite"]["recovery_point_selection"]["include_vaults"] = [
                pair.destination_vault
            ]
            source.run("apply", "-f", str(_write_config(tmp_path / "offsite.yaml", config)), "--auto-approve")
            [job] = source.json("restore-testing", "start-run", "offsite")["restore_jobs"]
        assert (job["status"], job["validation_status"]) == ("SUCCESSFUL", "SUCCESSFUL"), job
        assert job["recovery_point_arn"] == copied  # the point in the destination account was tested
        assert job["validation_status_message"] == "hook: the restored files open"
        [body] = received.bodies
        assert body["recovery_point_arn"] != copied and body["resource_id"] == "files"
        assert Path(body["target"]).parent.parent == source.home / "restore-testing"
        assert received.headers[0]["X-Check"] == TOKEN
        catalog = b"".join(path.read_bytes() for path in source.home.glob("catalog.db*"))  # with its WAL
        assert b"X-Check" in catalog and TOKEN.encode() not in catalog  # sealed, as notification URLs are
        assert not Path(body["target"]).exists()  # the scratch directory is gone
        back = source.json("recovery-points", "describe", "--recovery-point", body["recovery_point_arn"])
        assert back["status"] == "DELETED" and back["source_recovery_point_arn"] == copied
        assert "deleted the copied-back recovery point" in job["cleanup_message"]
        described = source.json("restore-testing", "describe-plan", "offsite")
        assert described["selections"]["files"]["validation"]["hook"]["headers"] == {"X-Check": "(hidden)"}

        port = free_port()
        with serving(source, "--metrics-bind", str(port)):
            samples = scrape(port)
        where = {"resource_id": "files", "plan": "offsite"}
        assert value(samples, "strongroom_restore_test_last_success", **where) == 1.0
        assert value(samples, "strongroom_restore_test_last_status", status="SUCCESSFUL", **where) == 1.0
        assert value(samples, "strongroom_resource_last_rto_seconds", resource_id="files") == pytest.approx(
            job["restore_seconds"], abs=1e-3
        )


def test_a_sqlite_point_is_tested_and_the_hook_never_sees_the_passphrase(workdir: Path, tmp_path: Path) -> None:
    import sqlite3

    database = tmp_path / "notes.sqlite"
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.executemany("INSERT INTO notes VALUES (?)", [(f"note {n}",) for n in range(500)])
    conn.close()
    hook = tmp_path / "check.py"
    hook.write_text(
        "import json, os, sqlite3\n"
        "leaked = sorted(k for k in os.environ if k.startswith('STRONGROOM_') and 'RESTORE_TEST' not in k)\n"
        "secret = any(os.environ.get(k) == os.environ['SECRET'] for k in os.environ if k != 'SECRET')\n"
        "rows = sqlite3.connect(os.environ['STRONGROOM_RESTORE_TEST_TARGET']).execute('SELECT count(*) FROM notes')\n"
        "n = rows.fetchone()[0]\n"
        "ok = n == 500 and not leaked and not secret\n"
        "print(json.dumps({'ValidationStatus': 'SUCCESSFUL' if ok else 'FAILED',"
        " 'ValidationStatusMessage': f'{n} notes, leaked {leaked}, passphrase seen {secret}'}))\n"
    )
    cli = Cli(workdir / "sqlite")
    cli.run("init")
    config = {
        "resources": {"notes": {"type": "sqlite", "settings": {"path": str(database)}}},
        "restore_testing_plans": {
            "notes": _plan(
                {
                    "notes": {
                        "protected_resource_type": "sqlite",
                        "validation": {"hook": {"command": [sys.executable, str(hook)]}},
                    }
                }
            )
        },
    }
    cli.run("apply", "-f", str(_write_config(workdir / "sqlite.yaml", config)), "--auto-approve")
    cli.backup("notes")
    [job] = cli.run("restore-testing", "start-run", "notes", "--json", env={"SECRET": PASSPHRASE}).json()[
        "restore_jobs"
    ]
    assert job["validation_status_message"] == "hook: 500 notes, leaked [], passphrase seen False", job
    assert job["status"] == "SUCCESSFUL"
    assert not Path(job["scratch"]["directory"]).exists()


def test_the_daemon_starts_a_due_plan_in_a_worker_process(workdir: Path, tmp_path: Path) -> None:
    """``serve``'s scheduler fires a due plan into ``restore_testing_worker``; the test ends recorded."""
    tree = tmp_path / "reports"
    tree.mkdir()
    (tree / "day.csv").write_text("date,doses\n2026-03-02,118\n")
    cli = Cli(workdir / "daemon")
    cli.run("init")
    config = {
        "resources": {"reports": {"type": "directory", "settings": {"path": str(tree)}}},
        "restore_testing_plans": {
            "minutely": _plan({"reports": {"protected_resource_type": "directory"}}, schedule="cron(* * * * ? *)")
        },
    }
    cli.run("apply", "-f", str(_write_config(workdir / "daemon.yaml", config)), "--auto-approve")
    cli.backup("reports")
    # The plan was last considered two minutes ago, so its newest occurrence is due at the daemon's first tick
    # (no waiting for a minute to turn).
    account = open_account(cli.home, lambda: PASSPHRASE)
    try:
        since = model.now() - timedelta(minutes=2)
        account.catalog.set_setting(SETTING_CURSORS, {"minutely": since.isoformat()})
    finally:
        account.close()
    jobs: list[dict[str, Any]] = []
    with serving(cli, "--poll-seconds", "1", scheduler=True):
        for _ in range(DAEMON_POLLS):  # bounded: the worker's test ends in seconds
            jobs = cli.json("restore-testing", "list-jobs")["restore_jobs"]
            if jobs and jobs[0]["status"]:
                break
            time.sleep(0.2)
    [job] = jobs[:1]
    assert (job["status"], job["cleanup"]) == ("SUCCESSFUL", "DONE"), job
    assert job["scheduled_for"] is not None and job["scheduled_for"] > since.isoformat()
    assert (cli.home / "tmp" / "restore-testing-minutely.log").exists()


def test_sigterm_mid_test_removes_the_scratch_copy_before_exiting(workdir: Path, tmp_path: Path) -> None:
    tree = tmp_path / "letters"
    tree.mkdir()
    (tree / "letter.txt").write_text("Dear parent, ...\n")
    cli = Cli(workdir / "sigterm")
    cli.run("init")
    config = {
        "resources": {"letters": {"type": "directory", "settings": {"path": str(tree)}}},
        "restore_testing_plans": {"letters": _plan({"letters": {"protected_resource_type": "directory"}})},
    }
    cli.run("apply", "-f", str(_write_config(workdir / "sigterm.yaml", config)), "--auto-approve")
    cli.backup("letters")
    process = paused(cli, tmp_path, "restore_test:restored", "restore-testing", "start-run", "letters")
    [job] = cli.json("restore-testing", "list-jobs")["restore_jobs"]
    scratch = Path(job["scratch"]["directory"])
    assert (scratch / "letters" / "letter.txt").read_text() == "Dear parent, ...\n"  # restored, held there
    result = signalled(process, signal.SIGTERM)
    assert_one_line_error(result, 143, "SIGTERM")
    assert not scratch.exists()  # removed on the way out, not left for the next run
    [job] = cli.json("restore-testing", "list-jobs")["restore_jobs"]
    assert (job["status"], job["cleanup"]) == ("FAILED", "DONE")
    assert "the restore test stopped" in job["validation_status_message"]


def test_a_point_that_cannot_be_tested_is_reported_and_the_run_goes_on(
    workdir: Path, tmp_path: Path, pg_cluster: PgCluster
) -> None:
    """A logical point whose resource is gone has no server to restore onto (no ``target`` override): it is
    named as not started, the other selection's test still runs, and the exit code says so."""
    database = _shop_database(pg_cluster, "rt_gone_shop", 10)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.txt").write_text("a")
    cli = Cli(workdir / "gone")
    cli.run("init")
    cli.run("resources", "add", "shop", "--type", "postgres", "--dsn", pg_cluster.dsn(database))
    cli.run("resources", "add", "files", "--type", "directory", "--path", str(tree))
    cli.backup("shop")
    cli.backup("files")
    cli.run("resources", "remove", "shop")
    selections = {"db": {"protected_resource_type": "postgres"}, "files": {"protected_resource_type": "directory"}}
    cli.run(
        "apply",
        "-f",
        str(_write_config(workdir / "gone.yaml", {"restore_testing_plans": {"p": _plan(selections)}})),
        "--auto-approve",
    )
    result = cli.run("restore-testing", "start-run", "p", "--json", ok=False)
    assert result.returncode == 11
    assert "1 of 2 restore tests could not start; shop (arn:" in result.stderr and "needs target" in result.stderr
    report = result.json()
    assert [(j["resource_id"], j["status"]) for j in report["restore_jobs"]] == [("files", "SUCCESSFUL")]
    [why] = report["not_started"]
    assert why.startswith("shop (arn:") and "a postgres restore needs target" in why
    assert _databases(pg_cluster, "restoretest_") == []


def test_points_are_picked_within_the_selection_window_latest_or_random(workdir: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    cli = Cli(workdir / "window")
    cli.run("init")
    cli.run("resources", "add", "files", "--type", "directory", "--path", str(tree))
    arns = []
    for n in range(3):
        (tree / f"{n}.txt").write_text(str(n))
        arns.append(cli.backup("files")["recovery_point_arn"])
    now = model.now()
    for arn, age in ((arns[0], 20), (arns[1], 5)):  # days old: outside and inside a 7-day window
        created = (now - timedelta(days=age)).isoformat()
        edit_catalog_as_owner(cli, "UPDATE recovery_points SET creation_date = ? WHERE arn = ?", created, arn)
    plan = RestoreTestingPlan.model_validate(_plan({"files": {"protected_resource_type": "directory"}}))
    random_plan = plan.model_copy(
        update={
            "recovery_point_selection": plan.recovery_point_selection.model_copy(
                update={"algorithm": "RANDOM_WITHIN_WINDOW"}
            )
        }
    )
    account = open_account(cli.home, lambda: PASSPHRASE)
    try:
        [(_, latest)] = selected_points(account, plan, now)
        assert latest.arn == arns[2]
        picked = {selected_points(account, random_plan, now, random.Random(seed))[0][1].arn for seed in range(40)}
        assert picked == {arns[1], arns[2]}  # never the point older than selection_window_days
    finally:
        account.close()
