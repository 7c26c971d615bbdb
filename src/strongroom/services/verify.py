"""Verifying recovery points across the account's vaults."""

from __future__ import annotations

from collections.abc import Callable

from strongroom.model import RecoveryPointStatus
from strongroom.services.account import Account
from strongroom.vault.verify import VerifyReport, verify_recovery_points


def verify(
    account: Account,
    recovery_point: str | None = None,
    *,
    read_data: bool = False,
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Check one recovery point, or every COMPLETED one; damaged recovery points are reported by ARN."""
    if recovery_point:
        points = [account.catalog.get_recovery_point(recovery_point)]
    else:
        points = account.catalog.list_recovery_points(status=RecoveryPointStatus.COMPLETED)
    total = VerifyReport()
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
