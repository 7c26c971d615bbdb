"""``strongroom vaults attach``: give this account a vault that exists in a store, rebuilt from the vault alone.

The machine that wrote a vault is gone (or only its ``catalog.db`` is), the store survives: a local directory
or an S3 bucket/prefix. Everything the catalog needs to list, verify and restore the vault's recovery points
is in the vault's own objects (docs/vault-format.md): the key file and config, the sealed catalog records
(``catalog/vault``: policy, lock, change sequence; ``catalog/points/<id>``: status, dates, retention) and the
manifests (resource, metadata, sizes, a copy's source). Order, so that a crash anywhere leaves nothing or a
state a re-run completes:

1. unlock the vault and check its home marker (refuse a vault another home wrote to recently, unless forced);
2. keep its keys in this home when they are wrapped under another passphrase;
3. one catalog transaction: the vault row (its change sequence past the one the vault recorded) and every
   recovery point — all or nothing;
4. write the vault's home marker naming this home (the old home, if it comes back, then refuses to write the
   vault's records: services/homes.py ``check_writer``), then rewrite the vault's records from the catalog.

A re-run finds the vault already attached under the name and does only step 4. Resource rows are not
recreated (their settings — paths, connection strings — are not in the vault); points keep their resource id
and type, and restores need only the manifest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from strongroom.errors import AlreadyExistsError, IntegrityError, UsageError, VaultInUseError, WrongPassphraseError
from strongroom.faults import fault_point
from strongroom.model import Arn, RecoveryPoint, RecoveryPointStatus, VaultRecord, now, tag_problem
from strongroom.services.account import Account
from strongroom.services.catalog_integrity import POINT_RECORDS_PREFIX, VAULT_RECORD_KEY, check_fresh, read_record
from strongroom.services.homes import damaged_marker, home_id, keep_vault_keys, mark_home
from strongroom.services.vault_ops import VAULT_NAME
from strongroom.store.base import open_store
from strongroom.vault import Vault
from strongroom.vault.inventory import HomeMarker, open_with_keys, read_home_marker, vault_key_file
from strongroom.vault.keys import unwrap_keyset
from strongroom.vault.manifest import Manifest, load_manifest

# A home that wrote the vault's records less than this long ago is live: attaching elsewhere needs --force.
LIVE_WINDOW = timedelta(hours=24)
ENV_VAULT_PASSPHRASE = "STRONGROOM_VAULT_PASSPHRASE"
UNKNOWN = "unknown"
# A copy whose manifest does not name its source (a pulled copy): still restored as a copy (no setuid bits).
UNKNOWN_SOURCE = "unknown"


class AttachOutcome(StrEnum):
    ATTACHED = "ATTACHED"
    ALREADY_ATTACHED = "ALREADY_ATTACHED"


@dataclass(frozen=True)
class AttachResult:
    record: VaultRecord
    outcome: AttachOutcome
    original_arn: str | None
    statuses: dict[str, int]
    keys_kept_in_home: bool
    previous_home: HomeMarker | None
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "backup_vault_name": self.record.name,
            "backup_vault_arn": self.record.arn,
            "original_backup_vault_arn": self.original_arn,
            "store_url": self.record.store_url,
            "vault_id": self.record.vault_id,
            "outcome": self.outcome.value,
            "recovery_points": sum(self.statuses.values()),
            "recovery_points_by_status": self.statuses,
            "locked": self.record.lock is not None,
            "access_policy": self.record.access_policy is not None,
            "keys_kept_in_home": self.keys_kept_in_home,
            "previous_home": None
            if self.previous_home is None
            else {
                "home_id": self.previous_home.home_id,
                "account_id": self.previous_home.account_id,
                "written_at": self.previous_home.written_at,
            },
            "warnings": self.warnings,
        }


def attach_vault(
    account: Account,
    name: str,
    store_url: str,
    *,
    vault_passphrase: str | None = None,
    force: bool = False,
    clock: Callable[[], datetime] = now,
) -> AttachResult:
    """Attach the vault in ``store_url`` to this account as ``name``; idempotent (docs/operations.md)."""
    if not VAULT_NAME.match(name):
        raise UsageError(f"'{name}' is not a valid vault name", hint="Use 2-50 letters, digits, _ and -")
    store = open_store(store_url)
    vault, held = _unlock(account, store, vault_passphrase)
    stored = read_record(vault, VAULT_RECORD_KEY)
    original_arn = stored["arn"] if stored else None
    if _already_attached(account, name, vault):
        marker = _read_marker(vault, force=force)
        _finish(account, name)
        return _result(account, name, AttachOutcome.ALREADY_ATTACHED, original_arn, held, marker, [])
    previous = _check_home(account, vault, force=force, clock=clock)
    points, warnings = _rebuild_points(account, name, vault, locked=bool(stored and stored.get("lock")))
    if held:
        keep_vault_keys(account.home, vault.keys, vault.config.vault_id, account.passphrase())
    record = VaultRecord(
        name,
        account.vault_arn(name),
        store.url,
        vault.config.vault_id,
        vault.config.created_at,
        access_policy=stored.get("access_policy") if stored else None,
        lock=stored.get("lock") if stored else None,
    )
    fault_point("attach:before-catalog")
    account.catalog.add_attached_vault(record, int(stored["seq"]) + 1 if stored else 1, points)
    fault_point("attach:after-catalog")
    _finish(account, name)
    return _result(account, name, AttachOutcome.ATTACHED, original_arn, held, previous, warnings)


def _unlock(account: Account, store: Any, vault_passphrase: str | None) -> tuple[Vault, bool]:
    """The vault, and whether its keys must be kept in this home (wrapped under another passphrase)."""
    key_file = vault_key_file(store)
    passphrase = vault_passphrase or account.passphrase()
    try:
        keys = unwrap_keyset(key_file, passphrase)
    except WrongPassphraseError:
        hint = (
            "Check the vault passphrase you gave"
            if vault_passphrase
            else "Give the passphrase of the account that created the vault with --vault-passphrase-file FILE "
            f"(or {ENV_VAULT_PASSPHRASE})"
        )
        raise WrongPassphraseError(
            f"wrong passphrase: the keys of the vault at {store.url} cannot be unlocked", hint=hint
        ) from None
    return open_with_keys(store, keys), passphrase != account.passphrase()


def _already_attached(account: Account, name: str, vault: Vault) -> bool:
    vault_id = vault.config.vault_id
    for record in account.catalog.list_vaults():
        if record.name == name and record.vault_id == vault_id:
            return True
        if record.name == name:
            raise AlreadyExistsError(
                f"vault '{name}' already exists in this account (another vault)",
                hint="Attach under another name, or delete that vault first",
            )
        if record.vault_id == vault_id:
            raise AlreadyExistsError(f"this vault is already attached to this account as '{record.name}'")
    return False


def _read_marker(vault: Vault, *, force: bool) -> HomeMarker | None:
    """The vault's home marker; one that fails authentication with no authentic older version (garbage put
    over it on an unversioned bucket) stops every record write until ``--force`` rewrites it."""
    try:
        return read_home_marker(vault)
    except IntegrityError as exc:
        if force:
            return None
        raise damaged_marker(exc) from None


def _check_home(account: Account, vault: Vault, *, force: bool, clock: Callable[[], datetime]) -> HomeMarker | None:
    """Refuse a vault whose records another home wrote less than LIVE_WINDOW ago, unless ``force``."""
    marker = _read_marker(vault, force=force)
    if marker is None or marker.home_id == home_id(account.home) or force:
        return marker
    if clock() - marker.moment < LIVE_WINDOW:
        raise VaultInUseError(
            f"another home (account {marker.account_id}, home {marker.home_id}) wrote to the vault at "
            f"{vault.store.url} at {marker.written_at}, less than {int(LIVE_WINDOW.total_seconds() // 3600)} "
            "hours ago",
            hint="Stop that home first; if its machine is gone for good, run again with --force "
            "(two homes writing one vault undo each other's records)",
        )
    return marker


def _rebuild_points(
    account: Account, name: str, vault: Vault, *, locked: bool
) -> tuple[list[RecoveryPoint], list[str]]:
    records = {}
    for key in vault.record_keys(POINT_RECORDS_PREFIX):
        body = read_record(vault, key)
        if body is not None:
            records[key[len(POINT_RECORDS_PREFIX) :]] = body
    manifests = set(vault.list_manifest_ids())
    points, warnings = [], []
    for point_id in sorted(set(records) | manifests):
        recorded = records.get(point_id)
        manifest = load_manifest(vault, point_id) if point_id in manifests else None
        if manifest is None and (recorded is None or recorded["status"] == RecoveryPointStatus.DELETED):
            continue  # a deleted point's history: its resource is named only in the manifest that is gone
        point = _point(account, name, point_id, recorded, manifest, locked=locked)
        if point.status_message:
            warnings.append(f"recovery point {point.id}: {point.status_message}")
        points.append(point)
    return points, warnings


def _point(
    account: Account,
    vault_name: str,
    point_id: str,
    recorded: dict[str, Any] | None,
    manifest: Manifest | None,
    *,
    locked: bool,
) -> RecoveryPoint:
    status = RecoveryPointStatus(recorded["status"]) if recorded else RecoveryPointStatus.COMPLETED
    message = None
    if status == RecoveryPointStatus.CREATING:  # its writer is gone with the old home
        status, message = RecoveryPointStatus.PARTIAL, "attached while CREATING: its job stopped with the old home"
    elif recorded is None:
        message = "the vault holds no record of it: attached as COMPLETED, kept until deleted"
    stats = manifest.stats if manifest else {}
    creation = recorded["creation_date"] if recorded else manifest.created_at if manifest else ""
    arrival = recorded["arrival_date"] if recorded else creation
    return RecoveryPoint(
        id=point_id,
        arn=account.recovery_point_arn(point_id),
        vault_name=vault_name,
        resource_id=manifest.resource_id if manifest else UNKNOWN,
        resource_type=manifest.resource_type if manifest else UNKNOWN,
        status=status,
        creation_date=creation,
        completion_date=recorded["completion_date"] if recorded else manifest.completed_at if manifest else None,
        source_bytes=int(stats.get("source_bytes", 0)),
        stored_bytes=int(stats.get("stored_bytes", 0)),
        new_bytes=int(stats.get("new_bytes", 0)),
        status_message=message,
        metadata=manifest.metadata if manifest else {},
        delete_after_days=recorded["delete_after_days"] if recorded else None,
        delete_at=recorded["delete_at"] if recorded else None,
        lock_applies=bool(recorded["lock_applies"]) if recorded else locked,
        source_recovery_point_arn=_source_arn(recorded, manifest, creation, arrival),
        arrival_date=arrival,
        tags=_recorded_tags(recorded),
    )


def _recorded_tags(recorded: dict[str, Any] | None) -> dict[str, str]:
    """The point's tags as its record kept them; malformed ones (from a tampered record) are dropped."""
    tags = (recorded or {}).get("tags")
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()) or tag_problem(tags):
        return {}
    return dict(tags)


