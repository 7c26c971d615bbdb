"""The plan as a pure comparison: what is created, adopted, changed, left alone and destroyed."""

from __future__ import annotations

from pathlib import Path

from strongroom.config.changes import CurrentState, compute_changes
from strongroom.model import LockMode, Resource, VaultLockRecord, VaultRecord
from tests.unit.test_config_loader import load, write

CONFIG = """
variables:
  token: {{type: string, sensitive: true, default: "hunter2-secret"}}
vaults:
  archive:
    lock: {{min_retention_days: 7}}
resources:
  files:
    type: directory
    settings: {{path: "{root}"}}
    tags: {{BackupSource: "True", token: "${{var.token}}"}}
outputs:
  arn: {{value: "${{vault.archive.arn}}"}}
  secret: {{value: "x", sensitive: true}}
"""


def vault(name: str, *, managed: bool, lock: dict | None = None) -> VaultRecord:
    return VaultRecord(
        name,
        f"arn:strongroom:backup:local:111111111111:backup-vault:{name}",
        "file:///x",
        "id",
        "2024-01-01T00:00:00+00:00",
        lock=VaultLockRecord(**{"mode": LockMode.GOVERNANCE, "created_at": "x", **lock}) if lock else None,
        managed=managed,
    )


def resource(resource_id: str, path: Path, *, managed: bool, tags: dict | None = None) -> Resource:
    return Resource(
        resource_id, "directory", {"path": str(path)}, tags or {}, "2024-01-01T00:00:00+00:00", managed=managed
    )


def summary(changes: list) -> list[tuple[str, str, str]]:  # type: ignore[type-arg]
    return [(c.action, c.kind, c.name) for c in changes]


def test_everything_new_is_created_in_apply_order(tmp_path: Path) -> None:
    loaded = load(write(tmp_path, CONFIG.format(root=tmp_path)))
    assert summary(compute_changes(loaded, CurrentState())) == [
        ("create", "vault", "archive"),
        ("create", "vault_lock", "archive"),
        ("create", "resource", "files"),
        ("create", "output", "arn"),
        ("create", "output", "secret"),
    ]


def test_hand_made_objects_are_adopted_and_only_managed_ones_destroyed(tmp_path: Path) -> None:
    loaded = load(write(tmp_path, CONFIG.format(root=tmp_path)))
    current = CurrentState(
        vaults={
            "archive": vault("archive", managed=False, lock={"min_retention_days": 7}),
            "old": vault("old", managed=True),
            "by-hand": vault("by-hand", managed=False),
        },
        resources={
            "files": resource(
                "files", tmp_path, managed=False, tags={"BackupSource": "True", "token": "hunter2-secret"}
            ),
            "gone": resource("gone", tmp_path, managed=True),
            "mine": resource("mine", tmp_path, managed=False),
        },
        outputs={
            "arn": {"value": loaded.outputs["arn"]["value"], "description": "", "sensitive": False},
            "secret": {"value": "x", "description": "", "sensitive": True},
        },
    )
    changes = compute_changes(loaded, current)
    assert summary(changes) == [
        ("update", "vault", "archive"),
        ("update", "resource", "files"),
        ("delete", "resource", "gone"),
        ("delete", "vault", "old"),
    ]
    assert changes[0].details == ("adopt: made by hand, managed by this configuration from now on",)


def test_a_second_plan_against_the_applied_state_is_empty(tmp_path: Path) -> None:
    loaded = load(write(tmp_path, CONFIG.format(root=tmp_path)))
    current = CurrentState(
        vaults={"archive": vault("archive", managed=True, lock={"min_retention_days": 7, "created_at": "x"})},
        resources={
            "files": resource("files", tmp_path, managed=True, tags={"BackupSource": "True", "token": "hunter2-secret"})
        },
        outputs=loaded.outputs,
    )
    assert compute_changes(loaded, current) == []


def test_changes_name_the_fields_and_hide_sensitive_values(tmp_path: Path) -> None:
    loaded = load(write(tmp_path, CONFIG.format(root=tmp_path)))
    current = CurrentState(
        vaults={"archive": vault("archive", managed=True, lock={"min_retention_days": 30})},
        resources={"files": resource("files", tmp_path, managed=True, tags={"BackupSource": "False"})},
        outputs={"secret": {"value": "old", "description": "", "sensitive": True}},
    )
    changes = {(c.kind, c.name): c for c in compute_changes(loaded, current)}
    assert changes["vault_lock", "archive"].details == ("min_retention_days: 30 -> 7",)
    assert changes["resource", "files"].details == (
        'tags.BackupSource: "False" -> "True"',
        'tags.token: (none) -> "(sensitive)"',
    )
    assert "hunter2-secret" not in str(changes["resource", "files"].as_dict())
    assert changes["output", "secret"].details == ("value changed (sensitive)",)
    assert changes["output", "secret"].after["value"] == "(sensitive)"
