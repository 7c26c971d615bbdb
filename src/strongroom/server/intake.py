"""How a request gets in: its signed headers are authenticated before a byte of its body is read, then the
body is read no larger than its route allows and checked against the signed hash as it arrives.

An unsigned, wrongly signed or replayed request is refused from its headers alone (401), and a body
announced or found larger than the route's limit is refused (413) without being read to its end: the
response closes the connection, so the rest is never read. Bodies being read and handled at once share
one byte budget, so a flood of signed requests waits rather than filling memory. Limits and statuses:
docs/wire-protocol.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from strongroom.errors import AuthenticationError, RemoteError, RequestTooLargeError
from strongroom.services.account import Account
from strongroom.services.credentials import SeenNonces, authenticate
from strongroom.transport import signing

MiB = 1 << 20
NO_BODY = 0
JSON_LIMIT = 1 * MiB  # announcements, policies, locks, lifecycles: a few KiB in practice
ID_LIST_LIMIT = 1 * MiB  # chunk id and ref lists: the client sends at most 2 x 1024 ids (services/copy.py)
# A push sends frames until the body reaches 8 MiB (services/copy.py), so a body is below 8 MiB plus one
# frame, and a frame is at most the largest chunk (4 x a 4 MiB average, vault/vault.py) and zstd's margin.
CHUNK_FRAMES_LIMIT = 32 * MiB
CHUNK_ANSWER_LIMIT = CHUNK_FRAMES_LIMIT  # frames one copy-out answer may carry (the client asks for ~8 MiB)
BODY_BUDGET = 2 * CHUNK_FRAMES_LIMIT  # bytes of bodies (and answers) in memory at once, in all requests
MAX_JSON_DEPTH = 64
_MAX_INT_DIGITS = 19  # JSON integers fit 64 bits, like every number the catalog stores


@dataclass(frozen=True)
class Caller:
    """An authenticated request: who signed it, and its body, checked against the signed hash."""

    principal_arn: str
    body: bytes


class BodyBudget:
    """Bytes of request bodies in memory at once; a request waits for its share before reading."""

    def __init__(self, total: int) -> None:
        self._free = total
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def reserve(self, size: int) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: self._free >= size)
            self._free -= size
        try:
            yield
        finally:
            async with self._changed:
                self._free += size
                self._changed.notify_all()


def signed_requests(account: Account) -> Callable[..., Any]:
    """A factory of FastAPI dependencies: ``signed(limit)`` authenticates a request and reads its body."""
    nonces = SeenNonces(account)
    budget = BodyBudget(BODY_BUDGET)

    def signed(limit: int, answer_limit: int = 0) -> Any:
        """The dependency of a route whose body is at most ``limit`` bytes; ``answer_limit`` is the share
        of the budget its answer takes (held until the answer is sent)."""

        async def caller(request: Request) -> AsyncIterator[Caller]:
            headers = {k.lower(): v for k, v in request.headers.items()}
            who = authenticate(account, request.method, request.url.path, request.url.query, headers, nonces)
            declared = _declared_length(headers)
            if declared is not None and declared > limit:
                raise _too_large(limit)
            async with budget.reserve((limit if declared is None else declared) + answer_limit):
                yield Caller(who, await _read_body(request, limit, headers[signing.BODY_HEADER]))

        return caller

    return signed


async def _read_body(request: Request, limit: int, signed_sha256: str) -> bytes:
    digest = hashlib.sha256()
    pieces: list[bytes] = []
    size = 0
    async for piece in request.stream():
        size += len(piece)
        if size > limit:
            raise _too_large(limit)
        digest.update(piece)
        pieces.append(piece)
    if not hmac.compare_digest(digest.hexdigest(), signed_sha256):
        raise AuthenticationError("the request body does not match its signed hash")
    return b"".join(pieces)


def _declared_length(headers: dict[str, str]) -> int | None:
    """Content-Length, when the request has one (uvicorn has refused malformed ones already)."""
    value = headers.get("content-length")
    return int(value) if value is not None and value.isdigit() else None


def _too_large(limit: int) -> RequestTooLargeError:
    return RequestTooLargeError(
        f"the request body is larger than {_size(limit)}, the most this route accepts",
        hint="Check that both accounts run the same Strongroom version",
    )


def _size(limit: int) -> str:
    return f"{limit // MiB} MiB" if limit >= MiB else f"{limit} bytes"


# JSON bodies ---------------------------------------------------------------------------------------
def json_object(body: bytes) -> dict[str, Any]:
    """A JSON object body, refused (400) when it is not JSON, not an object, nested deeper than
    ``MAX_JSON_DEPTH``, or holds a number no 64-bit field can take."""
    try:
        raw = json.loads(body, parse_int=_bounded_int, parse_float=_finite_float, parse_constant=_no_constant)
    except RecursionError:
        raise _too_deep() from None
    except ValueError:
        raise RemoteError("the request body is not JSON") from None
    if not isinstance(raw, dict):
        raise RemoteError("the request body is not a JSON object")
    if _depth(raw) > MAX_JSON_DEPTH:
        raise _too_deep()
    return raw


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS or not -(2**63) <= int(text) < 2**63:
        raise RemoteError(f"the request body has an integer out of range ({text[:24]}…)")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise RemoteError(f"the request body has a number out of range ({text[:24]})")
    return value


def _no_constant(text: str) -> Any:
    raise RemoteError(f"the request body has {text}, which is not a JSON number")


def _too_deep() -> RemoteError:
    return RemoteError(f"the request body's JSON is nested deeper than {MAX_JSON_DEPTH} levels")


def _depth(value: Any) -> int:
    """How deeply ``value`` nests lists and objects, counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_JSON_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


# The connection ------------------------------------------------------------------------------------
class CloseWhenBodyUnread:
    """ASGI middleware: a response sent before its request's body was read to the end closes the
    connection, so the rest of a refused body is never read (uvicorn would read and discard it to keep
    the connection alive)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        unread = _has_body(scope["headers"])

        async def tracking_receive() -> Message:
            nonlocal unread
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                unread = False
            return message

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and unread:
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, tracking_receive, closing_send)


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    fields = dict(headers)
    return b"transfer-encoding" in fields or fields.get(b"content-length", b"0") != b"0"
