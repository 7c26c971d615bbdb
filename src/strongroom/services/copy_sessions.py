"""Copy sessions served by this account: copies coming in (CopyIntoBackupVault) and going out
(CopyFromBackupVault), each authorised against the vault's access policy and lock.

An incoming session holds its job's lock and the vault's writers lock (which the garbage collector
waits for), so no session may outlive the limits the destination's operator sets (``SessionLimits``:
an idle timeout and a maximum lifetime, enforced on every request and by the server's periodic
reaper). Whenever a session ends unsuccessfully its locks are released first, then its failure is
recorded: a full disk that refuses the catalog's write never keeps the vault locked.
"""

from __future__ import annotations

import base64
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from strongroom.errors import NotFoundError, RemoteError, StrongroomError, UsageError
from strongroom.model import (
    Arn,
    Job,
    JobType,
    RecoveryPoint,
    RecoveryPointStatus,
    VaultRecord,
    iso,
    new_id,
    now,
    tag_problem,
)
from strongroom.policy.principals import account_of
from strongroom.services import notifications, vault_ops
from strongroom.services.account import Account
from strongroom.services.copy_receive import CopyReceiver, SourceCheck
from strongroom.services.jobs import complete_recovery_point, create_job, fail_job, lock_path
from strongroom.services.recovery_points import latest_intact_reader
from strongroom.services.session_limits import SessionLimits
from strongroom.services.source_keys import pin_source_key
from strongroom.services.writers import try_hold_writer
from strongroom.transport import wire
from strongroom.vault.manifest import Manifest, load_manifest
from strongroom.vault.reader import RecoveryPointReader
from strongroom.vault.source import ID_KEY_SIZE

Session = TypeVar("Session", "IncomingCopy", "OutgoingCopy")

MAX_REFS_PER_PAGE = 16384
ENDED_REMEMBERED = 256  # why recent sessions ended, told to a caller that still uses one
_LOG = logging.getLogger(__name__)


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
    # The source point's tags: information for selecting points here, never trusted for access or retention.
    tags: dict[str, str] = {}
    # Wire protocol 2: the source vault's chunk-id key (base64 of 32 bytes), pinned on first use.
    source_chunk_id_key: str | None = Field(default=None, min_length=44, max_length=44, repr=False)

    @field_validator("tags")
    @classmethod
    def _bounded_tags(cls, tags: dict[str, str]) -> dict[str, str]:
        problem = tag_problem(tags)
        if problem:
            raise ValueError(problem)
        return tags

    def chunk_id_key(self) -> bytes:
        if self.source_chunk_id_key is None:
            raise UsageError(
                "the source did not send its vault's chunk-id key: this destination checks every copied chunk"
                " and takes copies only from sources speaking wire protocol 2",
                hint="Upgrade Strongroom in the source account",
            )
        try:
            key = base64.b64decode(self.source_chunk_id_key, validate=True)
        except ValueError:
            key = b""
        if len(key) != ID_KEY_SIZE:
            raise RemoteError("malformed request: source_chunk_id_key is not base64 of 32 bytes")
        return key


@dataclass
class IncomingCopy:
    job: Job
    rp: RecoveryPoint
    request: CopyInRequest
    receiver: CopyReceiver
    resources: ExitStack
    principal_arn: str
    started: float
    touched: float


@dataclass
class OutgoingCopy:
    principal_arn: str
    manifest: Manifest
    reader: RecoveryPointReader
    started: float
    touched: float
    positions: dict[str, int] = field(default_factory=dict)
    iterators: dict[str, Any] = field(default_factory=dict)


