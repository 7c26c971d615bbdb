"""The destination's side of WAL copies: a source account's archived WAL arriving with its base backups.

A source that copies a ``postgres-cluster`` base backup also sends the cluster's archived WAL, file by file,
and the record of its continuous point (docs/pitr.md, "Both accounts"; wire format in docs/wire-protocol.md).
The destination trusts what it receives no more than a copied chunk: every request is authorised as
``CopyIntoBackupVault`` from the caller's own vault, WAL is taken only for a cluster of which this vault holds a
copied base backup from the caller's account, every file is checked for shape (its name, its size, a segment's
page header naming that cluster and timeline), and it is re-sealed under this vault's own WAL keys with
put-if-absent: a file already held with other content is :class:`WalConflictError`, never an overwrite, and
nothing a source sends can delete or replace WAL here.
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any

import zstandard
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from strongroom.errors import IntegrityError, RemoteError, StrongroomError, UsageError
from strongroom.model import CONTINUOUS_MAX_DAYS, Arn, JobType, RecoveryPoint, RecoveryPointStatus, iso, new_id, now
from strongroom.policy.principals import account_of
from strongroom.policy.retention import CLOCK_SKEW
from strongroom.services import object_lock, vault_ops
from strongroom.services.account import Account
from strongroom.services.jobs import complete_recovery_point, create_job, fail_job, lock_path
from strongroom.services.wal_archive import SEGMENT_SYSID, check_segment
from strongroom.services.writers import try_hold_writer
from strongroom.store.base import open_store
from strongroom.vault.wal import SEGMENT, SYSTEM_IDENTIFIER, PushOutcome, WalArchive, WalKeys, check_name
from strongroom.vault.writer import RecoveryPointWriter

CLUSTER_TYPE = "postgres-cluster"
MAX_COPIED_WAL = 64 << 20  # the largest WAL file a copy takes (segments of 1-64 MiB; PostgreSQL allows up to 1 GiB)
MAX_TEXT_FILE = 1 << 20  # .history and .backup files are a few lines
MIN_SEGMENT = 1 << 20


class ContinuousRequest(BaseModel):
    """What the source says about its continuous point when it has copied the WAL (docs/wire-protocol.md)."""

    model_config = ConfigDict(extra="forbid")
    source_vault_arn: str
    source_recovery_point_arn: str
    resource_id: str = Field(min_length=1, max_length=256)
    window_days: int = Field(ge=1, le=CONTINUOUS_MAX_DAYS)


# Who may send WAL for which cluster --------------------------------------------------------------
def authorise(account: Account, principal_arn: str, vault_name: str, system: str, source_vault_arn: str) -> None:
    """Refuse unless the caller may copy into the vault from ``source_vault_arn`` (its own) and the vault holds
    a copied base backup of cluster ``system`` from the caller's account."""
    if not SYSTEM_IDENTIFIER.fullmatch(system):
        raise RemoteError(f"malformed request: '{system[:40]}' is not a PostgreSQL system identifier")
    vault = account.catalog.get_vault(vault_name)
    context = {"backup:CopySources": [source_vault_arn]}
    vault_ops.authorize_action(account, principal_arn, "CopyIntoBackupVault", vault, context)
    caller = account_of(principal_arn)
    if Arn.parse(source_vault_arn).account_id != caller:
        raise UsageError(f"{source_vault_arn} does not belong to the calling account {caller}")
    if not copied_base_backups(account, vault_name, system, caller):
        raise UsageError(
            f"vault {vault_name} holds no base backup of cluster {system} copied from account {caller}"
            "; its WAL is refused",
            hint="copy a base backup of the cluster first (WAL follows its base backups)",
        )


def copied_base_backups(
    account: Account, vault_name: str, system: str, caller: str, resource_id: str | None = None
) -> list[RecoveryPoint]:
    return [
        point
        for point in account.catalog.list_recovery_points(
            vault_name=vault_name, status=RecoveryPointStatus.COMPLETED, resource_id=resource_id
        )
        if point.resource_type == CLUSTER_TYPE
        and not point.metadata.get("continuous")
        and str(point.metadata.get("system_identifier")) == system
        and point.source_recovery_point_arn
        and Arn.parse(point.source_recovery_point_arn).account_id == caller
    ]


def archive_of(account: Account, vault_name: str, system: str) -> WalArchive:
    store = open_store(account.catalog.get_vault(vault_name).store_url)
    return WalArchive(store, WalKeys.derive(account.vault(vault_name).keys, system))


# The routes' work ----------------------------------------------------------------------------------
def held_names(account: Account, principal_arn: str, vault_name: str, system: str, source_vault_arn: str) -> list[str]:
    """The WAL file names of cluster ``system`` this vault holds (what the source need not send)."""
    authorise(account, principal_arn, vault_name, system, source_vault_arn)
    return archive_of(account, vault_name, system).names()


