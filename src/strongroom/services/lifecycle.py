"""Lifecycle of recovery points: removal, the expiry sweep, and garbage collection (docs/lifecycle.md).

Removing a recovery point withdraws its manifest and marks it DELETED; its chunks stay until the
garbage collector finds that no manifest references them any more. The collector marks without any
lock, then takes the vault's writers lock exclusively (services/writers.py), re-reads the manifests
committed meanwhile and deletes the rest: with the lock held no backup or copy is in flight, so
nothing uncommitted can reference what it deletes.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from strongroom import model
from strongroom.errors import IntegrityError, StorageError, UsageError
from strongroom.model import JobState, JobType, RecoveryPoint, RecoveryPointStatus, VaultRecord, iso
from strongroom.policy.retention import aware, retention_ended
from strongroom.services import notifications
from strongroom.services.account import Account
from strongroom.services.catalog_integrity import check_fresh
from strongroom.services.object_lock import retain_live_points
from strongroom.services.writers import active_writers, exclusive_writers_lock
from strongroom.vault import gc

EXPIRABLE = (RecoveryPointStatus.COMPLETED, RecoveryPointStatus.PARTIAL, RecoveryPointStatus.EXPIRED)
GC_COMPLETED, GC_POSTPONED, GC_REFUSED = "COMPLETED", "POSTPONED", "REFUSED"
_LOG = logging.getLogger(__name__)


def remove_recovery_point(account: Account, rp: RecoveryPoint, reason: str) -> None:
    """Withdraw the recovery point's manifest, then mark it DELETED; its chunks are left to the collector.

    The manifest goes first: after a crash in between the point is unrestorable but still listed,
    and removing it again finishes the job. Removing a DELETED point changes nothing.
    """
    if rp.status == RecoveryPointStatus.DELETED:
        return
    if rp.status == RecoveryPointStatus.CREATING:
        raise UsageError(
            f"recovery point {rp.arn} is still being created", hint="Wait for its job to finish, then remove it"
        )
    account.vault(rp.vault_name).withdraw_manifest(rp.id)
    account.catalog.update_recovery_point(rp.id, status=RecoveryPointStatus.DELETED, status_message=reason)
    notifications.recovery_point_modified(account, rp.id, reason)


def run_lifecycle(account: Account, *, now: datetime | None = None, vault_name: str | None = None) -> dict[str, Any]:
    """The expiry sweep: remove every recovery point whose ``delete_at`` has come.

    ``now`` simulates the clock (tests, operators planning ahead). For points a vault lock governs a
    ``now`` later than the real clock counts as the real clock: nothing a lock protects is ever removed
    before its retention really ends.
    """
    moment = aware(now) if now else model.now()
    expired: list[str] = []
    failed: dict[str, str] = {}
    for vault in _vaults(account, vault_name):
        check_fresh(account, vault.name)  # expiry never acts on a rolled-back catalog
        for rp in account.catalog.list_recovery_points(vault_name=vault.name):
            if _due(rp, moment):
                _expire(account, rp, expired, failed)
    wal = {}
    for vault in _vaults(account, vault_name):  # archived WAL no kept base backup needs (docs/pitr.md)
        from strongroom.services.pitr import prune_wal  # PostgreSQL's tools: only where WAL is archived

        pruned = prune_wal(account, vault.name, moment)
        if pruned:
            wal[vault.name] = pruned
    retained = {}
    for vault in _vaults(account, vault_name):  # the storage's lock: roll horizons, upgrade modes (real clock)
        report = retain_live_points(account, vault.name)
        if report is not None:
            retained[vault.name] = report.as_dict()
    return {
        "now": iso(moment),
        "expired": len(expired),
        "expired_recovery_points": expired,
        "failed": failed,
        "wal": wal,
        "object_lock": retained,
    }


def collect_garbage(
    account: Account, vault_name: str, *, wait_seconds: float = 60, now: datetime | None = None
) -> dict[str, Any]:
    """Delete the vault's chunks and index objects that no manifest references; safe beside writers.

    Gives up without deleting anything (status POSTPONED) when writers still hold the vault after
    ``wait_seconds``, and refuses (REFUSED) when a manifest in the vault cannot be read. Objects still
    under the storage's Object Lock retention are left and reported (``objects_retained``, the earliest
    ``retained_until``); a collection after that date deletes them. ``now`` simulates the clock.
    """
    record = account.catalog.get_vault(vault_name)
    vault = account.vault(record.name)
    started = time.monotonic()
    result: dict[str, Any] = {
        "backup_vault_name": record.name,
        "status": GC_COMPLETED,
        "message": "nothing to collect",
        "objects_stored": 0,
        "live_recovery_points": 0,
        "candidates": 0,
        "spared": 0,
        "objects_deleted": 0,
        "bytes_deleted": 0,
        "objects_retained": 0,
        "retained_until": None,
        "partly_live_packs": 0,
        "dead_bytes_kept": 0,
        "writers_waited_for": 0,
        "waited_seconds": 0.0,
        "active_writers": None,
        "held_by": [],
    }
    try:
        marking = gc.mark(vault)
        stored = gc.stored_objects(vault)
        doomed = gc.candidates(marking, stored)
        result.update(objects_stored=len(stored), live_recovery_points=len(marking.manifests), candidates=len(doomed))
        if doomed:
            result.update(_delete_under_lock(account, record, marking, doomed, wait_seconds, now))
    except IntegrityError as exc:
        result.update(status=GC_REFUSED, message=f"GC refused: {exc.one_line()}")
    result["duration_seconds"] = round(time.monotonic() - started, 3)
    return result


def run_lifecycle_and_collect(
    account: Account,
    *,
    now: datetime | None = None,
    vault_name: str | None = None,
    collect: bool = True,
    wait_seconds: float = 60,
) -> dict[str, Any]:
    """The sweep, then garbage collection of every vault swept (what ``strongroom lifecycle run`` does)."""
    report = run_lifecycle(account, now=now, vault_name=vault_name)
    vaults = _vaults(account, vault_name) if collect else []
    report["garbage_collection"] = [
        collect_garbage(account, v.name, wait_seconds=wait_seconds, now=now) for v in vaults
    ]
    return report


def _delete_under_lock(
    account: Account,
    record: VaultRecord,
    marking: gc.Marking,
    doomed: set[bytes],
    wait_seconds: float,
    now: datetime | None,
) -> dict[str, Any]:
    vault = account.vault(record.name)
    report: dict[str, Any] = {"writers_waited_for": active_writers(account, record.name)}
    waiting = time.monotonic()
    with exclusive_writers_lock(account, record.name, wait_seconds) as acquired:
        report["waited_seconds"] = round(time.monotonic() - waiting, 3)
        if not acquired:
            writers = active_writers(account, record.name)
            count = "some" if writers is None else str(writers)
            held_by = writer_jobs(account, record.name)
            message = (
                f"GC postponed: {count} writers active after {wait_seconds:g} s"
                f"{_holders_text(held_by)}; run it again later"
            )
            _LOG.warning("vault %s: %s", record.name, message)
            return {**report, "status": GC_POSTPONED, "active_writers": writers, "held_by": held_by, "message": message}
        gc.mark(vault, marking)  # manifests committed since the mark, by writers that have now finished
        spared = len(doomed)
        doomed = gc.candidates(marking, doomed)
        # Mappings go first: a crash between the two leaves chunks without mappings (re-sent), never the reverse.
        account.catalog.forget_chunks(record.name, sorted(doomed))
        deleted = gc.delete_objects(vault, doomed, now=now)
    message = f"deleted {deleted.objects} unreferenced objects"
    if deleted.retained:
        message += f"; {deleted.retained} kept by Object Lock retention until {iso(deleted.retained_until)} at least"
    if deleted.partly_live_packs:
        message += (
            f"; {deleted.partly_live_packs} packs kept whole for the live objects in them"
            f" ({deleted.dead_bytes_kept} unreferenced bytes inside)"
        )
    return {
        **report,
        "status": GC_COMPLETED,
        "spared": spared - len(doomed),
        "objects_deleted": deleted.objects,
        "bytes_deleted": deleted.bytes,
        "objects_retained": deleted.retained,
        "retained_until": iso(deleted.retained_until),
        "partly_live_packs": deleted.partly_live_packs,
        "dead_bytes_kept": deleted.dead_bytes_kept,
        "message": message,
    }


def writer_jobs(account: Account, vault_name: str) -> list[dict[str, Any]]:
    """The running jobs that write into the vault (so hold its writers lock): backups, incoming copy sessions
    and pulls; each with who started it and, for a copy session, the latest it can last (its lifetime cap)."""
    held = []
    for job in account.catalog.list_jobs(states=[JobState.CREATED, JobState.RUNNING]):
        direction = job.parameters.get("direction")
        writes = job.job_type == JobType.BACKUP or (job.job_type == JobType.COPY and direction in ("in", "pull"))
        if writes and job.vault_name == vault_name:
            held.append(
                {
                    "job_id": job.id,
                    "job_type": job.job_type.value,
                    "direction": direction,
                    "principal_arn": job.parameters.get("principal_arn"),
                    "start_date": job.start_date,
                    "ends_by": job.parameters.get("session_ends_by"),
                }
            )
    return held


def _holders_text(held_by: list[dict[str, Any]]) -> str:
    if not held_by:
        return ""
    parts = []
    for job in held_by:
        who = f" from {job['principal_arn']}" if job["principal_arn"] else ""
        ends = f", ended by {job['ends_by']} at the latest" if job["ends_by"] else ""
        parts.append(f"{job['job_type'].lower()} job {job['job_id']}{who}{ends}")
    return f" ({'; '.join(parts)})"


def _expire(account: Account, rp: RecoveryPoint, expired: list[str], failed: dict[str, str]) -> None:
    try:
        remove_recovery_point(account, rp, _reason(rp))
        expired.append(rp.arn)
    except StorageError as exc:
        # EXPIRED: retention is over but the point could not be removed; the next sweep tries again.
        message = f"expired; removal failed: {exc.one_line()}"
        account.catalog.update_recovery_point(rp.id, status=RecoveryPointStatus.EXPIRED, status_message=message)
        notifications.recovery_point_modified(account, rp.id, message)
        failed[rp.arn] = message


def _due(rp: RecoveryPoint, moment: datetime) -> bool:
    if rp.status not in EXPIRABLE or rp.delete_at is None:
        return False
    if rp.lock_applies:  # anyone may delete a point no lock governs, so only these need the real clock
        moment = min(moment, model.now())
    return retention_ended(rp.delete_at, moment)


def _reason(rp: RecoveryPoint) -> str:
    ended = iso(aware(datetime.fromisoformat(rp.delete_at or "")))
    if rp.delete_after_days is None:
        return f"retention ended at {ended}"
    return f"retention of {rp.delete_after_days} days ended at {ended}"


def _vaults(account: Account, vault_name: str | None) -> list[VaultRecord]:
    return [account.catalog.get_vault(vault_name)] if vault_name else account.catalog.list_vaults()
