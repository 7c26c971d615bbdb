"""Verifying recovery points across the account's vaults."""

from __future__ import annotations

from collections.abc import Callable

from strongroom.errors import CatalogIntegrityError
from strongroom.model import RecoveryPoint, RecoveryPointStatus
from strongroom.services.account import Account
from strongroom.services.catalog_integrity import catalog_findings
from strongroom.services.object_lock import LIVE
from strongroom.vault import Vault, versions
from strongroom.vault.verify import VerifyReport, verify_recovery_points


def verify(
    account: Account,
    recovery_point: str | None = None,
    *,
    read_data: bool = False,
    progress: Callable[[int], None] | None = None,
    repair: bool = False,
) -> VerifyReport:
    """Check one recovery point, or every COMPLETED one; damaged recovery points are reported by ARN.

    Checking them all also compares the catalog with its vaults (services/catalog_integrity.py): rows
    whose MAC fails, a catalog older than a vault's record, points missing or added, retention changed.
    On a vault whose store keeps versions (S3 with Object Lock), objects hidden under a delete marker or a
    newer version are reported (``hidden_objects``); ``repair`` puts their authentic version back on top.
    """
    total = VerifyReport()
    if recovery_point:
        points = [account.catalog.get_recovery_point(recovery_point)]
        vault_names = [points[0].vault_name]
    else:
        vault_names = _intact_vaults(account)
    # Hidden objects first: repaired, the catalog comparison below sees them again.
    hidden = {name: _hidden(account, name, account.vault(name), total, repair) for name in vault_names}
    if not recovery_point:
        total.catalog_findings = catalog_findings(account)
        points = _completed_points(account)
    by_vault: dict[str, list[str]] = {}
    for rp in points:
        by_vault.setdefault(rp.vault_name, []).append(rp.id)
    arns = {rp.id: rp.arn for rp in points}
    for vault_name, ids in by_vault.items():
        report = verify_recovery_points(
            account.vault(vault_name), ids, read_data=read_data, progress=progress, hidden=hidden.get(vault_name, ())
        )
        total.recovery_points_checked += report.recovery_points_checked
        total.copies_checked_against_source += report.copies_checked_against_source
        total.objects_checked += report.objects_checked
        total.bytes_read += report.bytes_read
        total.damaged_objects.update({f"{vault_name}/{k}": v for k, v in report.damaged_objects.items()})
        for rp_id, keys in report.damaged_recovery_points.items():
            total.damaged_recovery_points[arns[rp_id]] = [f"{vault_name}/{k}" for k in keys]
    return total


def _hidden(account: Account, vault_name: str, vault: Vault, total: VerifyReport, repair: bool) -> set[str]:
    """Find (and with ``repair`` put back) the vault's hidden objects; returns the keys still hidden."""
    if not vault.store.capabilities.object_lock:
        return set()
    live = {rp.id for rp in account.catalog.list_recovery_points(vault_name=vault_name) if rp.status in LIVE}
    found = versions.find_hidden(vault, versions.needed_keys(live))
    repaired = set(versions.repair(vault, found)) if repair else set()
    total.repaired_objects += [f"{vault_name}/{key}" for key in sorted(repaired)]
    still = {item.key: item.problem.value for item in found if item.key not in repaired}
    total.hidden_objects.update({f"{vault_name}/{key}": problem for key, problem in still.items()})
    return set(still)


def _intact_vaults(account: Account) -> list[str]:
    """The vaults whose catalog rows pass their MAC (the others are findings already)."""
    names = []
    for vault_name in account.catalog.vault_names():
        try:
            names.append(account.catalog.get_vault(vault_name).name)
        except CatalogIntegrityError:
            continue
    return names


def _completed_points(account: Account) -> list[RecoveryPoint]:
    """The COMPLETED points whose rows, and their vault's, pass their MAC (the others are findings already)."""
    found = []
    for vault_name in account.catalog.vault_names():
        try:
            account.catalog.get_vault(vault_name)
        except CatalogIntegrityError:
            continue
        for row in account.catalog.raw_point_rows(vault_name):
            if row["status"] != RecoveryPointStatus.COMPLETED.value:
                continue
            try:
                found.append(account.catalog.get_recovery_point(row["id"]))
            except CatalogIntegrityError:
                continue
    return found
