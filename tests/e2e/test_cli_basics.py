"""The command line on real processes: init, resources, errors a user meets first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.cli import Cli, assert_one_line_error


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    cli = Cli(tmp_path / "home")
    cli.run("init")
    return cli


def test_init_creates_catalog_account_and_default_vault(cli: Cli) -> None:
    account = json.loads((cli.home / "account.json").read_text())
    assert len(account["account_id"]) == 12
    vaults = cli.json("vaults", "list")["backup_vaults"]
    assert [v["backup_vault_name"] for v in vaults] == ["Default"]
    assert vaults[0]["backup_vault_arn"] == f"arn:strongroom:backup:local:{account['account_id']}:backup-vault:Default"
    assert (cli.home / "catalog.db").exists()


def test_nothing_on_disk_reveals_the_keys(cli: Cli) -> None:
    key_files = list((cli.home / "vaults" / "Default" / "keys").iterdir())
    assert len(key_files) == 1
    document = json.loads(key_files[0].read_text())
    assert document["kdf"]["name"] == "scrypt"
    assert "encryption_key" not in key_files[0].read_text()


def test_init_twice_is_refused(cli: Cli) -> None:
    assert_one_line_error(cli.run("init", ok=False), 2, "already holds a Strongroom account")


def test_command_without_account_says_how_to_create_one(tmp_path: Path) -> None:
    result = Cli(tmp_path / "nowhere").run("resources", "list", ok=False)
    assert_one_line_error(result, 3, "no Strongroom account", "init")


def test_wrong_passphrase_is_one_clear_line(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "tree").mkdir()
    cli.run("resources", "add", "files", "--type", "directory", "--path", str(tmp_path / "tree"))
    result = cli.run(
        "backup", "start", "--resource", "files", "--wait", ok=False, env={"STRONGROOM_PASSPHRASE": "not it"}
    )
    assert_one_line_error(result, 3, "wrong passphrase")
    assert cli.json("jobs", "list")["jobs"] == []
    assert cli.json("recovery-points", "list")["recovery_points"] == []


def test_missing_passphrase_without_terminal(tmp_path: Path) -> None:
    result = Cli(tmp_path / "home", passphrase=None).run("init", ok=False)
    assert_one_line_error(result, 3, "no passphrase", "STRONGROOM_PASSPHRASE")


def test_unknown_resource(cli: Cli) -> None:
    result = cli.run("backup", "start", "--resource", "ghost", "--wait", ok=False)
    assert_one_line_error(result, 2, "unknown resource 'ghost'")


def test_unknown_resource_type(cli: Cli, tmp_path: Path) -> None:
    result = cli.run("resources", "add", "x", "--type", "oracle", "--path", str(tmp_path), ok=False)
    assert_one_line_error(result, 2, "unknown resource type 'oracle'")


def test_resources_add_list_describe_remove(cli: Cli, tmp_path: Path) -> None:
    cli.run(
        "resources",
        "add",
        "files",
        "--type",
        "directory",
        "--path",
        str(tmp_path),
        "--tag",
        "backup=True",
        "--tag",
        "env=prod",
    )
    listed = cli.json("resources", "list")["resources"]
    assert [(r["resource_id"], r["resource_type"], r["tags"]) for r in listed] == [
        ("files", "directory", {"backup": "True", "env": "prod"})
    ]
    assert cli.json("resources", "describe", "files")["settings"] == {"path": str(tmp_path)}
    assert_one_line_error(
        cli.run("resources", "add", "files", "--type", "directory", "--path", str(tmp_path), ok=False),
        2,
        "already exists",
    )
    cli.run("resources", "remove", "files")
    assert cli.json("resources", "list")["resources"] == []


def test_bad_tag_and_bad_arn(cli: Cli, tmp_path: Path) -> None:
    result = cli.run(
        "resources", "add", "x", "--type", "directory", "--path", str(tmp_path), "--tag", "novalue", ok=False
    )
    assert_one_line_error(result, 2, "KEY=VALUE")
    result = cli.run("recovery-points", "describe", "--recovery-point", "arn:nope", ok=False)
    assert_one_line_error(result, 2, "unknown recovery point")


def test_resources_add_takes_a_types_other_settings(cli: Cli, tmp_path: Path) -> None:
    dsn = "postgresql://replicator@127.0.0.1:5999/postgres"
    added = cli.json(
        "resources",
        "add",
        "db",
        "--type",
        "postgres-cluster",
        "--dsn",
        dsn,
        "--setting",
        "method=pg_basebackup",
        "--json",
    )
    assert added["settings"] == {"dsn": dsn, "method": "pg_basebackup"}
    tree = cli.json(
        "resources",
        "add",
        "tree",
        "--type",
        "directory",
        "--path",
        str(tmp_path),
        "--setting",
        "one_file_system=true",
        "--json",
    )
    assert tree["settings"] == {"path": str(tmp_path), "one_file_system": True}
    for setting, message in [
        ("method=fast", "unknown method 'fast' for postgres-cluster"),
        ("compress=yes", "unknown setting(s) for postgres-cluster: compress"),
        ("method", "setting 'method' is not KEY=VALUE"),
    ]:
        result = cli.run(
            "resources", "add", "db2", "--type", "postgres-cluster", "--dsn", dsn, "--setting", setting, ok=False
        )
        assert_one_line_error(result, 2, message)
    assert [r["resource_id"] for r in cli.json("resources", "list")["resources"]] == ["db", "tree"]


def _key_costs(home: Path) -> list[int]:
    files = [*(home / "vaults").glob("*/keys/*"), *(home / "keys").glob("*.key")]
    return sorted(json.loads(path.read_text())["kdf"]["n"] for path in files)


def test_the_test_kdf_profile_is_written_into_the_key_files_and_init_warns(tmp_path: Path) -> None:
    cheap = Cli(tmp_path / "cheap")  # the suite's default: STRONGROOM_KDF_PROFILE=insecure-fast
    result = cheap.run("init")
    assert "warning: STRONGROOM_KDF_PROFILE=insecure-fast" in result.stderr, result.stderr
    assert cheap.json("credentials", "create", "--principal", "ops")["secret_access_key"]
    assert _key_costs(cheap.home) == [2**10, 2**10]  # the Default vault's and the account's
    strong = Cli(tmp_path / "strong")
    result = strong.run("init", env={"STRONGROOM_KDF_PROFILE": ""})
    assert result.stderr == ""
    assert _key_costs(strong.home) == [2**15, 2**15]
    assert strong.json("vaults", "list")["backup_vaults"]  # unlocking follows the file, not the profile
