"""plan / apply / output on real accounts: idempotence, adoption, refusals, the apply lock, the Mavis example."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import shutil
import sqlite3
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.cli import Cli, assert_one_line_error, edit_catalog_as_owner

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "mavis"
CONFIG = """
variables:
  environment: {{type: string}}
vaults:
  archive:
    lock: {{min_retention_days: {min_days}, max_retention_days: 365, changeable_for_days: 3}}
resources:
{resources}
outputs:
  archive_arn: {{value: "${{vault.archive.arn}}", description: The vault}}
  token: {{value: "t0ken-${{var.environment}}", sensitive: true}}
"""


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    cli = Cli(tmp_path / "home")
    cli.run("init")
    return cli


def write_config(tmp_path: Path, *resource_ids: str, min_days: int = 7, name: str = "account.yaml") -> Path:
    (tmp_path / "tree").mkdir(exist_ok=True)
    resources = "".join(
        f"  {rid}:\n    type: directory\n    settings: {{path: '{tmp_path / 'tree'}'}}\n"
        f"    tags: {{BackupSource: 'True', environment: '${{var.environment}}'}}\n"
        for rid in resource_ids
    )
    path = tmp_path / name
    path.write_text(CONFIG.format(min_days=min_days, resources=resources or "  {}\n").replace(":\n  {}", ": {}"))
    return path


def apply(cli: Cli, config: Path, *extra: str, ok: bool = True):  # type: ignore[no-untyped-def]
    return cli.run("apply", "-f", str(config), "--var", "environment=production", "--auto-approve", *extra, ok=ok)


def backdate_lock(cli: Cli, vault: str, days: int) -> None:
    """Move the lock's creation into the past, as if its cooling-off period had run out."""
    db = sqlite3.connect(cli.home / "catalog.db")
    lock = json.loads(db.execute("SELECT lock FROM vaults WHERE name = ?", (vault,)).fetchone()[0])
    created = datetime.now(UTC) - timedelta(days=days)
    lock["created_at"] = created.isoformat()
    lock["lock_date"] = (created + timedelta(days=lock["changeable_for_days"])).isoformat()
    db.close()
    edit_catalog_as_owner(cli, "UPDATE vaults SET lock = ? WHERE name = ?", json.dumps(lock), vault)


def test_plan_apply_and_a_second_apply_changes_nothing(cli: Cli, tmp_path: Path) -> None:
    config = write_config(tmp_path, "files")
    planned = cli.run("plan", "-f", str(config), "--var", "environment=production").stdout
    assert "+ create vault archive" in planned
    assert "+ create vault_lock archive" in planned and "min_retention_days = 7" in planned
    assert "+ create resource files" in planned and 'tags.BackupSource = "True"' in planned
    assert "Plan: 5 to create, 0 to update, 0 to destroy." in planned
    assert "t0ken" not in planned  # a sensitive output's value is never shown by plan
    as_json = cli.json("plan", "-f", str(config), "--var", "environment=production")
    assert as_json["summary"] == {"create": 5, "update": 0, "delete": 0, "refused": 0}

    applied = apply(cli, config).stdout
    assert "Apply complete: 5 created, 0 updated, 0 destroyed." in applied
    vault = cli.json("vaults", "describe", "archive")
    assert (vault["lock_mode"], vault["min_retention_days"], vault["managed_by_config"]) == ("compliance", 7, True)
    assert cli.json("resources", "describe", "files")["managed_by_config"] is True

    again = apply(cli, config).stdout
    assert "No changes." in again
    assert cli.json("plan", "-f", str(config), "--var", "environment=production")["changes"] == []


def test_removing_a_resource_deletes_it_only_if_apply_made_it(cli: Cli, tmp_path: Path) -> None:
    cli.run("resources", "add", "by-hand", "--type", "directory", "--path", str(tmp_path))
    apply(cli, write_config(tmp_path, "files", "extra"))
    shrunk = write_config(tmp_path, "files")
    assert "- destroy resource extra" in cli.run("plan", "-f", str(shrunk), "--var", "environment=x").stdout
    apply(cli, shrunk)
    ids = [r["resource_id"] for r in cli.json("resources", "list")["resources"]]
    assert ids == ["by-hand", "files"]  # the hand-made resource stays


