"""The object-store interface every vault backend implements.

Guarantees every implementation gives (checked by ``tests/contract/test_store_contract.py``):

- ``put`` is atomic: a reader sees the whole object or none of it, also after a crash.
- after ``put(..., sync=True)`` or ``flush()`` returns, the object survives a power failure.
- ``put(..., if_absent=True)`` never replaces an existing object and reports whether it wrote.
- ``get`` returns exactly the bytes put, or raises :class:`~strongroom.errors.NotFoundError`.
- ``list(prefix)`` yields every key under the prefix, in no particular order.
- Keys are ``/``-separated ASCII paths without ``..``.

Optional, behind ``capabilities.object_lock`` (S3 Object Lock; docs/storage.md):

- ``put(..., retention=Retention(mode, until))`` writes the object so that no one, with this store's
  credentials or any other, can delete or replace that version before ``until`` (COMPLIANCE; GOVERNANCE
  yields only to a principal allowed to bypass it). A store without Object Lock refuses a retention
  instead of ignoring it.
- ``extend_retention(key, retention)`` never shortens nor weakens a retention; ``retention(key)`` reads it.

On a versioned store (S3 with versioning, always so with Object Lock), ``versions`` lists every version and
delete marker, ``get_version`` reads an older version, ``delete_version`` removes one for good (refused by the
storage while it is under retention) and ``purge`` removes a key with all its versions. Other stores have one
version per key: ``versions`` yields nothing and ``purge`` is ``delete``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from urllib.parse import urlparse

from strongroom.errors import ConfigError, NotFoundError, StorageError


class LockMode(StrEnum):
    """S3 Object Lock modes, weakest first."""

    GOVERNANCE = "GOVERNANCE"  # a principal with s3:BypassGovernanceRetention may still delete or shorten
    COMPLIANCE = "COMPLIANCE"  # no one may delete the version or shorten its retention until it ends


@dataclass(frozen=True)
class Retention:
    """An object version's lock: its mode and the instant (timezone-aware) until which it is kept."""

    mode: LockMode
    until: datetime

    def __post_init__(self) -> None:
        if self.until.tzinfo is None:
            raise ValueError("a retain-until date must be timezone-aware")

    def at_least(self, other: Retention) -> Retention:
        """The later date and the stronger mode of the two: what extending by ``other`` gives."""
        mode = LockMode.COMPLIANCE if LockMode.COMPLIANCE in (self.mode, other.mode) else LockMode.GOVERNANCE
        return Retention(mode, max(self.until, other.until))


@dataclass(frozen=True)
class ObjectStat:
    """What one HEAD tells of an object: its size and, on a store with Object Lock, its retention."""

    size: int
    retention: Retention | None = None


@dataclass(frozen=True)
class ObjectVersion:
    """One version of a key on a versioned store, or a delete marker (no body)."""

    key: str
    version_id: str
    latest: bool
    delete_marker: bool
    modified: datetime
    size: int = 0


class RetainedError(StorageError):
    """The storage refused to remove an object version because it is still under retention."""


def covers(have: Retention | None, wanted: Retention) -> bool:
    """Does a retention ``have`` already give at least ``wanted`` (as late, and as strong a mode)?"""
    if have is None or have.until < wanted.until:
        return False
    return have.mode == LockMode.COMPLIANCE or wanted.mode == LockMode.GOVERNANCE


def check_key(key: str) -> str:
    """Refuse a key that is not a relative ``/``-separated ASCII path without ``..`` or empty parts."""
    parts = key.split("/")
    if not key or not key.isascii() or key.startswith("/") or ".." in parts or "" in parts[:-1]:
        raise StorageError(f"invalid object key '{key}'")
    return key


@dataclass(frozen=True)
class StoreCapabilities:
    conditional_write: bool = True
    atomic_replace: bool = True
    object_lock: bool = False
    # remove_all() drops the whole store at once (a directory tree); otherwise objects go one delete at a time.
    bulk_removal: bool = False


