"""Recovery points as the front ends and the jobs read them: listings, one point, and the newest intact
point of a resource that a backup or an arriving copy builds on."""

from __future__ import annotations

from strongroom.errors import StrongroomError
from strongroom.model import RecoveryPoint, RecoveryPointStatus
from strongroom.services.account import Account
from strongroom.vault.manifest import load_manifest
from strongroom.vault.reader import RecoveryPointReader


def list_recovery_points(
    account: Account,
    *,
    resource_id: str | None = None,
    vault: str | None = None,
    status: RecoveryPointStatus | None = None,
    tags: dict[str, str] | None = None,
) -> list[RecoveryPoint]:
    """The account's recovery points, oldest first; ``vault`` is a vault name or ARN; ``tags``: only the
    points carrying every one of these tags (key and value)."""
    vault_name = account.catalog.get_vault(vault).name if vault else None
    points = account.catalog.list_recovery_points(resource_id=resource_id, vault_name=vault_name, status=status)
    wanted = (tags or {}).items()
    return [p for p in points if all(p.tags.get(key) == value for key, value in wanted)]


def get_recovery_point(account: Account, arn_or_id: str) -> RecoveryPoint:
    return account.catalog.get_recovery_point(arn_or_id)


def latest_intact_reader(account: Account, resource_id: str, vault_name: str) -> RecoveryPointReader | None:
    """A reader of the newest intact COMPLETED recovery point of the resource in the vault, for incremental
    reuse by a backup or an arriving copy (the caller closes it); None when there is none."""
    completed = account.catalog.list_recovery_points(
        resource_id=resource_id, vault_name=vault_name, status=RecoveryPointStatus.COMPLETED
    )
    vault = account.vault(vault_name)
    for rp in reversed(completed):
        try:
            return RecoveryPointReader(vault, load_manifest(vault, rp.id))
        except StrongroomError:
            continue
    return None
