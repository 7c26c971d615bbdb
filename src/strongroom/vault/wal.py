"""The WAL archive of a vault: one sealed object per PostgreSQL WAL file (docs/vault-format.md §11).

``archive_command`` pushes every completed WAL segment (and the ``.history``, ``.backup`` and
``.partial`` files PostgreSQL archives) here; ``restore_command`` fetches them back. Objects live at
``wal/<system identifier>/<timeline>/<file name>``, sealed with kind 6 and the key as associated data, so a
file cannot be moved to another name, cluster or timeline. The plaintext is a small JSON header (name,
size, keyed BLAKE3 of the content, the file's modification time, when it was pushed) and the file's bytes.

Rules, as pgBackRest's: a file is stored once and never replaced (``if_absent``); pushing the same content
again succeeds; other content under an archived name is :class:`WalConflictError`. A push returns only
when the object is durable. This module imports only the engine's crypto and the store interface, so
``strongroom wal push`` starts fast.
"""

from __future__ import annotations

import base64
import json
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import blake3

from strongroom.clock import now
from strongroom.errors import FormatError, IntegrityError, NotFoundError, StorageError, WalConflictError
from strongroom.faults import fault_point
from strongroom.store.base import ObjectStore, RetainedError, Retention
from strongroom.vault import envelope
from strongroom.vault.envelope import Kind
from strongroom.vault.keys import KeySet

WAL_PREFIX = "wal/"
WAL_FORMAT = 1
SEGMENT = re.compile(r"[0-9A-F]{24}")
WAL_FILE = re.compile(r"(?:[0-9A-F]{24}(?:\.partial|\.[0-9A-F]{8}\.backup)?|[0-9A-F]{8}\.history)")
SYSTEM_IDENTIFIER = re.compile(r"[0-9]{1,20}")
LENGTH = struct.Struct(">I")
MAX_HEADER = 4096
MAX_WAL_FILE = 1 << 30  # PostgreSQL's largest segment size
ENCRYPTION_CONTEXT = "strongroom 2026-12 WAL archive encryption key v1"
ID_CONTEXT = "strongroom 2026-12 WAL archive content id key v1"


class PushOutcome(StrEnum):
    STORED = "stored"
    ALREADY_ARCHIVED = "already archived"  # the same content was archived before: success, nothing written


@dataclass(frozen=True)
class WalHeader:
    """What the archive says about one WAL file, besides its bytes."""

    name: str
    size: int
    content_id: str  # keyed BLAKE3 (the vault's id key) of the bytes, hex
    modified: str  # ISO 8601: the file's last change on the server (about when the segment was completed)
    pushed_at: str

    def to_json(self) -> bytes:
        return json.dumps({"format": WAL_FORMAT, **self.__dict__}, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes, what: str) -> WalHeader:
        try:
            raw = json.loads(data)
        except ValueError:
            raise IntegrityError(f"{what} has an unreadable header") from None
        if raw.get("format") != WAL_FORMAT:
            raise FormatError(f"{what} has WAL format {raw.get('format')}; this Strongroom reads {WAL_FORMAT}")
        return cls(raw["name"], int(raw["size"]), raw["content_id"], raw["modified"], raw["pushed_at"])


def timeline_of(name: str) -> str:
    """The 8 hex digits of the timeline a WAL file belongs to (its first eight characters)."""
    return name[:8]


def wal_key(system_identifier: str, name: str) -> str:
    check_name(name)
    if not SYSTEM_IDENTIFIER.fullmatch(system_identifier):
        raise StorageError(f"'{system_identifier}' is not a PostgreSQL system identifier")
    return f"{WAL_PREFIX}{system_identifier}/{timeline_of(name)}/{name}"


def check_name(name: str) -> str:
    if not WAL_FILE.fullmatch(name):
        raise NotFoundError(
            f"'{name}' is not the name of a WAL file",
            hint="archive_command passes %p (a path under pg_wal/), restore_command %f and %p",
        )
    return name


@dataclass(frozen=True)
class WalKeys:
    """The keys of one cluster's WAL in one vault, derived from the vault's key set and the system identifier.

    ``archive_command`` holds these, never the vault's keys: whoever reads the credential file (the server's
    OS user) can read and add that cluster's WAL, and nothing else the vault holds."""

    system_identifier: str
    encryption_key: bytes
    id_key: bytes

    @classmethod
    def derive(cls, keys: KeySet, system_identifier: str) -> WalKeys:
        if not SYSTEM_IDENTIFIER.fullmatch(system_identifier):
            raise StorageError(f"'{system_identifier}' is not a PostgreSQL system identifier")
        salt = system_identifier.encode()
        return cls(
            system_identifier,
            blake3.blake3(keys.encryption_key + salt, derive_key_context=ENCRYPTION_CONTEXT).digest(),
            blake3.blake3(keys.id_key + salt, derive_key_context=ID_CONTEXT).digest(),
        )

    def to_json(self) -> dict[str, str]:
        return {
            "system_identifier": self.system_identifier,
            "encryption_key": base64.b64encode(self.encryption_key).decode(),
            "id_key": base64.b64encode(self.id_key).decode(),
        }

    @classmethod
    def from_json(cls, raw: dict[str, str]) -> WalKeys:
        return cls(raw["system_identifier"], base64.b64decode(raw["encryption_key"]), base64.b64decode(raw["id_key"]))


