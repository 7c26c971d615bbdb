"""The seed's set-up end to end: two accounts, each behind its own `strongroom serve` on loopback,
bootstrapped in the seed's order from examples/mavis/; a PostgreSQL backup in the source, its copy in
the destination, the source account destroyed, and a restore from the destination alone."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.support.accounts import account_id, issue_credential, register, serving
from tests.support.cli import Cli, assert_one_line_error
from tests.support.pgcluster import PgCluster, sample_database, schema_fingerprint, table_checksums

pytestmark = pytest.mark.postgres

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "mavis"


def test_seed_bootstrap_backup_copy_and_restore_from_the_destination_alone(
    tmp_path: Path, pg_cluster: PgCluster, pg_databases: Callable[..., str]
) -> None:
    source, destination = Cli(tmp_path / "source"), Cli(tmp_path / "destination")
    # Steps 1-2: a state store in each account.
    destination.run("init")
    source.run("init")
    # Step 3: the destination's configuration, given the source account's id; it outputs the vault ARN.
    destination.run(
        "apply",
        "-f",
        str(EXAMPLES / "destination" / "destination.yaml"),
        "--var-file",
        str(EXAMPLES / "destination" / "env" / "production.yaml"),
        "--var",
        f"source_account_id={account_id(source)}",
        "--auto-approve",
    )
    destination_vault = destination.run("output", "destination_vault_arn", "--raw").stdout.strip()
    assert destination_vault.endswith(":backup-vault:mavis-destination")
    assert destination.json("vaults", "describe", "mavis-destination")["lock_mode"] == "compliance"
    # Step 4: the ARN goes into the source's var file.
    database = sample_database(pg_cluster, pg_databases("mavis", create=False), create=True)
    values = yaml.safe_load((EXAMPLES / "source" / "env" / "production.yaml").read_text())
    values.update(
        destination_vault_arn=destination_vault,
        database_dsn=pg_cluster.dsn(database),
        people_notification_url=f"log://{tmp_path}/people.jsonl",
        events_log=f"log://{tmp_path}/events.jsonl",
        reports_store=(tmp_path / "reports").as_uri(),  # the report plans write here
    )
    var_file = tmp_path / "source-production.yaml"
    var_file.write_text(yaml.safe_dump(values))

    with serving(destination) as destination_api, serving(source) as source_api:
        assert destination_api.port != source_api.port
        credential = issue_credential(destination, "source-copier", "--account-id", account_id(source))
        register(source, "destination", destination_api, credential)
        # Step 5: the source's configuration.
        source.run(
            "apply", "-f", str(EXAMPLES / "source" / "source.yaml"), "--var-file", str(var_file), "--auto-approve"
        )
        again = source.run("plan", "-f", str(EXAMPLES / "source" / "source.yaml"), "--var-file", str(var_file))
        assert "No changes" in again.stdout

        backup = source.json(
            "backup", "start", "--resource", "mavis-db", "--vault", "mavis-production", "--delete-after", "60", "--wait"
        )
        assert backup["state"] == "COMPLETED", backup
        job = source.json("copy", "start", "--recovery-point", backup["recovery_point_arn"], "--wait")
        assert job["state"] == "COMPLETED", job
        copied = job["result"]["destination_recovery_point_arn"]
        point = destination.json("recovery-points", "describe", "--recovery-point", copied)
        assert point["lifecycle"]["delete_after_days"] == 60
        assert point["is_locked"]

        # The example's restore testing plan, frameworks and report plans are applied and work as pasted in.
        [tested] = source.json("restore-testing", "start-run", "mavis-restore-testing")["restore_jobs"]
        assert (tested["recovery_point_arn"], tested["status"], tested["validation_status"], tested["cleanup"]) == (
            backup["recovery_point_arn"],
            "SUCCESSFUL",
            "SUCCESSFUL",
            "DONE",
        ), tested
        assert source.json("resources", "describe", "mavis-db")["last_rto"]["measured_by"] == "restore_test"
        frameworks = source.json("frameworks", "list")["frameworks"]
        assert {f["framework_name"] for f in frameworks} == {"mavis_postgres_framework", "mavis_production_audit"}
        plans = source.json("report-plans", "list")["report_plans"]
        assert {p["report_plan_name"] for p in plans} == {
            "backup_jobs",
            "copy_jobs",
            "backup_restore_testing_jobs",
            "resource_compliance",
        }
        report = source.json("reports", "start-job", "backup_restore_testing_jobs")
        assert report["status"] == "COMPLETED", report
        [key] = report["report_destination"]["keys"]
        [row] = json.loads((tmp_path / "reports" / key).read_text())["reportItems"]
        assert (row["restoreJobId"], row["validationStatus"]) == (tested["restore_job_id"], "SUCCESSFUL")

        expected = table_checksums(pg_cluster, database), schema_fingerprint(pg_cluster, database)
        source_api.stop()
        shutil.rmtree(source.home)

    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert {(e["event"], e["state"]) for e in events} >= {
        ("BACKUP_JOB_COMPLETED", "COMPLETED"),
        ("COPY_JOB_SUCCESSFUL", "COMPLETED"),
        ("RESTORE_VALIDATION_COMPLETED", "SUCCESSFUL"),
    }
    assert not (tmp_path / "people.jsonl").exists()  # people hear only of what did not complete

    refused = destination.run("recovery-points", "delete", copied, ok=False)
    assert_one_line_error(refused, 8, "compliance")
    target = pg_databases("mavis_restored", create=False)
    restore = destination.json(
        "restore", "start", "--recovery-point", copied, "--target", pg_cluster.dsn(target), "--wait"
    )
    assert restore["state"] == "COMPLETED", restore
    assert (table_checksums(pg_cluster, target), schema_fingerprint(pg_cluster, target)) == expected
    assert destination.json("verify", "--read-data")["ok"]