def test_a_hand_made_resource_named_by_the_config_is_adopted(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "tree").mkdir()
    cli.run("resources", "add", "files", "--type", "directory", "--path", str(tmp_path / "tree"))
    config = write_config(tmp_path, "files")
    planned = cli.run("plan", "-f", str(config), "--var", "environment=production").stdout
    assert "~ update resource files" in planned and "adopt: made by hand" in planned
    apply(cli, config)
    assert cli.json("resources", "describe", "files")["managed_by_config"] is True
    apply(cli, write_config(tmp_path))  # adopted, so now removable by apply
    assert cli.json("resources", "list")["resources"] == []


def test_removing_a_locked_vault_is_refused_and_nothing_changes(cli: Cli, tmp_path: Path) -> None:
    apply(cli, write_config(tmp_path, "files"))
    backdate_lock(cli, "archive", days=10)
    without_vault = tmp_path / "no-vault.yaml"
    without_vault.write_text(
        textwrap.dedent(f"""
        variables:
          environment: {{type: string}}
        resources:
          new-one: {{type: directory, settings: {{path: '{tmp_path}'}}}}
    """)
    )
    planned = cli.run("plan", "-f", str(without_vault), "--var", "environment=x").stdout
    assert (
        "! refused: destroy vault archive: nobody can delete vault 'archive': its compliance-mode lock is"
        " immutable since" in planned
    )
    assert "1 refused" in planned
    result = apply(cli, without_vault, ok=False)
    assert_one_line_error(
        result, 8, "nothing was changed", "delete vault 'archive' is refused", "compliance-mode lock is immutable"
    )
    ids = [r["resource_id"] for r in cli.json("resources", "list")["resources"]]
    assert ids == ["files"]  # neither the deletion of 'files' nor the creation of 'new-one' happened
    assert cli.json("vaults", "describe", "archive")["lock_state"] == "COMPLIANCE_IMMUTABLE"


def test_changing_an_immutable_compliance_lock_is_refused(cli: Cli, tmp_path: Path) -> None:
    apply(cli, write_config(tmp_path, min_days=30))
    backdate_lock(cli, "archive", days=4)
    result = apply(cli, write_config(tmp_path, min_days=7), ok=False)
    assert_one_line_error(
        result, 8, "update vault_lock 'archive' is refused", "nobody can change the lock of vault 'archive'"
    )
    assert cli.json("vaults", "describe", "archive")["min_retention_days"] == 30


def test_a_lock_in_its_cooling_off_period_may_still_change(cli: Cli, tmp_path: Path) -> None:
    apply(cli, write_config(tmp_path, min_days=30))
    assert "~ update vault_lock archive" in apply(cli, write_config(tmp_path, min_days=7)).stdout
    assert cli.json("vaults", "describe", "archive")["min_retention_days"] == 7


