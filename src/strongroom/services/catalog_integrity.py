"""The catalog's security records, authenticated with the account key and mirrored into each vault.

Two defences (docs/vault-format.md, "Catalog records"; docs/operations.md, "Catalog integrity"):

- **Row MACs.** Credentials, vault records (policy, lock, store) and recovery points' retention carry an
  HMAC under a key derived from the account key (catalog/integrity.py); the catalog checks it whenever
  it reads such a row with the key at hand and refuses (CatalogIntegrityError, exit 7) when it fails.
  A catalog from before row MACs is signed once, as it is at that moment, the first time it is opened
  with the passphrase; ``HOME/keys/catalog.sealed`` records that, so a MAC removed later is a failure.
- **Records in the vault.** Every security-relevant change bumps the vault's change sequence and, once
  committed, writes the vault's record (sequence, policy, lock) and the point's record (status,
  creation date, retention) into the vault's store, sealed with the vault key. A catalog put back from
  an older copy has a lower sequence than the vault's record: every authorisation refuses it, and
  ``verify`` lists what disagrees (points missing or added, retention changed).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from typing import Any

from strongroom.catalog import integrity
from strongroom.errors import CatalogIntegrityError
from strongroom.fsutil import write_durably
from strongroom.model import RecoveryPointStatus, VaultRecord
from strongroom.services.account import Account
from strongroom.services.credentials import account_keys
from strongroom.services.records_claim import claim_records, rolled_back
from strongroom.store.base import open_store
from strongroom.vault.vault import RECORDS_PREFIX, Vault

RECORD_FORMAT = 1
VAULT_RECORD_KEY = f"{RECORDS_PREFIX}vault"
POINT_RECORDS_PREFIX = f"{RECORDS_PREFIX}points/"
MAC_KEY_CONTEXT = b"strongroom catalog row MAC key v1"
SEALED_MARKER = "catalog.sealed"
POINT_FIELDS = integrity.POINT_STATE_COLUMNS  # what the vault's record of a point holds
VAULT_FIELDS = ("arn", "access_policy", "lock")
# A point in these states has a manifest in its vault (CREATING ones may or may not, yet).
STORED = (RecoveryPointStatus.COMPLETED.value, RecoveryPointStatus.EXPIRED.value)


class AccountGuard:
    """The catalog's :class:`~strongroom.catalog.integrity.Guard` for one account."""

    def __init__(self, account: Account, known_passphrase: Callable[[], str | None] | None) -> None:
        self.account = account
        self._known_passphrase = known_passphrase
        self._key: bytes | None = None

    def read_key(self) -> bytes | None:
        if self._key is None and self._known_passphrase is not None and not self._known_passphrase():
            return None  # a listing without the passphrase: shown as stored, decides nothing
        return self.write_key()

    def write_key(self) -> bytes:
        if self._key is None:
            self._check_passphrase_before_creating_the_account_key()
            own = account_keys(self.account)
            self._key = hmac.new(own.id_key, MAC_KEY_CONTEXT, hashlib.sha256).digest()
            self._sign_older_catalog(self._key)
        return self._key

    def _check_passphrase_before_creating_the_account_key(self) -> None:
        """An account from before account keys gets one on first use: a wrong passphrase must not wrap it.
        A vault's keys check the passphrase (its row cannot be checked yet: there is no key to check with)."""
        if (self.account.home / "keys" / "account.key").exists():
            return
        store_url = self.account.catalog.any_vault_store_url()
        if store_url is not None:
            Vault.open(open_store(store_url), self.account.passphrase())

    def _sign_older_catalog(self, key: bytes) -> None:
        """Sign the rows of a catalog made before row MACs, once: the upgrade trusts it as it is now."""
        marker = self.account.home / "keys" / SEALED_MARKER
        if marker.exists():
            return
        self.account.catalog.sign_unsigned_rows(key)
        with contextlib.suppress(FileExistsError):  # another process upgraded it at the same moment
            write_durably(marker, b"catalog rows are signed with the account key\n", replace=False)

    def mirror(self, vault_name: str, point_id: str | None) -> None:
        vault = self.account.vault(vault_name)
        with self.account.catalog.transaction():  # serialised with every writer: what is written is the latest
            _write_records(self.account, vault, vault_name, [point_id] if point_id else [])


