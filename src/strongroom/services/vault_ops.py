"""Operations on vaults and recovery points that a vault's access policy and lock govern.

Each operation runs in one order: authorise the principal against the vault's access policy (explicit
Deny wins; other accounts need an explicit Allow), apply the vault lock's rules, then act. The local CLI
calls these as the account's root, the API server as the authenticated principal. The retention rules
themselves are pure, in policy/retention.py; the vault's objects are deleted only through the vault
(``Vault.withdraw_manifest``, ``Vault.destroy_store``). ``clock`` lets tests move time
(docs/access-policy-and-lock.md has the rules as a table).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from strongroom import model
from strongroom.errors import AlreadyExistsError, NotFoundError, UsageError, VaultLockedError
from strongroom.model import RecoveryPoint, RecoveryPointStatus, VaultRecord, iso
from strongroom.policy import retention
from strongroom.policy.document import AccessRequest, PolicyDocument, authorize, explicitly_allows
from strongroom.policy.lock import GOVERNANCE, VaultLock

# Re-exported: backup, copy and the CLI take these from here.
from strongroom.policy.retention import LOCK_FIELDS as LOCK_FIELDS
from strongroom.policy.retention import check_retention_days as check_retention_days
from strongroom.policy.retention import claimed_creation_date as claimed_creation_date
from strongroom.policy.retention import delete_at
from strongroom.services import notifications
from strongroom.services.account import DEFAULT_VAULT, Account
from strongroom.services.account import create_vault as create_account_vault
from strongroom.services.catalog_integrity import check_fresh
from strongroom.services.lifecycle import remove_recovery_point
from strongroom.services.object_lock import retain_live_points
from strongroom.store.base import open_store
from strongroom.vault import Vault

Clock = Callable[[], datetime]
GOVERNANCE_HINT = "Only principals an Allow statement of the vault's access policy names may bypass a governance lock"


# Helpers other services share --------------------------------------------------------------------
def policy_of(record: VaultRecord) -> PolicyDocument | None:
    return PolicyDocument.parse(record.access_policy) if record.access_policy else None


def lock_of(record: VaultRecord) -> VaultLock | None:
    return VaultLock.from_record(record.lock) if record.lock else None


def new_point_retention(record: VaultRecord, arrival_date: str, delete_after_days: int | None) -> dict[str, Any]:
    """Retention fields of a recovery point arriving in ``record``'s vault (policy/retention.py)."""
    return retention.new_point_retention(lock_of(record), arrival_date, delete_after_days)


def retention_ended(rp: RecoveryPoint, now: datetime) -> bool:
    return retention.retention_ended(rp.delete_at, now)


def lock_fields(record: VaultRecord, now: datetime) -> dict[str, Any]:
    """The lock as ``vaults describe`` shows it."""
    return retention.lock_fields(lock_of(record), now)


# Vaults -------------------------------------------------------------------------------------------
VAULT_NAME = re.compile(r"^[A-Za-z0-9_-]{2,50}$")  # as config/schema.py's VaultName


def create_vault(
    account: Account, vault_name: str, *, store_url: str | None = None, locked: bool = False
) -> VaultRecord:
    """Create a vault in ``store_url`` (default: the account home); ``locked``: a lock will follow, so a store
    that cannot hold one (an S3 bucket without Object Lock) is refused before anything is written."""
    if not VAULT_NAME.match(vault_name):
        raise UsageError(f"'{vault_name}' is not a valid vault name", hint="Use 2-50 letters, digits, _ and -")
    if any(record.name == vault_name for record in account.catalog.list_vaults()):
        raise AlreadyExistsError(f"vault '{vault_name}' already exists")
    if locked and store_url is not None:
        open_store(store_url).check_vault_lock_support()
    return create_account_vault(account, vault_name, store_url=store_url)


def describe_vault(
    account: Account, principal_arn: str, vault_name: str, *, clock: Clock = model.now
) -> dict[str, Any]:
    record = account.catalog.get_vault(vault_name)
    _authorize(account, principal_arn, "DescribeBackupVault", record)
    points = account.catalog.list_recovery_points(vault_name=record.name)
    described = record.as_dict()
    described["number_of_recovery_points"] = sum(p.status == RecoveryPointStatus.COMPLETED for p in points)
    described["stored_bytes_added"] = sum(p.new_bytes for p in points)
    described.update(lock_fields(record, clock()))
    return described


def list_recovery_points(account: Account, principal_arn: str, vault_name: str) -> list[RecoveryPoint]:
    record = account.catalog.get_vault(vault_name)
    _authorize(account, principal_arn, "ListRecoveryPointsByBackupVault", record)
    return account.catalog.list_recovery_points(vault_name=record.name)


def get_access_policy(account: Account, principal_arn: str, vault_name: str) -> dict[str, Any] | None:
    record = account.catalog.get_vault(vault_name)
    _authorize(account, principal_arn, "GetBackupVaultAccessPolicy", record)
    return record.access_policy


