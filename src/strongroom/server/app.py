"""The account API: every request is signed (services/credentials.py) and every action authorised
against the vault's access policy and lock (services/vault_ops.py, services/copy_in.py).

Handlers are ``async`` and run one at a time on the event loop: the catalog connection belongs to one
thread, and a copy's work is CPU-bound anyway. Wire format: docs/wire-protocol.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse

from strongroom.errors import (
    AccessError,
    AlreadyExistsError,
    AuthenticationError,
    BusyError,
    NotFoundError,
    RemoteError,
    StrongroomError,
    UsageError,
)
from strongroom.services import vault_ops
from strongroom.services.account import Account
from strongroom.services.copy_in import CopySessions
from strongroom.services.credentials import NonceCache, authenticate
from strongroom.services.jobs import recover_dead_jobs
from strongroom.services.session_limits import SessionLimits

API_VERSION = "1"
ADMISSION_POLL_SECONDS = 0.1
ADMISSION_POLLS = 600  # a copy waits up to a minute for a garbage collection of its vault, then gets 503


def create_app(account: Account, limits: SessionLimits | None = None) -> FastAPI:
    nonces = NonceCache()
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
    app = FastAPI(title="Strongroom account API", version=API_VERSION, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)

    async def principal(request: Request) -> str:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        return authenticate(account, request.method, request.url.path, request.url.query, headers, body, nonces)

    @app.exception_handler(StrongroomError)
    async def strongroom_error(_: Request, exc: StrongroomError) -> JSONResponse:
        body = {"error": {"code": exc.code, "message": exc.message, "hint": exc.hint or None}}
        return JSONResponse(body, status_code=_status(exc))

    _account_routes(app, account, principal)
    _vault_routes(app, account, principal)
    _copy_routes(app, sessions, principal)
    return app


async def _reap(sessions: CopySessions) -> None:
    """End expired copy sessions even when no request comes (on the event loop, between requests: the
    catalog connection stays on one thread)."""
    while True:
        await asyncio.sleep(sessions.limits.reap_every_seconds)
        sessions.reap_expired()


def _account_routes(app: FastAPI, account: Account, principal: Any) -> None:
    @app.get("/v1/whoami")
    async def whoami(who: str = Depends(principal)) -> dict[str, Any]:
        return {"account_id": account.account_id, "region": account.region, "principal_arn": who,
                "api_version": API_VERSION}


def _vault_routes(app: FastAPI, account: Account, principal: Any) -> None:
    @app.get("/v1/vaults/{vault}")
    async def describe_vault(vault: str, who: str = Depends(principal)) -> dict[str, Any]:
        return vault_ops.describe_vault(account, who, vault)

    @app.get("/v1/vaults/{vault}/recovery-points")
    async def list_points(vault: str, who: str = Depends(principal)) -> dict[str, Any]:
        points = vault_ops.list_recovery_points(account, who, vault)
        return {"recovery_points": [p.as_dict() for p in points]}

    @app.put("/v1/vaults/{vault}/access-policy")
    async def put_policy(vault: str, request: Request, who: str = Depends(principal)) -> Response:
        vault_ops.put_access_policy(account, who, vault, (await _json(request)).get("policy"))
        return Response(status_code=204)

    @app.put("/v1/vaults/{vault}/lock")
    async def put_lock(vault: str, request: Request, who: str = Depends(principal)) -> Response:
        raw = await _json(request)
        vault_ops.put_vault_lock(
            account, who, vault, min_retention_days=raw.get("min_retention_days"),
            max_retention_days=raw.get("max_retention_days"), changeable_for_days=raw.get("changeable_for_days"))
        return Response(status_code=204)

    @app.delete("/v1/vaults/{vault}/lock")
    async def delete_lock(vault: str, who: str = Depends(principal)) -> Response:
        vault_ops.delete_vault_lock(account, who, vault)
        return Response(status_code=204)

    @app.delete("/v1/vaults/{vault}")
    async def delete_vault(vault: str, who: str = Depends(principal)) -> Response:
        vault_ops.delete_vault(account, who, vault)
        return Response(status_code=204)

    @app.get("/v1/recovery-points/{rp_id}")
    async def get_point(rp_id: str, who: str = Depends(principal)) -> dict[str, Any]:
        return vault_ops.get_recovery_point(account, who, account.recovery_point_arn(rp_id)).as_dict()

    @app.delete("/v1/recovery-points/{rp_id}")
    async def delete_point(rp_id: str, who: str = Depends(principal)) -> Response:
        vault_ops.delete_recovery_point(account, who, account.recovery_point_arn(rp_id))
        return Response(status_code=204)

    @app.put("/v1/recovery-points/{rp_id}/lifecycle")
    async def update_lifecycle(rp_id: str, request: Request, who: str = Depends(principal)) -> dict[str, Any]:
        days = (await _json(request)).get("delete_after_days")
        if days is not None and not isinstance(days, int):
            raise UsageError("delete_after_days must be a whole number of days or null")
        arn = account.recovery_point_arn(rp_id)
        return vault_ops.update_recovery_point_lifecycle(account, who, arn, days).as_dict()


def _copy_routes(app: FastAPI, sessions: CopySessions, principal: Any) -> None:
    @app.post("/v1/vaults/{vault}/copy-in")
    async def start_copy_in(vault: str, request: Request, who: str = Depends(principal)) -> dict[str, Any]:
        raw = await _json(request)
        for _ in range(ADMISSION_POLLS):  # while the vault's collector runs, other requests go on
            try:
                return sessions.start_incoming(who, vault, raw)
            except BusyError:
                await asyncio.sleep(ADMISSION_POLL_SECONDS)
        return sessions.start_incoming(who, vault, raw)

    @app.post("/v1/copy-in/{session}/missing")
    async def missing(session: str, request: Request, who: str = Depends(principal)) -> Response:
        return Response(sessions.missing(who, session, await request.body()), media_type="application/octet-stream")

    @app.post("/v1/copy-in/{session}/chunks")
    async def chunks(session: str, request: Request, who: str = Depends(principal)) -> Response:
        sessions.chunks(who, session, await request.body())
        return Response(status_code=204)

    @app.post("/v1/copy-in/{session}/streams/{stream}")
    async def refs(session: str, stream: str, request: Request, who: str = Depends(principal)) -> Response:
        sessions.refs(who, session, stream, await request.body())
        return Response(status_code=204)

    @app.post("/v1/copy-in/{session}/commit")
    async def commit(session: str, who: str = Depends(principal)) -> dict[str, Any]:
        return sessions.commit(who, session)

    @app.post("/v1/copy-in/{session}/abort")
    async def abort(session: str, request: Request, who: str = Depends(principal)) -> Response:
        sessions.abort(who, session, str((await _json(request)).get("reason", "")))
        return Response(status_code=204)

    @app.post("/v1/recovery-points/{rp_id}/copy-out")
    async def start_copy_out(rp_id: str, request: Request, who: str = Depends(principal)) -> dict[str, Any]:
        return sessions.start_outgoing(who, rp_id, await _json(request))

    @app.get("/v1/copy-out/{session}/streams/{stream}")
    async def out_refs(session: str, stream: str, start: int, count: int, who: str = Depends(principal)) -> Response:
        body = sessions.outgoing_refs(who, session, stream, start, count)
        return Response(body, media_type="application/octet-stream")

    @app.post("/v1/copy-out/{session}/chunks")
    async def out_chunks(session: str, request: Request, who: str = Depends(principal)) -> Response:
        body = sessions.outgoing_chunks(who, session, await request.body())
        return Response(body, media_type="application/octet-stream")

    @app.delete("/v1/copy-out/{session}")
    async def end_copy_out(session: str, who: str = Depends(principal)) -> Response:
        sessions.end_outgoing(who, session)
        return Response(status_code=204)


async def _json(request: Request) -> dict[str, Any]:
    try:
        raw = await request.json()
    except ValueError:
        raise RemoteError("the request body is not JSON") from None
    if not isinstance(raw, dict):
        raise RemoteError("the request body is not a JSON object")
    return raw


def _status(exc: StrongroomError) -> int:
    for cls, status in ((AuthenticationError, 401), (AccessError, 403), (NotFoundError, 404),
                        (AlreadyExistsError, 409), (UsageError, 400), (RemoteError, 400), (BusyError, 503)):
        if isinstance(exc, cls):
            return status
    return 500
