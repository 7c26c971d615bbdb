"""The vault lock as the storage's own Object Lock: what retention each recovery point's objects need.

On a locked vault whose store has Object Lock (an S3 bucket with it enabled), every object a recovery
point needs is written under S3 retention, so no one holding the bucket's credentials, Strongroom's own
included, can destroy it before the point's retention ends (docs/storage.md, "Object Lock is the vault
lock"). The rules, decided here and applied by the vault engine (vault/retention.py):

- mode: a governance lock, and a compliance lock during its cooling-off period (when it may still be
  removed), write GOVERNANCE; a compliance lock past its lock date writes COMPLIANCE (older objects are
  upgraded by the next lifecycle sweep, which never weakens a retention);
- retain-until: the point's ``delete_at`` (its arrival plus ``delete_after_days``, which the lock already
  holds within its min/max); a point kept forever gets a rolling horizon (:func:`horizon_days`), extended by
  each lifecycle sweep once less than half of it remains.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from strongroom import model
from strongroom.errors import StrongroomError
from strongroom.model import RecoveryPoint, RecoveryPointStatus, VaultRecord
from strongroom.policy.lock import VaultLock
from strongroom.policy.retention import aware
from strongroom.services.account import Account
from strongroom.store.base import LockMode, ObjectStore, Retention, open_store
from strongroom.vault.retention import manifest_holds, retain_point, retain_records

NO_EXPIRY_HORIZON_DAYS = 30  # at least: a lock's max_retention_days, or its min when that is longer
LIVE = (RecoveryPointStatus.COMPLETED, RecoveryPointStatus.PARTIAL, RecoveryPointStatus.EXPIRED)


def horizon_days(lock: VaultLock) -> int:
    """How far ahead a point kept forever is retained; the lifecycle sweep rolls it forward."""
    if lock.max_retention_days is not None:
        return lock.max_retention_days
    return max(lock.min_retention_days or 0, NO_EXPIRY_HORIZON_DAYS)


def s3_mode(lock: VaultLock, now: datetime) -> LockMode:
    """COMPLIANCE only once a compliance lock can no longer be removed; GOVERNANCE before and for governance."""
    return LockMode.COMPLIANCE if lock.immutable(now) else LockMode.GOVERNANCE


def storage_lock(record: VaultRecord, store: ObjectStore) -> VaultLock | None:
    """The vault's lock when the storage enforces it (the store has Object Lock); None otherwise."""
    if not record.lock or not store.capabilities.object_lock:
        return None
    return VaultLock.from_record(record.lock)


def point_retention(lock: VaultLock, delete_at: str | None, now: datetime) -> Retention | None:
    """What the objects of a point with ``delete_at`` must hold now; None once its retention has ended."""
    until = aware(datetime.fromisoformat(delete_at)) if delete_at else now + timedelta(days=horizon_days(lock))
    return Retention(s3_mode(lock, now), until) if until > now else None


def new_point_retention(account: Account, vault_name: str, rp: RecoveryPoint) -> Retention | None:
    """The retention a recovery point being written into ``vault_name`` gives its objects (None: unlocked)."""
    record = account.catalog.get_vault(vault_name)
    if not record.lock:
        return None
    lock = storage_lock(record, account.vault(record.name).store)
    return point_retention(lock, rp.delete_at, model.now()) if lock else None


# Archived WAL is kept as long as the longest continuous window could need it (services/pitr.py).
WAL_WINDOW_DAYS = model.CONTINUOUS_MAX_DAYS


def wal_lock_rule(account: Account, vault_name: str) -> tuple[LockMode, int] | None:
    """The mode and the days a WAL object written into ``vault_name`` is retained for (None: the storage enforces
    no lock there).

    The longest continuous window plus the lock's minimum retention: a WAL file is needed for at most the window
    after it was archived (a kept base backup's WAL is younger than the backup), and the lock's minimum covers a
    snapshot kept that long that needs it. Extend-only, as every retention."""
    record = account.catalog.get_vault(vault_name)
    if not record.lock:
        return None
    lock = storage_lock(record, open_store(record.store_url))
    if lock is None:
        return None
    return s3_mode(lock, model.now()), WAL_WINDOW_DAYS + (lock.min_retention_days or 0)


def wal_retention(account: Account, vault_name: str) -> Retention | None:
    """What a WAL object written into ``vault_name`` now holds (:func:`wal_lock_rule`)."""
    rule = wal_lock_rule(account, vault_name)
    return Retention(rule[0], model.now() + timedelta(days=rule[1])) if rule else None


@dataclass
class RetentionReport:
    """What extending the retention of a vault's live points did (``lifecycle run`` and ``put-lock`` show it)."""

    points_checked: int = 0
    points_extended: int = 0
    objects_extended: int = 0
    failed: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "points_checked": self.points_checked,
            "points_extended": self.points_extended,
            "objects_extended": self.objects_extended,
            "failed": self.failed,
        }


def retain_live_points(account: Account, vault_name: str) -> RetentionReport | None:
    """Give every live point of a vault whose lock the storage enforces the retention it needs now.

    Run when a lock is put on an S3 vault that already holds points, and by each lifecycle sweep (which rolls
    the horizon of points kept forever and upgrades GOVERNANCE to COMPLIANCE once a compliance lock is
    immutable). A point whose manifest already holds what it needs costs one HEAD: objects are extended before
    their manifest. Uses the real clock only: a retention is never computed from a simulated date. None when
    the vault's lock is not the storage's.
    """
    record = account.catalog.get_vault(vault_name)
    # Before opening the vault (its keys cost a KDF run): an unlocked or local one costs the sweep nothing.
    if not record.lock or not open_store(record.store_url).capabilities.object_lock:
        return None
    vault = account.vault(record.name)
    lock = storage_lock(record, vault.store)
    if lock is None:
        return None
    moment = model.now()
    report = RetentionReport()
    half = timedelta(days=horizon_days(lock) / 2)
    latest: Retention | None = None
    for rp in account.catalog.list_recovery_points(vault_name=record.name):
        wanted = point_retention(lock, rp.delete_at, moment) if rp.status in LIVE else None
        if wanted is None:
            continue
        latest = wanted if latest is None else latest.at_least(wanted)
        report.points_checked += 1
        enough = wanted if rp.delete_at else Retention(wanted.mode, moment + half)
        if manifest_holds(vault.store, rp.id, enough):
            continue
        try:
            extended = retain_point(vault, rp.id, wanted)
        except StrongroomError as exc:  # one damaged point must not stop the others; verify names it
            report.failed[rp.arn] = exc.one_line()
            continue
        report.points_extended += 1
        report.objects_extended += extended.extended
    if latest is not None:  # the catalog records describe every point: they last as long as the latest
        vault.record_retention = latest
        report.objects_extended += retain_records(vault, latest)
    return report
