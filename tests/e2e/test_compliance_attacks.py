"""What an attacker or a broken store can do to the compliance evidence, and cannot (docs/compliance.md).

- Someone who can write the catalog file but not the account key forges a recovery point row to hide that
  backups stopped: the evaluation refuses the row (its MAC fails) instead of reporting COMPLIANT.
- The vault policy leaves the account's root free to delete: the control says so, and root really can.
- A report whose store cannot be written is a FAILED job with the reason, and leaves no file behind; one
  delivered to an S3 prefix is read back with plain S3 calls.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.accounts import account_id
from tests.support.cli import Cli, assert_one_line_error, edit_catalog_as_owner
from tests.support.s3server import S3_TEST_ENV, S3Server

DEADMAN = {
    "name": "BACKUP_LAST_RECOVERY_POINT_CREATED",
    "input_parameters": {"recoveryPointAgeUnit": "hours", "recoveryPointAgeValue": 1},
}


@pytest.fixture
def account(tmp_path: Path) -> Iterator[Cli]:
    cli = Cli(tmp_path / "home")
    cli.run("init")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("a\n")
    yield cli


def apply(cli: Cli, tmp_path: Path, config: dict[str, Any], ok: bool = True) -> Any:
    path = tmp_path / "account.yaml"
    path.write_text(yaml.safe_dump(config))
    return cli.run("apply", "-f", str(path), "--auto-approve", ok=ok)


def base(tmp_path: Path, controls: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "resources": {"app": {"type": "directory", "settings": {"path": str(tmp_path / "data")}}},
        "frameworks": {"audit": {"controls": controls}},
        **extra,
    }


def verdicts(cli: Cli) -> dict[tuple[str, str], tuple[str, str]]:
    view = cli.json("frameworks", "describe", "audit", "--json")
    return {
        (c["control_name"], r["resource_id"]): (r["compliance_status"], r["reason"])
        for c in view["controls"]
        for r in c["resources"]
    }


def test_a_forged_recovery_point_row_cannot_silence_the_dead_mans_switch(account: Cli, tmp_path: Path) -> None:
    apply(account, tmp_path, base(tmp_path, [DEADMAN]))
    point = account.backup("app")["recovery_point_arn"]
    assert verdicts(account)[(DEADMAN["name"], "app")][0] == "COMPLIANT"
    # The owner moves the backup two days back (vouching for the edit with the account key): backups "stopped".
    old = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    edit_catalog_as_owner(account, "UPDATE recovery_points SET completion_date = ? WHERE arn = ?", old, point)
    status, reason = verdicts(account)[(DEADMAN["name"], "app")]
    assert status == "NON_COMPLIANT" and "no recovery point in the last 1 hour" in reason
    # An attacker with write access to the catalog file, but not the account key, makes it look fresh again.
    with sqlite3.connect(account.home / "catalog.db") as db:
        db.execute(
            "UPDATE recovery_points SET completion_date = ? WHERE arn = ?", (datetime.now(UTC).isoformat(), point)
        )
    db.close()
    refused = account.run("frameworks", "describe", "audit", "--json", ok=False)
    assert refused.returncode != 0 and "COMPLIANT" not in refused.stdout
    assert "fails its MAC" in refused.stderr and "Traceback" not in refused.stderr
    listed = account.run("frameworks", "list", ok=False)
    assert listed.returncode != 0 and "fails its MAC" in listed.stderr
    # The last trustworthy verdict stays what was stored: NON_COMPLIANT.
    with sqlite3.connect(account.home / "catalog.db") as db:
        stored = db.execute("SELECT status FROM compliance_evaluations WHERE resource_id = 'app'").fetchall()
    db.close()
    assert stored == [("NON_COMPLIANT",)]


def test_manual_deletion_verdict_is_what_the_policy_enforces(account: Cli, tmp_path: Path) -> None:
    root = f"arn:strongroom:iam::{account_id(account)}:root"
    control = {"name": "BACKUP_RECOVERY_POINT_MANUAL_DELETION_DISABLED"}
    exempting_root = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "backup:DeleteRecoveryPoint",
                "Resource": "*",
                "Condition": {"ArnNotLike": {"aws:PrincipalArn": [root]}},
            }
        ],
    }
    config = base(tmp_path, [control], vaults={"main": {"access_policy": exempting_root}})
    apply(account, tmp_path, config)
    first = account.json("backup", "start", "--resource", "app", "--vault", "main", "--wait", "--json")
    status, reason = verdicts(account)[(control["name"], "app")]
    assert status == "NON_COMPLIANT" and f"{root} may delete its recovery points" in reason
    account.run("recovery-points", "delete", first["recovery_point_arn"])  # and so it can: the verdict was true
    # Listing root as allowed is what the blueprint's principalArnList is for; then the verdict is COMPLIANT.
    account.json("backup", "start", "--resource", "app", "--vault", "main", "--wait", "--json")
    config["frameworks"]["audit"]["controls"][0]["input_parameters"] = {"principalArnList": root}
    apply(account, tmp_path, config)
    status, reason = verdicts(account)[(control["name"], "app")]
    assert status == "COMPLIANT" and "denies backup:DeleteRecoveryPoint to every principal not in" in reason


def test_a_report_that_cannot_be_written_fails_whole(account: Cli, tmp_path: Path) -> None:
    blocked = tmp_path / "reports"
    blocked.write_text("a file where the report directory should be\n")
    plan = {
        "report_delivery_channel": {"formats": ["CSV", "JSON"], "store": blocked.as_uri()},
        "report_setting": {"report_template": "RESOURCE_COMPLIANCE_REPORT"},
    }
    apply(account, tmp_path, base(tmp_path, [DEADMAN], report_plans={"evidence": plan}))
    result = account.run("reports", "start-job", "evidence", ok=False)
    assert_one_line_error(result, 1, "report job", "FAILED")
    [job] = account.json("reports", "list-jobs", "--json")["report_jobs"]
    assert job["status"] == "FAILED" and job["report_destination"]["keys"] == [] and job["status_message"]
    assert blocked.read_text() == "a file where the report directory should be\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["account.yaml", "data", "home", "reports"]
    described = account.json("report-plans", "describe", "evidence", "--json")
    assert described["last_report_job"]["status"] == "FAILED"
    # Fixed: the next job writes both files whole, and an auditor reads them with the standard library.
    blocked.unlink()
    made = account.json("reports", "start-job", "evidence", "--json")
    assert made["status"] == "COMPLETED"
    csv_key, json_key = made["report_destination"]["keys"]
    items = json.loads((blocked / json_key).read_text())["reportItems"]
    assert [(i["controlName"], i["resourceId"], i["resourceComplianceStatus"]) for i in items] == [
        (DEADMAN["name"], "app", "NON_COMPLIANT")
    ]
    assert (blocked / csv_key).read_text().splitlines()[0].startswith("accountId,region,frameworkName,")
    assert not list((blocked / "tmp").iterdir())  # no temporary file left behind


def test_a_report_job_whose_process_is_killed_is_failed_by_the_next_look(account: Cli, tmp_path: Path) -> None:
    plan = {
        "report_delivery_channel": {"formats": ["CSV"], "store": (tmp_path / "reports").as_uri()},
        "report_setting": {"report_template": "BACKUP_JOB_REPORT"},
    }
    apply(account, tmp_path, base(tmp_path, [DEADMAN], report_plans={"jobs": plan}))
    killed = account.run(
        "reports", "start-job", "jobs", ok=False, env={"STRONGROOM_FAULT_KILL_AT": "report.before_put"}
    )
    assert killed.returncode == -9, killed.stderr  # SIGKILL: nothing of ours ran after it
    [job] = account.json("reports", "list-jobs", "--json")["report_jobs"]
    assert job["status"] == "FAILED" and "ended before it finished" in job["status_message"], job
    assert account.json("reports", "describe-job", job["report_job_id"], "--json")["status"] == "FAILED"
    assert not [p for p in (tmp_path / "reports").rglob("*.csv")]  # no report file, whole or half
    made = account.json("reports", "start-job", "jobs", "--json")  # a live job is never taken for a dead one
    assert made["status"] == "COMPLETED"
    assert [j["status"] for j in account.json("reports", "list-jobs", "--json")["report_jobs"]] == [
        "FAILED",
        "COMPLETED",
    ]


def test_a_report_is_delivered_to_an_s3_prefix_and_read_back_with_plain_s3(
    account: Cli, tmp_path: Path, s3_server: S3Server
) -> None:
    account.env.update(S3_TEST_ENV)  # the AWS credential chain, never the URL
    bucket = s3_server.new_bucket()
    plan = {
        "report_delivery_channel": {"formats": ["JSON", "CSV"], "store": s3_server.url(bucket, "audit/reports")},
        "report_setting": {"report_template": "BACKUP_JOB_REPORT"},
    }
    apply(account, tmp_path, base(tmp_path, [DEADMAN], report_plans={"backup_jobs": plan}))
    backup = account.backup("app")
    made = account.json("reports", "start-job", "backup_jobs", "--json")
    assert made["status"] == "COMPLETED", made
    listed = s3_server.client().list_objects_v2(Bucket=bucket)
    keys = sorted(item["Key"] for item in listed.get("Contents", ()))
    assert keys == sorted(f"audit/reports/{key}" for key in made["report_destination"]["keys"])
    json_key = next(k for k in keys if k.endswith(".json"))
    body = s3_server.client().get_object(Bucket=bucket, Key=json_key)["Body"].read()
    [row] = json.loads(body)["reportItems"]
    assert (row["backupJobId"], row["jobStatus"], row["recoveryPointArn"]) == (
        backup["job_id"],
        "COMPLETED",
        backup["recovery_point_arn"],
    )
    csv_key = next(k for k in keys if k.endswith(".csv"))
    text = s3_server.client().get_object(Bucket=bucket, Key=csv_key)["Body"].read().decode()
    assert [r["backupJobId"] for r in csv.DictReader(io.StringIO(text))] == [backup["job_id"]]
    assert S3_TEST_ENV["AWS_SECRET_ACCESS_KEY"] not in json.dumps(made)


def test_a_report_plan_cannot_write_into_a_vault(account: Cli, tmp_path: Path) -> None:
    vault_store = account.json("vaults", "describe", "Default")["store_url"]
    apply(account, tmp_path, base(tmp_path, [DEADMAN]))
    account.backup("app")
    for store in (vault_store, vault_store.rstrip("/") + "/reports"):
        plan = {
            "report_delivery_channel": {"formats": ["JSON"], "store": store},
            "report_setting": {"report_template": "BACKUP_JOB_REPORT"},
        }
        apply(account, tmp_path, base(tmp_path, [DEADMAN], report_plans={"into_vault": plan}))
        result = account.run("reports", "start-job", "into_vault", ok=False)
        assert_one_line_error(result, 1, "overlaps the store of vault Default; reports never go into a vault")
    vault_dir = Path(vault_store.removeprefix("file://"))
    assert not (vault_dir / "Backup").exists() and not (vault_dir / "reports").exists()
    assert account.json("verify", "--read-data")["ok"]
