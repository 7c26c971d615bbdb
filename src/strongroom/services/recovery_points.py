"""Recovery points as the front ends and the jobs read them: listings, one point, and the newest intact
point of a resource that a backup or an arriving copy builds on."""

from __future__ import annotations

from strongroom.errors import NotFoundError, StrongroomError
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
    every_status: bool = False,
    tags: dict[str, str] | None = None,
) -> list[RecoveryPoint]:
    """The account's recovery points, oldest first; ``vault`` is a vault name or ARN; ``tags``: only the
    points carrying every one of these tags (key and value).

    Only COMPLETED points unless ``status`` names another or ``every_status``: a listing's last point is
    what people restore ("the latest point"), so a failed backup's PARTIAL point must not be it.
    A ``resource_id`` that is neither registered nor the source of any point here is refused.
    """
    vault_name = account.catalog.get_vault(vault).name if vault else None
    if resource_id is not None:
        _check_resource_known(account, resource_id)
    if status is None and not every_status:
        status = RecoveryPointStatus.COMPLETED
    points = account.catalog.list_recovery_points(resource_id=resource_id, vault_name=vault_name, status=status)
    wanted = (tags or {}).items()
    return [p for p in points if all(p.tags.get(key) == value for key, value in wanted)]


def _check_resource_known(account: Account, resource_id: str) -> None:
    """A copy's resource is the sending account's, unregistered here: its points make it known."""
    try:
        account.catalog.get_resource(resource_id)
        return
    except NotFoundError:
        if account.catalog.list_recovery_points(resource_id=resource_id):
            return
    raise NotFoundError(
        f"resource '{resource_id}' does not exist and no recovery point comes from it",
        hint="see 'strongroom resources list' for the registered resources",
    )


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
        if rp.metadata.get("continuous"):  # a continuous point holds no data to reuse (docs/pitr.md)
            continue
        try:
            return RecoveryPointReader(vault, load_manifest(vault, rp.id, cached=True))
        except StrongroomError:
            continue
    return None
