"""The account configuration file: every problem is one located line (file:line: field path: message)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from strongroom.config.loader import LoadedConfig, load_config
from strongroom.config.variables import AccountIdentity
from strongroom.errors import ConfigError

ACCOUNT = AccountIdentity("111111111111", "local", frozenset({"Default"}))


def write(directory: Path, text: str, name: str = "account.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def load(path: Path, *cli_vars: str, var_files: tuple[Path, ...] = ()) -> LoadedConfig:
    return load_config(path, identity=ACCOUNT, cli_vars=cli_vars, var_files=var_files)


def error_of(path: Path, *cli_vars: str, var_files: tuple[Path, ...] = ()) -> str:
    with pytest.raises(ConfigError) as raised:
        load(path, *cli_vars, var_files=var_files)
    return raised.value.one_line()


def test_an_empty_file_is_an_empty_configuration(tmp_path: Path) -> None:
    loaded = load(write(tmp_path, ""))
    assert loaded.config.vaults == {} and loaded.outputs == {}


def test_unknown_field_names_file_line_and_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        vaults:
          archive:
            lock:
              min_retention_days: 7
              min_retention: 9
    """,
    )
    assert error_of(path) == f"{path}:5: vaults.archive.lock.min_retention: Extra inputs are not permitted"


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, "vaults: {}\nvault:\n  x: {}\n")
    assert error_of(path) == f"{path}:2: vault: Extra inputs are not permitted"


def test_bad_type_names_the_line_of_the_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        vaults:
          archive:
            lock:
              min_retention_days: seven
    """,
    )
    assert error_of(path).startswith(
        f"{path}:4: vaults.archive.lock.min_retention_days: Input should be a valid integer"
    )


def test_every_problem_is_reported_on_one_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        vaults:
          archive:
            lock: {min_retention_days: x}
        resources:
          db: {settings: {}}
    """,
    )
    message = error_of(path)
    assert "\n" not in message
    assert f"{path}:3: vaults.archive.lock.min_retention_days" in message
    assert f"{path}:5: resources.db.type: Field required" in message


def test_yaml_syntax_error_is_one_line_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "vaults:\n  archive:\n    lock: [1, 2\nresources: {}\n")
    message = error_of(path)
    assert message.startswith(f"{path}:4: YAML syntax error:"), message
    assert "\n" not in message


def test_duplicate_key_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "vaults:\n  a1: {}\n  a1: {}\n")
    assert error_of(path) == f"{path}:3: vaults.a1: duplicate key"


def test_missing_file(tmp_path: Path) -> None:
    assert error_of(tmp_path / "nope.yaml").startswith(f"{tmp_path / 'nope.yaml'}: no such file")


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert error_of(write(tmp_path, "- a\n- b\n")).endswith(
        "is a mapping with keys such as vaults, resources and backup_plans"
    )


def test_a_boolean_where_a_string_belongs_says_to_quote_it(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        resources:
          files:
            type: directory
            settings: {path: /}
            tags:
              BackupSource: True
    """,
    )
    assert error_of(path) == (
        f"{path}:6: resources.files.tags.BackupSource: Input should be a valid string (YAML"
        ' reads True as a boolean; quote it: "True")'
    )


def test_invalid_names_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "vaults:\n  'bad name': {}\n")
    assert (
        error_of(path) == f"{path}:2: vaults.bad name: 'bad name' is not a valid vault name (2-50 letters,"
        " digits, _ and -)"
    )


def test_resource_settings_are_checked_by_the_adapter(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        resources:
          files:
            type: directory
            settings:
              path: {tmp_path}/missing
          other:
            type: oracle
    """,
    )
    message = error_of(path)
    assert f"{path}:4: resources.files.settings: directory path {tmp_path}/missing does not exist" in message
    assert f"{path}:7: resources.other.type: unknown resource type 'oracle'" in message


def test_resource_settings_are_normalised(tmp_path: Path) -> None:
    path = write(tmp_path, f"resources:\n  files:\n    type: directory\n    settings: {{path: '{tmp_path}/'}}\n")
    loaded = load(path)
    assert loaded.resource_settings["files"] == {"path": str(tmp_path)}