class ObjectStore(ABC):
    capabilities = StoreCapabilities()
    # Requests worth keeping in flight at once (the vault's writer and reader size their pools by it): a
    # local disk gains nothing past a few, an S3 endpoint's throughput comes from many parallel requests.
    concurrency = 2
    # Target size of a pack object in a format-2 vault (vault/packs.py); None: new vaults here are format 1.
    pack_size: int | None = None

    @abstractmethod
    def put(
        self, key: str, data: bytes, *, if_absent: bool = False, sync: bool = True, retention: Retention | None = None
    ) -> bool:
        """Store ``data`` under ``key``; with ``if_absent`` keep an existing object. True if written.

        With ``sync=False`` the object is visible at once but may be lost in a power failure until
        :meth:`flush` returns; writers use it for chunks and flush once before the manifest.
        ``retention`` needs ``capabilities.object_lock``; other stores raise :class:`StorageError`.
        """

    @abstractmethod
    def flush(self) -> None:
        """Make every object put so far durable."""

    def make_durable(self, key: str) -> None:
        """Make the one object ``key`` durable (one put earlier may have been cut off before it synced);
        stores whose puts are durable when they return need nothing more than :meth:`flush`."""
        self.flush()

    @abstractmethod
    def get(self, key: str) -> bytes: ...

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """``length`` bytes of ``key`` from ``start`` (fewer when the object is shorter); NotFoundError if absent.
        Stores that can read a range without the whole object override this (S3: a ranged GET)."""
        return self.get(key)[start : start + length]

    @abstractmethod
    def head(self, key: str) -> int | None:
        """Size of the object, or None when it does not exist."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; removing a missing object is not an error."""

    def retention(self, key: str) -> Retention | None:
        """The Object Lock retention of ``key``; None on a store without Object Lock."""
        return None

    def stat(self, key: str) -> ObjectStat | None:
        """Size and retention of ``key`` (None when it does not exist); one request where the store can."""
        size = self.head(key)
        if size is None:
            return None
        return ObjectStat(size, self.retention(key) if self.capabilities.object_lock else None)

    def extend_retention(self, key: str, wanted: Retention, *, current: ObjectStat | None = None) -> Retention:
        """Give ``key`` at least ``wanted`` (never shorter nor weaker than it has); returns the result.
        ``current``: what a :meth:`stat` just said of it, which spares asking again."""
        raise StorageError(f"{self.url} has no Object Lock: it cannot retain {key}")

    def versions(self, prefix: str = "") -> Iterator[ObjectVersion]:
        """Every version and delete marker under ``prefix``; nothing on a store without versions."""
        return iter(())

    def get_version(self, key: str, version_id: str) -> bytes:
        raise NotFoundError(f"{self.url} keeps no versions: no version {version_id} of {key}")

    def version_retention(self, key: str, version_id: str) -> Retention | None:
        return None

    def delete_version(self, key: str, version_id: str) -> None:
        """Remove one version or delete marker for good; :class:`RetainedError` while it is under retention."""
        raise StorageError(f"{self.url} keeps no versions: cannot delete version {version_id} of {key}")

    def purge(self, key: str) -> None:
        """Remove ``key`` for good, every version of it; :class:`RetainedError` when one is under retention."""
        self.delete(key)

    def refuse_retention(self, retention: Retention | None) -> None:
        """For stores without Object Lock: a retention asked for is an error, never silently dropped."""
        if retention is not None:
            raise StorageError(f"{self.url} has no Object Lock: it cannot write an object under retention")

    def conditional_writes_supported(self) -> bool:
        """Is ``put(if_absent=True)`` atomic here, one winner among racing writers? (May ask the server.)"""
        return self.capabilities.conditional_write

    def conditional_replace_supported(self) -> bool:
        """Can :meth:`replace_if` replace an object only while it is the version one last saw (S3's ``If-Match``
        with ``If-None-Match``)? Stores without it answer False and their callers read before they write."""
        return False

    def get_tagged(self, key: str) -> tuple[bytes, str | None]:
        """The object and its entity tag (a new one for every write of other bytes), None where the store keeps
        none; NotFoundError if absent."""
        return self.get(key), None

    def replace_if(self, key: str, data: bytes, tag: str | None, *, retention: Retention | None = None) -> str | None:
        """Write ``key`` only if its current version has entity tag ``tag`` (``None``: only if it is absent), in
        one atomic request; the new version's tag, or None when the object was another version (nothing
        written). Only where :meth:`conditional_replace_supported`."""
        raise StorageError(f"{self.url} cannot replace an object conditionally")

    def check_vault_lock_support(self) -> None:
        """Raise :class:`ConfigError` unless this store can hold a locked vault. Any store can where the
        vault lock is Strongroom's own promise (a local directory); a store whose lock is the storage's
        own (S3 Object Lock) must have it turned on."""
        return None

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def remove_all(self) -> None:
        """Remove the store itself with every object in it, where ``capabilities.bulk_removal`` says it can."""
        raise NotImplementedError(f"{type(self).__name__} cannot remove itself at once; delete its objects")

    @property
    @abstractmethod
    def url(self) -> str: ...


StoreFactory = Callable[[str], ObjectStore]
_factories: dict[str, StoreFactory] = {}


def register_store(scheme: str, factory: StoreFactory) -> None:
    _factories[scheme] = factory


def open_store(url: str) -> ObjectStore:
    """Open a store from its URL: ``file:///path`` (or a plain path), ``memory://name``, ``s3://BUCKET/PREFIX``."""
    scheme = urlparse(url).scheme or "file"
    _load_builtin_stores()
    factory = _factories.get(scheme)
    if factory is None:
        known = ", ".join(sorted(_factories))
        shown = url.split("?", 1)[0]  # never echo a password or a query's secrets
        if "@" in shown:
            shown = f"{scheme}://…@{shown.rsplit('@', 1)[1]}"
        raise ConfigError(f"unknown object store scheme '{scheme}' in {shown}", hint=f"Use one of: {known}")
    return factory(url)


def store_schemes() -> list[str]:
    """The URL schemes of every registered store: the built-in ones and any registered since."""
    _load_builtin_stores()
    return sorted(_factories)


def _load_builtin_stores() -> None:
    # s3 imports boto3 only when a store is opened, so this costs the CLI's start-up nothing.
    from strongroom.store import local, memory, s3  # noqa: F401  (they register themselves)
