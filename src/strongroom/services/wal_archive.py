"""``wal push`` and ``wal fetch``: what PostgreSQL's archive_command and restore_command run (docs/pitr.md).

They run once per WAL file, as the server's OS user, so they touch neither the catalog nor the
passphrase: a *WAL credential file* (0600, written by ``strongroom wal setup`` or by a point-in-time
restore) names the vault's store and the cluster's system identifier.
It holds keys derived for that cluster's WAL alone (``vault.wal.WalKeys``): reading and adding that
cluster's WAL, not the vault's other recovery points, the account key, the catalog or any other vault.
Imports stay light (no catalog, no Typer tables): start-up time is the archiver's throughput.
"""

from __future__ import annotations

import errno
import json
import os
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from strongroom.clock import now
from strongroom.errors import ConfigError, IntegrityError, NotFoundError, WalFileMissingError
from strongroom.store.base import LockMode, Retention, open_store
from strongroom.vault.wal import SEGMENT, PushOutcome, WalArchive, WalKeys, check_name

CREDENTIAL_FORMAT = "strongroom-wal-credential/1"
ENV_WAL_CONFIG = "STRONGROOM_WAL_CONFIG"
# The long page header that opens every WAL segment: magic, info, timeline, page address, remaining
# length, padding, then the system identifier (XLogLongPageHeaderData).
SEGMENT_SYSID = struct.Struct("<HHIQI4xQ")


@dataclass(frozen=True)
class WalCredential:
    """Where one cluster's WAL goes: the vault's store, its keys, the cluster's system identifier."""

    resource_id: str
    vault_name: str
    store_url: str
    keys: WalKeys
    dsn: str | None = None  # the cluster's (no password): 'wal status' asks the server how far behind the archive is
    # A locked vault on a store with Object Lock: each pushed file is retained in this mode for this many days.
    lock_mode: str | None = None
    lock_days: int | None = None

    @property
    def system_identifier(self) -> str:
        return self.keys.system_identifier

    def to_json(self) -> bytes:
        body = {
            "format": CREDENTIAL_FORMAT,
            "resource_id": self.resource_id,
            "vault_name": self.vault_name,
            "store_url": self.store_url,
            "dsn": self.dsn,
            "keys": self.keys.to_json(),
            **({"lock": {"mode": self.lock_mode, "days": self.lock_days}} if self.lock_mode else {}),
        }
        return json.dumps(body, indent=2).encode()

    @classmethod
    def load(cls, path: Path) -> WalCredential:
        try:
            raw = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise ConfigError(
                f"WAL credential file {path} does not exist", hint="write it with 'strongroom wal setup --resource ID'"
            ) from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read WAL credential file {path}: {exc}") from None
        if not isinstance(raw, dict) or raw.get("format") != CREDENTIAL_FORMAT:
            raise ConfigError(f"{path} is not a Strongroom WAL credential file", hint="write it with 'wal setup'")
        try:
            keys = WalKeys.from_json(raw["keys"])
            lock = raw.get("lock") or {}
            mode, days = (str(LockMode(lock["mode"])), int(lock["days"])) if lock else (None, None)
            return cls(raw["resource_id"], raw["vault_name"], raw["store_url"], keys, raw.get("dsn"), mode, days)
        except (KeyError, TypeError, ValueError):
            raise ConfigError(
                f"{path} is damaged (a field is missing)", hint="write it again with 'wal setup'"
            ) from None

    def archive(self) -> WalArchive:
        return WalArchive(open_store(self.store_url), self.keys)

    def retention(self) -> Retention | None:
        """What a file pushed now is retained for (a locked vault on a store with Object Lock), else None."""
        if not self.lock_mode or not self.lock_days:
            return None
        return Retention(LockMode(self.lock_mode), now() + timedelta(days=self.lock_days))


def credential_path(config: Path | None) -> Path:
    if config is not None:
        return config
    named = os.environ.get(ENV_WAL_CONFIG)
    if not named:
        raise ConfigError(
            "no WAL credential file given",
            hint=f"pass --config FILE or set {ENV_WAL_CONFIG} (see 'strongroom wal setup --help')",
        )
    return Path(named)


def push_file(credential: WalCredential, path: Path) -> PushOutcome:
    """Archive the WAL file at ``path`` (archive_command's %p); returns once it is durable in the vault."""
    name = check_name(path.name)
    try:
        data = path.read_bytes()
        modified = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except FileNotFoundError:
        raise NotFoundError(f"{path} does not exist", hint="archive_command passes %p, a path under pg_wal/") from None
    if SEGMENT.fullmatch(name.split(".")[0]) and not name.endswith(".backup"):
        check_segment(data, name, credential.system_identifier)
    return credential.archive().push(name, data, modified, retention=credential.retention())


def check_segment(data: bytes, name: str, system_identifier: str) -> None:
    """Refuse a segment whose header names another cluster (a credential file used by the wrong server)."""
    if len(data) < SEGMENT_SYSID.size:
        raise IntegrityError(f"WAL segment {name} is only {len(data)} bytes")
    found = SEGMENT_SYSID.unpack_from(data)[5]
    if str(found) != system_identifier:
        raise IntegrityError(
            f"WAL segment {name} belongs to cluster {found}, not {system_identifier} (the credential file's)",
            hint="each cluster needs its own 'strongroom wal setup --resource ID' and credential file",
        )


def fetch_file(credential: WalCredential, name: str, destination: Path) -> bytes:
    """Write archived WAL file ``name`` to ``destination`` (restore_command's %f and %p); its bytes.

    WalFileMissingError when it was never archived (PostgreSQL then looks in pg_wal or ends recovery)."""
    check_name(name)  # a name no WAL file has is an error, never "not archived" (exit 1 would let recovery end)
    try:
        data = credential.archive().fetch(name)
    except NotFoundError:
        raise WalFileMissingError(f"WAL file {name} is not archived") from None
    temporary = destination.with_name(f".{destination.name}.strongroom")
    temporary.write_bytes(data)
    os.replace(temporary, destination)
    return data


def take_spooled(spool: Path, name: str, destination: Path) -> bool:
    """Move a prefetched WAL file (authenticated when it was spooled, services/wal_prefetch.py) into place."""
    try:
        os.replace(spool / check_name(name), destination)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        return False  # the spool is on another file system than pg_wal: fetch it from the archive instead
    return True
