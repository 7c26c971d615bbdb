"""Vault policy and vault lock on real accounts: who may delete, shorten, unlock, and when (time is driven)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from strongroom import model
from strongroom.errors import (
    AccessDeniedError,
    ConfigError,
    NotFoundError,
    RetentionError,
    UsageError,
    VaultLockedError,
)
from strongroom.model import JobState, RecoveryPoint, RecoveryPointStatus
from strongroom.policy.document import default_destination_policy
from strongroom.policy.principals import root_arn, user_arn
from strongroom.services import vault_ops
from strongroom.services.account import DEFAULT_VAULT, Account, create_vault, init_account
from strongroom.services.backup import create_backup_job, run_backup_job
from strongroom.services.resources import add_resource
from strongroom.vault.vault import manifest_key
from tests.support.vaults import FAST_SCRYPT

SOURCE = "222222222222"
OTHER = "333333333333"
COPIER = user_arn(SOURCE, "copier")


class Clock:
    """The time vault_ops sees; tests move it forward."""

    def __init__(self) -> None:
        self.moment = model.now()

    def __call__(self) -> datetime:
        return self.moment

    def advance(self, days: float) -> None:
        self.moment += timedelta(days=days)


@pytest.fixture
def account(tmp_path: Path) -> Iterator[Account]:
    account = init_account(tmp_path / "home", "test-passphrase", scrypt_params=FAST_SCRYPT)
    data = tmp_path / "data"
    data.mkdir()
    (data / "patients.csv").write_text("id,name\n1,Ada\n")
    add_resource(account, "files", "directory", {"path": str(data)}, {})
    yield account
    account.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def root(account: Account) -> str:
    return root_arn(account.account_id)


def admin(account: Account) -> str:
    return user_arn(account.account_id, "admin")


def ops(account: Account) -> str:
    return user_arn(account.account_id, "ops")


def backup(account: Account, days: int | None = None, vault: str = DEFAULT_VAULT) -> RecoveryPoint:
    job, lock = create_backup_job(account, "files", vault, days)
    finished = run_backup_job(account, job.id, lock)
    assert finished.state == JobState.COMPLETED
    return account.catalog.get_recovery_point(finished.recovery_point_arn or "")


def name_admin(account: Account, vault: str = DEFAULT_VAULT) -> None:
    """An access policy whose Allow names the admin user: the one principal that may bypass governance."""
    statement = {"Sid": "Admins", "Effect": "Allow", "Principal": {"AWS": admin(account)}, "Action": "backup:*"}
    vault_ops.put_access_policy(account, root(account), vault, {"Version": "2012-10-17", "Statement": [statement]})


def point(account: Account, rp: RecoveryPoint) -> RecoveryPoint:
    return account.catalog.get_recovery_point(rp.id)


def manifest_exists(account: Account, rp: RecoveryPoint) -> bool:
    return account.vault(rp.vault_name).store.exists(manifest_key(rp.id))


def spare_vault(account: Account, name: str) -> str:
    create_vault(account, name, scrypt_params=FAST_SCRYPT)
    return name


# Retention on backups -------------------------------------------------------------------------------
def test_a_backup_records_its_retention_and_whether_a_lock_governs_it(account: Account) -> None:
    unlocked = backup(account, 10)
    assert unlocked.delete_after_days == 10
    created = datetime.fromisoformat(unlocked.creation_date)
    assert datetime.fromisoformat(unlocked.delete_at or "") == created + timedelta(days=10)
    assert not unlocked.lock_applies
    assert account.catalog.get_job(unlocked.backup_job_id or "").parameters == {"delete_after_days": 10}
    assert backup(account).delete_at is None
    vault_ops.put_vault_lock(account, root(account), DEFAULT_VAULT, min_retention_days=1)
    locked = backup(account, 10)
    assert locked.lock_applies
    assert locked.as_dict()["is_locked"] is True


@pytest.mark.parametrize(
    ("days", "reason"),
    [
        (3, "a retention of 3 days is shorter than the vault lock's minimum retention of 7 days"),
        (31, "a retention of 31 days is longer than the vault lock's maximum retention of 30 days"),
        (
            None,
            "a recovery point without retention (kept forever) breaks the vault lock's maximum retention of 30 days",
        ),
    ],
)
def test_a_retention_outside_the_lock_fails_the_job_before_reading_data(
    account: Account, tmp_path: Path, days: int | None, reason: str
) -> None:
    vault_ops.put_vault_lock(account, root(account), DEFAULT_VAULT, min_retention_days=7, max_retention_days=30)
    shutil.rmtree(tmp_path / "data")  # reading the source would now fail with another error
    job, lock = create_backup_job(account, "files", DEFAULT_VAULT, days)
    with pytest.raises(RetentionError) as caught:
        run_backup_job(account, job.id, lock)
    assert caught.value.message == reason
    failed = account.catalog.get_job(job.id)
    assert failed.state == JobState.FAILED
    assert failed.status_message == f"{reason}. Choose a retention of 7 to 30 days"
    assert failed.recovery_point_arn is None and failed.bytes_processed == 0
    assert account.catalog.list_recovery_points() == []


def test_a_retention_out_of_any_range_is_refused_before_a_job_exists(account: Account) -> None:
    for days in (0, 36501):
        with pytest.raises(UsageError, match=f"a retention of {days} days is out of range"):
            create_backup_job(account, "files", DEFAULT_VAULT, days)
    assert account.catalog.list_jobs() == []


# Governance mode --------------------------------------------------------------------------------------
def test_governance_binds_everyone_but_the_principals_the_policy_names(account: Account) -> None:
    vault_ops.put_vault_lock(account, root(account), DEFAULT_VAULT, min_retention_days=1, max_retention_days=30)
    rp, other = backup(account, 10), backup(account, 10)
    for principal in (root(account), ops(account)):
        with pytest.raises(VaultLockedError, match="protected by the governance-mode lock of vault 'Default'"):
            vault_ops.delete_recovery_point(account, principal, rp.arn)
    with pytest.raises(VaultLockedError, match=r"forbids shortening the retention of .* from 10 days to 5 days"):
        vault_ops.update_recovery_point_lifecycle(account, root(account), rp.arn, 5)
    longer = vault_ops.update_recovery_point_lifecycle(account, root(account), rp.arn, 20)
    assert longer.delete_after_days == 20
    assert datetime.fromisoformat(longer.delete_at or "") == datetime.fromisoformat(rp.creation_date) + timedelta(20)
    with pytest.raises(RetentionError, match="longer than the vault lock's maximum retention of 30 days"):
        vault_ops.update_recovery_point_lifecycle(account, root(account), rp.arn, 40)
    with pytest.raises(VaultLockedError, match="may not remove the lock of vault 'Default': it has a governance"):
        vault_ops.delete_vault_lock(account, root(account), DEFAULT_VAULT)
    with pytest.raises(VaultLockedError, match="may not change the lock of vault 'Default'"):
        vault_ops.put_vault_lock(account, root(account), DEFAULT_VAULT, min_retention_days=1, max_retention_days=90)

    name_admin(account)
    assert vault_ops.update_recovery_point_lifecycle(account, admin(account), rp.arn, 2).delete_after_days == 2
    vault_ops.delete_recovery_point(account, admin(account), rp.arn)
    assert point(account, rp).status == RecoveryPointStatus.DELETED
    assert point(account, rp).status_message == f"deleted by {admin(account)}"
    assert not manifest_exists(account, rp)
    with pytest.raises(VaultLockedError, match="governance-mode lock"):
        vault_ops.delete_recovery_point(account, root(account), other.arn)
    vault_ops.delete_vault_lock(account, admin(account), DEFAULT_VAULT)
    vault_ops.delete_recovery_point(account, root(account), other.arn)  # no lock any more
    assert point(account, other).status == RecoveryPointStatus.DELETED


def test_a_governance_locked_vault_is_deleted_only_by_a_named_principal(account: Account) -> None:
    name = spare_vault(account, "Governed")
    vault_ops.put_vault_lock(account, root(account), name, max_retention_days=30)
    with pytest.raises(VaultLockedError, match="may not delete vault 'Governed': it has a governance-mode lock"):
        vault_ops.delete_vault(account, root(account), name)
    name_admin(account, name)
    vault_ops.delete_vault(account, admin(account), name)
    with pytest.raises(NotFoundError):
        account.catalog.get_vault(name)


# Compliance mode --------------------------------------------------------------------------------------
def test_compliance_is_changeable_while_cooling_off_and_immutable_after(account: Account, clock: Clock) -> None:
    name = spare_vault(account, "Destination")
    name_admin(account, name)
    lock = {"min_retention_days": 1, "max_retention_days": 30, "changeable_for_days": 3}
    vault_ops.put_vault_lock(account, root(account), name, **lock, clock=clock)
    rp = backup(account, 10, name)
    for principal in (root(account), admin(account)):  # nobody bypasses compliance, even while cooling off
        with pytest.raises(VaultLockedError, match="compliance-mode lock") as caught:
            vault_ops.delete_recovery_point(account, principal, rp.arn, clock=clock)
        assert "the lock itself can still be removed" in caught.value.one_line()
        with pytest.raises(VaultLockedError, match="forbids shortening"):
            vault_ops.update_recovery_point_lifecycle(account, principal, rp.arn, 9, clock=clock)

    clock.advance(2)  # still cooling off: anyone authorised may change or remove the lock
    vault_ops.put_vault_lock(account, root(account), name, **{**lock, "max_retention_days": 60}, clock=clock)
    vault_ops.delete_vault_lock(account, root(account), name, clock=clock)
    vault_ops.put_vault_lock(account, root(account), name, **lock, clock=clock)
    clock.advance(3)  # the new lock's date has come
    for principal in (root(account), admin(account)):
        with pytest.raises(
            VaultLockedError,
            match="nobody can remove the lock of vault 'Destination': its compliance-mode lock is immutable since",
        ):
            vault_ops.delete_vault_lock(account, principal, name, clock=clock)
        with pytest.raises(VaultLockedError, match="nobody can change the lock"):  # not even to tighten it
            vault_ops.put_vault_lock(
                account,
                principal,
                name,
                min_retention_days=5,
                max_retention_days=20,
                changeable_for_days=3,
                clock=clock,
            )
        with pytest.raises(VaultLockedError, match="nobody can delete vault 'Destination'"):
            vault_ops.delete_vault(account, principal, name, clock=clock)
        with pytest.raises(VaultLockedError, match="compliance-mode lock"):
            vault_ops.delete_recovery_point(account, principal, rp.arn, clock=clock)
    assert vault_ops.update_recovery_point_lifecycle(account, root(account), rp.arn, 12, clock=clock).delete_after_days
    with pytest.raises(RetentionError, match="longer than the vault lock's maximum retention of 30 days"):
        vault_ops.update_recovery_point_lifecycle(account, root(account), rp.arn, 31, clock=clock)

    clock.advance(9)  # 14 days after the backup: its 12-day retention has ended
    vault_ops.delete_recovery_point(account, root(account), rp.arn, clock=clock)
    assert point(account, rp).status == RecoveryPointStatus.DELETED
    assert vault_ops.lock_of(account.catalog.get_vault(name)) is not None


def test_points_stored_before_the_lock_are_not_governed(account: Account, clock: Clock) -> None:
    earlier, kept = backup(account), backup(account, 30)
    vault_ops.put_vault_lock(
        account,
        root(account),
        DEFAULT_VAULT,
        min_retention_days=7,
        max_retention_days=30,
        changeable_for_days=3,
        clock=clock,
    )
    clock.advance(4)
    assert vault_ops.update_recovery_point_lifecycle(account, root(account), kept.arn, 1, clock=clock).delete_at
    vault_ops.delete_recovery_point(account, root(account), earlier.arn, clock=clock)
    assert point(account, earlier).status == RecoveryPointStatus.DELETED


# Policy -----------------------------------------------------------------------------------------------
def test_another_account_copies_in_but_destroys_nothing(account: Account) -> None:
    document = default_destination_policy(
        source_account_ids=[SOURCE],
        source_vault_arns=[f"arn:strongroom:backup:local:{SOURCE}:backup-vault:Default"],
        admin_principal_arns=[admin(account)],
    )
    vault_ops.put_access_policy(account, root(account), DEFAULT_VAULT, document)
    rp = backup(account, 10)
    assert vault_ops.describe_vault(account, COPIER, DEFAULT_VAULT)["backup_vault_name"] == DEFAULT_VAULT
    assert vault_ops.get_recovery_point(account, COPIER, rp.arn).id == rp.id
    attempts: list[tuple[str, Any]] = [
        ("DeleteRecoveryPoint", lambda who: vault_ops.delete_recovery_point(account, who, rp.arn)),
        (
            "UpdateRecoveryPointLifecycle",
            lambda who: vault_ops.update_recovery_point_lifecycle(account, who, rp.arn, 1),
        ),
        ("PutBackupVaultAccessPolicy", lambda who: vault_ops.put_access_policy(account, who, DEFAULT_VAULT, None)),
        (
            "PutBackupVaultLockConfiguration",
            lambda who: vault_ops.put_vault_lock(account, who, DEFAULT_VAULT, max_retention_days=1),
        ),
        ("DeleteBackupVault", lambda who: vault_ops.delete_vault(account, who, DEFAULT_VAULT)),
    ]
    for action, attempt in attempts:
        for principal in (COPIER, root_arn(SOURCE), root(account), ops(account)):
            with pytest.raises(AccessDeniedError, match=f"may not backup:{action} .*'DenyBackupVaultAccess'"):
                attempt(principal)
    # The source may list the points (to choose one to copy back in a disaster); nobody else may.
    assert [p.id for p in vault_ops.list_recovery_points(account, COPIER, DEFAULT_VAULT)] == [rp.id]
    with pytest.raises(AccessDeniedError, match="no statement of the vault's access policy allows it"):
        vault_ops.list_recovery_points(account, user_arn(OTHER, "x"), DEFAULT_VAULT)
    with pytest.raises(AccessDeniedError, match="principals of account 333333333333 need an explicit Allow"):
        vault_ops.describe_vault(account, user_arn(OTHER, "x"), DEFAULT_VAULT)
    assert point(account, rp).status == RecoveryPointStatus.COMPLETED and manifest_exists(account, rp)
    assert point(account, rp).delete_after_days == 10
    assert vault_ops.get_access_policy(account, root(account), DEFAULT_VAULT) == document
    vault_ops.delete_recovery_point(account, admin(account), rp.arn)
    assert point(account, rp).status == RecoveryPointStatus.DELETED


def test_removing_a_policy_needs_permission_to_delete_it_too(account: Account) -> None:
    deny = {"Sid": "KeepMe", "Effect": "Deny", "Principal": "*", "Action": "backup:DeleteBackupVaultAccessPolicy"}
    vault_ops.put_access_policy(account, root(account), DEFAULT_VAULT, {"Statement": [deny]})
    with pytest.raises(AccessDeniedError, match="denied by statement 'KeepMe'"):
        vault_ops.put_access_policy(account, root(account), DEFAULT_VAULT, None)
    with pytest.raises(ConfigError, match=r"access policy of vault 'Default' Statement\[0\]\.Effect"):
        vault_ops.put_access_policy(account, root(account), DEFAULT_VAULT, {"Statement": [{**deny, "Effect": "No"}]})


# Vault deletion and description ----------------------------------------------------------------------
def test_only_an_empty_vault_can_be_deleted(account: Account) -> None:
    with pytest.raises(UsageError, match="the Default vault cannot be deleted"):
        vault_ops.delete_vault(account, root(account), DEFAULT_VAULT)
    used = spare_vault(account, "Used")
    rp = backup(account, None, used)
    with pytest.raises(UsageError, match="vault 'Used' still holds 1 recovery points"):
        vault_ops.delete_vault(account, root(account), used)
    vault_ops.delete_recovery_point(account, root(account), rp.arn)
    vault_ops.delete_vault(account, root(account), used)
    empty = spare_vault(account, "Empty")
    vault_ops.delete_vault(account, root(account), empty)
    assert [v.name for v in account.catalog.list_vaults()] == [DEFAULT_VAULT]
    assert not (account.home / "vaults" / "Empty").exists()
    assert spare_vault(account, "Used") == "Used"  # the name is free again


def test_describe_shows_the_lock_state_and_its_deadline(account: Account, clock: Clock) -> None:
    def describe() -> dict[str, Any]:
        return vault_ops.describe_vault(account, root(account), DEFAULT_VAULT, clock=clock)

    assert {k: describe()[k] for k in ("locked", "lock_mode", "lock_state", "lock_date")} == {
        "locked": False,
        "lock_mode": None,
        "lock_state": "UNLOCKED",
        "lock_date": None,
    }
    vault_ops.put_vault_lock(account, root(account), DEFAULT_VAULT, min_retention_days=7, clock=clock)
    assert describe()["lock_state"] == "GOVERNANCE" and describe()["min_retention_days"] == 7
    name_admin(account)  # governance: only a named principal may turn it into compliance
    vault_ops.put_vault_lock(
        account,
        admin(account),
        DEFAULT_VAULT,
        min_retention_days=7,
        max_retention_days=60,
        changeable_for_days=3,
        clock=clock,
    )
    described = describe()
    assert (described["locked"], described["lock_mode"], described["lock_state"]) == (
        True,
        "compliance",
        "COMPLIANCE_COOLING_OFF",
    )
    assert described["lock_date"] == model.iso(clock() + timedelta(days=3))
    assert (described["min_retention_days"], described["max_retention_days"]) == (7, 60)
    clock.advance(3)
    assert describe()["lock_state"] == "COMPLIANCE_IMMUTABLE"
