"""A home's claim to write a vault's catalog records: one conditional write instead of two reads, where it can.

Before a home writes a vault's records (services/catalog_integrity.py) it must know that no other home took
the vault since (``vaults attach`` elsewhere writes the vault's home marker: services/homes.py) and that the
vault's record is not newer than this home's catalog (a catalog put back from an older copy). Asked by
reading, that is two GETs before every write: four per backup.

On a store that replaces conditionally (S3 honouring ``If-Match``), every record write of a home is preceded
by a write of the home marker, conditional on the marker still being the version this home wrote last. The
home keeps that version's tag and the change sequence it wrote in ``HOME/cache/vaults/<vault-id>/`` (a
cache: deleting it costs reads, never safety). When the conditional write succeeds nobody wrote the marker
since, and as every writer writes the marker before the records, nobody wrote the records either: the vault's
record is this home's, at most at the kept sequence, and comparing that with the catalog's is the rollback
check. When it fails — another home attached the vault, the cache is lost or older than the vault (a home put
back from a copy), a version was planted — the home reads as before (the marker, refusing another home's; the
vault's record, refusing a newer one) and then writes the marker conditionally on the version it read, so a
home attaching the vault at that instant makes one of the two fail instead of both writing.

The kept claim is authenticated with the account's catalog MAC key: whoever can write the home's files
but lacks the passphrase (the attacker who puts ``catalog.db`` back from an older copy) cannot lower its
sequence, and a claim copied from earlier names a marker version that is gone, so it fails the conditional
write and the home reads.

Stores without it (local directories, S3 servers that ignore ``If-Match``) read every time, as before
(:func:`~strongroom.services.homes.keep_writing`).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from strongroom.errors import CatalogIntegrityError, IntegrityError, VaultInUseError
from strongroom.fsutil import write_private
from strongroom.model import iso, now
from strongroom.services.homes import damaged_marker, home_id, in_use_error, keep_writing, vault_cache
from strongroom.vault import Vault
from strongroom.vault.inventory import HOME_MARKER_KEY, HomeMarker, home_marker_body, parse_home_marker

CLAIM_FILE = "records-claim.json"
CLAIM_MAC_CONTEXT = b"strongroom records claim v1"


@dataclass(frozen=True)
class RecordsClaim:
    """The home marker version this home wrote last (its tag) and the highest sequence it wrote records at."""

    marker_tag: str
    sequence: int


def claim_records(
    home: Path,
    account_id: str,
    vault_name: str,
    vault: Vault,
    sequence: int,
    recorded_sequence: Callable[[], int | None],
    mac_key: bytes,
    *,
    force: bool = False,
) -> None:
    """Let this home write the vault's records at ``sequence``, or refuse: VaultInUseError (another home
    writes it), CatalogIntegrityError (the vault recorded a later sequence: this catalog was rolled back).
    ``recorded_sequence`` reads the vault's own record; ``mac_key`` (the account's catalog MAC key)
    authenticates the kept claim; ``force`` (an operator vouching for this catalog) skips both refusals.
    The caller holds the catalog's write lock."""
    if not vault.store.conditional_replace_supported():
        if not force:
            keep_writing(home, account_id, vault_name, vault)
            _refuse_newer(vault_name, sequence, recorded_sequence())
        return
    marker = home_marker_body(HomeMarker(home_id(home), account_id, iso(now()) or ""))
    vault_id = vault.config.vault_id
    kept = load_claim(home, vault_id, mac_key)
    if kept is not None:
        if not force:
            _refuse_newer(vault_name, sequence, kept.sequence)
        tag = vault.replace_record(HOME_MARKER_KEY, marker, kept.marker_tag, retained=False)
        if tag is not None:
            _keep_claim(home, vault_id, RecordsClaim(tag, max(sequence, kept.sequence)), mac_key)
            return
    try:
        body, current = vault.read_record_tagged(HOME_MARKER_KEY)
        found = parse_home_marker(body) if body is not None else None
    except IntegrityError as exc:
        raise damaged_marker(exc) from None
    if not force:
        if found is not None and found.home_id != home_id(home):
            raise in_use_error(vault_name, found)
        _refuse_newer(vault_name, sequence, recorded_sequence())
    tag = vault.replace_record(HOME_MARKER_KEY, marker, current, retained=False)
    if tag is None:
        raise VaultInUseError(
            f"vault '{vault_name}': its home marker changed while this home was checking it",
            hint="Run the command again; if this repeats, another home writes the vault ('vaults attach' there?)",
        )
    _keep_claim(home, vault_id, RecordsClaim(tag, sequence), mac_key)


def rolled_back(vault_name: str, sequence: int, recorded: int) -> str:
    return (
        f"the catalog is older than vault '{vault_name}' (change {sequence}, the vault recorded change "
        f"{recorded}): catalog.db was put back from an older copy or replaced"
    )


def _refuse_newer(vault_name: str, sequence: int, recorded: int | None) -> None:
    if recorded is not None and recorded > sequence:
        raise CatalogIntegrityError(rolled_back(vault_name, sequence, recorded))


def load_claim(home: Path, vault_id: str, mac_key: bytes) -> RecordsClaim | None:
    """The claim this home kept for the vault; None when there is none, or it is unreadable or unauthentic
    (then the home reads)."""
    path = vault_cache(home, vault_id) / CLAIM_FILE
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        raw = json.loads(path.read_text())
        claim = RecordsClaim(str(raw["marker_tag"]), int(raw["sequence"]))
        if hmac.compare_digest(str(raw["mac"]), _mac(mac_key, vault_id, claim)):
            return claim
    return None


def _keep_claim(home: Path, vault_id: str, claim: RecordsClaim, mac_key: bytes) -> None:
    """Replace the kept claim atomically (lost or stale, it only costs the reads)."""
    body = {**asdict(claim), "mac": _mac(mac_key, vault_id, claim)}
    write_private(vault_cache(home, vault_id) / CLAIM_FILE, json.dumps(body).encode())


def _mac(mac_key: bytes, vault_id: str, claim: RecordsClaim) -> str:
    message = json.dumps([vault_id, claim.marker_tag, claim.sequence]).encode()
    return hmac.new(hmac.new(mac_key, CLAIM_MAC_CONTEXT, hashlib.sha256).digest(), message, hashlib.sha256).hexdigest()
