"""Frameworks and report plans in the account configuration: the blueprint's shapes load, bad ones are refused
with one located line each (docs/compliance.md, docs/configuration.md)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from strongroom.config.loader import load_config
from strongroom.config.variables import AccountIdentity
from strongroom.errors import ConfigError
from strongroom.policy import controls as audit

ACCOUNT = AccountIdentity("111111111111", "local", frozenset({"Default"}))
PLAN = """
vaults:
  main:
    lock: {min_retention_days: 21, max_retention_days: 90, changeable_for_days: 3}
resources:
  db: {type: directory, settings: {path: /tmp}, tags: {BackupSource: "True"}}
backup_plans:
  mavis-postgres:
    selection_tag: BackupSource
    compliance_resource_types: [directory]
    create_framework: true
    rules:
      - {name: daily, schedule: "cron(0 7 * * ? *)", target_vault_name: main, lifecycle: {delete_after: 30}}
"""


def load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "account.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return load_config(path, identity=ACCOUNT)


def refusal(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, text)
    return raised.value.one_line()


def test_create_framework_makes_the_blueprints_framework_for_the_plan(tmp_path: Path) -> None:
    loaded = load(tmp_path, PLAN)
    [framework] = loaded.frameworks.values()
    assert framework.name == "mavis_postgres_framework"  # dashes become underscores, as the blueprint does
    by_name = {c.name: c for c in framework.controls}
    assert list(by_name) == [
        audit.POINT_ENCRYPTED,
        audit.POINT_MIN_RETENTION,
        audit.PLAN_FREQUENCY_AND_RETENTION,
        audit.PROTECTED_BY_PLAN,
        audit.LAST_RECOVERY_POINT,
    ]
    # requiredRetentionDays is the target vault lock's minimum (the blueprint's vault_lock_min_retention_days)
    assert by_name[audit.POINT_MIN_RETENTION].parameters == {"requiredRetentionDays": "21"}
    assert by_name[audit.PLAN_FREQUENCY_AND_RETENTION].parameters == {
        "requiredFrequencyUnit": "days",
        "requiredRetentionDays": "21",
        "requiredFrequencyValue": "1",
    }
    assert by_name[audit.PLAN_FREQUENCY_AND_RETENTION].scope.resource_ids == ("mavis-postgres",)
    protected = by_name[audit.PROTECTED_BY_PLAN].scope
    assert protected.resource_types == ("directory",) and protected.tags == (("BackupSource", "True"),)
    assert by_name[audit.LAST_RECOVERY_POINT].parameters == {
        "recoveryPointAgeUnit": "days",
        "recoveryPointAgeValue": "1",
    }
    assert loaded.stored_frameworks()["mavis_postgres_framework"]["controls"][3]["scope"] == protected.as_dict()


def test_a_framework_and_report_plans_in_the_terraform_shape_load(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        PLAN
        + """
frameworks:
  audit:
    description: every control
    controls:
      - name: BACKUP_RECOVERY_POINT_MANUAL_DELETION_DISABLED
        input_parameter: [{name: principalArnList, value: "arn:strongroom:iam::111111111111:root"}]
      - name: BACKUP_LAST_RECOVERY_POINT_CREATED
        input_parameters: {recoveryPointAgeUnit: hours, recoveryPointAgeValue: 12}
        scope: {compliance_resource_ids: [db], tags: {BackupSource: "True"}}
report_plans:
  resource_compliance:
    report_delivery_channel: {formats: [JSON], s3_bucket_name: mavis-reports, s3_key_prefix: resource_compliance}
    report_setting:
      report_template: RESOURCE_COMPLIANCE_REPORT
      framework_arns: [audit, "arn:strongroom:backup:local:111111111111:framework:mavis_postgres_framework"]
      number_of_frameworks: 2
