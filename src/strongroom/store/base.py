"""The object-store interface every vault backend implements.

Guarantees every implementation gives (checked by ``tests/contract/test_store_contract.py``):

- ``put`` is atomic: a reader sees the whole object or none of it, also after a crash.
- after ``put(..., sync=True)`` or ``flush()`` returns, the object survives a power failure.
- ``put(..., if_absent=True)`` never replaces an existing object and reports whether it wrote.
- ``get`` returns exactly the bytes put, or raises :class:`~strongroom.errors.NotFoundError`.
- ``list(prefix)`` yields every key under the prefix, in no particular order.
- Keys are ``/``-separated ASCII paths without ``..``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlparse

from strongroom.errors import ConfigError


@dataclass(frozen=True)
class StoreCapabilities:
    conditional_write: bool = True
    atomic_replace: bool = True
    object_lock: bool = False
    # remove_all() drops the whole store at once (a directory tree); otherwise objects go one delete at a time.
    bulk_removal: bool = False


class ObjectStore(ABC):
    capabilities = StoreCapabilities()

    @abstractmethod
    def put(self, key: str, data: bytes, *, if_absent: bool = False, sync: bool = True) -> bool:
        """Store ``data`` under ``key``; with ``if_absent`` keep an existing object. True if written.

        With ``sync=False`` the object is visible at once but may be lost in a power failure until
        :meth:`flush` returns; writers use it for chunks and flush once before the manifest.
        """

    @abstractmethod
    def flush(self) -> None:
        """Make every object put so far durable."""

    @abstractmethod
    def get(self, key: str) -> bytes: ...

    @abstractmethod
    def head(self, key: str) -> int | None:
        """Size of the object, or None when it does not exist."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; removing a missing object is not an error."""

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
    """Open a store from its URL: ``file:///path`` (or a plain path), ``memory://name``."""
    scheme = urlparse(url).scheme or "file"
    _load_builtin_stores()
    factory = _factories.get(scheme)
    if factory is None:
        known = ", ".join(sorted(_factories))
        raise ConfigError(f"unknown object store scheme '{scheme}' in {url}", hint=f"Use one of: {known}")
    return factory(url)


def store_schemes() -> list[str]:
    """The URL schemes of every registered store: the built-in ones and any registered since."""
    _load_builtin_stores()
    return sorted(_factories)


def _load_builtin_stores() -> None:
    from strongroom.store import local, memory  # noqa: F401  (they register themselves)