def receive_wal(
    account: Account,
    principal_arn: str,
    vault_name: str,
    system: str,
    name: str,
    query: dict[str, str],
    body: bytes,
) -> PushOutcome:
    """Check one copied WAL file and store it under this vault's keys, put-if-absent."""
    authorise(account, principal_arn, vault_name, system, query.get("source_vault_arn", ""))
    if not _wal_name(name):
        raise RemoteError(f"malformed request: '{name[:40]}' is not the name of a WAL file")
    size = wal_size(query.get("size", ""))
    modified = wal_modified(query.get("modified", ""))
    data = wal_bytes(body, size)
    check_content(name, data, system)
    retention = object_lock.wal_retention(account, vault_name)
    return archive_of(account, vault_name, system).push(name, data, modified, retention=retention)


def check_content(name: str, data: bytes, system: str) -> None:
    """What a WAL file of that name must look like: a segment a power of two of at least 1 MiB whose first page
    names cluster ``system`` and the file's timeline; a history or backup label a few lines of text."""
    if SEGMENT.fullmatch(name[:24]) and not name.endswith(".backup"):
        if len(data) < MIN_SEGMENT or len(data) & (len(data) - 1):
            raise IntegrityError(f"copied WAL segment {name} is {len(data)} bytes, not a WAL segment's size")
        check_segment(data, name, system)
        timeline = SEGMENT_SYSID.unpack_from(data)[2]
        if timeline != int(name[:8], 16):
            raise IntegrityError(f"copied WAL segment {name} says it is of timeline {timeline}, not its name's")
        return
    if len(data) > MAX_TEXT_FILE:
        raise IntegrityError(f"copied WAL file {name} is {len(data)} bytes, more than a history or label file")
    try:
        data.decode("ascii")
    except UnicodeDecodeError:
        raise IntegrityError(f"copied WAL file {name} is not text, as history and backup label files are") from None


def _wal_name(name: str) -> bool:
    try:
        check_name(name)
    except Exception:
        return False
    return True