class WalArchive:
    """The WAL of one cluster (its system identifier) in one vault's store, under the keys derived for it."""

    def __init__(self, store: ObjectStore, keys: WalKeys) -> None:
        self.store = store
        self.keys = keys
        self.system_identifier = keys.system_identifier

    def content_id(self, data: bytes) -> str:
        return blake3.blake3(data, key=self.keys.id_key).hexdigest()

    # Writing ---------------------------------------------------------------------------------
    def push(self, name: str, data: bytes, modified: datetime, retention: Retention | None = None) -> PushOutcome:
        """Store ``data`` as WAL file ``name`` durably; refuse other content under an archived name.

        ``retention``: on a store with Object Lock (a locked vault), the new object's mode and retain-until."""
        key = wal_key(self.system_identifier, name)
        if len(data) > MAX_WAL_FILE:
            raise StorageError(f"{name} is {len(data)} bytes, larger than any WAL file")
        content_id = self.content_id(data)
        if self.store.exists(key):
            return self._same(name, key, content_id)
        header = WalHeader(name, len(data), content_id, _iso(modified), _iso(now()))
        head = header.to_json()
        sealed = envelope.seal(self.keys.encryption_key, Kind.WAL, key.encode(), LENGTH.pack(len(head)) + head + data)
        fault_point("wal.push.before_put")
        if not self.store.put(key, sealed, if_absent=True, sync=True, retention=retention):
            return self._same(name, key, content_id)  # another push of the same file won the race
        fault_point("wal.push.after_put")
        return PushOutcome.STORED

    def _same(self, name: str, key: str, content_id: str) -> PushOutcome:
        stored, _data = self._open(key, name)
        if stored.content_id != content_id:
            raise WalConflictError(f"WAL file {name} is already archived with different content")
        self.store.make_durable(key)  # a push killed after its put: make it durable before PostgreSQL moves on
        return PushOutcome.ALREADY_ARCHIVED

    # Reading ---------------------------------------------------------------------------------
    def fetch(self, name: str) -> bytes:
        """The bytes of WAL file ``name``, authenticated; NotFoundError when it was never archived."""
        _header, data = self._open(wal_key(self.system_identifier, name), name)
        return data

    def header(self, name: str) -> WalHeader:
        return self._open(wal_key(self.system_identifier, name), name)[0]

    def read(self, name: str) -> tuple[WalHeader, bytes]:
        """The header and bytes of WAL file ``name``, authenticated."""
        return self._open(wal_key(self.system_identifier, name), name)

    def _open(self, key: str, name: str) -> tuple[WalHeader, bytes]:
        sealed = self.store.get(key)
        what = f"archived WAL file {name} ({key})"
        opened = envelope.open_sealed(self.keys.encryption_key, key.encode(), sealed, what=what)
        if opened.kind != Kind.WAL or len(opened.plaintext) < LENGTH.size:
            raise IntegrityError(f"{what} is not a WAL object")
        (length,) = LENGTH.unpack_from(opened.plaintext)
        if length > MAX_HEADER:
            raise IntegrityError(f"{what} has an oversized header")
        header = WalHeader.from_json(opened.plaintext[LENGTH.size : LENGTH.size + length], what)
        data = opened.plaintext[LENGTH.size + length :]
        if header.name != name or header.size != len(data) or self.content_id(data) != header.content_id:
            raise IntegrityError(f"{what} does not match its header (damaged or forged)")
        return header, data

    def names(self, timeline: str | None = None) -> list[str]:
        """The archived WAL file names, sorted; of one timeline (8 hex digits) if given."""
        prefix = f"{WAL_PREFIX}{self.system_identifier}/" + (f"{timeline}/" if timeline else "")
        found = (key.rsplit("/", 1)[1] for key in self.store.list(prefix))
        return sorted(name for name in found if WAL_FILE.fullmatch(name))

    def timelines(self) -> list[str]:
        return sorted({timeline_of(name) for name in self.names()})

    # Deleting (lifecycle: WAL no kept base backup needs) ---------------------------------------
    def remove(self, names: Iterator[str] | list[str], moment: datetime | None = None) -> WalRemoval:
        """Delete the named files. On a store with Object Lock every version of each goes, and a file still under
        retention is never tried: it is counted as retained (with the earliest end), and a later run deletes it."""
        removal = WalRemoval()
        locked = self.store.capabilities.object_lock
        for name in names:
            key = wal_key(self.system_identifier, name)
            if not locked:
                self.store.delete(key)
                removal.deleted += 1
                continue
            found = self.store.stat(key)
            if found is None:
                continue
            until = found.retention.until if found.retention else None
            if until is None or until <= (moment or now()):
                try:
                    self.store.purge(key)
                    removal.deleted += 1
                    continue
                except RetainedError:  # the storage's clock is the one that counts
                    until = until or (moment or now())
            removal.retained += 1
            removal.retained_until = until if removal.retained_until is None else min(removal.retained_until, until)
        return removal


@dataclass
class WalRemoval:
    """What removing WAL did: files deleted, files kept by Object Lock retention and the earliest end of it."""

    deleted: int = 0
    retained: int = 0
    retained_until: datetime | None = None


def list_systems(store: ObjectStore) -> list[str]:
    """System identifiers that have WAL in the store."""
    return sorted({key.split("/")[1] for key in store.list(WAL_PREFIX) if key.count("/") >= 3})


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")
