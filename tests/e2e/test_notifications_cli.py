"""Notifications through the real ``strongroom`` command: settings, backups and copies reaching a local webhook,
retries, ``apply``, and a sink URL's secret never printed anywhere."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_notifications import SECRET, Webhook
from tests.support.accounts import (
    Server,
    account_id,
    issue_credential,
    register,
    serving,
    source_and_destination,
    vault_arn,
)
from tests.support.cli import Cli, Result, assert_one_line_error

URLS = "STRONGROOM_NOTIFICATION_URLS"
SLACK_SECRET = "SECRETs1ackT0kenABCDEFGH"  # Slack's third token: 24 letters and digits


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    cli = Cli(tmp_path / "home")
    cli.run("init")
    return cli


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook().start()
    yield hook
    hook.stop()


def tree(tmp_path: Path, name: str = "tree") -> Path:
    root = tmp_path / name
    root.mkdir()
    (root / "data.txt").write_text("strongroom " * 20000)
    return root


def put(cli: Cli, *args: str, urls: str, ok: bool = True) -> Result:
    return cli.run("vaults", "put-notifications", *args, ok=ok, env={URLS: urls})


def assert_secret_free(*results: Result) -> None:
    for result in results:
        assert SECRET not in result.stdout + result.stderr
        assert SLACK_SECRET not in result.stdout + result.stderr


def test_settings_show_sinks_masked_and_never_the_secret(cli: Cli, tmp_path: Path) -> None:
    urls = (
        f"webhook+https://hooks.example.com/services/{SECRET}\n"
        f"slack://T0AAAAAAA/B0BBBBBBB/{SLACK_SECRET} events=BACKUP_JOB_COMPLETED exclude_states=COMPLETED\n"
        "# a comment\n"
    )
    shown = put(cli, "Default", "--event", "BACKUP_JOB_COMPLETED", "--event", "copy_job_failed", "--json", urls=urls)
    assert json.loads(shown.stdout)["sinks"] == [
        {"sink": "webhook+https://hooks.example.com", "events": None, "exclude_states": None},
        {"sink": "slack://***", "events": ["BACKUP_JOB_COMPLETED"], "exclude_states": ["COMPLETED"]},
    ]
    got = cli.json("vaults", "get-notifications", "Default")
    assert got["events"] == ["BACKUP_JOB_COMPLETED", "COPY_JOB_FAILED"] and got["exclude_states"] == []
    plain = cli.run("vaults", "get-notifications", "Default")
    assert "hooks.example.com" in plain.stdout and "slack://***" in plain.stdout
    assert_secret_free(
        shown,
        plain,
        cli.run("vaults", "describe", "Default", "--json"),
        cli.run("vaults", "get-notifications", "Default", "--json"),
    )
    catalog = b"".join(path.read_bytes() for path in cli.home.glob("catalog.db*"))
    assert SECRET.encode() not in catalog and SLACK_SECRET.encode() not in catalog

    # From stdin, as a secret manager would pipe it.
    piped = subprocess.run(
        cli.command("vaults", "put-notifications", "Default", "--event", "BACKUP_JOB_STARTED"),
        input=f"log://{tmp_path}/events.jsonl\n",
        capture_output=True,
        text=True,
        env=cli.env,
    )
    assert piped.returncode == 0, piped.stderr
    assert [s["sink"] for s in cli.json("vaults", "get-notifications", "Default")["sinks"]] == [
        f"log://{tmp_path}/events.jsonl"
    ]

    cli.run("vaults", "delete-notifications", "Default")
    assert cli.json("vaults", "get-notifications", "Default")["sinks"] == []
    assert_one_line_error(cli.run("vaults", "delete-notifications", "Default", ok=False), 2, "no notification")


def test_bad_settings_are_refused_without_echoing_the_url(cli: Cli) -> None:
    refusals = [
        (
            put(cli, "Default", "--event", "BACKUP_JOB_COMPLETED", urls=f"bogus://{SECRET}@x/y", ok=False),
            "bogus://*** is not a URL",
        ),
        (
            put(cli, "Default", "--event", "BACKUP_JOB_DONE", urls=f"log:///tmp/{SECRET}", ok=False),
            "unknown event BACKUP_JOB_DONE",
        ),
        (
            put(cli, "Default", "--event", "BACKUP_JOB_COMPLETED", urls=f"log:///tmp/x {SECRET}=1", ok=False),
            "unknown sink option",
        ),
        (put(cli, "Default", "--event", "BACKUP_JOB_COMPLETED", urls="", ok=False), "no sink URLs"),
    ]
    for result, fragment in refusals:
        assert_one_line_error(result, 2, fragment)
        assert_secret_free(result)


def test_cli_backups_reach_the_webhook_and_a_down_sink_is_retried(cli: Cli, tmp_path: Path, webhook: Webhook) -> None:
    root = tree(tmp_path)
    cli.run("resources", "add", "files", "--type", "directory", "--path", str(root))
    people = f"{webhook.url('people')} events=BACKUP_JOB_COMPLETED exclude_states=COMPLETED"
    down = Webhook()  # nothing listens on its port yet
    put(
        cli,
        "Default",
        "--event",
        "BACKUP_JOB_STARTED",
        "--event",
        "BACKUP_JOB_COMPLETED",
        urls=f"{webhook.url('all')}\n{people}\n{down.url('later')}\n",
    )

    backup = cli.run("backup", "start", "--resource", "files", "--wait", "--json")
    job = json.loads(backup.stdout)
    assert job["state"] == "COMPLETED"
    shutil.rmtree(root)
    failed = cli.run("backup", "start", "--resource", "files", "--wait", ok=False)
    assert_one_line_error(failed, 4)

    assert webhook.events("all") == [
        ("BACKUP_JOB_STARTED", "RUNNING"),
        ("BACKUP_JOB_COMPLETED", "COMPLETED"),
        ("BACKUP_JOB_STARTED", "RUNNING"),
        ("BACKUP_JOB_COMPLETED", "FAILED"),
    ]
    [alert] = webhook.bodies("people")
    assert (alert["event"], alert["state"], alert["resource_id"]) == ("BACKUP_JOB_COMPLETED", "FAILED", "files")
    assert str(root) in alert["error"] and alert["resource_type"] == "directory"
    assert webhook.bodies("all")[1]["job_id"] == job["job_id"]

    pending = cli.json("notifications", "list", "--pending")["notifications"]
    assert [(p["event"], p["sink"], p["attempts"]) for p in pending] == [
        ("BACKUP_JOB_STARTED", f"webhook+http://127.0.0.1:{down.port}", 1),
        ("BACKUP_JOB_COMPLETED", f"webhook+http://127.0.0.1:{down.port}", 1),
        ("BACKUP_JOB_STARTED", f"webhook+http://127.0.0.1:{down.port}", 1),
        ("BACKUP_JOB_COMPLETED", f"webhook+http://127.0.0.1:{down.port}", 1),
    ]
    assert cli.json("notifications", "deliver")["attempted"] == 0  # still backing off
    down.start()
    try:
        delivered = cli.json("notifications", "deliver", "--retry-now")
        assert delivered == {"attempted": 4, "delivered": 4, "retrying": 0, "failed": 0}
        assert [state for _, state in down.events("later")] == ["RUNNING", "COMPLETED", "RUNNING", "FAILED"]
    finally:
        down.stop()
    listing = cli.run("notifications", "list", "--json")
    assert {row["delivery_status"] for row in listing.json()["notifications"]} == {"DELIVERED"}
    assert_secret_free(
        backup,
        failed,
        listing,
        cli.run("notifications", "list"),
        cli.run("jobs", "describe", job["job_id"], "--json"),
        cli.run("jobs", "list", "--json"),
    )


CONFIG = """
variables:
  alerts_url: {type: string, sensitive: true}
