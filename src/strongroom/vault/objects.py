"""Where a vault's content-addressed objects (chunks and index objects) live: the one place they are put, got and
looked up (docs/vault-format.md §2 and §2.1).

- :class:`LooseObjects` (vault format 1): one store object per sealed object, ``chunks/<hh>/<id>``.
- :class:`~strongroom.vault.packs.PackedObjects` (format 2): sealed objects concatenated into pack objects with a
  sealed pack index each; lookups go through a chunk -> pack map built from the pack indexes.

Both authenticate nothing themselves: they hand sealed bytes to an ``opener`` that authenticates them (the
envelope's tag and the keyed re-hash of the plaintext, vault/reader.py), so where an object is found never
decides what it holds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from strongroom.errors import IntegrityError, NotFoundError
from strongroom.faults import fault_point
from strongroom.store.base import RetainedError, Retention

if TYPE_CHECKING:
    from strongroom.vault.packs import Location
    from strongroom.vault.retention import RetentionKeeper
    from strongroom.vault.vault import Vault

T = TypeVar("T")
# Opens one sealed object: (sealed bytes, a name for error messages) -> what the caller wants of it.
Opener = Callable[[bytes, str], T]


@dataclass(frozen=True)
class Deleted:
    """What a collection deleted (storage objects), and what it had to keep."""

    objects: int
    bytes: int
    retained: int = 0  # unreferenced, but the storage keeps them under Object Lock retention until then
    retained_until: datetime | None = None  # the earliest such retention's end: the next GC after it frees them
    dead_bytes_kept: int = 0  # packed vaults: bytes of unreferenced objects inside packs that hold a live one
    partly_live_packs: int = 0


class WriteSession(ABC):
    """One writer's view of the vault's objects: what is stored already, and storing more."""

    @abstractmethod
    def stored_size(self, object_id: bytes) -> int | None:
        """Sealed size of a stored object (None: store it). Under a retention, the object's storage is extended
        to it (never shortened) as a side effect: a reused object lasts as long as the point that reuses it."""

    @abstractmethod
    def put(self, object_id: bytes, sealed: bytes) -> bool:
        """Store a sealed object; False when it was already there (another writer was first)."""

    @abstractmethod
    def flush(self) -> None:
        """Make everything put so far durable and findable: called before the manifest is written."""

    def close(self) -> None:  # noqa: B027 (most sessions have no background work)
        """Stop background work (uploads of a session abandoned by an error are left as orphans)."""


class ObjectLayout(ABC):
    """The vault-wide side: finding, reading and collecting content-addressed objects."""

    packed = False

    @abstractmethod
    def session(self, retention: Retention | None, keeper: RetentionKeeper | None) -> WriteSession: ...

    @abstractmethod
    def open(self, object_id: bytes, opener: Opener[T], *, prefetched: bytes | None = None) -> T:
        """``opener`` over the stored object; IntegrityError when it is missing or no stored copy opens."""

    def committed(self, object_id: bytes) -> Location | None:
        """Where in a pack the object lies (packed vaults only; None for loose objects)."""
        return None

    def fetch_span(self, object_ids: list[bytes]) -> dict[bytes, bytes]:
        """Sealed bytes of several objects in one request, where the layout can ({} otherwise)."""
        return {}

    def fetched_along(self, object_id: bytes) -> bytes | None:
        """Sealed bytes of the object fetched already along with others (packed vaults), else None."""
        return None

    def fetched_between(self, pack_id: str, start: int, end: int) -> bool:
        """Whether an object lying in the pack's bytes [start, end) was fetched already (packed vaults)."""
        return False

    def keep_along(self, pieces: dict[bytes, bytes]) -> None:  # noqa: B027 (loose objects: nothing to keep)
        """Keep sealed bytes fetched for a caller where later single reads find them (packed vaults)."""

    @abstractmethod
    def exists(self, object_id: bytes, hidden: Iterable[str] = ()) -> bool:
        """Is the object stored (keys in ``hidden``, under a delete marker, count as stored)?"""

    @abstractmethod
    def stored_ids(self) -> set[bytes]:
        """Every object id the vault holds (for the collector)."""

    @abstractmethod
    def storage_keys(self, object_ids: Iterable[bytes]) -> list[str]:
        """The store keys holding these objects (what Object Lock retention is set on)."""

    @abstractmethod
    def delete_unreferenced(self, object_ids: Iterable[bytes], now: datetime) -> Deleted:
        """Delete what holds only these objects; never try a delete under retention (count it instead)."""