def test_a_policy_change_its_own_policy_denies_is_refused(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "policy.yaml"
    policy = "vaults:\n  copies:\n    access_policy:\n      default_destination: {{source_account_ids: [{ids}]}}\n"
    config.write_text(policy.format(ids="'222222222222'"))
    cli.run("apply", "-f", str(config), "--auto-approve")  # no admin named: nobody may change it again
    config.write_text(policy.format(ids="'222222222222', '333333333333'"))
    planned = cli.run("plan", "-f", str(config)).stdout
    assert "! refused: update access_policy copies:" in planned and "DenyBackupVaultAccess" in planned
    assert_one_line_error(
        cli.run("apply", "-f", str(config), "--auto-approve", ok=False),
        8,
        "update access_policy 'copies' is refused",
        "denied by statement 'DenyBackupVaultAccess'",
    )


def test_an_unlocked_managed_vault_removed_from_the_config_is_deleted(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "vaults.yaml"
    config.write_text("vaults:\n  scratch: {}\n")
    cli.run("apply", "-f", str(config), "--auto-approve")
    config.write_text("vaults: {}\n")
    assert "- destroy vault scratch" in cli.run("apply", "-f", str(config), "--auto-approve").stdout
    assert [v["backup_vault_name"] for v in cli.json("vaults", "list")["backup_vaults"]] == ["Default"]
    assert not (cli.home / "vaults" / "scratch").exists()


@contextmanager
def holding_apply_lock(cli: Cli) -> Iterator[int]:
    path = cli.home / "locks" / "apply.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, json.dumps({"pid": os.getpid(), "started_at": "2030-01-01T00:00:00+00:00"}).encode())
    try:
        yield fd
    finally:
        os.close(fd)


def test_a_second_apply_fails_at_once_while_another_holds_the_lock(cli: Cli, tmp_path: Path) -> None:
    config = write_config(tmp_path, "files")
    with holding_apply_lock(cli):
        started = time.monotonic()
        result = apply(cli, config, ok=False)
        assert time.monotonic() - started < 10
    assert_one_line_error(
        result,
        3,
        f"another apply (pid {os.getpid()}, started 2030-01-01T00:00:00+00:00) holds the apply lock of {cli.home}",
        "--lock-timeout",
    )
    assert cli.json("resources", "list")["resources"] == []


def test_lock_timeout_waits_for_the_other_apply(cli: Cli, tmp_path: Path) -> None:
    config = write_config(tmp_path, "files")
    with holding_apply_lock(cli) as fd:
        release = threading.Timer(1.5, fcntl.flock, (fd, fcntl.LOCK_UN))
        release.start()
        started = time.monotonic()
        applied = apply(cli, config, "--lock-timeout", "30")
        assert time.monotonic() - started >= 1.4
    assert "Apply complete" in applied.stdout
    with holding_apply_lock(cli):
        assert_one_line_error(apply(cli, config, "--lock-timeout", "0.5", ok=False), 3, "(waited 0.5 s)")


def test_apply_without_a_terminal_needs_auto_approve(cli: Cli, tmp_path: Path) -> None:
    result = cli.run("apply", "-f", str(write_config(tmp_path)), "--var", "environment=x", ok=False)
    assert_one_line_error(result, 2, "no terminal", "--auto-approve")


def run_in_terminal(cli: Cli, answer: str, *args: str) -> tuple[int, str]:
    """Run strongroom on a pseudo-terminal, answering its question with ``answer``."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        cli.command(*args), env={**cli.env, "NO_COLOR": "1"}, stdin=terminal, stdout=terminal, stderr=terminal
    )
    os.close(terminal)
    seen = b""
    while b"Enter a value" not in seen:
        chunk = os.read(controller, 4096)
        assert chunk, seen
        seen += chunk
    os.write(controller, answer.encode() + b"\n")
    code = proc.wait(timeout=60)
    with contextlib.suppress(OSError):  # the terminal is gone once the process exited
        while chunk := os.read(controller, 4096):
            seen += chunk
    os.close(controller)
    return code, seen.decode()


@pytest.mark.parametrize(("answer", "created"), [("yes", True), ("no", False)])
def test_apply_asks_for_yes_on_a_terminal(cli: Cli, tmp_path: Path, answer: str, created: bool) -> None:
    config = tmp_path / "vaults.yaml"
    config.write_text("vaults:\n  scratch: {}\n")
    code, shown = run_in_terminal(cli, answer, "apply", "-f", str(config))
    assert "+ create vault scratch" in shown and "Only 'yes' will be accepted" in shown
    assert (code == 0) == created, shown
    assert ("Apply complete: 1 created" in shown) == created
    assert ("apply cancelled; nothing was changed" in shown) != created
    names = [v["backup_vault_name"] for v in cli.json("vaults", "list")["backup_vaults"]]
    assert ("scratch" in names) == created


def test_output_raw_json_and_sensitive(cli: Cli, tmp_path: Path) -> None:
    apply(cli, write_config(tmp_path))
    arn = (
        f"arn:strongroom:backup:local:{json.loads((cli.home / 'account.json').read_text())['account_id']}"
        ":backup-vault:archive"
    )
    assert cli.run("output", "archive_arn", "--raw").stdout == arn + "\n"
    assert cli.json("output", "archive_arn") == arn
    assert cli.json("output") == {"archive_arn": arn, "token": "(sensitive)"}
    listed = cli.run("output").stdout
    assert "token = (sensitive)" in listed and "t0ken" not in listed
    assert cli.run("output", "token", "--raw").stdout == "t0ken-production\n"  # named: shown
    assert_one_line_error(cli.run("output", "nope", ok=False), 2, "no output named 'nope'", "archive_arn")
    assert_one_line_error(cli.run("output", "--raw", ok=False), 2, "--raw prints one output")


def test_a_config_error_is_one_line_with_file_and_line(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("vaults:\n  archive:\n    lock:\n      min_retention_days: soon\n")
    result = cli.run("plan", "-f", str(config), ok=False)
    assert_one_line_error(
        result, 2, f"{config}:4: vaults.archive.lock.min_retention_days: Input should be a valid integer"
    )
    missing = cli.run("apply", "-f", str(write_config(tmp_path)), "--auto-approve", ok=False)
    assert_one_line_error(missing, 2, "variables.environment: no value given for variable 'environment'")


def test_the_mavis_example_bootstraps_in_the_seeds_order(tmp_path: Path) -> None:
    """docs/bootstrap.md, step by step: both state stores, the destination, its ARN into the source var file."""
    examples = tmp_path / "mavis"
    shutil.copytree(EXAMPLES, examples)
    destination, source = Cli(tmp_path / "destination"), Cli(tmp_path / "source")
    destination.run("init")
    source.run("init")
    source_id = json.loads((source.home / "account.json").read_text())["account_id"]
    destination.run(
        "apply",
        "-f",
        str(examples / "destination/destination.yaml"),
        "--var-file",
        str(examples / "destination/env/production.yaml"),
        "--var",
        f"source_account_id={source_id}",
        "--auto-approve",
    )
    arn = destination.run("output", "destination_vault_arn", "--raw").stdout.strip()
    var_file = examples / "source/env/production.yaml"
    subprocess.run(
        ["sed", "-i", f"s|^destination_vault_arn:.*|destination_vault_arn: {arn}|", str(var_file)], check=True
    )
    source_args = ("-f", str(examples / "source/source.yaml"), "--var-file", str(var_file))
    source.run("apply", *source_args, "--auto-approve")

    vault = destination.json("vaults", "describe", "mavis-destination")
    assert (vault["lock_mode"], vault["min_retention_days"], vault["max_retention_days"]) == ("compliance", 7, 365)
    copy_in = next(s for s in vault["access_policy"]["Statement"] if s["Sid"] == "AllowSourceAccountCopyIn")
    assert copy_in["Principal"] == {"AWS": [f"arn:strongroom:iam::{source_id}:root"]}
    assert source.json("resources", "describe", "mavis-db")["tags"] == {
        "BackupSource": "True",
        "environment": "production",
    }
    assert source.json("output", "source_vault_arn").endswith(":backup-vault:mavis-production")
    assert source.json("plan", *source_args)["changes"] == []
    assert (
        "No changes."
        in destination.run(
            "plan",
            "-f",
            str(examples / "destination/destination.yaml"),
            "--var-file",
            str(examples / "destination/env/production.yaml"),
            "--var",
            f"source_account_id={source_id}",
        ).stdout
    )
    stored = (
        sqlite3.connect(source.home / "catalog.db")
        .execute("SELECT value FROM account_settings WHERE name = 'backup_plans'")
        .fetchone()[0]
    )
    rule = json.loads(stored)["mavis-postgres"]["rules"][0]
    assert (rule["schedule"], rule["lifecycle"]["delete_after"], rule["copy_action"]["delete_after"]) == (
        "cron(0 7,19 * * ? *)",
        60,
        60,
    )