def put_access_policy(
    account: Account, principal_arn: str, vault_name: str, document: dict[str, Any] | str | None
) -> None:
    """Replace the vault's access policy; None removes it (which needs Put and Delete permission alike)."""
    record = account.catalog.get_vault(vault_name)
    check_policy_change(account, principal_arn, record, removing=document is None)
    if document is None:
        account.catalog.update_vault(record.name, access_policy=None)
        return
    parsed = PolicyDocument.parse(document, where=f"access policy of vault '{record.name}'")
    account.catalog.update_vault(record.name, access_policy=parsed.as_dict())


def check_policy_change(account: Account, principal_arn: str, record: VaultRecord, *, removing: bool) -> None:
    """Raise unless the principal may replace (or, ``removing``, drop) the vault's access policy."""
    _authorize(account, principal_arn, "PutBackupVaultAccessPolicy", record)
    if removing:
        # Removing the policy lifts every Deny in it: whoever may not change the policy may not drop it either.
        _authorize(account, principal_arn, "DeleteBackupVaultAccessPolicy", record)


def put_vault_lock(
    account: Account,
    principal_arn: str,
    vault_name: str,
    *,
    min_retention_days: int | None = None,
    max_retention_days: int | None = None,
    changeable_for_days: int | None = None,
    clock: Clock = model.now,
) -> None:
    """Lock the vault, or change its lock (a new lock's cooling-off period starts now, as in AWS)."""
    record = account.catalog.get_vault(vault_name)
    moment = clock()
    lock = VaultLock(min_retention_days, max_retention_days, changeable_for_days, moment)
    check_lock_change(account, principal_arn, record, removing=False, now=moment)
    account.catalog.update_vault(record.name, lock=lock.record())
    # On S3 the lock is the bucket's Object Lock: the points already there get their retention now.
    retain_live_points(account, record.name)


def check_lock_change(
    account: Account, principal_arn: str, record: VaultRecord, *, removing: bool, now: datetime
) -> None:
    """Raise unless the principal may put (or, ``removing``, remove) the vault's lock now."""
    action = "DeleteBackupVaultLockConfiguration" if removing else "PutBackupVaultLockConfiguration"
    authorized = _authorize(account, principal_arn, action, record)
    existing = lock_of(record)
    if not removing:
        open_store(record.store_url).check_vault_lock_support()  # S3: the bucket's Object Lock is the lock
    if existing is None:
        if removing:
            raise NotFoundError(f"vault '{record.name}' has no lock")
        return
    what = f"{'remove' if removing else 'change'} the lock of vault '{record.name}'"
    _check_lock_change(existing, authorized, now, what)


def delete_vault_lock(account: Account, principal_arn: str, vault_name: str, *, clock: Clock = model.now) -> None:
    record = account.catalog.get_vault(vault_name)
    check_lock_change(account, principal_arn, record, removing=True, now=clock())
    account.catalog.update_vault(record.name, lock=None)


def delete_vault(account: Account, principal_arn: str, vault_name: str, *, clock: Clock = model.now) -> None:
    """Delete an empty vault (no recovery point other than DELETED ones), as AWS's DeleteBackupVault."""
    record = account.catalog.get_vault(vault_name)
    had_points = check_delete_vault(account, principal_arn, record, now=clock())
    _forget_vault(account, record, had_points=had_points)


def check_delete_vault(account: Account, principal_arn: str, record: VaultRecord, *, now: datetime) -> bool:
    """Raise unless the principal may delete the vault now; True when it ever held recovery points."""
    authorized = _authorize(account, principal_arn, "DeleteBackupVault", record)
    if record.name == DEFAULT_VAULT:
        raise UsageError("the Default vault cannot be deleted", hint="Backups go there unless told otherwise")
    lock = lock_of(record)
    if lock:
        _check_lock_change(lock, authorized, now, f"delete vault '{record.name}'")
    points = account.catalog.list_recovery_points(vault_name=record.name)
    remaining = [p for p in points if p.status != RecoveryPointStatus.DELETED]
    if remaining:
        raise UsageError(
            f"vault '{record.name}' still holds {len(remaining)} recovery points",
            hint="Delete them first (as their retention and the vault lock allow); only an empty vault can go",
        )
    return bool(points)


# Recovery points ----------------------------------------------------------------------------------
def get_recovery_point(account: Account, principal_arn: str, arn: str) -> RecoveryPoint:
    rp = account.catalog.get_recovery_point(arn)
    _authorize(account, principal_arn, "GetRecoveryPoint", account.catalog.get_vault(rp.vault_name), rp.arn)
    return rp


def delete_recovery_point(account: Account, principal_arn: str, arn: str, *, clock: Clock = model.now) -> None:
    """Remove a recovery point, unless its vault's lock still protects it."""
    rp = account.catalog.get_recovery_point(arn)
    record = account.catalog.get_vault(rp.vault_name)
    authorized = _authorize(account, principal_arn, "DeleteRecoveryPoint", record, rp.arn)
    if rp.status == RecoveryPointStatus.DELETED:
        raise UsageError(f"recovery point {rp.arn} is already deleted")
    lock = _governing_lock(record, rp)
    if lock and not retention_ended(rp, clock()) and not _bypasses(lock, authorized):
        ends = f"its retention ends at {rp.delete_at}" if rp.delete_at else "its retention never ends"
        raise VaultLockedError(
            f"recovery point {rp.arn} is protected by the {lock.mode}-mode lock of vault '{record.name}': {ends}",
            hint=_lock_hint(lock, clock()),
        )
    remove_recovery_point(account, rp, f"deleted by {principal_arn}")