class LooseObjects(ObjectLayout):
    """Format 1: one store object per sealed object."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault

    def session(self, retention: Retention | None, keeper: RetentionKeeper | None) -> WriteSession:
        return _LooseSession(self.vault, retention, keeper)

    def open(self, object_id: bytes, opener: Opener[T], *, prefetched: bytes | None = None) -> T:
        from strongroom.vault.vault import chunk_key, open_stored

        key = chunk_key(object_id)
        what = f"object {key}"
        try:
            return open_stored(self.vault.store, key, lambda sealed: opener(sealed, what))
        except NotFoundError:
            raise IntegrityError(f"{what} is missing from the vault") from None

    def exists(self, object_id: bytes, hidden: Iterable[str] = ()) -> bool:
        from strongroom.vault.vault import chunk_key

        key = chunk_key(object_id)
        return key in hidden or self.vault.store.head(key) is not None

    def stored_ids(self) -> set[bytes]:
        from strongroom.vault.gc import OBJECT_KEY
        from strongroom.vault.vault import CHUNKS_PREFIX

        found = set()
        for key in self.vault.store.list(CHUNKS_PREFIX):
            match = OBJECT_KEY.match(key)
            if match:
                found.add(bytes.fromhex(match[2]))
        return found

    def storage_keys(self, object_ids: Iterable[bytes]) -> list[str]:
        from strongroom.vault.vault import chunk_key

        return [chunk_key(object_id) for object_id in sorted(set(object_ids))]

    def delete_unreferenced(self, object_ids: Iterable[bytes], now: datetime) -> Deleted:
        from strongroom.vault.vault import chunk_key

        tally = DeleteTally(now)
        for object_id in sorted(object_ids):
            tally.delete(self.vault, [chunk_key(object_id)])
        return tally.result()


class DeleteTally:
    """Deletes storage objects unless under retention, counting what went and what stayed."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.count = self.size = self.retained = 0
        self.earliest: datetime | None = None

    def delete(self, vault: Vault, keys: list[str]) -> bool:
        """Delete ``keys`` in order (every version of each); stop at the first under retention. True: all gone.

        A key still under retention is never tried: it is counted as retained with its end of retention, and a
        collection after that date deletes it. Should the storage refuse anyway (its clock counts), the same."""
        for key in keys:
            found = vault.store.stat(key)
            if found is None:
                continue
            until = found.retention.until if found.retention else None
            if until is None or until <= self.now:
                try:
                    vault.store.purge(key)
                except RetainedError:
                    until = until or self.now
                else:
                    self.count += 1
                    self.size += found.size
                    if self.count == 1:
                        fault_point("gc:after-first-delete")
                    continue
            self.retained += 1
            self.earliest = until if self.earliest is None else min(self.earliest, until)
            return False
        return True

    def result(self, dead_bytes_kept: int = 0, partly_live_packs: int = 0) -> Deleted:
        return Deleted(self.count, self.size, self.retained, self.earliest, dead_bytes_kept, partly_live_packs)


class _LooseSession(WriteSession):
    def __init__(self, vault: Vault, retention: Retention | None, keeper: RetentionKeeper | None) -> None:
        self.vault = vault
        self.retention = retention
        self.keeper = keeper

    def stored_size(self, object_id: bytes) -> int | None:
        from strongroom.vault.vault import chunk_key

        key = chunk_key(object_id)
        if self.keeper is None:
            return self.vault.store.head(key)
        found = self.keeper.stat(key)
        return None if found is None else found.size

    def put(self, object_id: bytes, sealed: bytes) -> bool:
        from strongroom.vault.vault import chunk_key

        key = chunk_key(object_id)
        written = self.vault.store.put(key, sealed, if_absent=True, sync=False, retention=self.retention)
        if written and self.keeper is not None:
            self.keeper.wrote(key)
        return written

    def flush(self) -> None:
        self.vault.store.flush()
