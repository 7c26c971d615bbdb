"""The account API: every request is signed and authenticated from its headers before its body is read,
the body held to its route's size limit (server/intake.py, services/credentials.py), and every action
authorised against the vault's access policy and lock (services/vault_ops.py, services/copy_sessions.py).

Handlers are ``async`` and run one at a time on the event loop: the catalog connection belongs to one
thread, and a copy's work is CPU-bound anyway. Wire format: docs/wire-protocol.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from strongroom.errors import (
    AccessError,
    AlreadyExistsError,
    AuthenticationError,
    BusyError,
    NotFoundError,
    RemoteError,
    RequestTooLargeError,
    RequestUnrecordedError,
    StorageFullError,
    StrongroomError,
    UsageError,
)
from strongroom.server.intake import (
    CHUNK_ANSWER_LIMIT,
    CHUNK_FRAMES_LIMIT,
    ID_LIST_LIMIT,
    JSON_LIMIT,
    NO_BODY,
    Caller,
    CloseWhenBodyUnread,
    json_object,
    signed_requests,
)
from strongroom.services import vault_ops, wal_receive
from strongroom.services.account import Account
from strongroom.services.copy_sessions import CopySessions
from strongroom.services.jobs import recover_dead_jobs
from strongroom.services.session_limits import SessionLimits
from strongroom.transport import wire

API_VERSION = "3"  # 2: a copy-in announcement carries the source vault's chunk-id key; 3: WAL copies
Signed = Callable[..., Any]  # intake.signed_requests: signed(limit) is the dependency of a route
ADMISSION_POLL_SECONDS = 0.1
ADMISSION_POLLS = 600  # a copy waits up to a minute for a garbage collection of its vault, then gets 503


def create_app(account: Account, limits: SessionLimits | None = None) -> FastAPI:
    sessions = CopySessions(account, limits)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        recover_dead_jobs(account)
        reaper = asyncio.create_task(_reap(sessions))
        try:
            yield
        finally:
            reaper.cancel()
            with suppress(asyncio.CancelledError):
                await reaper
            sessions.close()

    # No unauthenticated routes at all, not even generated docs: docs/wire-protocol.md is the specification.
    app = FastAPI(
        title="Strongroom account API",
        version=API_VERSION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.add_middleware(CloseWhenBodyUnread)

    @app.exception_handler(StrongroomError)
    async def strongroom_error(request: Request, exc: StrongroomError) -> JSONResponse:
        if isinstance(exc, RequestUnrecordedError):
            # Nothing can progress without room in the catalog: end the caller's copy session now, so its
            # locks do not keep the garbage collector (which frees space) waiting for the idle timeout.
            sessions.storage_full(exc.principal_arn, request.url.path, exc.message)
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def malformed(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())) or "request"
        return _error_response(RemoteError(f"malformed request: {where}: {first.get('msg', 'invalid')}"))

    @app.exception_handler(OverflowError)
    async def out_of_range(_: Request, exc: OverflowError) -> JSONResponse:
        # Only a value taken from the request (a date in year 9999, a count of days) overflows here.
        return _error_response(RemoteError("a date or number in the request is out of range"))

    signed = signed_requests(account)
    _account_routes(app, account, signed)
    _vault_routes(app, account, signed)
    _copy_routes(app, sessions, signed)
    _wal_routes(app, account, signed)
    _wal_out_routes(app, account, signed)
    return app


async def _reap(sessions: CopySessions) -> None:
    """End expired copy sessions even when no request comes (on the event loop, between requests: the
    catalog connection stays on one thread)."""
    while True:
        await asyncio.sleep(sessions.limits.reap_every_seconds)
        sessions.reap_expired()


def _account_routes(app: FastAPI, account: Account, signed: Signed) -> None:
    @app.get("/v1/whoami")
    async def whoami(who: Caller = Depends(signed(NO_BODY))) -> dict[str, Any]:
        return {
            "account_id": account.account_id,
            "region": account.region,
            "principal_arn": who.principal_arn,
            "api_version": API_VERSION,
        }


def _vault_routes(app: FastAPI, account: Account, signed: Signed) -> None:
    @app.get("/v1/vaults/{vault}")
    async def describe_vault(vault: str, who: Caller = Depends(signed(NO_BODY))) -> dict[str, Any]:
        return vault_ops.describe_vault(account, who.principal_arn, vault)

    @app.get("/v1/vaults/{vault}/recovery-points")
    async def list_points(vault: str, who: Caller = Depends(signed(NO_BODY))) -> dict[str, Any]:
        points = vault_ops.list_recovery_points(account, who.principal_arn, vault)
        return {"recovery_points": [p.as_dict() for p in points]}

    @app.put("/v1/vaults/{vault}/access-policy")
    async def put_policy(vault: str, who: Caller = Depends(signed(JSON_LIMIT))) -> Response:
        vault_ops.put_access_policy(account, who.principal_arn, vault, json_object(who.body).get("policy"))
        return Response(status_code=204)

    @app.put("/v1/vaults/{vault}/lock")
    async def put_lock(vault: str, who: Caller = Depends(signed(JSON_LIMIT))) -> Response:
        raw = json_object(who.body)
        vault_ops.put_vault_lock(
            account,
            who.principal_arn,
            vault,
            min_retention_days=raw.get("min_retention_days"),
            max_retention_days=raw.get("max_retention_days"),
            changeable_for_days=raw.get("changeable_for_days"),
        )
        return Response(status_code=204)

    @app.delete("/v1/vaults/{vault}/lock")
    async def delete_lock(vault: str, who: Caller = Depends(signed(NO_BODY))) -> Response:
        vault_ops.delete_vault_lock(account, who.principal_arn, vault)
        return Response(status_code=204)

    @app.delete("/v1/vaults/{vault}")
    async def delete_vault(vault: str, who: Caller = Depends(signed(NO_BODY))) -> Response:
        vault_ops.delete_vault(account, who.principal_arn, vault)
        return Response(status_code=204)

    @app.get("/v1/recovery-points/{rp_id}")
    async def get_point(rp_id: str, who: Caller = Depends(signed(NO_BODY))) -> dict[str, Any]:
        return vault_ops.get_recovery_point(account, who.principal_arn, account.recovery_point_arn(rp_id)).as_dict()

    @app.delete("/v1/recovery-points/{rp_id}")
    async def delete_point(rp_id: str, who: Caller = Depends(signed(NO_BODY))) -> Response:
        vault_ops.delete_recovery_point(account, who.principal_arn, account.recovery_point_arn(rp_id))
        return Response(status_code=204)

    @app.put("/v1/recovery-points/{rp_id}/lifecycle")
    async def update_lifecycle(rp_id: str, who: Caller = Depends(signed(JSON_LIMIT))) -> dict[str, Any]:
        days = json_object(who.body).get("delete_after_days")
        if days is not None and (not isinstance(days, int) or isinstance(days, bool)):
            raise UsageError("delete_after_days must be a whole number of days or null")
        arn = account.recovery_point_arn(rp_id)
        return vault_ops.update_recovery_point_lifecycle(account, who.principal_arn, arn, days).as_dict()


def _copy_routes(app: FastAPI, sessions: CopySessions, signed: Signed) -> None:
    @app.post("/v1/vaults/{vault}/copy-in")
    async def start_copy_in(vault: str, who: Caller = Depends(signed(JSON_LIMIT))) -> dict[str, Any]:
        raw = json_object(who.body)
        for _ in range(ADMISSION_POLLS):  # while the vault's collector runs, other requests go on
            try:
                return sessions.start_incoming(who.principal_arn, vault, raw)
            except BusyError:
                await asyncio.sleep(ADMISSION_POLL_SECONDS)
        return sessions.start_incoming(who.principal_arn, vault, raw)

    @app.post("/v1/copy-in/{session}/missing")
    async def missing(session: str, who: Caller = Depends(signed(ID_LIST_LIMIT))) -> Response:
        flags = sessions.missing(who.principal_arn, session, who.body)
        return Response(flags, media_type="application/octet-stream")

    @app.post("/v1/copy-in/{session}/chunks")
    async def chunks(session: str, who: Caller = Depends(signed(CHUNK_FRAMES_LIMIT))) -> Response:
        sessions.chunks(who.principal_arn, session, who.body)
        return Response(status_code=204)

    @app.post("/v1/copy-in/{session}/streams/{stream}")
    async def refs(session: str, stream: str, who: Caller = Depends(signed(ID_LIST_LIMIT))) -> Response:
        sessions.refs(who.principal_arn, session, stream, who.body)
        return Response(status_code=204)

    @app.post("/v1/copy-in/{session}/commit")
    async def commit(session: str, who: Caller = Depends(signed(NO_BODY))) -> dict[str, Any]:
        return sessions.commit(who.principal_arn, session)

    @app.post("/v1/copy-in/{session}/abort")
    async def abort(session: str, who: Caller = Depends(signed(JSON_LIMIT))) -> Response:
        sessions.abort(who.principal_arn, session, str(json_object(who.body).get("reason", "")))
        return Response(status_code=204)

    @app.post("/v1/recovery-points/{rp_id}/copy-out")
    async def start_copy_out(rp_id: str, who: Caller = Depends(signed(JSON_LIMIT))) -> dict[str, Any]:
        return sessions.start_outgoing(who.principal_arn, rp_id, json_object(who.body))

    @app.get("/v1/copy-out/{session}/streams/{stream}")
    async def out_refs(
        session: str, stream: str, start: int, count: int, who: Caller = Depends(signed(NO_BODY))
    ) -> Response:
        body = sessions.outgoing_refs(who.principal_arn, session, stream, start, count)
        return Response(body, media_type="application/octet-stream")

    @app.post("/v1/copy-out/{session}/chunks")
    async def out_chunks(session: str, who: Caller = Depends(signed(ID_LIST_LIMIT, CHUNK_ANSWER_LIMIT))) -> Response:
        return Response(_bounded_frames(sessions, who, session), media_type="application/octet-stream")

    @app.delete("/v1/copy-out/{session}")
    async def end_copy_out(session: str, who: Caller = Depends(signed(NO_BODY))) -> Response:
        sessions.end_outgoing(who.principal_arn, session)
        return Response(status_code=204)


def _wal_routes(app: FastAPI, account: Account, signed: Signed) -> None:
    """WAL copied with a cluster's base backups (services/wal_receive.py, docs/wire-protocol.md)."""

    @app.get("/v1/vaults/{vault}/wal/{system}")
    async def wal_names(vault: str, system: str, request: Request, who: Caller = Depends(signed(NO_BODY))) -> Any:
        source = request.query_params.get("source_vault_arn", "")
        return {"names": wal_receive.held_names(account, who.principal_arn, vault, system, source)}

    @app.put("/v1/vaults/{vault}/wal/{system}/{name}")
    async def wal_put(
        vault: str, system: str, name: str, request: Request, who: Caller = Depends(signed(CHUNK_FRAMES_LIMIT))
    ) -> dict[str, Any]:
        query = dict(request.query_params)
        outcome = wal_receive.receive_wal(account, who.principal_arn, vault, system, name, query, who.body)
        return {"outcome": outcome.value}

    @app.post("/v1/vaults/{vault}/wal/{system}/continuous")
    async def wal_continuous(vault: str, system: str, who: Caller = Depends(signed(JSON_LIMIT))) -> dict[str, Any]:
        return wal_receive.receive_continuous(account, who.principal_arn, vault, system, json_object(who.body))