""",
    )
    audit_framework = loaded.frameworks["audit"]
    assert audit_framework.controls[0].listed("principalArnList") == ["arn:strongroom:iam::111111111111:root"]
    assert audit_framework.controls[1].number("recoveryPointAgeValue") == 12
    channel = loaded.report_plans["resource_compliance"]["report_delivery_channel"]
    assert channel["s3_bucket_name"] == "mavis-reports" and channel["formats"] == ["JSON"]
    assert loaded.report_plans["resource_compliance"]["schedule"] == "cron(0 1 * * ? *)"


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        (
            "frameworks: {f: {controls: [{name: BACKUP_EVERYTHING_FINE}]}}",
            ":13: frameworks.f.controls[0].name: unknown control 'BACKUP_EVERYTHING_FINE'; known: BACKUP_RESOURCES",
        ),
        (
            "frameworks: {f: {controls: [{name: BACKUP_LAST_RECOVERY_POINT_CREATED,"
            " input_parameters: {recoveryPointAgeUnit: weeks}}]}}",
            "frameworks.f.controls[0].input_parameters: BACKUP_LAST_RECOVERY_POINT_CREATED input parameter"
            " recoveryPointAgeUnit = 'weeks' must be one of hours, days",
        ),
        (
            "frameworks: {f: {controls: [{name: BACKUP_RECOVERY_POINT_ENCRYPTED, input_parameters: {kmsKey: x}}]}}",
            "BACKUP_RECOVERY_POINT_ENCRYPTED has no input parameter 'kmsKey' (its parameters: none)",
        ),
        (
            "frameworks: {f: {controls: [{name: BACKUP_RECOVERY_POINT_MINIMUM_RETENTION_CHECK,"
            " input_parameters: {requiredRetentionDays: 0}}]}}",
            "requiredRetentionDays = '0' must be a whole number from 1 to 36500",
        ),
        (
            "frameworks: {f: {controls: [{name: BACKUP_RESOURCES_PROTECTED_BY_CROSS_ACCOUNT,"
            " input_parameters: {crossAccountList: '1234'}}]}}",
            "'1234' is not a 12-digit account id",
        ),
        (
            "frameworks: {f: {controls: [{name: BACKUP_RESOURCES_PROTECTED_BY_BACKUP_PLAN,"
            " scope: {compliance_resource_types: [Aurora]}}]}}",
            "frameworks.f.controls[0].scope.compliance_resource_types[0]: unknown resource type 'Aurora'",
        ),
        (
            "frameworks: {f: {controls: [{name: BACKUP_RECOVERY_POINT_ENCRYPTED},"
            " {name: BACKUP_RECOVERY_POINT_ENCRYPTED}]}}",
            "control BACKUP_RECOVERY_POINT_ENCRYPTED appears more than once",
        ),
        ("frameworks: {f: {controls: []}}", "frameworks.f.controls: List should have at least 1 item"),
        ("frameworks: {bad-name: {controls: [{name: BACKUP_RECOVERY_POINT_ENCRYPTED}]}}", "not a valid framework name"),
        (
            "frameworks: {mavis_postgres_framework: {controls: [{name: BACKUP_RECOVERY_POINT_ENCRYPTED}]}}",
            "backup_plans.mavis-postgres.create_framework: a framework 'mavis_postgres_framework' is also declared",
        ),
        (
            "report_plans: {r: {report_delivery_channel: {formats: [XML], store: 'file:///tmp/r'},"
            " report_setting: {report_template: BACKUP_JOB_REPORT}}}",
            "report_plans.r.report_delivery_channel.formats[0]: Input should be 'CSV' or 'JSON'",
        ),
        (
            "report_plans: {r: {report_delivery_channel: {formats: [CSV]},"
            " report_setting: {report_template: BACKUP_JOB_REPORT}}}",
            "give exactly one of s3_bucket_name (with s3_key_prefix) or store",
        ),
        (
            "report_plans: {r: {report_delivery_channel: {store: 'file:///tmp/r'},"
            " report_setting: {report_template: RESOURCE_COMPLIANCE_REPORT, framework_arns: [nope]}}}",
            "report_plans.r.report_setting.framework_arns[0]: no framework 'nope' is declared",
        ),
        (
            "report_plans: {r: {report_delivery_channel: {store: 'file:///tmp/r'},"
            " report_setting: {report_template: BACKUP_JOB_REPORT, framework_arns: [mavis_postgres_framework]}}}",
            "BACKUP_JOB_REPORT takes no frameworks",
        ),
        (
            "report_plans: {r: {report_delivery_channel: {store: 'file:///tmp/r'},"
            " report_setting: {report_template: CONTROL_COMPLIANCE_REPORT, number_of_frameworks: 3}}}",
            "report_plans.r.report_setting.number_of_frameworks: is 3 but framework_arns lists 0",
        ),
        (
            "report_plans: {r: {report_delivery_channel: {store: 's3://user:secret@bucket/p'},"
            " report_setting: {report_template: BACKUP_JOB_REPORT}}}",
            "report_plans.r.report_delivery_channel.store:",
        ),
    ],
)
def test_bad_frameworks_and_report_plans_are_refused_with_a_located_line(
    tmp_path: Path, snippet: str, expected: str
) -> None:
    message = refusal(tmp_path, PLAN + snippet + "\n")
    assert expected in message, message
    assert "\n" not in message and "secret" not in message
