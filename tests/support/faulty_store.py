"""A store wrapper that injects faults, so tests damage a vault through the ObjectStore interface.

Tests used to reach into a LocalStore's files (``store.root``) or patch the vault writer to fail; that
ties them to one backend and to private code. :class:`FaultyStore` wraps any store and, when armed,
fails the N-th ``put`` from now with a given error, or hands out altered bytes from ``get`` for chosen
keys, as a bad disk, a full disk or a hostile storage provider would. Unarmed it is the store it wraps
(tests/contract runs it through the whole conformance suite). Tests only: nothing in src knows of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from strongroom.store.base import ObjectStore, Retention, register_store

Tamper = Callable[[bytes], bytes]


class FaultyStore(ObjectStore):
    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.capabilities = inner.capabilities
        self._put_failure: tuple[int, BaseException] | None = None
        self._tampered: dict[str, Tamper] = {}
        self.puts = 0

    @property
    def url(self) -> str:
        return f"faulty+{self.inner.url}"

    def fail_put(self, after: int, error: BaseException) -> None:
        """Let ``after`` more puts through, then raise ``error`` from every put until :meth:`heal`."""
        self._put_failure = (self.puts + after, error)

    def tamper(self, key: str, change: Tamper) -> None:
        """From now on ``get(key)`` returns ``change(stored bytes)``; the stored object is untouched."""
        self._tampered[key] = change

    @contextmanager
    def tampered(self, key: str, change: Tamper) -> Iterator[None]:
        self.tamper(key, change)
        try:
            yield
        finally:
            self._tampered.pop(key, None)

    def heal(self) -> None:
        self._put_failure = None
        self._tampered.clear()

    def put(
        self, key: str, data: bytes, *, if_absent: bool = False, sync: bool = True, retention: Retention | None = None
    ) -> bool:
        if self._put_failure is not None and self.puts >= self._put_failure[0]:
            raise self._put_failure[1]
        self.puts += 1
        return self.inner.put(key, data, if_absent=if_absent, sync=sync, retention=retention)

    def get(self, key: str) -> bytes:
        data = self.inner.get(key)
        change = self._tampered.get(key)
        return change(data) if change else data

    def flush(self) -> None:
        self.inner.flush()

    def head(self, key: str) -> int | None:
        return self.inner.head(key)

    def list(self, prefix: str = "") -> Iterator[str]:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)


def flip_byte(position: int) -> Tamper:
    """A tamper that flips one bit pattern at ``position`` (taken modulo the object's length)."""

    def change(data: bytes) -> bytes:
        damaged = bytearray(data)
        damaged[position % len(damaged)] ^= 0x40
        return bytes(damaged)

    return change


def _from_url(url: str) -> ObjectStore:
    from strongroom.store.base import open_store

    return FaultyStore(open_store(url.split("+", 1)[1]))


register_store("faulty+memory", _from_url)  # for the contract suite; registered only where tests import this
