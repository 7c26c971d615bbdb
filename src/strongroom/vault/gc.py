"""Garbage collection in the vault engine: what the manifests reference, what else is stored, deleting it.

This module knows nothing of catalogs, jobs or locks. Deleting is only safe when no writer is in
flight; ``services/lifecycle.py`` decides when that is (docs/lifecycle.md). An object is live when a
manifest present in the vault names it: an index object of one of its streams, a chunk an index
object lists, or the base a listed delta chunk was compressed against (its index record names it,
docs/vault-format.md §4.1).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from strongroom.clock import now as clock_now
from strongroom.errors import FormatError, IntegrityError, NotFoundError
from strongroom.vault.envelope import Kind
from strongroom.vault.manifest import Manifest, decode_index, load_manifest
from strongroom.vault.objects import Deleted
from strongroom.vault.reader import read_object
from strongroom.vault.vault import Vault, manifest_key

__all__ = ["Deleted", "Marking", "candidates", "delete_objects", "mark", "stored_objects"]

OBJECT_KEY = re.compile(r"^chunks/([0-9a-f]{2})/(\1[0-9a-f]{62})$")


@dataclass
class Marking:
    """What the manifests read so far reference, and which manifests those were."""

    manifests: set[str] = field(default_factory=set)
    referenced: set[bytes] = field(default_factory=set)
    _indexes_read: set[bytes] = field(default_factory=set)

    def add_manifest(self, vault: Vault, manifest: Manifest) -> None:
        for stream in manifest.streams.values():
            for index_id in stream.index:
                self.referenced.add(index_id)
                if index_id not in self._indexes_read:  # consecutive recovery points share index objects
                    self._add_index(vault, index_id)
        self.manifests.add(manifest.recovery_point_id)

    def _add_index(self, vault: Vault, index_id: bytes) -> None:
        data = read_object(vault, index_id, Kind.INDEX)
        for ref in decode_index(data, f"index object {index_id.hex()}"):
            self.referenced.add(ref.id)
            if ref.base is not None:
                self.referenced.add(ref.base)
        self._indexes_read.add(index_id)


def mark(vault: Vault, marking: Marking | None = None) -> Marking:
    """Add every manifest present in the vault and not yet in ``marking`` to it.

    A manifest removed while this runs is skipped (its objects are garbage or shared); one that is
    present but cannot be read raises :class:`IntegrityError`, since what it needs cannot be known.
    """
    marking = marking or Marking()
    for rp_id in vault.list_manifest_ids():
        if rp_id not in marking.manifests:
            _mark_one(vault, marking, rp_id)
    return marking


def _mark_one(vault: Vault, marking: Marking, rp_id: str) -> None:
    try:
        marking.add_manifest(vault, load_manifest(vault, rp_id))
    except NotFoundError:
        return
    except (IntegrityError, FormatError) as exc:
        if vault.store.exists(manifest_key(rp_id)):
            raise IntegrityError(
                f"recovery point {rp_id} cannot be read ({exc.message}), so what it needs is unknown",
                hint="Run 'strongroom verify --read-data', then delete or repair the damaged recovery point",
            ) from None


def stored_objects(vault: Vault) -> set[bytes]:
    """Ids of every chunk and index object in the vault; keys of any other shape are never touched."""
    return vault.objects.stored_ids()


def candidates(marking: Marking, stored: Iterable[bytes]) -> set[bytes]:
    """Stored objects no manifest of ``marking`` references."""
    return set(stored) - marking.referenced


def delete_objects(vault: Vault, object_ids: Iterable[bytes], *, now: datetime | None = None) -> Deleted:
    """Delete what holds only these objects (every version, on a versioned store): each object (format 1), or
    each pack none of whose objects is live (format 2: a partly live pack stays whole, its dead bytes are
    reported). Nothing under Object Lock retention is tried: it is counted as retained, with the earliest end
    of retention, and a collection after that date deletes it."""
    return vault.objects.delete_unreferenced(object_ids, clock_now() if now is None else now)
