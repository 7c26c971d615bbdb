"""An in-memory object store, for fast deterministic tests of the layers above."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from strongroom.errors import NotFoundError
from strongroom.store.base import ObjectStore, Retention, register_store

_named: dict[str, MemoryStore] = {}


class MemoryStore(ObjectStore):
    def __init__(self, name: str = "default") -> None:
        self.name = name
        self.objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"memory://{self.name}"

    def put(
        self, key: str, data: bytes, *, if_absent: bool = False, sync: bool = True, retention: Retention | None = None
    ) -> bool:
        self.refuse_retention(retention)
        with self._lock:
            if if_absent and key in self.objects:
                return False
            self.objects[key] = bytes(data)
            return True

    def flush(self) -> None:
        """Memory has nothing to make durable."""

    def get(self, key: str) -> bytes:
        try:
            return self.objects[key]
        except KeyError:
            raise NotFoundError(f"object {key} not found in {self.url}") from None

    def head(self, key: str) -> int | None:
        data = self.objects.get(key)
        return None if data is None else len(data)

    def list(self, prefix: str = "") -> Iterator[str]:
        yield from [key for key in list(self.objects) if key.startswith(prefix)]

    def delete(self, key: str) -> None:
        with self._lock:
            self.objects.pop(key, None)


def _from_url(url: str) -> ObjectStore:
    name = url.split("://", 1)[1] or "default"
    return _named.setdefault(name, MemoryStore(name))


register_store("memory", _from_url)
