"""What a dry run checks on the real target before a restore step would run, so that the real run does
not stop half-way on something visible now. The checks are the resource type's own
(``ResourceAdapter.forecast_restore``, e.g. adapters/postgres/forecast.py); this module opens the point for
them when it is in this account.
"""

from __future__ import annotations

from strongroom.adapters.base import ResourceAdapter, RestoreForecast, RestoreRequest
from strongroom.model import RecoveryPoint
from strongroom.services.account import Account
from strongroom.vault.manifest import load_manifest
from strongroom.vault.reader import RecoveryPointReader


def forecast_restore(
    account: Account, adapter: ResourceAdapter, request: RestoreRequest, point: RecoveryPoint | None
) -> RestoreForecast:
    """The adapter's dry-run checks of restoring ``point`` (None: in another account, not readable yet)."""
    if point is None:
        return adapter.forecast_restore(request, None, {})
    vault = account.vault(point.vault_name)
    with RecoveryPointReader(vault, load_manifest(vault, point.id)) as reader:
        return adapter.forecast_restore(request, reader, point.metadata or {})
