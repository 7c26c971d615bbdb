"""An object store in a local directory: one file per object, written atomically."""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from strongroom.errors import NotFoundError, StorageError, StorageFullError
from strongroom.fsutil import fsync_dir
from strongroom.store.base import ObjectStore, Retention, StoreCapabilities, register_store


class LocalStore(ObjectStore):
    """Objects are files under ``root``; ``put`` writes a temporary name, fsyncs and links or renames.

    ``if_absent`` uses ``link(2)``, which fails when the name exists, so two writers of the same
    key never replace each other's object. Temporary files live in ``root/tmp`` and are
    swept by :meth:`sweep_temporary` (left behind only by a crash).
    """

    capabilities = StoreCapabilities(conditional_write=True, atomic_replace=True, object_lock=False, bulk_removal=True)

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._tmp = self.root / "tmp"
        self._made_dirs: set[Path] = set()

    @property
    def url(self) -> str:
        return self.root.resolve().as_uri()

    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise StorageError(f"invalid object key '{key}'")
        return self.root / key

    def _ensure_dir(self, directory: Path) -> None:
        if directory not in self._made_dirs:
            directory.mkdir(parents=True, exist_ok=True)
            self._made_dirs.add(directory)

    def put(
        self, key: str, data: bytes, *, if_absent: bool = False, sync: bool = True, retention: Retention | None = None
    ) -> bool:
        self.refuse_retention(retention)
        path = self._path(key)
        if if_absent and path.exists():
            return False
        self._ensure_dir(self._tmp)
        self._ensure_dir(path.parent)
        tmp = self._tmp / f"{secrets.token_hex(8)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            if if_absent:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    return False
                finally:
                    tmp.unlink(missing_ok=True)
            else:
                os.replace(tmp, path)
            if sync:
                fsync_dir(path.parent)
            return True
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFullError(f"no space left on {self.root} while writing {key}") from exc
            raise StorageError(f"cannot write {key} to {self.root}: {exc.strerror}") from exc

    def flush(self) -> None:
        """One syncfs(2) of the vault's filesystem instead of two fsyncs per object."""
        if _libc_syncfs is None:
            os.sync()
            return
        fd = os.open(self.root, os.O_RDONLY)
        try:
            if _libc_syncfs(fd) != 0:  # a failed writeback: the chunks may not be on disk
                import ctypes

                code = ctypes.get_errno()
                raise StorageError(f"cannot make the vault at {self.root} durable: {os.strerror(code)}")
        finally:
            os.close(fd)

    def make_durable(self, key: str) -> None:
        """fsync the object and its directory: needs no access to the vault's root (which the PostgreSQL
        server's OS user may only traverse when it archives WAL), unlike :meth:`flush`'s syncfs."""
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            fsync_dir(path.parent)
        except FileNotFoundError:
            raise NotFoundError(f"object {key} not found in {self.root}") from None
        except OSError as exc:
            raise StorageError(f"cannot make {key} durable in {self.root}: {exc.strerror}") from exc

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"object {key} not found in {self.root}") from None
        except OSError as exc:
            raise StorageError(f"cannot read {key} from {self.root}: {exc.strerror}") from exc

    def head(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    def list(self, prefix: str = "") -> Iterator[str]:
        base = self.root
        start = base / prefix.rsplit("/", 1)[0] if "/" in prefix and ".." not in prefix.split("/") else base
        for dirpath, dirnames, filenames in os.walk(start):  # from the prefix's directory, not the whole vault
            rel_dir = os.path.relpath(dirpath, base)
            if rel_dir == "tmp":
                dirnames.clear()
                continue
            for name in filenames:
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix):
                    yield key

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def remove_all(self) -> None:
        """Remove the store's directory tree; what cannot be removed is left (the catalog no longer names it)."""
        shutil.rmtree(self.root, ignore_errors=True)
        self._made_dirs.clear()

    def sweep_temporary(self) -> int:
        """Remove temporary files a crashed writer left; returns how many."""
        count = 0
        if self._tmp.is_dir():
            for entry in self._tmp.iterdir():
                entry.unlink(missing_ok=True)
                count += 1
        return count


def _load_syncfs() -> Any:
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.syncfs
    except (OSError, AttributeError):
        return None


_libc_syncfs = _load_syncfs()


def _from_url(url: str) -> ObjectStore:
    parsed = urlparse(url)
    path = unquote(parsed.path) if parsed.scheme else url
    return LocalStore(Path(path))


register_store("file", _from_url)