class CopySessions:
    """The copy sessions one ``strongroom serve`` process holds, keyed by id; expired ones are ended.

    ``clock`` (monotonic seconds) is what the limits are measured with; tests may drive it.
    """

    def __init__(
        self, account: Account, limits: SessionLimits | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.account = account
        self.limits = limits or SessionLimits()
        self.clock = clock
        self.incoming: dict[str, IncomingCopy] = {}
        self.outgoing: dict[str, OutgoingCopy] = {}
        self.ended: OrderedDict[str, str] = OrderedDict()
        self.unrecorded: dict[str, str] = {}  # failed jobs whose failure the catalog refused to record yet

    # Incoming --------------------------------------------------------------------------------
    def start_incoming(self, principal_arn: str, vault_name: str, raw: dict[str, Any]) -> dict[str, Any]:
        self.reap_expired()
        request = _parse(CopyInRequest, raw)
        vault = self.account.catalog.get_vault(vault_name)
        context = {"backup:CopySources": [request.source_vault_arn]}
        vault_ops.authorize_action(self.account, principal_arn, "CopyIntoBackupVault", vault, context)
        _check_source_arns(principal_arn, request)
        request.chunk_id_key()  # an old or malformed source is refused before any job exists
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
        started = now()
        ends_by = started + timedelta(seconds=self.limits.max_lifetime_seconds)
        parameters = {
            "direction": "in",
            "principal_arn": principal_arn,
            "source_recovery_point_arn": request.source_recovery_point_arn,
            "source_backup_vault_arn": request.source_vault_arn,
            "destination_backup_vault_arn": vault.arn,
            "delete_after_days": request.delete_after_days,
            "session_ends_by": iso(ends_by),
        }
        resources = ExitStack()
        # The writers lock first, before any job exists: BusyError while a garbage collection runs (the server
        # retries without blocking its event loop).
        resources.callback(try_hold_writer(account, vault.name).release)
        try:
            job, lock = create_job(
                account,
                JobType.COPY,
                resource_id=request.resource_id,
                vault_name=vault.name,
                parameters=parameters,
                running_since=started,
            )
        except BaseException:
            resources.close()
            raise
        resources.callback(lock.release)
        resources.callback(lambda: lock_path(account, job.id).unlink(missing_ok=True))
        try:
            notifications.job_started(account, job.id)
            pin_source_key(account, account_of(principal_arn), request.source_vault_id, request.chunk_id_key())
            rp = RecoveryPoint(
                id=new_id(),
                arn="",
                vault_name=vault.name,
                resource_id=request.resource_id,
                resource_type=request.resource_type,
                status=RecoveryPointStatus.CREATING,
                creation_date=created,
                backup_job_id=job.id,
                source_recovery_point_arn=request.source_recovery_point_arn,
                tags=dict(request.tags),
                **retention,
            )
            rp.arn = account.recovery_point_arn(rp.id)
            account.catalog.add_recovery_point(rp, {"recovery_point_arn": rp.arn})
            job.recovery_point_arn = rp.arn
            previous = latest_intact_reader(account, request.resource_id, vault.name)
            base = previous.manifest if previous else None
            if previous:
                previous.close()
            source = SourceCheck(request.chunk_id_key(), request.source_recovery_point_arn, request.source_vault_arn)
            receiver = CopyReceiver(account, vault.name, request.source_vault_id, rp.id, created, base, source)
        except BaseException as exc:
            resources.close()  # the locks first: recording the failure may fail too (a full disk)
            self._record_failure(job.id, _message(exc))
            raise
        moment = self.clock()
        return IncomingCopy(job, rp, request, receiver, resources, principal_arn, moment, moment)

    def incoming_session(self, principal_arn: str, session_id: str) -> IncomingCopy:
        return self._open_session(self.incoming, principal_arn, session_id, self._fail)

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
        stats = self._guard(session, lambda: self._complete(session))
        self._close(session_id, "committed")
        notifications.job_finished(self.account, session.job.id)
        return {"copy_job_id": session.job.id, "recovery_point_arn": session.rp.arn, **stats}

    def _complete(self, session: IncomingCopy) -> dict[str, int]:
        request = session.request
        shapes = {name: shape.model_dump() for name, shape in request.streams.items()}
        manifest = session.receiver.commit(request.resource_id, request.resource_type, request.metadata, shapes)
        stats = session.receiver.stats_dict()
        source_bytes = sum(s.size for s in manifest.streams.values())
        complete_recovery_point(
            self.account,
            session.rp.id,
            manifest,
            source_bytes=source_bytes,
            stored_bytes=stats["stored_stored_bytes"],
            new_bytes=stats["stored_new_bytes"],
            metadata=request.metadata,
            job_id=session.job.id,
            bytes_processed=stats["plaintext_bytes_received"],
            result={"destination_recovery_point_arn": session.rp.arn, **stats},
        )
        return stats

    def abort(self, principal_arn: str, session_id: str, reason: str) -> None:
        session = self.incoming_session(principal_arn, session_id)
        self._fail(session, f"aborted by the source: {reason[:500]}")

    def _guard(self, session: IncomingCopy, action: Any) -> Any:
        try:
            return action()
        except StrongroomError as exc:
            self._fail(session, exc.one_line())
            raise
        except BaseException as exc:
            self._fail(session, _message(exc))
            raise

    def _fail(self, session: IncomingCopy, message: str) -> None:
        """End the session unsuccessfully: release its locks, then record the failure (retried when refused)."""
        try:
            self._close(session.job.id, message)
        finally:
            self._record_failure(session.job.id, message)

    def _record_failure(self, job_id: str, message: str) -> None:
        try:
            fail_job(self.account, self.account.catalog.get_job(job_id), message)
        except NotFoundError:  # never recorded (its creation failed): nothing to mark
            self.unrecorded.pop(job_id, None)
            return
        except Exception as exc:  # e.g. "database or disk is full": the reaper tries again
            self.unrecorded[job_id] = message
            _LOG.warning(
                "copy job %s failed (%s); recording that failed too, will retry: %s", job_id, message, _message(exc)
            )
            return
        self.unrecorded.pop(job_id, None)
        try:
            notifications.job_finished(self.account, job_id)
        except Exception as exc:
            _LOG.warning("copy job %s: queueing its notification failed: %s", job_id, _message(exc))

    def _close(self, session_id: str, why: str) -> None:
        session = self.incoming.pop(session_id, None)
        if session:
            self._remember(session_id, why)
            try:
                session.receiver.close()
            except Exception as exc:  # e.g. the write that failed the copy, raised again by the writer's threads
                _LOG.warning("copy session %s: closing its writer: %s", session_id, _message(exc))
            finally:
                session.resources.close()  # the job lock and the vault's writers lock

    def _remember(self, session_id: str, why: str) -> None:
        self.ended[session_id] = why
        while len(self.ended) > ENDED_REMEMBERED:
            self.ended.popitem(last=False)

    # Outgoing --------------------------------------------------------------------------------
    def start_outgoing(self, principal_arn: str, rp_id: str, raw: dict[str, Any]) -> dict[str, Any]:
        self.reap_expired()
        target = str(raw.get("destination_vault_arn") or "")
        Arn.parse(target)
        rp = self.account.catalog.get_recovery_point(rp_id)
        vault = self.account.catalog.get_vault(rp.vault_name)
        context = {"backup:CopyTargets": [target]}
        vault_ops.authorize_action(self.account, principal_arn, "CopyFromBackupVault", vault, context)
        if rp.status != RecoveryPointStatus.COMPLETED:
            raise UsageError(f"recovery point {rp.arn} is {rp.status.value}, not COMPLETED, and cannot be copied")
        store_vault = self.account.vault(vault.name)
        manifest = load_manifest(store_vault, rp.id)
        session_id = new_id()
        moment = self.clock()
        self.outgoing[session_id] = OutgoingCopy(
            principal_arn, manifest, RecoveryPointReader(store_vault, manifest), moment, moment
        )
        return {
            "session_id": session_id,
            "recovery_point": rp.as_dict(),
            "source_vault_arn": vault.arn,
            "source_vault_id": manifest.vault_id,
            "resource_id": manifest.resource_id,
            "resource_type": manifest.resource_type,
            "metadata": manifest.metadata,
            "streams": {n: {"size": s.size, "chunk_count": s.chunk_count} for n, s in manifest.streams.items()},
        }

    def outgoing_session(self, principal_arn: str, session_id: str) -> OutgoingCopy:
        return self._open_session(
            self.outgoing, principal_arn, session_id, lambda session, why: self._end_outgoing(session_id, why)
        )

    def outgoing_refs(self, principal_arn: str, session_id: str, stream: str, start: int, count: int) -> bytes:
        session = self.outgoing_session(principal_arn, session_id)
        if stream not in session.manifest.streams:
            raise NotFoundError(f"the recovery point has no stream '{stream}'")
        if start != session.positions.get(stream, 0):
            raise UsageError(
                f"stream '{stream}' pages must be read in order (next start is {session.positions.get(stream, 0)})"
            )
        iterator = session.iterators.setdefault(stream, session.reader.iter_refs(session.manifest.streams[stream]))
        page = []
        for ref in iterator:
            page.append((ref.id, ref.size))
            if len(page) >= min(count, MAX_REFS_PER_PAGE):
                break
        session.positions[stream] = start + len(page)
        return wire.encode_refs(page)

    def outgoing_chunks(self, principal_arn: str, session_id: str, body: bytes) -> bytes:
        session = self.outgoing_session(principal_arn, session_id)
        return wire.FrameEncoder(session.reader.vault).frames(wire.decode_ids(body))

    def end_outgoing(self, principal_arn: str, session_id: str) -> None:
        self.outgoing_session(principal_arn, session_id)
        self._end_outgoing(session_id, "ended by the caller")

    def _end_outgoing(self, session_id: str, why: str) -> None:
        session = self.outgoing.pop(session_id, None)
        if session:
            self._remember(session_id, why)
            session.reader.close()

    # Housekeeping ------------------------------------------------------------------------------
    def storage_full(self, principal_arn: str, path: str, message: str) -> None:
        """A request of ``principal_arn`` to ``path`` was refused for want of space: end the copy-in session it
        names (only the caller's own), releasing its locks at once."""
        match = _COPY_IN_SESSION_PATH.match(path)
        session = self.incoming.get(match.group(1)) if match else None
        if session is not None and session.principal_arn == principal_arn:
            self._guarded(lambda: self._fail(session, message))

    def reap_expired(self) -> None:
        """End every session past its idle timeout or maximum lifetime; retry recording refused failures.

        Runs on every session start and periodically (server/app.py); never raises, so the reaper lives on.
        """
        for session in list(self.incoming.values()):
            self._guarded(partial(self._reap_incoming, session))
        for session_id, out in list(self.outgoing.items()):
            expired = self._expired(out)
            if expired:
                self._guarded(partial(self._end_outgoing, session_id, expired))
        for job_id, message in list(self.unrecorded.items()):
            self._guarded(partial(self._record_failure, job_id, message))

    def _reap_incoming(self, session: IncomingCopy) -> None:
        expired = self._expired(session)
        if expired:
            self._fail(session, expired)

    def _expired(self, session: IncomingCopy | OutgoingCopy) -> str | None:
        """Why the session must end now (past a limit), or None."""
        moment, limits = self.clock(), self.limits
        if moment - session.started >= limits.max_lifetime_seconds:
            return (
                f"the copy session reached the destination's maximum session lifetime of "
                f"{_seconds(limits.max_lifetime_seconds)} (strongroom serve --copy-max-lifetime)"
            )
        if moment - session.touched >= limits.idle_seconds:
            return (
                f"the source sent nothing for {_seconds(limits.idle_seconds)}, the destination's idle timeout "
                f"(strongroom serve --copy-idle-timeout)"
            )
        return None

    def close(self) -> None:
        """Server shutdown: end every session, each one whatever happens to the others."""
        for session in list(self.incoming.values()):
            self._guarded(partial(self._fail, session, "the destination's server shut down during the copy"))
        for session_id in list(self.outgoing):
            self._guarded(partial(self._end_outgoing, session_id, "the server shut down"))
        for job_id, message in list(self.unrecorded.items()):
            self._guarded(partial(self._record_failure, job_id, message))

    @staticmethod
    def _guarded(action: Callable[[], None]) -> None:
        try:
            action()
        except Exception as exc:
            _LOG.warning("copy sessions: %s", _message(exc))

    def _open_session(
        self,
        sessions: dict[str, Session],
        principal_arn: str,
        session_id: str,
        end_expired: Callable[[Session, str], None],
    ) -> Session:
        """A session by id, only for the principal that opened it; using it keeps it from idling out. One past
        its deadlines is ended first (``end_expired(session, why)``), so the caller is told it ended."""
        session = sessions.get(session_id)
        if session is not None and session.principal_arn == principal_arn:
            expired = self._expired(session)
            if expired:
                end_expired(session, expired)
                session = sessions.get(session_id)
        if session is None or session.principal_arn != principal_arn:
            ended = self.ended.get(session_id) if session is None else None
            if ended:
                raise NotFoundError(f"copy session '{session_id}' has ended: {ended}", hint="Start the copy again")
            raise NotFoundError(f"no open copy session '{session_id}'", hint="Start the copy again")
        session.touched = self.clock()
        return session


_COPY_IN_SESSION_PATH = re.compile(r"^/v1/copy-in/([^/]+)/")


def _seconds(value: float) -> str:
    return f"{value / 60:g} minutes" if value >= 120 else f"{value:g} s"


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
