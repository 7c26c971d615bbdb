"""``strongroom secrets`` as a user and an app run it: values in through env or stdin, out only when asked."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest

from strongroom.cli.main import command_tree
from tests.integration.test_secrets import swap_sealed_values
from tests.support.cli import Cli, assert_one_line_error

PASSWORD = "Pw-9d2e[bold]-never-shown"
RDS = {
    "engine": "postgres",
    "host": "127.0.0.1",
    "port": 5433,
    "username": "mavis",
    "password": PASSWORD,
    "dbname": "mavis",
}


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    tool = Cli(tmp_path_factory.mktemp("secrets") / "home")
    tool.run("init", "--chunk-size", "65536")
    return tool


def put_stdin(cli: Cli, name: str, value: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli.command("secrets", "put", name, *extra),
        input=value,
        capture_output=True,
        text=True,
        env=cli.env,
        timeout=120,
    )


def test_round_trip_through_stdin_and_the_environment(cli: Cli) -> None:
    stored = put_stdin(cli, "mavis/prod/db", json.dumps(RDS), "--rds")
    assert stored.returncode == 0, stored.stderr
    assert PASSWORD not in stored.stdout + stored.stderr
    cli.run("secrets", "put", "app/token", env={"STRONGROOM_SECRET_VALUE": "plain-token-value"})
    assert cli.run("secrets", "get", "app/token").stdout == "plain-token-value\n"
    assert cli.json("secrets", "get", "mavis/prod/db") == RDS
    assert cli.run("secrets", "get", "mavis/prod/db", "--field", "password").stdout == PASSWORD + "\n"
    assert cli.run("secrets", "get", "mavis/prod/db", "--field", "port").stdout == "5433\n"


def test_versions_on_update(cli: Cli) -> None:
    cli.run("secrets", "put", "rotating", env={"STRONGROOM_SECRET_VALUE": "first"})
    shown = cli.run("secrets", "put", "rotating", "--json", env={"STRONGROOM_SECRET_VALUE": "second"}).json()
    assert (shown["version"], shown["previous_version"]) == (2, 1)
    assert cli.run("secrets", "get", "rotating").stdout == "second\n"
    assert cli.run("secrets", "get", "rotating", "--previous").stdout == "first\n"


def test_list_shows_names_and_versions_never_values(cli: Cli) -> None:
    cli.run("secrets", "put", "listed", env={"STRONGROOM_SECRET_VALUE": "listed-value-4711"})
    table = cli.run("secrets", "list").stdout
    listed = cli.json("secrets", "list")["secrets"]
    row = next(r for r in listed if r["name"] == "listed")
    assert (
        "listed" in table
        and row["version"] == 1
        and set(row) == {"name", "version", "previous_version", "created_at", "updated_at"}
    )
    for text in (table, json.dumps(listed)):
        assert "listed-value-4711" not in text


def test_the_catalog_holds_no_plaintext(cli: Cli) -> None:
    cli.run("secrets", "put", "on-disk", env={"STRONGROOM_SECRET_VALUE": json.dumps(RDS)})
    stored = b"".join(p.read_bytes() for p in cli.home.glob("catalog.db*"))
    assert PASSWORD.encode() not in stored


def test_the_value_is_never_an_argument(cli: Cli) -> None:
    put = command_tree().commands["secrets"].commands["put"]  # type: ignore[attr-defined]
    assert sorted(o for p in put.params for o in p.opts) == ["--json", "--rds", "name"]
    refused = cli.run("secrets", "put", "argued", "value-as-argument-1234", ok=False)
    assert_one_line_error(refused, 2, "STRONGROOM_SECRET_VALUE or stdin")
    assert "value-as-argument-1234" not in refused.stderr
    assert_one_line_error(cli.run("secrets", "get", "argued", ok=False), 2, "no secret named 'argued'")


def test_swapped_sealed_values_are_detected(cli: Cli) -> None:
    for name in ("swap-a", "swap-b"):
        cli.run("secrets", "put", name, env={"STRONGROOM_SECRET_VALUE": f"value of {name}"})
    swap_sealed_values(cli.home / "catalog.db", "swap-a", "swap-b")
    result = cli.run("secrets", "get", "swap-a", ok=False)
    assert_one_line_error(result, 7, "secret 'swap-a'", "cannot be opened")
    assert "value of" not in result.stdout + result.stderr


def test_export_writes_a_0600_file_once(cli: Cli, tmp_path: Path) -> None:
    cli.run("secrets", "put", "exported", env={"STRONGROOM_SECRET_VALUE": json.dumps(RDS)})
    target = tmp_path / "db.json"
    written = cli.run("secrets", "export", "exported", "--file", str(target))
    assert PASSWORD not in written.stdout
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert json.loads(target.read_text()) == RDS
    assert target.read_text() == cli.run("secrets", "get", "exported", "--json").stdout
    assert_one_line_error(
        cli.run("secrets", "export", "exported", "--file", str(target), ok=False), 2, "already exists", "--force"
    )
    cli.run("secrets", "export", "exported", "--file", str(target), "--force")


def test_a_bad_rds_shape_is_one_line_naming_the_field(cli: Cli) -> None:
    result = put_stdin(cli, "bad-rds", json.dumps({**RDS, "port": "5433"}), "--rds")
    assert result.returncode == 2, result.stderr
    assert "field 'port' must be an integer" in result.stderr
    assert PASSWORD not in result.stderr + result.stdout
    assert_one_line_error(cli.run("secrets", "get", "bad-rds", ok=False), 2, "no secret named 'bad-rds'")


def test_a_wrong_passphrase_fails_clearly(cli: Cli) -> None:
    cli.run("secrets", "put", "guarded", env={"STRONGROOM_SECRET_VALUE": "guarded-value"})
    result = cli.run("secrets", "get", "guarded", ok=False, env={"STRONGROOM_PASSPHRASE": "wrong"})
    assert_one_line_error(result, 3, "wrong passphrase")
    assert "guarded-value" not in result.stdout


def test_delete(cli: Cli) -> None:
    cli.run("secrets", "put", "gone", env={"STRONGROOM_SECRET_VALUE": "v"})
    cli.run("secrets", "delete", "gone")
    assert "gone" not in [r["name"] for r in cli.json("secrets", "list")["secrets"]]
    assert_one_line_error(cli.run("secrets", "delete", "gone", ok=False), 2, "no secret named 'gone'")