def test_a_postgres_dsn_is_checked_without_connecting(tmp_path: Path) -> None:
    ok = load(
        write(
            tmp_path,
            "resources:\n  db:\n    type: postgres\n    settings: {dsn: 'postgresql://u@nowhere.invalid/db'}\n",
        )
    )
    assert ok.resource_settings["db"] == {"dsn": "postgresql://u@nowhere.invalid/db"}
    path = write(tmp_path, "resources:\n  db:\n    type: postgres\n    settings: {dsn: 'postgresql://u:secret@h/db'}\n")
    assert f"{path}:4: resources.db.settings: 'dsn' contains a password" in error_of(path)


# Vault access policies and locks ---------------------------------------------------------------
def test_policy_document_errors_point_at_the_statement_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        vaults:
          archive:
            access_policy:
              Version: "2012-10-17"
              Statement:
                - Sid: One
                  Effect: Allow
                  Principal: "*"
                  Action: backup:CopyIntoBackupVault
                - Sid: Two
                  Effect: Maybe
                  Principal: "*"
                  Action: backup:DeleteRecoveryPoint
    """,
    )
    message = error_of(path)
    assert message.startswith(f"{path}:11: vaults.archive.access_policy Statement[1].Effect: must be Allow or Deny")


def test_default_destination_policy_is_built_and_validated(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        vaults:
          copies:
            access_policy:
              default_destination:
                source_account_ids: ["222222222222"]
                admin_principals: ["arn:strongroom:iam::${account.id}:root"]
    """,
    )
    document = load(path).policies["copies"]
    assert document is not None
    assert {s["Sid"] for s in document["Statement"]} >= {"AllowSourceAccountCopyIn", "DenyBackupVaultAccess"}
    bad = write(
        tmp_path,
        """
        vaults:
          copies:
            access_policy:
              default_destination:
                source_account_ids: ["2222"]
                admin_principals: ["root"]
    """,
        "bad.yaml",
    )
    message = error_of(bad)
    assert (
        f"{bad}:5: vaults.copies.access_policy.default_destination.source_account_ids[0]: '2222' is not a 12-digit"
        " account id" in message
    )


