"""Copy sessions served by this account: copies coming in (CopyIntoBackupVault) and going out
(CopyFromBackupVault), each authorised against the vault's access policy and lock."""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import zstandard
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from strongroom.errors import NotFoundError, RemoteError, StrongroomError, UsageError
from strongroom.model import (
    Arn,
    Job,
    JobState,
    JobType,
    RecoveryPoint,
    RecoveryPointStatus,
    VaultRecord,
    iso,
    new_id,
    now,
)
from strongroom.policy.principals import account_of
from strongroom.services import notifications, vault_ops
from strongroom.services.account import Account
from strongroom.services.backup import _previous_reader
from strongroom.services.copy_receive import CopyReceiver
from strongroom.services.joblock import JobLock
from strongroom.services.jobs import fail_job, lock_path
from strongroom.services.writers import hold_writer
from strongroom.transport import wire
from strongroom.vault.envelope import Kind
from strongroom.vault.manifest import Manifest, load_manifest
from strongroom.vault.reader import RecoveryPointReader, read_object

IDLE_SESSION_SECONDS = 30 * 60
MAX_REFS_PER_PAGE = 16384


class StreamShape(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = Field(ge=0)
    chunk_count: int = Field(ge=0)


class CopyInRequest(BaseModel):
    """What the source announces when it starts a copy (docs/wire-protocol.md)."""

    model_config = ConfigDict(extra="forbid")
    source_recovery_point_arn: str
    source_vault_arn: str
    source_vault_id: str = Field(min_length=1, max_length=64)
    resource_id: str = Field(min_length=1)
    resource_type: str = Field(min_length=1)
    creation_date: datetime
    delete_after_days: int | None = Field(default=None, ge=1, le=36500)
    metadata: dict[str, Any] = {}
    streams: dict[str, StreamShape]


@dataclass
class IncomingCopy:
    job: Job
    rp: RecoveryPoint
    request: CopyInRequest
    receiver: CopyReceiver
    resources: ExitStack
    principal_arn: str
    touched: float = field(default_factory=time.monotonic)


@dataclass
class OutgoingCopy:
    principal_arn: str
    manifest: Manifest
    reader: RecoveryPointReader
    positions: dict[str, int] = field(default_factory=dict)
    iterators: dict[str, Any] = field(default_factory=dict)
    touched: float = field(default_factory=time.monotonic)


class CopySessions:
    """The copy sessions one ``strongroom serve`` process holds, keyed by id; idle ones are aborted."""

    def __init__(self, account: Account) -> None:
        self.account = account
        self.incoming: dict[str, IncomingCopy] = {}
        self.outgoing: dict[str, OutgoingCopy] = {}

    # Incoming --------------------------------------------------------------------------------
    def start_incoming(self, principal_arn: str, vault_name: str, raw: dict[str, Any]) -> dict[str, Any]:
        self.reap_idle()
        request = _parse(CopyInRequest, raw)
        vault = self.account.catalog.get_vault(vault_name)
        context = {"backup:CopySources": [request.source_vault_arn]}
        vault_ops.authorize_action(self.account, principal_arn, "CopyIntoBackupVault", vault, context)
        _check_source_arns(principal_arn, request)
        # Time comes from this account's clock: the source's creation date is kept as information only.
        arrival = now()
        created = vault_ops.claimed_creation_date(request.creation_date, arrival, "the source")
        retention = vault_ops.new_point_retention(vault, iso(arrival) or "", request.delete_after_days)
        session = self._open_incoming(principal_arn, vault, request, created, retention)
        self.incoming[session.job.id] = session
        return {"copy_job_id": session.job.id, "recovery_point_arn": session.rp.arn}

    def _open_incoming(
        self, principal_arn: str, vault: VaultRecord, request: CopyInRequest, created: str, retention: dict[str, Any]
    ) -> IncomingCopy:
        account = self.account
        job = Job(new_id(), JobType.COPY, JobState.RUNNING, request.resource_id, vault.name, None, iso(now()) or "",
                  start_date=iso(now()), parameters={
                      "direction": "in", "principal_arn": principal_arn,
                      "source_recovery_point_arn": request.source_recovery_point_arn,
                      "source_backup_vault_arn": request.source_vault_arn,
                      "destination_backup_vault_arn": vault.arn, "delete_after_days": request.delete_after_days})
        resources = ExitStack()
        lock = JobLock.acquire(lock_path(account, job.id))
        resources.callback(lock.release)
        resources.callback(lambda: lock_path(account, job.id).unlink(missing_ok=True))
        account.catalog.add_job(job)
        notifications.job_started(account, job.id)
        try:
            resources.enter_context(hold_writer(account, vault.name))
            rp = RecoveryPoint(
                id=new_id(), arn="", vault_name=vault.name, resource_id=request.resource_id,
                resource_type=request.resource_type, status=RecoveryPointStatus.CREATING, creation_date=created,
                backup_job_id=job.id, source_recovery_point_arn=request.source_recovery_point_arn, **retention,
            )
            rp.arn = account.recovery_point_arn(rp.id)
            account.catalog.add_recovery_point(rp)
            account.catalog.update_job(job.id, recovery_point_arn=rp.arn)
            job.recovery_point_arn = rp.arn
            previous = _previous_reader(account, request.resource_id, vault.name)
            base = previous.manifest if previous else None
            if previous:
                previous.close()
            receiver = CopyReceiver(account, vault.name, request.source_vault_id, rp.id, created, base)
        except BaseException as exc:
            fail_job(account, account.catalog.get_job(job.id), _message(exc))
            notifications.job_finished(account, job.id)
            resources.close()
            raise
        return IncomingCopy(job, rp, request, receiver, resources, principal_arn)

    def incoming_session(self, principal_arn: str, session_id: str) -> IncomingCopy:
        return _open_session(self.incoming, principal_arn, session_id)

    def missing(self, principal_arn: str, session_id: str, body: bytes) -> bytes:
        session = self.incoming_session(principal_arn, session_id)
        return self._guard(session, lambda: bytes(session.receiver.missing(wire.decode_ids(body))))

    def chunks(self, principal_arn: str, session_id: str, body: bytes) -> None:
        session = self.incoming_session(principal_arn, session_id)
        self._guard(session, lambda: session.receiver.receive(wire.decode_frames(body)))

    def refs(self, principal_arn: str, session_id: str, stream: str, body: bytes) -> None:
        session = self.incoming_session(principal_arn, session_id)
        if stream not in session.request.streams:
            raise UsageError(f"stream '{stream}' was not announced when the copy started")
        self._guard(session, lambda: session.receiver.append(stream, wire.decode_refs(body)))

    def commit(self, principal_arn: str, session_id: str) -> dict[str, Any]:
        session = self.incoming_session(principal_arn, session_id)
        request = session.request
        shapes = {name: shape.model_dump() for name, shape in request.streams.items()}
        manifest = self._guard(session, lambda: session.receiver.commit(
            request.resource_id, request.resource_type, request.metadata, shapes))
        stats = session.receiver.stats_dict()
        catalog = self.account.catalog
        catalog.update_recovery_point(
            session.rp.id, status=RecoveryPointStatus.COMPLETED, completion_date=manifest.completed_at,
            source_bytes=sum(s.size for s in manifest.streams.values()),
            stored_bytes=stats["stored_stored_bytes"], new_bytes=stats["stored_new_bytes"], metadata=request.metadata)
        catalog.update_job(session.job.id, state=JobState.COMPLETED, completion_date=iso(now()),
                           bytes_processed=stats["plaintext_bytes_received"],
                           result={"destination_recovery_point_arn": session.rp.arn, **stats})
        self._close(session_id)
        notifications.job_finished(self.account, session.job.id)
        return {"copy_job_id": session.job.id, "recovery_point_arn": session.rp.arn, **stats}

    def abort(self, principal_arn: str, session_id: str, reason: str) -> None:
        session = self.incoming_session(principal_arn, session_id)
        self._fail(session, f"aborted by the source: {reason[:500]}")

    def _guard(self, session: IncomingCopy, action: Any) -> Any:
        try:
            return action()
        except StrongroomError as exc:
            self._fail(session, exc.one_line())
            raise
        except Exception as exc:
            self._fail(session, f"internal error: {type(exc).__name__}: {exc}")
            raise

    def _fail(self, session: IncomingCopy, message: str) -> None:
        fail_job(self.account, self.account.catalog.get_job(session.job.id), message)
        self._close(session.job.id)
        notifications.job_finished(self.account, session.job.id)

    def _close(self, session_id: str) -> None:
        session = self.incoming.pop(session_id, None)
        if session:
            session.receiver.close()
            session.resources.close()

    # Outgoing --------------------------------------------------------------------------------
    def start_outgoing(self, principal_arn: str, rp_id: str, raw: dict[str, Any]) -> dict[str, Any]:
        self.reap_idle()
        target = str(raw.get("destination_vault_arn") or "")
        Arn.parse(target)
        rp = self.account.catalog.get_recovery_point(rp_id)
        vault = self.account.catalog.get_vault(rp.vault_name)
        context = {"backup:CopyTargets": [target]}
        vault_ops.authorize_action(
            self.account, principal_arn, "CopyFromBackupVault", vault, context)
        if rp.status != RecoveryPointStatus.COMPLETED:
            raise UsageError(f"recovery point {rp.arn} is {rp.status.value}, not COMPLETED, and cannot be copied")
        store_vault = self.account.vault(vault.name)
        manifest = load_manifest(store_vault, rp.id)
        session_id = new_id()
        self.outgoing[session_id] = OutgoingCopy(principal_arn, manifest, RecoveryPointReader(store_vault, manifest))
        return {
            "session_id": session_id, "recovery_point": rp.as_dict(), "source_vault_arn": vault.arn,
            "source_vault_id": manifest.vault_id, "resource_id": manifest.resource_id,
            "resource_type": manifest.resource_type, "metadata": manifest.metadata,
            "streams": {n: {"size": s.size, "chunk_count": s.chunk_count} for n, s in manifest.streams.items()},
        }

    def outgoing_session(self, principal_arn: str, session_id: str) -> OutgoingCopy:
        return _open_session(self.outgoing, principal_arn, session_id)

    def outgoing_refs(self, principal_arn: str, session_id: str, stream: str, start: int, count: int) -> bytes:
        session = self.outgoing_session(principal_arn, session_id)
        if stream not in session.manifest.streams:
            raise NotFoundError(f"the recovery point has no stream '{stream}'")
        if start != session.positions.get(stream, 0):
            raise UsageError(f"stream '{stream}' pages must be read in order (next start is "
                             f"{session.positions.get(stream, 0)})")
        iterator = session.iterators.setdefault(
            stream, session.reader.iter_refs(session.manifest.streams[stream]))
        page = []
        for ref in iterator:
            page.append((ref.id, ref.size))
            if len(page) >= min(count, MAX_REFS_PER_PAGE):
                break
        session.positions[stream] = start + len(page)
        return wire.encode_refs(page)

    def outgoing_chunks(self, principal_arn: str, session_id: str, body: bytes) -> bytes:
        session = self.outgoing_session(principal_arn, session_id)
        return encode_chunks(session.reader.vault, wire.decode_ids(body))

    def end_outgoing(self, principal_arn: str, session_id: str) -> None:
        session = self.outgoing_session(principal_arn, session_id)
        session.reader.close()
        self.outgoing.pop(session_id, None)

    # Housekeeping ------------------------------------------------------------------------------
    def reap_idle(self) -> None:
        limit = time.monotonic() - IDLE_SESSION_SECONDS
        for session in list(self.incoming.values()):
            if session.touched < limit:
                self._fail(session, "the source stopped sending for 30 minutes")
        for session_id, out in list(self.outgoing.items()):
            if out.touched < limit:
                out.reader.close()
                self.outgoing.pop(session_id, None)

    def close(self) -> None:
        for session in list(self.incoming.values()):
            self._fail(session, "the destination's server shut down during the copy")
        for out in self.outgoing.values():
            out.reader.close()
        self.outgoing.clear()


_COMPRESSOR_LEVEL = 3


def encode_chunks(vault: Any, ids: list[bytes]) -> bytes:
    """Frames of compressed plaintext for the given chunk ids, each verified as it is read."""
    compressor = zstandard.ZstdCompressor(level=_COMPRESSOR_LEVEL)
    frames = []
    for chunk_id in ids:
        plaintext = read_object(vault, chunk_id, Kind.CHUNK)
        frames.append(wire.encode_frame(chunk_id, len(plaintext), compressor.compress(plaintext)))
    return b"".join(frames)


Session = TypeVar("Session", IncomingCopy, OutgoingCopy)


def _open_session(sessions: dict[str, Session], principal_arn: str, session_id: str) -> Session:
    """A session by id, only for the principal that opened it; using it keeps it from being reaped."""
    session = sessions.get(session_id)
    if session is None or session.principal_arn != principal_arn:
        raise NotFoundError(f"no open copy session '{session_id}'", hint="Start the copy again")
    session.touched = time.monotonic()
    return session


def _check_source_arns(principal_arn: str, request: CopyInRequest) -> None:
    """A copy must come from a vault of the caller's own account: no account copies in another's name."""
    caller = account_of(principal_arn)
    for arn in (request.source_recovery_point_arn, request.source_vault_arn):
        if Arn.parse(arn).account_id != caller:
            raise UsageError(f"{arn} does not belong to the calling account {caller}")


def _parse(model: type[BaseModel], raw: Any) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise RemoteError(f"malformed request: {where}: {first['msg']}") from None


def _message(exc: BaseException) -> str:
    return exc.one_line() if isinstance(exc, StrongroomError) else f"internal error: {type(exc).__name__}: {exc}"


