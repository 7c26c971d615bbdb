"""The sample app (examples/sample-app) against a real PostgreSQL cluster and a real Strongroom secret store.

What disaster recovery relies on: the app reads its credentials from the secret store at start, so after
the secret is changed to point at a restored database (with rotated credentials), ``appctl.py restart``
makes it serve that database. A wrong secret fails the start with one clear line, and the password is
never logged.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import Cli, Result
from tests.support.pgcluster import PgCluster
from tests.support.ports import free_port

pytestmark = pytest.mark.postgres

SAMPLE_APP = Path(__file__).resolve().parents[2] / "examples" / "sample-app"
APPCTL = SAMPLE_APP / "appctl.py"
SCHEMA = (SAMPLE_APP / "schema.sql").read_text(encoding="utf-8")
FRESH_LOAD_MD5 = "bdce56caaa0d96371bed35686fefbe6e"  # schema.sql is deterministic (README.md quotes this)
CHECKSUM = "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY id), '')) FROM patients t"
# What a restored database might hold: not quite the same rows as the original.
DIVERGE = """
DELETE FROM patients WHERE id > 150;
UPDATE patients SET notes = jsonb_set(coalesce(notes, '{}'), '{restored}', 'true') WHERE id % 3 = 0;
INSERT INTO patients (id, name, born) VALUES (1000, 'Restored Patient', '1990-05-17');
"""

Database = dict[str, Any]  # the RDS-shaped secret value of a database


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    tool = Cli(tmp_path / "home")
    tool.run("init", "--chunk-size", "65536")
    return tool


@pytest.fixture
def databases(pg_cluster: PgCluster) -> Iterator[Callable[..., Database]]:
    """``make(prefix, extra_sql="") -> secret value``: a new role with a password, a database it owns holding
    schema.sql (then ``extra_sql``), loaded over a password-authenticated connection as that role."""
    made: list[tuple[str, str]] = []

    def make(prefix: str, extra_sql: str = "") -> Database:
        suffix = secrets.token_hex(4)
        role, dbname, password = f"{prefix}_user_{suffix}", f"{prefix}_db_{suffix}", f"Pw-{secrets.token_hex(12)}"
        pg_cluster.create_role(role, password)
        made.append((role, dbname))
        pg_cluster.create_database(dbname, owner=role)
        with pg_cluster.connect(dbname, user=role, password=password) as conn:
            conn.execute(SCHEMA)
            if extra_sql:
                conn.execute(extra_sql)
        return {
            "engine": "postgres",
            "host": "127.0.0.1",
            "port": pg_cluster.port,
            "username": role,
            "password": password,
            "dbname": dbname,
        }

    yield make
    for role, dbname in made:
        pg_cluster.drop_database(dbname)
        pg_cluster.drop_role(role)


class AppCtl:
    """Runs examples/sample-app/appctl.py as a runbook would; remembers every state file to stop the apps."""

    def __init__(self, cli: Cli, workdir: Path) -> None:
        self.cli = cli
        self.workdir = workdir
        self.states: list[Path] = []

    def run(self, command: str, state: Path, *args: str) -> Result:
        if state not in self.states:
            self.states.append(state)
        proc = subprocess.run(
            [sys.executable, str(APPCTL), command, "--state", str(state), *args],
            capture_output=True,
            text=True,
            env=self.cli.env,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def start(self, name: str, port: int, *source: str) -> tuple[Result, Path]:
        """Start app ``name`` on ``port`` with secret arguments ``source``; returns the result and its log."""
        state = self.workdir / f"{name}.json"
        log = self.workdir / f"{name}.log"
        return self.run("start", state, "--log", str(log), "--timeout", "60", "--", *source, "--port", str(port)), log

    def stop_all(self) -> None:
        for state in self.states:
            if self.run("stop", state).returncode != 0 and state.exists():
                pid = json.loads(state.read_text()).get("pid")  # last resort: never leave an app running
                if pid:
                    with suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def appctl(cli: Cli, databases: Callable[..., Database], tmp_path: Path) -> Iterator[AppCtl]:
    controller = AppCtl(cli, tmp_path / "apps")
    try:
        yield controller
    finally:
        controller.stop_all()


def put_secret(cli: Cli, name: str, value: Database) -> None:
    cli.run("secrets", "put", name, "--rds", env={"STRONGROOM_SECRET_VALUE": json.dumps(value)})


def get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        assert response.status == 200
        return json.loads(response.read())


def direct_checksum(pg_cluster: PgCluster, dbname: str) -> dict[str, Any]:
    """The same checksum as the app's /checksum, over our own connection (same session settings)."""
    with pg_cluster.connect(dbname) as conn:
        conn.execute("SET TIME ZONE 'UTC'; SET DateStyle = 'ISO, MDY'")
        row = conn.execute(CHECKSUM).fetchone()
    assert row is not None
    return {"rows": row[0], "md5": row[1]}