def test_lock_range_is_checked(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        vaults:
          archive:
            lock:
              min_retention_days: 30
              max_retention_days: 7
          other:
            lock: {changeable_for_days: 1}
    """,
    )
    message = error_of(path)
    assert f"{path}:3: vaults.archive.lock: min_retention_days (30) is greater than max_retention_days (7)" in message
    assert f"{path}:7: vaults.other.lock.changeable_for_days: Input should be greater than or equal to 3" in message


# Backup plans ------------------------------------------------------------------------------------
PLAN = """
vaults:
  archive:
    lock: {{min_retention_days: 7, max_retention_days: 90}}
{destination}
backup_plans:
  daily:
    selection_tag: BackupSource
    rules:
      - name: twice_daily
        schedule: cron(0 7,19 * * ? *)
        lifecycle:
          delete_after: {delete_after}
{cold}
        copy_action:
          delete_after: 60
"""
DESTINATION = "destination:\n  vault_arn: arn:strongroom:backup:local:222222222222:backup-vault:copies"


def test_backup_plan_in_the_blueprint_shape(tmp_path: Path) -> None:
    path = write(tmp_path, PLAN.format(destination=DESTINATION, delete_after=60, cold=""))
    plan = load(path).stored_backup_plans()["daily"]
    assert plan["selection_tag_value"] == "True" and plan["enable"] is True
    rule = plan["rules"][0]
    assert rule["target_vault_name"] == "archive"  # the config's only vault
    assert rule["lifecycle"] == {"delete_after": 60, "cold_storage_after": None}
    assert rule["copy_action"] == {"delete_after": 60}
    assert (rule["start_window"], rule["completion_window"]) == (60, 7 * 24 * 60)


def test_cold_storage_after_is_refused_not_dropped(tmp_path: Path) -> None:
    path = write(
        tmp_path, PLAN.format(destination=DESTINATION, delete_after=60, cold="          cold_storage_after: 30")
    )
    assert error_of(path) == (
        f"{path}:14: backup_plans.daily.rules[0].lifecycle.cold_storage_after: rule 'twice_daily':"
        " cold_storage_after is not supported yet (Strongroom has no colder storage tier); remove it"
        " (lifecycle.delete_after still sets how long points are kept)"
    )


def test_recovery_point_tags_are_bounded(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        PLAN.format(destination=DESTINATION, delete_after=60, cold="        recovery_point_tags: {'aws:owner': x}"),
    )
    assert "rule 'twice_daily': tag key 'aws:owner' must be 1 to 128 characters" in error_of(path)


def test_copy_action_needs_a_destination(tmp_path: Path) -> None:
    path = write(tmp_path, PLAN.format(destination="", delete_after=60, cold=""))
    assert error_of(path).startswith(
        f"{path}:14: backup_plans.daily.rules[0].copy_action: copy_action copies to the"
        " account's destination vault, but no destination is configured"
    )


def test_rule_retention_outside_the_target_vault_lock(tmp_path: Path) -> None:
    path = write(tmp_path, PLAN.format(destination=DESTINATION, delete_after=120, cold=""))
    assert error_of(path).startswith(
        f"{path}:13: backup_plans.daily.rules[0].lifecycle.delete_after: a retention of 120 days is longer than the"
        " vault lock's maximum retention of 90 days. Choose a retention of 7 to 90 days"
    )


def test_bad_schedule_and_short_start_window(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        backup_plans:
          daily:
            selection_tag: BackupSource
            rules:
              - {name: r1, schedule: "every day", start_window: 30}
    """,
    )
    message = error_of(path)
    assert f"{path}:5: backup_plans.daily.rules[0].schedule: 'every day' is not a schedule" in message
    assert f"{path}:5: backup_plans.daily.rules[0].start_window: Input should be greater than or equal to 60" in message


def test_rate_schedules_and_continuous_backup_warn(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        backup_plans:
          daily:
            selection_tag: BackupSource
            rules:
              - {name: r1, schedule: rate(1 hour), enable_continuous_backup: true}
              - {name: r2, schedule: rate(1 hour), enable_continuous_backup: true, lifecycle: {delete_after: 35}}
              - {name: r3, schedule: rate(1 hour), enable_continuous_backup: true, lifecycle: {delete_after: 60}}
    """,
    )
    warnings = load(path).warnings
    assert any("rate() is a Strongroom extension" in w for w in warnings)
    continuous = [w for w in warnings if "enable_continuous_backup" in w]
    assert len(continuous) == 1 and "rules[2]" in continuous[0] and "at most 35 days" in continuous[0]
    assert not any("not supported yet" in w for w in warnings)


def test_the_blueprints_restore_testing_fields_resolve_into_the_selection_or_warn_when_unused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        backup_plans:
          aurora:
            selection_tag: BackupAurora
            selection_tags: [{key: environment, value: production}]
            restore_testing_overrides: '{"port": "5499"}'
            validation_window_hours: 3
          unused:
            selection_tag: Other
            restore_testing_overrides: {no_owners: "true"}
        restore_testing_plans:
          weekly:
            schedule_expression: cron(0 1 ? * SUN *)
            recovery_point_selection: {include_vaults: ["*"]}
            selections:
              aurora:
                protected_resource_type: postgres-cluster
                backup_plan: aurora
    """,
    )
    loaded = load(path)
    [selection] = loaded.stored_restore_testing_plans()["weekly"]["selections"].values()
    assert selection["restore_metadata_overrides"] == {"port": "5499"}
    assert selection["validation_window_hours"] == 3
    assert selection["protected_resource_conditions"]["string_equals"] == [
        {"key": "aws:ResourceTag/BackupAurora", "value": "True"},
        {"key": "aws:ResourceTag/environment", "value": "production"},
    ]
    [warning] = [w for w in loaded.warnings if "restore_testing_overrides" in w]
    assert f"{path}:7: backup_plans.unused:" in warning and "backup_plan: unused" in warning
