"""Object retention in the vault engine: writing and keeping objects under the storage's own lock.

On a store with Object Lock (S3) a locked vault's objects carry a retain-until date and a mode
(docs/vault-format.md, "Object retention"). What date a recovery point needs is decided above this
layer (services/object_lock.py); here it is applied: a :class:`RetentionKeeper` is one write session's
view of which objects already hold it, so an object is looked at once and extended only when its
current date is earlier than needed. Retentions are only ever extended, never shortened.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from strongroom.store.base import ObjectStat, ObjectStore, Retention, covers

if TYPE_CHECKING:
    from strongroom.vault.vault import Vault


class RetentionKeeper:
    """Gives objects at least ``wanted`` retention, remembering what each object already holds."""

    def __init__(self, store: ObjectStore, wanted: Retention) -> None:
        self.store = store
        self.wanted = wanted
        self.extended = 0  # PutObjectRetention requests made
        self._known: dict[str, Retention] = {}
        self._lock = threading.Lock()

    def holds(self, key: str) -> bool:
        """Is ``key`` known (this session) to hold the wanted retention already?"""
        with self._lock:
            return covers(self._known.get(key), self.wanted)

    def wrote(self, key: str) -> None:
        """``key`` was just written under the wanted retention."""
        with self._lock:
            self._known[key] = self.wanted

    def stat(self, key: str) -> ObjectStat | None:
        """HEAD ``key`` (size and retention) and extend its retention if short; None when it is absent."""
        found = self.store.stat(key)
        if found is not None:
            self.ensure(key, found)
        return found

    def ensure(self, key: str, found: ObjectStat | None = None) -> None:
        """Make ``key`` hold the wanted retention; ``found`` is a fresh :meth:`ObjectStore.stat` of it."""
        if self.holds(key):
            return
        if found is None:
            found = self.store.stat(key)
            if found is None:
                return  # not there: whoever needs it writes it (under retention)
        have = found.retention
        if not covers(have, self.wanted):
            have = self.store.extend_retention(key, self.wanted, current=found)
            with self._lock:
                self.extended += 1
        with self._lock:
            self._known[key] = have if have is not None else self.wanted


@dataclass(frozen=True)
class Extended:
    """What extending a recovery point's objects did."""

    objects: int  # objects looked at
    extended: int  # of them, retentions moved later (or made stronger)


def vault_root_keys(store: ObjectStore) -> list[str]:
    """The objects without which no recovery point opens: the wrapped keys and the config."""
    from strongroom.vault.vault import CONFIG_KEY, KEYS_PREFIX

    return [*sorted(store.list(KEYS_PREFIX)), CONFIG_KEY]


def manifest_holds(store: ObjectStore, recovery_point_id: str, wanted: Retention) -> bool:
    """Does the point's manifest already hold ``wanted``? Its objects are extended before it, so then they do too."""
    from strongroom.vault.vault import manifest_key

    found = store.stat(manifest_key(recovery_point_id))
    return found is not None and covers(found.retention, wanted)


def retain_point(vault: Vault, recovery_point_id: str, wanted: Retention) -> Extended:
    """Extend the retention of everything the recovery point needs to ``wanted``: each chunk and index object
    its manifest names (in a packed vault: each pack holding one, and that pack's index), the vault's keys and
    config, and the manifest itself last (so that a manifest holding a retention proves its objects do:
    :func:`manifest_holds`)."""
    from strongroom.vault.gc import Marking
    from strongroom.vault.manifest import load_manifest
    from strongroom.vault.vault import manifest_key

    keeper = RetentionKeeper(vault.store, wanted)
    marking = Marking()
    marking.add_manifest(vault, load_manifest(vault, recovery_point_id))
    keys = vault.objects.storage_keys(marking.referenced)  # each chunk's object, or each pack and its index
    keys += [*vault_root_keys(vault.store), manifest_key(recovery_point_id)]
    for key in keys:
        keeper.ensure(key)
    return Extended(len(keys), keeper.extended)


def retain_records(vault: Vault, wanted: Retention) -> int:
    """Extend every catalog record (``catalog/``) but the home marker to ``wanted``; how many retentions moved."""
    from strongroom.vault.vault import HOME_MARKER_KEY, RECORDS_PREFIX

    keeper = RetentionKeeper(vault.store, wanted)
    for key in vault.store.list(RECORDS_PREFIX):
        if key != HOME_MARKER_KEY:
            keeper.ensure(key)
    return keeper.extended