def one_error_line(result: Result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_the_app_serves_its_secrets_database_and_follows_a_changed_secret_on_restart(
    pg_cluster: PgCluster, cli: Cli, databases: Callable[..., Database], appctl: AppCtl
) -> None:
    first = databases("first")
    put_secret(cli, "sample/db", first)
    port = free_port()
    started, log = appctl.start("app", port, "--secret", "sample/db", "--home", str(cli.home))
    assert started.returncode == 0, started.stderr
    state = appctl.workdir / "app.json"
    assert appctl.run("status", state).stdout.startswith("running (pid ")
    recorded = json.loads(state.read_text())
    assert recorded["args"][-2:] == ["--port", str(port)] and first["password"] not in json.dumps(recorded)

    assert get(port, "/health") == {"status": "ok", "database": f"127.0.0.1:{pg_cluster.port}/{first['dbname']}"}
    expected_first = direct_checksum(pg_cluster, first["dbname"])
    assert get(port, "/checksum") == expected_first == {"rows": 200, "md5": FRESH_LOAD_MD5}
    rows = get(port, "/rows")
    assert len(rows) == expected_first["rows"] == 200
    assert [row["id"] for row in rows] == list(range(1, 201))
    assert set(rows[0]) == {"id", "name", "born", "notes", "updated_at"}

    # Disaster recovery: the database comes back elsewhere, with rotated credentials; the runbook updates
    # the secret (update_secret / rotate_credentials), then restarts the app (restart_app).
    second = databases("second", DIVERGE)
    expected_second = direct_checksum(pg_cluster, second["dbname"])
    assert expected_second != expected_first and expected_second["rows"] == 151
    put_secret(cli, "sample/db", second)
    restarted = appctl.run("restart", state, "--timeout", "60")
    assert restarted.returncode == 0, restarted.stderr
    assert restarted.stdout.startswith(f"stopped (pid {recorded['pid']}); started (pid ")

    assert get(port, "/checksum") == expected_second
    assert get(port, "/health")["database"] == f"127.0.0.1:{pg_cluster.port}/{second['dbname']}"
    assert [row["id"] for row in get(port, "/rows")][-2:] == [150, 1000]

    stopped = appctl.run("stop", state)
    assert stopped.returncode == 0 and stopped.stdout.startswith("stopped (pid "), stopped.stderr
    status = appctl.run("status", state)
    assert (status.returncode, status.stdout) == (3, "stopped\n")

    text = log.read_text()
    assert '"GET /checksum HTTP/1.1" 200' in text and text.count("stopped (SIGTERM)") == 2
    assert "Traceback" not in text
    for database in (first, second):
        assert database["password"] not in text


def test_a_wrong_or_missing_secret_fails_the_start_with_one_line(
    cli: Cli, databases: Callable[..., Database], appctl: AppCtl
) -> None:
    database = databases("wrong")
    wrong_password = f"Wrong-{secrets.token_hex(12)}"
    put_secret(cli, "sample/wrong", {**database, "password": wrong_password})
    failed, log = appctl.start("wrong", free_port(), "--secret", "sample/wrong", "--home", str(cli.home))
    assert failed.returncode == 1
    line = one_error_line(failed)
    assert "before it was healthy" in line and f"refused the connection as '{database['username']}'" in line
    assert "password authentication failed" in line
    assert appctl.run("status", appctl.workdir / "wrong.json").returncode == 3
    for password in (wrong_password, database["password"]):
        assert password not in failed.stdout + failed.stderr + log.read_text()

    missing, _ = appctl.start("missing", free_port(), "--secret", "sample/absent", "--home", str(cli.home))
    assert missing.returncode == 1
    assert "no secret named 'sample/absent'" in one_error_line(missing)


def test_the_app_reads_an_exported_secret_file(
    pg_cluster: PgCluster, cli: Cli, databases: Callable[..., Database], appctl: AppCtl, tmp_path: Path
) -> None:
    database = databases("exported")
    put_secret(cli, "sample/exported", database)
    exported = tmp_path / "db.json"
    cli.run("secrets", "export", "sample/exported", "--file", str(exported))
    port = free_port()
    started, log = appctl.start("exported", port, "--secret", "sample/exported", "--secret-file", str(exported))
    assert started.returncode == 0, started.stderr
    assert get(port, "/checksum") == direct_checksum(pg_cluster, database["dbname"])
    assert appctl.run("stop", appctl.workdir / "exported.json").returncode == 0
    assert database["password"] not in log.read_text()


def test_the_app_reads_its_secret_from_the_environment_a_runbook_step_sets(
    pg_cluster: PgCluster, cli: Cli, databases: Callable[..., Database], appctl: AppCtl
) -> None:
    """What a restart_app step does (env: APP_DB_SECRET: ${secret.NAME}): no passphrase reaches the app."""
    first, second = databases("envfirst"), databases("envsecond", DIVERGE)
    without_passphrase = {name: value for name, value in cli.env.items() if name != "STRONGROOM_PASSPHRASE"}
    appctl.cli.env = {**without_passphrase, "APP_DB_SECRET": json.dumps(first)}
    port = free_port()
    started, log = appctl.start("fromenv", port, "--secret", "sample/db", "--secret-env", "APP_DB_SECRET")
    assert started.returncode == 0, started.stderr
    assert get(port, "/checksum") == direct_checksum(pg_cluster, first["dbname"])

    appctl.cli.env = {**without_passphrase, "APP_DB_SECRET": json.dumps(second)}  # the secret changed meanwhile
    state = appctl.workdir / "fromenv.json"
    assert appctl.run("restart", state, "--timeout", "60").returncode == 0
    assert get(port, "/checksum") == direct_checksum(pg_cluster, second["dbname"])
    assert first["password"] not in state.read_text() + log.read_text()

    appctl.cli.env = without_passphrase
    missing, _ = appctl.start("noenv", free_port(), "--secret", "sample/db", "--secret-env", "APP_DB_SECRET")
    assert missing.returncode == 1
    assert "environment variable APP_DB_SECRET is not set" in one_error_line(missing)