def _source_arn(recorded: dict[str, Any] | None, manifest: Manifest | None, creation: str, arrival: str) -> str | None:
    """A copy's source point: from its manifest (pushed copies); a copy's arrival differs from its creation
    (the other account's clock), so a pulled copy is still known as a copy, its source as ``unknown``."""
    if manifest is not None and manifest.source is not None:
        return manifest.source.recovery_point_arn
    if recorded is not None and arrival != creation:
        return UNKNOWN_SOURCE
    return None


def _finish(account: Account, name: str) -> None:
    """Mark the vault as this home's (from now on the old home refuses to write its records), then write
    its records from the catalog (they lag it until now)."""
    mark_home(account.home, account.account_id, account.vault(name))
    check_fresh(account, name)


def _result(
    account: Account,
    name: str,
    outcome: AttachOutcome,
    original_arn: str | None,
    held: bool,
    previous: HomeMarker | None,
    warnings: list[str],
) -> AttachResult:
    record = account.catalog.get_vault(name)
    statuses = Counter(rp.status.value for rp in account.catalog.list_recovery_points(vault_name=name))
    if original_arn and original_arn != record.arn:
        original = Arn.parse(original_arn)
        if original.account_id != account.account_id:
            warnings = [
                *warnings,
                f"the vault was {original_arn} in account {original.account_id}; it is {record.arn} here: update "
                "access policies and destination settings that name the old ARN",
            ]
    return AttachResult(record, outcome, original_arn, dict(sorted(statuses.items())), held, previous, warnings)