def attach(account: Account, known_passphrase: Callable[[], str | None] | None = None) -> None:
    """Give the account's catalog its guard; ``known_passphrase`` (the CLI's listings) makes reads
    without a passphrase at hand unchecked instead of asking for one."""
    account.catalog.guard = AccountGuard(account, known_passphrase)


def check_fresh(account: Account, vault_name: str) -> None:
    """Refuse a catalog older than the vault's record (rolled back); bring a lagging record up to date.

    A record behind the catalog comes from a change interrupted between the catalog's commit and the
    vault's record (a crash): the catalog rows are authentic, so the records are rewritten from them.
    """
    guard = account.catalog.guard
    if guard is None or guard.read_key() is None:
        return
    vault = account.vault(vault_name)
    with account.catalog.transaction():
        stored = read_record(vault, VAULT_RECORD_KEY)
        sequence = account.catalog.vault_sequence(vault_name)
        if stored is not None and stored["seq"] > sequence:
            raise CatalogIntegrityError(rolled_back(vault_name, sequence, stored["seq"]))
        if stored is None or stored["seq"] < sequence:
            ids = [row["id"] for row in account.catalog.point_rows(vault_name)]
            _write_records(account, vault, vault_name, ids)


def trust_catalog_as_is(account: Account) -> None:
    """Sign every secured row and rewrite every vault's records from the catalog as it is now.

    Only for an operator who knows the catalog is right (an edit made on purpose; tests that move time
    by editing it): whatever the catalog says becomes what the account vouches for.
    """
    guard = account.catalog.guard
    assert isinstance(guard, AccountGuard)
    key = guard.write_key()
    account.catalog.resign_all_rows(key)  # first: opening a vault reads its (perhaps edited) row
    for name in account.catalog.vault_names():
        # Past every sequence the vault recorded: a copy of the catalog from before this moment, even one
        # numbered higher than the catalog trusted now, stays older than the vault's record.
        stored = read_record(account.vault(name), VAULT_RECORD_KEY)
        account.catalog.raise_vault_sequence(name, stored["seq"] + 1 if stored else 0)
    account.catalog.resign_all_rows(key)
    for record in account.catalog.list_vaults():
        vault = account.vault(record.name)
        with account.catalog.transaction():
            ids = [row["id"] for row in account.catalog.point_rows(record.name)]
            _write_records(account, vault, record.name, ids, force=True)


# verify -------------------------------------------------------------------------------------------
def catalog_findings(account: Account) -> list[str]:
    """One line per way the catalog disagrees with itself (a MAC fails) or with its vaults."""
    guard = account.catalog.guard
    assert guard is not None
    findings = account.catalog.unauthentic_rows(guard.write_key())
    for name in account.catalog.vault_names():
        with contextlib.suppress(CatalogIntegrityError):  # its row failing its MAC is already a finding
            findings += _vault_findings(account, name)
    return findings


def _vault_findings(account: Account, vault_name: str) -> list[str]:
    vault = account.vault(vault_name)
    stored = read_record(vault, VAULT_RECORD_KEY)
    sequence = account.catalog.vault_sequence(vault_name)
    if stored is not None and stored["seq"] > sequence:
        findings = [rolled_back(vault_name, sequence, stored["seq"])]
    else:
        findings = []
        check_fresh(account, vault_name)
        stored = read_record(vault, VAULT_RECORD_KEY)
    record = account.catalog.get_vault(vault_name)
    for column in VAULT_FIELDS:
        if stored is not None and stored[column] != _vault_columns(record)[column]:
            findings.append(
                f"vault '{vault_name}': its {column.replace('_', ' ')} in the catalog differs from "
                "the one the vault recorded"
            )
    catalog_points = {row["id"]: row for row in account.catalog.raw_point_rows(vault_name)}
    recorded = dict(_point_records(vault))
    manifests = set(vault.list_manifest_ids())
    for point_id in sorted(set(catalog_points) | set(recorded) | manifests):
        finding = _point_finding(
            vault_name, point_id, catalog_points.get(point_id), recorded.get(point_id), point_id in manifests
        )
        if finding:
            findings.append(finding)
    return findings