vaults:
  archive:
    notifications:
      events: [BACKUP_JOB_COMPLETED, RESTORE_JOB_COMPLETED, S3_BACKUP_OBJECT_FAILED, COPY_JOB_FAILED]
      sinks:
        - url: "${var.alerts_url}"
          exclude_states: [COMPLETED]
        - "log://LOG"
"""


def test_apply_sets_notifications_from_a_sensitive_variable(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "account.yaml"
    config.write_text(CONFIG.replace("LOG", str(tmp_path / "events.jsonl")))
    secret_var = ("--var", f"alerts_url=webhook+https://hooks.example.com/{SECRET}")
    plan = cli.run("plan", "-f", str(config), *secret_var)
    assert "+ create vault_notifications archive" in plan.stdout
    assert 'sinks = ["webhook+https://hooks.example.com", "log://' in plan.stdout
    planned = cli.run("plan", "-f", str(config), *secret_var, "--json")
    applied = cli.run("apply", "-f", str(config), *secret_var, "--auto-approve")
    shown = cli.json("vaults", "get-notifications", "archive")
    assert shown["sinks"][0] == {
        "sink": "webhook+https://hooks.example.com",
        "events": None,
        "exclude_states": ["COMPLETED"],
    }
    again = cli.run("plan", "-f", str(config), *secret_var)
    assert "No changes." in again.stdout
    changed = cli.run("plan", "-f", str(config), "--var", f"alerts_url=webhook+https://hooks.example.com/{SECRET}2")
    assert "~ update vault_notifications archive" in changed.stdout and "(URLs hidden)" in changed.stdout
    assert_secret_free(plan, planned, applied, again, changed)

    config.write_text(CONFIG.replace("log://LOG", "log://relative"))
    refused = cli.run("plan", "-f", str(config), *secret_var, ok=False)
    assert_one_line_error(refused, 2, "account.yaml:", "vaults.archive.notifications", "log:///ABSOLUTE/PATH")


# Copies: the source's copy job and the destination's incoming one ---------------------------------------
@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Cli, Cli, Server]]:
    source, destination = source_and_destination(tmp_path)
    source.run("resources", "add", "files", "--type", "directory", "--path", str(tree(tmp_path)))
    with serving(destination) as server:
        credential = issue_credential(destination, "copier", "--account-id", account_id(source))
        register(source, "destination", server, credential)
        yield source, destination, server


def test_copy_events_on_both_sides(pair: tuple[Cli, Cli, Server], tmp_path: Path, webhook: Webhook) -> None:
    source, destination, server = pair
    copy_events = ("--event", "COPY_JOB_STARTED", "--event", "COPY_JOB_SUCCESSFUL", "--event", "COPY_JOB_FAILED")
    put(source, "Default", *copy_events, urls=webhook.url("source"))
    log = tmp_path / "destination-events.jsonl"
    put(destination, "Default", *copy_events, urls=f"{webhook.url('destination')}\nlog://{log}")

    point = source.backup("files")["recovery_point_arn"]
    copied = source.json(
        "copy", "start", "--recovery-point", point, "--destination-vault", vault_arn(destination), "--wait"
    )
    assert copied["state"] == "COMPLETED"
    assert source_side(webhook) == [("COPY_JOB_STARTED", "RUNNING"), ("COPY_JOB_SUCCESSFUL", "COMPLETED")]
    done = webhook.bodies("source")[1]
    assert done["source_recovery_point_arn"] == point and done["direction"] == "push"
    assert done["destination_recovery_point_arn"] == copied["result"]["destination_recovery_point_arn"]
    assert done["bytes_transferred"] > 0 and done["account_id"] == account_id(source)

    incoming = webhook.wait_for(2, "destination")
    assert [(b["event"], b["state"]) for b in incoming] == [
        ("COPY_JOB_STARTED", "RUNNING"),
        ("COPY_JOB_SUCCESSFUL", "COMPLETED"),
    ]
    assert incoming[1]["direction"] == "in" and incoming[1]["account_id"] == account_id(destination)
    assert incoming[1]["recovery_point_arn"] == done["destination_recovery_point_arn"]
    assert [json.loads(line)["event"] for line in log.read_text().splitlines()] == [
        "COPY_JOB_STARTED",
        "COPY_JOB_SUCCESSFUL",
    ]

    server.stop()  # the destination is unreachable: the copy fails, and says so
    failed = source.run(
        "copy", "start", "--recovery-point", point, "--destination-vault", vault_arn(destination), "--wait", ok=False
    )
    assert failed.returncode == 9
    assert source_side(webhook)[2:] == [("COPY_JOB_STARTED", "RUNNING"), ("COPY_JOB_FAILED", "FAILED")]
    assert webhook.bodies("source")[3]["error"]
    assert_secret_free(
        failed, source.run("notifications", "list", "--json"), destination.run("notifications", "list", "--json")
    )
    assert SECRET not in server.log.read_text()


def source_side(webhook: Webhook) -> list[tuple[str, str]]:
    return webhook.events("source")
