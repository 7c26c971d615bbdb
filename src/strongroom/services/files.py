"""Small files of the account home (identity, keys, exported secrets), written all or nothing."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from strongroom.store.local import fsync_dir


def write_durably(path: Path, data: bytes, *, mode: int = 0o600, replace: bool = True) -> None:
    """Write ``data`` to ``path`` through a unique temporary file, fsynced, then renamed into place.

    With ``replace=False`` the file is linked into place instead and FileExistsError says that anything
    (even a dangling symlink) holds the name: an existing file is never overwritten.
    """
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(temp, path)
        else:
            os.link(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    fsync_dir(path.parent)