def _point_finding(
    vault_name: str, point_id: str, row: dict[str, Any] | None, recorded: dict[str, Any] | None, has_manifest: bool
) -> str | None:
    where = f"vault '{vault_name}'"
    if row is None:
        if recorded is not None and recorded["status"] != RecoveryPointStatus.DELETED.value:
            return (
                f"recovery point {point_id} is recorded in {where} ({recorded['status']}) but missing from the catalog"
            )
        return (
            f"recovery point {point_id} has a manifest in {where} but is missing from the catalog"
            if has_manifest
            else None
        )
    name = row["arn"]
    if recorded is None:
        return f"recovery point {name} is in the catalog but {where} has no record of it"
    differing = [
        f"{field} {row[field]!r} (vault: {recorded[field]!r})"
        for field in POINT_FIELDS
        if row[field] != recorded[field]
    ]
    if differing:
        return f"recovery point {name} differs from what {where} recorded: " + ", ".join(differing)
    if row["status"] in STORED and not has_manifest:
        return f"recovery point {name} is {row['status']} in the catalog but {where} holds no manifest for it"
    if has_manifest and row["status"] == RecoveryPointStatus.DELETED.value:
        return f"recovery point {name} is DELETED in the catalog but {where} still holds its manifest"
    return None


# Records in the vault's store ---------------------------------------------------------------------
def read_record(vault: Vault, key: str) -> dict[str, Any] | None:
    body = vault.read_record(key)
    if body is None:
        return None
    record: dict[str, Any] = json.loads(body)
    return record


def _write_record(vault: Vault, key: str, record: dict[str, Any]) -> None:
    vault.write_record(key, json.dumps({"format": RECORD_FORMAT, **record}, sort_keys=True).encode())


def _write_records(
    account: Account, vault: Vault, vault_name: str, point_ids: list[str], *, force: bool = False
) -> None:
    """Write the points' and then the vault's record from the catalog; the caller holds the catalog's
    write lock. Refused when the vault was attached to another home since; a vault record newer than the
    catalog is never overwritten: it is the evidence (services/records_claim.py, unless ``force``)."""
    record = account.catalog.get_vault(vault_name)
    sequence = account.catalog.vault_sequence(vault_name)
    guard = account.catalog.guard
    assert isinstance(guard, AccountGuard)
    claim_records(
        account.home,
        account.account_id,
        vault_name,
        vault,
        sequence,
        lambda: _recorded_sequence(vault),
        guard.write_key(),
        force=force,
    )
    for point_id in point_ids:
        row = account.catalog.point_row(point_id)
        _write_record(
            vault,
            POINT_RECORDS_PREFIX + point_id,
            {"seq": sequence, "id": point_id, **{f: row[f] for f in POINT_FIELDS}, "tags": _tags(row)},
        )
    _write_record(vault, VAULT_RECORD_KEY, {"seq": sequence, "name": vault_name, **_vault_columns(record)})


def _recorded_sequence(vault: Vault) -> int | None:
    stored = read_record(vault, VAULT_RECORD_KEY)
    return None if stored is None else int(stored["seq"])


def _tags(row: dict[str, Any]) -> dict[str, str]:
    """The point's tags travel in its record (not MAC-checked: information, so a new home keeps them)."""
    tags = row.get("tags")
    return dict(json.loads(tags)) if isinstance(tags, str) and tags else dict(tags or {})


def _point_records(vault: Vault) -> Iterator[tuple[str, dict[str, Any]]]:
    for key in vault.record_keys(POINT_RECORDS_PREFIX):
        record = read_record(vault, key)
        if record is not None:
            yield key[len(POINT_RECORDS_PREFIX) :], record


def _vault_columns(record: VaultRecord) -> dict[str, Any]:
    return {
        "arn": record.arn,
        "access_policy": record.access_policy,
        "lock": record.lock.as_dict() if record.lock else None,
    }
