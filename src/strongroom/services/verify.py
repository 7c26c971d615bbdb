"""Verifying recovery points across the account's vaults."""

from __future__ import annotations

from collections.abc import Callable

from strongroom.errors import CatalogIntegrityError
from strongroom.model import RecoveryPoint, RecoveryPointStatus
from strongroom.services.account import Account
from strongroom.services.catalog_integrity import catalog_findings
from strongroom.vault.verify import VerifyReport, verify_recovery_points


def verify(
    account: Account,
    recovery_point: str | None = None,
    *,
    read_data: bool = False,
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Check one recovery point, or every COMPLETED one; damaged recovery points are reported by ARN.

    Checking them all also compares the catalog with its vaults (services/catalog_integrity.py): rows
    whose MAC fails, a catalog older than a vault's record, points missing or added, retention changed.
    """
    total = VerifyReport()
    if recovery_point:
        points = [account.catalog.get_recovery_point(recovery_point)]
    else:
        total.catalog_findings = catalog_findings(account)
        points = _completed_points(account)
    by_vault: dict[str, list[str]] = {}
    for rp in points:
        by_vault.setdefault(rp.vault_name, []).append(rp.id)
    arns = {rp.id: rp.arn for rp in points}
    for vault_name, ids in by_vault.items():
        report = verify_recovery_points(account.vault(vault_name), ids, read_data=read_data, progress=progress)
        total.recovery_points_checked += report.recovery_points_checked
        total.copies_checked_against_source += report.copies_checked_against_source
        total.objects_checked += report.objects_checked
        total.bytes_read += report.bytes_read
        total.damaged_objects.update({f"{vault_name}/{k}": v for k, v in report.damaged_objects.items()})
        for rp_id, keys in report.damaged_recovery_points.items():
            total.damaged_recovery_points[arns[rp_id]] = [f"{vault_name}/{k}" for k in keys]
    return total


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