def update_recovery_point_lifecycle(
    account: Account, principal_arn: str, arn: str, delete_after_days: int | None, *, clock: Clock = model.now
) -> RecoveryPoint:
    """Set a recovery point's retention (counted from its arrival here); a lock forbids shortening it."""
    rp = account.catalog.get_recovery_point(arn)
    record = account.catalog.get_vault(rp.vault_name)
    authorized = _authorize(account, principal_arn, "UpdateRecoveryPointLifecycle", record, rp.arn)
    check_retention_days(delete_after_days)
    if rp.status not in (RecoveryPointStatus.COMPLETED, RecoveryPointStatus.PARTIAL):
        raise UsageError(f"recovery point {rp.arn} is {rp.status.value}; only a stored one has a lifecycle")
    lock = _governing_lock(record, rp)
    if lock and not _bypasses(lock, authorized):
        lock.check_retention(delete_after_days)
        if _shortens(rp, delete_after_days) and not retention_ended(rp, clock()):
            raise VaultLockedError(
                f"the {lock.mode}-mode lock of vault '{record.name}' forbids shortening the retention of {rp.arn} "
                f"from {_days(rp.delete_after_days)} to {_days(delete_after_days)}",
                hint=_lock_hint(lock, clock()),
            )
    account.catalog.update_recovery_point(
        rp.id,
        delete_after_days=delete_after_days,
        delete_at=delete_at(rp.arrival_date or rp.creation_date, delete_after_days),
    )
    notifications.recovery_point_modified(account, rp.id, f"retention set to {_days(delete_after_days)}")
    return account.catalog.get_recovery_point(rp.id)


# Rules --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Authorized:
    request: AccessRequest
    policy: PolicyDocument | None

    @property
    def named(self) -> bool:
        """Is the principal named in an Allow for this request (so it may bypass a governance lock)?"""
        return explicitly_allows(self.policy, self.request)


def authorize_action(
    account: Account, principal_arn: str, action: str, record: VaultRecord, context: dict[str, list[str]] | None = None
) -> None:
    """Raise AccessDeniedError unless the vault's policy lets the principal do ``action`` (e.g. CopyIntoBackupVault)."""
    _authorize(account, principal_arn, action, record, context=context)


def _authorize(
    account: Account,
    principal_arn: str,
    action: str,
    record: VaultRecord,
    resource_arn: str | None = None,
    context: dict[str, list[str]] | None = None,
) -> _Authorized:
    check_fresh(account, record.name)  # a catalog put back from an older copy decides nothing
    request = AccessRequest(principal_arn, f"backup:{action}", resource_arn or record.arn, context or {})
    policy = policy_of(record)
    authorize(policy, request, owner_account_id=account.account_id)
    return _Authorized(request, policy)


def _governing_lock(record: VaultRecord, rp: RecoveryPoint) -> VaultLock | None:
    return retention.governing_lock(lock_of(record), rp.lock_applies)


def _bypasses(lock: VaultLock, authorized: _Authorized) -> bool:
    return lock.mode == GOVERNANCE and authorized.named


def _check_lock_change(lock: VaultLock, authorized: _Authorized, now: datetime, what: str) -> None:
    """May the principal ``what`` ("change the lock of vault 'X'"): governance needs a named principal,
    compliance a lock date still to come."""
    if lock.mode == GOVERNANCE:
        if not authorized.named:
            raise VaultLockedError(
                f"{authorized.request.principal_arn} may not {what}: it has a governance-mode lock",
                hint=GOVERNANCE_HINT,
            )
    elif lock.immutable(now):
        raise VaultLockedError(
            f"nobody can {what}: its compliance-mode lock is immutable since {iso(lock.lock_date)}",
            hint="A compliance lock cannot be changed or removed after its cooling-off period; recovery points "
            "go as their retention ends",
        )


def _lock_hint(lock: VaultLock, now: datetime) -> str:
    if lock.mode == GOVERNANCE:
        return GOVERNANCE_HINT
    if lock.immutable(now):
        return "Under a compliance lock past its lock date nobody can delete early or shorten a retention"
    return f"Nobody can bypass a compliance lock; until {iso(lock.lock_date)} the lock itself can still be removed"


def _shortens(rp: RecoveryPoint, delete_after_days: int | None) -> bool:
    return retention.shortens(rp.delete_after_days, delete_after_days)


def _days(days: int | None) -> str:
    return "forever" if days is None else f"{days} days"


def _forget_vault(account: Account, record: VaultRecord, *, had_points: bool) -> None:
    account.catalog.remove_vault(record.name)
    account.forget_vault(record.name)
    if not had_points:
        Vault.destroy_store(open_store(record.store_url))
