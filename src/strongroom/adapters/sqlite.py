"""The ``sqlite`` resource type: one SQLite database file, copied online and consistently.

Backup opens the database read-only and copies it with SQLite's online backup API in one step,
which holds a single read transaction: the copy is exactly one committed state. In WAL mode
writers keep going meanwhile; in rollback-journal modes they wait (their busy timeout) for the few
moments the copy takes. The copy, in ``ctx.temp_dir``, must pass ``PRAGMA integrity_check`` before
it is stored as the stream ``database``; it is deleted afterwards.

Restore writes a new file beside the target under a temporary name, fsyncs it, checks its
integrity and renames it into place. A target with a ``-wal``, ``-shm`` or ``-journal`` file
beside it is refused even with ``allow_non_empty``: SQLite would apply that stale journal to the
restored database and corrupt it.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, ClassVar
from urllib.parse import quote

from strongroom.adapters.base import (
    BackupContext,
    ResourceAdapter,
    ResourceSpec,
    RestoreContext,
    RestoreRequest,
    RestoreResult,
    register_adapter,
)
from strongroom.errors import (
    ConfigError,
    IntegrityError,
    SourceError,
    StrongroomError,
    TargetError,
    TargetNotEmptyError,
)
from strongroom.fsutil import fsync_dir

SQLITE_HEADER = b"SQLite format 3\x00"
SIDE_FILES = ("-wal", "-shm", "-journal")
BUSY_TIMEOUT_S = 30.0
COPY_BLOCK = 1024 * 1024
_SETTINGS = ("path",)


def _check_database(value: Any, error: type[StrongroomError]) -> Path:
    if not isinstance(value, str) or not value:
        raise error("a sqlite resource needs a 'path' setting", hint="Set path to the database file")
    path = Path(value)
    if not path.is_absolute():
        raise error(f"SQLite path '{value}' is not absolute", hint="Give the full path, starting with /")
    if not path.is_file():
        problem = "is not a regular file" if os.path.lexists(path) else "does not exist"
        raise error(f"SQLite database {path} {problem}", hint="Check the path in the resource settings")
    try:
        with open(path, "rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise error(f"cannot read SQLite database {path}: {exc.strerror or exc}") from exc
    if header != SQLITE_HEADER:
        raise error(f"{path} is not a SQLite database", hint="Its first bytes are not 'SQLite format 3'")
    return path


def _settings(raw: dict[str, Any], error: type[StrongroomError]) -> dict[str, Any]:
    unknown = sorted(set(raw) - set(_SETTINGS))
    if unknown:
        raise ConfigError(f"unknown sqlite setting '{unknown[0]}'", hint=f"Known settings: {', '.join(_SETTINGS)}")
    return {"path": str(_check_database(raw.get("path"), error))}


def _read_only_uri(path: Path) -> str:
    return f"file:{quote(str(path))}?mode=ro"


def _integrity_problem(path: Path) -> str | None:
    """None when ``PRAGMA integrity_check`` passes, else its first lines (or why SQLite could not check)."""
    try:
        connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)
        try:
            rows = [row[0] for row in connection.execute("PRAGMA integrity_check").fetchmany(5)]
        finally:
            connection.close()
    except sqlite3.Error as exc:
        return str(exc)
    return None if rows == ["ok"] else "; ".join(str(row) for row in rows)


def _remove_with_side_files(path: Path) -> None:
    for suffix in ("", *SIDE_FILES):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


# Backup ---------------------------------------------------------------------------------------
def _snapshot(source: Path, copy: Path) -> dict[str, Any]:
    """Copy ``source`` into ``copy`` as one consistent state; return what to record about it."""
    try:
        src = sqlite3.connect(_read_only_uri(source), uri=True, timeout=BUSY_TIMEOUT_S)
        try:
            journal_mode = src.execute("PRAGMA journal_mode").fetchone()[0]
            dst = sqlite3.connect(copy)
            try:
                src.backup(dst, pages=-1, sleep=0.01)  # one step: one read transaction, one consistent state
                page_size = dst.execute("PRAGMA page_size").fetchone()[0]
                page_count = dst.execute("PRAGMA page_count").fetchone()[0]
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.Error as exc:
        raise SourceError(
            f"cannot copy SQLite database {source}: {exc}",
            hint="Check that the file is readable and not locked for longer than 30 seconds",
        ) from exc
    return {
        "source_path": str(source),
        "page_size": page_size,
        "page_count": page_count,
        "journal_mode": journal_mode,
        "sqlite_version": sqlite3.sqlite_version,
        "mode": stat.S_IMODE(source.stat().st_mode),
    }


def _check_copy(source: Path, copy: Path) -> None:
    problem = _integrity_problem(copy)
    if problem:
        raise SourceError(
            f"the copy of SQLite database {source} fails integrity_check: {problem}",
            hint="The source database is damaged; repair it (e.g. sqlite3 .recover) before backing it up",
        )


# Restore --------------------------------------------------------------------------------------
def _prepare_target(request: RestoreRequest) -> Path:
    if not request.target:
        raise TargetError("a sqlite restore needs a target file path", hint="Pass --target with a new file path")
    target = Path(os.path.abspath(os.path.expanduser(request.target)))
    if os.path.lexists(target):
        if target.is_dir():
            raise TargetError(f"target {target} is a directory", hint="Give the path of a new database file")
        if not request.allow_non_empty:
            raise TargetNotEmptyError(
                f"target file {target} already exists",
                hint="Choose a new path, or pass --allow-non-empty to replace it",
            )
    for suffix in SIDE_FILES:
        if os.path.lexists(f"{target}{suffix}"):
            raise TargetError(
                f"target {target} has a {suffix} file beside it, so it may be in use",
                hint="Stop what uses the database and remove that file, or choose a new path",
            )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TargetError(f"cannot create directory {target.parent}: {exc.strerror or exc}") from exc
    return target


def _copy_stream(source: BinaryIO, out: BinaryIO, progress: Callable[[int], None] | None) -> None:
    while block := source.read(COPY_BLOCK):
        out.write(block)
        if progress:
            progress(len(block))


def _write_restored(target: Path, ctx: RestoreContext, mode: int) -> Path:
    """The database, written and fsynced under a temporary name beside ``target``."""
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=".strongroom-", suffix=".tmp")
    temp = Path(name)
    try:
        with open(fd, "wb") as out, ctx.reader.open_stream("database") as stream:
            _copy_stream(stream, out, ctx.progress)
            out.flush()
            os.chmod(out.fileno(), mode)
            os.fsync(out.fileno())
    except BaseException:
        _remove_with_side_files(temp)
        raise
    return temp


def _check_restored(temp: Path, target: Path) -> None:
    problem = _integrity_problem(temp)
    if problem:
        raise IntegrityError(f"the restored SQLite database for {target} fails integrity_check: {problem}")
    # Checking a WAL-mode copy can leave empty side files; they belong to the temporary name only.
    for suffix in SIDE_FILES:
        Path(f"{temp}{suffix}").unlink(missing_ok=True)


# The adapter ----------------------------------------------------------------------------------
@register_adapter
class SQLiteAdapter(ResourceAdapter):
    type_name: ClassVar[str] = "sqlite"
    description: ClassVar[str] = "A SQLite database file, copied online with SQLite's backup API"

    def validate_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        return _settings(settings, ConfigError)

    def backup(self, resource: ResourceSpec, ctx: BackupContext) -> dict[str, Any]:
        source = Path(_settings(resource.settings, SourceError)["path"])
        fd, name = tempfile.mkstemp(dir=ctx.temp_dir, prefix="sqlite-", suffix=".db")
        os.close(fd)
        copy = Path(name)
        try:
            metadata = _snapshot(source, copy)
            _check_copy(source, copy)
            with open(copy, "rb") as handle:
                stream = ctx.writer.store_stream("database", handle)
        finally:
            _remove_with_side_files(copy)
        return {**metadata, "size": stream.size}

    def restore(self, metadata: dict[str, Any], ctx: RestoreContext, request: RestoreRequest) -> RestoreResult:
        target = _prepare_target(request)
        mode = int(metadata.get("mode", 0o600)) & 0o7777
        try:
            temp = _write_restored(target, ctx, mode)
            try:
                _check_restored(temp, target)
                os.replace(temp, target)
            except BaseException:
                _remove_with_side_files(temp)
                raise
            fsync_dir(target.parent)
        except OSError as exc:
            raise TargetError(f"cannot restore SQLite database to {target}: {exc.strerror or exc}") from exc
        details: dict[str, Any] = {
            key: metadata[key] for key in ("page_size", "page_count", "journal_mode") if key in metadata
        }
        return RestoreResult(target=str(target), details={**details, "bytes": target.stat().st_size})