def wal_size(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= MAX_COPIED_WAL:
        raise RemoteError(
            f"malformed request: size must be 1..{MAX_COPIED_WAL} bytes",
            hint="WAL files larger than 64 MiB (wal_segment_size) are not copied",
        )
    return int(text)


def wal_modified(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise RemoteError("malformed request: modified is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise RemoteError("malformed request: modified has no time zone")
    if moment - now() > CLOCK_SKEW:  # it ends the restorable window: a file from the future would stretch it
        raise RemoteError(
            f"the source claims a WAL file last changed at {moment.isoformat()}, in this account's future",
            hint="Check the sending machine's clock (NTP)",
        )
    return moment


def wal_bytes(body: bytes, size: int) -> bytes:
    """The body's bytes, never more than ``size`` + 1 of them produced (a frame's own content size is not trusted:
    ``decompress(max_output_size=)`` would allocate what it claims)."""
    try:
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body)) as reader:
            data = reader.read(size + 1)
    except zstandard.ZstdError:
        raise RemoteError("malformed request: the WAL body is not a zstd frame of the size announced") from None
    if len(data) != size:
        raise RemoteError(f"malformed request: the WAL body holds {len(data)} bytes, not the {size} announced")
    return data


# The continuous point ----------------------------------------------------------------------------
def receive_continuous(
    account: Account, principal_arn: str, vault_name: str, system: str, raw: dict[str, Any]
) -> dict[str, Any]:
    """This vault's continuous point of the resource (made the first time, its window updated after): the
    destination derives it from its own copied base backups and WAL; the source only names the window."""
    try:
        request = ContinuousRequest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise RemoteError(f"malformed request: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    authorise(account, principal_arn, vault_name, system, request.source_vault_arn)
    caller = account_of(principal_arn)
    if Arn.parse(request.source_recovery_point_arn).account_id != caller:
        raise UsageError(f"{request.source_recovery_point_arn} does not belong to the calling account {caller}")
    if not copied_base_backups(account, vault_name, system, caller, request.resource_id):
        raise UsageError(f"vault {vault_name} holds no copied base backup of {request.resource_id} from {caller}")
    parameters = {
        "direction": "in",
        "principal_arn": principal_arn,
        "source_recovery_point_arn": request.source_recovery_point_arn,
        "source_backup_vault_arn": request.source_vault_arn,
    }
    return keep_copied_continuous_point(account, vault_name, request.resource_id, system, request.window_days,
                                        parameters)  # fmt: skip


def keep_copied_continuous_point(
    account: Account, vault_name: str, resource_id: str, system: str, days: int, parameters: dict[str, Any]
) -> dict[str, Any]:
    """The vault's one continuous point of the resource's cluster, whose WAL came from another account: its
    window lengthened to ``days`` (never shortened), or made (by a COPY job of this account, ``parameters``
    saying whence)."""
    from strongroom.services.pitr import continuous_points

    existing = [
        point
        for point in continuous_points(account, resource_id, vault_name)
        if str(point.metadata.get("system_identifier")) == system
    ]
    if existing:
        point = existing[0]
        # Only ever longer: a shorter window would have this account's lifecycle delete WAL, and a source (or
        # whoever holds its keys) never deletes anything here. The destination's operator may shorten it.
        if days > int(point.metadata.get("window_days") or 0):
            account.catalog.update_recovery_point(point.id, metadata={**point.metadata, "window_days": days})
        return {"recovery_point_arn": point.arn, "created": False}
    point = _new_continuous_point(account, vault_name, resource_id, days, parameters)
    return {"recovery_point_arn": point.arn, "created": True}


def _new_continuous_point(
    account: Account, vault_name: str, resource_id: str, days: int, parameters: dict[str, Any]
) -> RecoveryPoint:
    """A data-less point (no streams) as a backup's continuous point, recorded by a COPY job of its own."""
    from strongroom.services.pitr import continuous_metadata

    vault = account.catalog.get_vault(vault_name)
    parameters = {**parameters, "destination_backup_vault_arn": vault.arn, "continuous": True, "window_days": days}
    writer_hold = try_hold_writer(account, vault_name)
    try:
        arrival = iso(now()) or ""
        retention = vault_ops.new_point_retention(vault, arrival, None)
        job, lock = create_job(account, JobType.COPY, resource_id=resource_id, vault_name=vault_name,
                               parameters=parameters, running_since=now())  # fmt: skip
        try:
            rp = RecoveryPoint(
                id=new_id(),
                arn="",
                vault_name=vault_name,
                resource_id=resource_id,
                resource_type=CLUSTER_TYPE,
                status=RecoveryPointStatus.CREATING,
                creation_date=arrival,
                backup_job_id=job.id,
                source_recovery_point_arn=parameters.get("source_recovery_point_arn"),
                **retention,
            )
            rp.arn = account.recovery_point_arn(rp.id)
            account.catalog.add_recovery_point(rp, {"recovery_point_arn": rp.arn})
            account.catalog.update_job(job.id, recovery_point_arn=rp.arn)  # a failure marks the point PARTIAL
            metadata = continuous_metadata(account, resource_id, vault_name, parameters)
            locked = object_lock.new_point_retention(account, vault_name, rp)
            with RecoveryPointWriter(account.vault(vault_name), rp.id, None, retention=locked) as writer:
                manifest = writer.commit(resource_id, CLUSTER_TYPE, metadata)
            complete_recovery_point(account, rp.id, manifest, source_bytes=0, stored_bytes=0, new_bytes=0,
                                    metadata=metadata, job_id=job.id,
                                    result={"destination_recovery_point_arn": rp.arn})  # fmt: skip
        except Exception as exc:
            why = exc.one_line() if isinstance(exc, StrongroomError) else f"internal error: {type(exc).__name__}"
            fail_job(account, account.catalog.get_job(job.id), why)
            raise
        finally:
            lock.release()
            lock_path(account, job.id).unlink(missing_ok=True)
    finally:
        writer_hold.release()
    return account.catalog.get_recovery_point(rp.arn)


# WAL going out (a copy back of a continuous point: CopyFromBackupVault) -------------------------------
def outgoing_point(account: Account, principal_arn: str, rp_id: str, target_vault_arn: str) -> RecoveryPoint:
    """The point whose cluster's WAL the caller copies back into ``target_vault_arn``, authorised as a pull."""
    Arn.parse(target_vault_arn)
    rp = account.catalog.get_recovery_point(rp_id)
    vault = account.catalog.get_vault(rp.vault_name)
    context = {"backup:CopyTargets": [target_vault_arn]}
    vault_ops.authorize_action(account, principal_arn, "CopyFromBackupVault", vault, context)
    if rp.status != RecoveryPointStatus.COMPLETED or rp.resource_type != CLUSTER_TYPE:
        raise UsageError(f"recovery point {rp.arn} is not a COMPLETED {CLUSTER_TYPE} point: it has no WAL")
    if not SYSTEM_IDENTIFIER.fullmatch(str(rp.metadata.get("system_identifier") or "")):
        raise UsageError(f"recovery point {rp.arn} does not say which cluster it holds")
    return rp


def outgoing_names(account: Account, principal_arn: str, rp_id: str, target_vault_arn: str) -> dict[str, Any]:
    rp = outgoing_point(account, principal_arn, rp_id, target_vault_arn)
    system = str(rp.metadata["system_identifier"])
    return {"system_identifier": system, "names": archive_of(account, rp.vault_name, system).names()}


def outgoing_file(
    account: Account, principal_arn: str, rp_id: str, name: str, target_vault_arn: str
) -> tuple[bytes, int, str]:
    """A zstd frame of the WAL file (read and authenticated here), its size and its recorded modification time."""
    rp = outgoing_point(account, principal_arn, rp_id, target_vault_arn)
    header, data = archive_of(account, rp.vault_name, str(rp.metadata["system_identifier"])).read(check_name(name))
    return zstandard.ZstdCompressor(level=3).compress(data), len(data), header.modified
