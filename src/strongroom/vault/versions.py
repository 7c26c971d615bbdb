"""Objects hidden on a versioned store: found by ``verify``, put back by ``verify --repair``.

With S3 Object Lock, whoever holds the bucket's credentials cannot destroy a locked version, but can still
hide it: a plain DeleteObject puts a delete marker on top, a PUT puts a newer version on top. Reads already
go past both (``vault.open_stored`` takes the newest older version that authenticates), so no forged
version can substitute for content; this module names each such object and repairs it: a delete marker on
top of an object is removed, a newer version on top that is unlocked or fails authentication is covered by
the authentic version's bytes, put again under that version's retention (docs/operations.md).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from strongroom.errors import IntegrityError, NotFoundError
from strongroom.store.base import ObjectStore, ObjectVersion
from strongroom.vault import envelope
from strongroom.vault.packs import PACKS_PREFIX
from strongroom.vault.vault import (
    CHUNKS_PREFIX,
    KEYS_PREFIX,
    MANIFESTS_PREFIX,
    RECORDS_PREFIX,
    Vault,
    chunk_id_from_key,
)


class Hidden(StrEnum):
    DELETE_MARKER = "hidden by a delete marker"
    UNLOCKED_ON_TOP = "newer unlocked version on top"
    FORGED_ON_TOP = "newer version on top fails authentication"


@dataclass(frozen=True)
class HiddenObject:
    key: str
    problem: Hidden


def find_hidden(vault: Vault, wanted: Callable[[str], bool]) -> list[HiddenObject]:
    """Every object ``wanted`` says the vault needs whose newest version is not its authentic locked one.

    One version listing of the vault; a HEAD and a GET more only for keys with several versions (rare: an
    object re-written after it was hidden, a catalog record rewritten, or someone's PUT on top).
    """
    by_key: dict[str, list[ObjectVersion]] = defaultdict(list)
    for version in vault.store.versions():
        if wanted(version.key):
            by_key[version.key].append(version)
    found = []
    for key, versions in sorted(by_key.items()):
        problem = _problem(vault, key, versions)
        if problem is not None:
            found.append(HiddenObject(key, problem))
    return found


def _problem(vault: Vault, key: str, versions: list[ObjectVersion]) -> Hidden | None:
    bodies = [v for v in versions if not v.delete_marker]
    latest = next((v for v in versions if v.latest), None)
    if latest is None or not bodies:
        return None
    if latest.delete_marker:
        return Hidden.DELETE_MARKER
    if len(bodies) < 2 or key.startswith(RECORDS_PREFIX):  # a record is rewritten by design: authenticated on read
        return None
    if vault.store.version_retention(key, latest.version_id) is None and any(
        vault.store.version_retention(key, v.version_id) is not None for v in bodies if v is not latest
    ):
        return Hidden.UNLOCKED_ON_TOP
    if not authentic(vault, key, vault.store.get_version(key, latest.version_id)):
        return Hidden.FORGED_ON_TOP
    return None


def authentic(vault: Vault, key: str, data: bytes) -> bool:
    """Does ``data`` authenticate as the object ``key`` of this vault? (Sealed objects only; a wrapped key set
    under ``keys/`` opens only with the passphrase, so any body is accepted there: see :func:`repair`.)"""
    if key.startswith(KEYS_PREFIX):
        return True
    if key.startswith(PACKS_PREFIX):
        return _pack_authentic(vault, key, data)
    name = chunk_id_from_key(key) if key.startswith(CHUNKS_PREFIX) else key.encode()
    try:
        envelope.open_sealed(vault.keys.encryption_key, name, data, what=key)
    except IntegrityError:
        return False
    return True


def _pack_authentic(vault: Vault, key: str, data: bytes) -> bool:
    from strongroom.vault.packs import PackedObjects

    objects = vault.objects
    return isinstance(objects, PackedObjects) and objects.authentic(key, data)


def repair(vault: Vault, hidden: Iterable[HiddenObject]) -> list[str]:
    """Put the authentic version of each hidden object back on top; returns the keys repaired.

    A delete marker on top is removed (markers carry no retention); a version on top that is unlocked or
    forged is covered by the bytes of the newest authentic version, PUT again under its retention. Under
    ``keys/`` (write-once, not authenticated without the passphrase) the oldest version is the original.
    """
    repaired = []
    store = vault.store
    for item in hidden:
        versions = sorted((v for v in store.versions(item.key) if v.key == item.key), key=lambda v: v.modified)
        if item.problem == Hidden.DELETE_MARKER:
            _remove_markers_on_top(store, item.key, versions)
            repaired.append(item.key)
            continue
        source = _authentic_version(vault, item.key, [v for v in versions if not v.delete_marker and not v.latest])
        if source is None:
            continue
        data, version = source
        store.put(item.key, data, retention=store.version_retention(item.key, version.version_id))
        repaired.append(item.key)
    return repaired


def _remove_markers_on_top(store: ObjectStore, key: str, oldest_first: list[ObjectVersion]) -> None:
    for version in reversed(oldest_first):
        if not version.delete_marker:
            return
        store.delete_version(key, version.version_id)


def _authentic_version(vault: Vault, key: str, candidates: list[ObjectVersion]) -> tuple[bytes, ObjectVersion] | None:
    ordered = candidates if key.startswith(KEYS_PREFIX) else list(reversed(candidates))
    for version in ordered:
        try:
            data = vault.store.get_version(key, version.version_id)
        except NotFoundError:
            continue
        if authentic(vault, key, data):
            return data, version
    return None


def needed_keys(live_manifests: set[str]) -> Callable[[str], bool]:
    """The keys whose hiding matters: all but the manifests of points no longer live (withdrawn on purpose)."""

    def wanted(key: str) -> bool:
        if key.startswith(MANIFESTS_PREFIX):
            return key[len(MANIFESTS_PREFIX) :] in live_manifests
        return True

    return wanted