def _wal_out_routes(app: FastAPI, account: Account, signed: Signed) -> None:
    """WAL copied back with a continuous point (a pull: services/wal_copy.py, docs/wire-protocol.md)."""

    @app.get("/v1/recovery-points/{rp_id}/wal")
    async def wal_out_names(rp_id: str, request: Request, who: Caller = Depends(signed(NO_BODY))) -> Any:
        target = request.query_params.get("destination_vault_arn", "")
        return wal_receive.outgoing_names(account, who.principal_arn, rp_id, target)

    @app.get("/v1/recovery-points/{rp_id}/wal/{name}")
    async def wal_out_file(
        rp_id: str, name: str, request: Request, who: Caller = Depends(signed(NO_BODY, CHUNK_ANSWER_LIMIT))
    ) -> Response:
        target = request.query_params.get("destination_vault_arn", "")
        body, size, modified = wal_receive.outgoing_file(account, who.principal_arn, rp_id, name, target)
        if len(body) > CHUNK_ANSWER_LIMIT:
            raise RequestTooLargeError(f"WAL file {name} is too large to copy back ({size} bytes)")
        headers = {"x-strongroom-wal-size": str(size), "x-strongroom-wal-modified": modified}
        return Response(body, media_type="application/octet-stream", headers=headers)


