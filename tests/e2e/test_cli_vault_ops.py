"""Access policies, vault locks and retention through the real command line: JSON, one-line errors, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.cli import Cli, assert_one_line_error

SOURCE = "222222222222"
SOURCE_VAULT = f"arn:strongroom:backup:local:{SOURCE}:backup-vault:Default"


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    cli = Cli(tmp_path / "home")
    cli.run("init")
    data = tmp_path / "data"
    data.mkdir()
    (data / "patients.csv").write_text("id,name\n1,Ada\n")
    cli.run("resources", "add", "files", "--type", "directory", "--path", str(data))
    return cli


def root(cli: Cli) -> str:
    account_id = json.loads((cli.home / "account.json").read_text())["account_id"]
    return f"arn:strongroom:iam::{account_id}:root"


def backup(cli: Cli, days: int) -> str:
    job = cli.json("backup", "start", "--resource", "files", "--delete-after", str(days), "--wait")
    assert job["state"] == "COMPLETED", job
    return str(job["recovery_point_arn"])


def test_a_backup_whose_retention_breaks_the_lock_fails_with_the_reason(cli: Cli) -> None:
    lock = cli.json("vaults", "put-lock", "Default", "--min-retention-days", "7", "--max-retention-days", "30")
    assert (lock["lock_mode"], lock["lock_state"], lock["lock_date"]) == ("governance", "GOVERNANCE", None)
    result = cli.run("backup", "start", "--resource", "files", "--delete-after", "3", "--wait", ok=False)
    reason = "a retention of 3 days is shorter than the vault lock's minimum retention of 7 days"
    assert_one_line_error(result, 2, reason, "Choose a retention of 7 to 30 days")
    [job] = cli.json("jobs", "list")["jobs"]
    assert (job["state"], job["parameters"], job["recovery_point_arn"]) == ("FAILED", {"delete_after_days": 3}, None)
    assert reason in job["status_message"]

    started = cli.json("backup", "start", "--resource", "files", "--delete-after", "45")  # runs in the background
    finished = cli.wait_for_job(started["job_id"])
    assert finished["state"] == "FAILED"
    assert (
        "a retention of 45 days is longer than the vault lock's maximum retention of 30 days"
        in (finished["status_message"])
    )
    assert cli.json("recovery-points", "list")["recovery_points"] == []

    point = cli.json("recovery-points", "describe", "--recovery-point", backup(cli, 10))
    assert (point["lifecycle"], point["is_locked"]) == ({"delete_after_days": 10}, True)


def test_the_lock_refuses_in_one_line_and_says_why(cli: Cli, tmp_path: Path) -> None:
    cli.run("vaults", "put-lock", "Default", "--min-retention-days", "1", "--max-retention-days", "30")
    arn = backup(cli, 10)
    assert_one_line_error(
        cli.run("recovery-points", "delete", arn, ok=False),
        8,
        "is protected by the governance-mode lock of vault 'Default'",
        "may bypass",
    )
    assert_one_line_error(
        cli.run("recovery-points", "update-lifecycle", arn, "--delete-after", "5", ok=False),
        8,
        "forbids shortening the retention",
        "from 10 days to 5 days",
    )
    assert_one_line_error(
        cli.run("recovery-points", "update-lifecycle", arn, "--delete-after", "40", ok=False),
        2,
        "longer than the vault lock's maximum retention of 30 days",
    )
    longer = cli.json("recovery-points", "update-lifecycle", arn, "--delete-after", "20")
    assert longer["lifecycle"] == {"delete_after_days": 20}
    assert_one_line_error(
        cli.run("vaults", "delete-lock", "Default", ok=False),
        8,
        "may not remove the lock of vault 'Default': it has a governance-mode lock",
    )

    named = {"Statement": [{"Effect": "Allow", "Principal": {"AWS": root(cli)}, "Action": "backup:*"}]}
    (tmp_path / "named.json").write_text(json.dumps(named))
    cli.run("vaults", "put-access-policy", "Default", "--file", str(tmp_path / "named.json"))
    cli.run("vaults", "delete-lock", "Default")
    assert cli.json("vaults", "describe", "Default")["lock_state"] == "UNLOCKED"

    assert_one_line_error(
        cli.run("vaults", "put-lock", "Default", "--changeable-for-days", "2", ok=False),
        2,
        "vault lock changeable_for_days: must be a whole number of days from 3 to 36500, not 2",
    )
    lock = cli.json("vaults", "put-lock", "Default", "--max-retention-days", "30", "--changeable-for-days", "3")
    described = cli.json("vaults", "describe", "Default")
    assert (described["lock_mode"], described["lock_state"]) == ("compliance", "COMPLIANCE_COOLING_OFF")
    assert described["lock_date"] == lock["lock_date"] is not None
    assert_one_line_error(
        cli.run("recovery-points", "delete", arn, ok=False), 8, "compliance-mode lock", "until " + lock["lock_date"]
    )


def test_access_policy_commands_and_the_default_destination_policy(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text(
        json.dumps({"Statement": [{"Effect": "allow", "Principal": "*", "Action": "backup:*"}]})
    )
    assert_one_line_error(
        cli.run("vaults", "put-access-policy", "Default", "--file", str(tmp_path / "bad.json"), ok=False),
        2,
        "bad.json Statement[0].Effect: must be Allow or Deny",
    )
    assert_one_line_error(
        cli.run("vaults", "put-access-policy", "Default", ok=False),
        2,
        "give either --file POLICY.json or --default-destination",
    )
    assert_one_line_error(cli.run("vaults", "delete", "Default", ok=False), 2, "the Default vault cannot be deleted")
    assert cli.json("vaults", "get-access-policy", "Default")["policy"] is None
    arn, doomed = backup(cli, 10), backup(cli, 10)
    assert cli.run("recovery-points", "delete", doomed).stdout.strip() == f"Deleted recovery point {doomed}"
    gone = cli.json("recovery-points", "describe", "--recovery-point", doomed)
    assert (gone["status"], gone["status_message"]) == ("DELETED", f"deleted by {root(cli)}")

    put = cli.json(
        "vaults",
        "put-access-policy",
        "Default",
        "--default-destination",
        "--source-account-id",
        SOURCE,
        "--source-vault-arn",
        SOURCE_VAULT,
    )
    assert [s["Sid"] for s in put["policy"]["Statement"]] == [
        "AllowSourceAccountCopyIn",
        "DenyBackupVaultAccess",
        "DenyBackupCopyExceptToSourceAccount",
    ]
    assert cli.json("vaults", "get-access-policy", "Default") == put
    denied = "denied by statement 'DenyBackupVaultAccess' of the vault's access policy"
    assert_one_line_error(cli.run("recovery-points", "delete", arn, ok=False), 8, denied)
    assert_one_line_error(cli.run("vaults", "delete-access-policy", "Default", ok=False), 8, denied)
    assert_one_line_error(
        cli.run(
            "vaults",
            "put-access-policy",
            "Default",
            "--default-destination",
            "--source-account-id",
            SOURCE,
            "--admin",
            root(cli),
            ok=False,
        ),
        8,
        denied,
    )
    assert cli.json("recovery-points", "describe", "--recovery-point", arn)["status"] == "COMPLETED"


def test_restore_is_start_restore_job_and_the_policy_can_deny_it(cli: Cli, tmp_path: Path) -> None:
    arn = backup(cli, 10)
    deny = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "NoRestores",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "backup:StartRestoreJob",
                "Resource": "*",
            }
        ],
    }
    (tmp_path / "deny.json").write_text(json.dumps(deny))
    cli.run("vaults", "put-access-policy", "Default", "--file", str(tmp_path / "deny.json"))
    refused = cli.run(
        "restore", "start", "--recovery-point", arn, "--target", str(tmp_path / "out"), "--wait", ok=False
    )
    assert_one_line_error(refused, 8, "StartRestoreJob", "NoRestores")
    assert not (tmp_path / "out").exists()
    assert not [j for j in cli.json("jobs", "list")["jobs"] if j["job_type"] == "RESTORE"]
    cli.run("vaults", "delete-access-policy", "Default")
    cli.run("restore", "start", "--recovery-point", arn, "--target", str(tmp_path / "out"), "--wait")
    assert (tmp_path / "out" / "patients.csv").read_text() == "id,name\n1,Ada\n"