def _bounded_frames(sessions: CopySessions, who: Caller, session: str) -> bytes:
    """The frames of the chunks a copy-out asks for, one chunk read at a time, refused once they pass
    CHUNK_ANSWER_LIMIT: a caller cannot make the server hold more in memory by asking for more ids."""
    ids = wire.decode_ids(who.body)
    frames, size = [], 0
    for chunk_id in ids:
        frame = sessions.outgoing_chunks(who.principal_arn, session, chunk_id)
        size += len(frame)
        if size > CHUNK_ANSWER_LIMIT:
            raise RequestTooLargeError(
                f"the {len(ids)} chunks asked for come to more than {CHUNK_ANSWER_LIMIT >> 20} MiB",
                hint="Ask for fewer chunks at once",
            )
        frames.append(frame)
    return b"".join(frames)


def _error_response(exc: StrongroomError) -> JSONResponse:
    body = {"error": {"code": exc.code, "message": exc.message, "hint": exc.hint or None}}
    return JSONResponse(body, status_code=_status(exc))


def _status(exc: StrongroomError) -> int:
    for cls, status in (
        (AuthenticationError, 401),
        (AccessError, 403),
        (NotFoundError, 404),
        (AlreadyExistsError, 409),
        (UsageError, 400),
        (RequestTooLargeError, 413),
        (RemoteError, 400),
        (BusyError, 503),
        (StorageFullError, 507),
    ):
        if isinstance(exc, cls):
            return status
    return 500
