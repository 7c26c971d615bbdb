"""The account API's front door, attacked as someone reaching its port would: floods of unsigned and of
signed-but-oversized bodies against a real ``strongroom serve`` (its memory read from /proc), requests
captured on the wire and replayed after a restart or at a second server of the same home, and malformed
bodies that must be refused as bad input, never as internal errors."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from strongroom.errors import RequestTooLargeError
from strongroom.policy.document import default_destination_policy
from strongroom.policy.principals import root_arn
from strongroom.server import intake
from strongroom.services import copy
from strongroom.transport import signing, wire
from strongroom.transport.client import AccountClient
from tests.e2e.test_copy import make_files
from tests.support.accounts import (
    Server,
    account_id,
    issue_credential,
    register,
    serving,
    source_and_destination,
    vault_arn,
)
from tests.support.cli import Cli

MiB = 1 << 20
SOURCE_ACCOUNT = "111122223333"
SOCKET_TIMEOUT = 120  # a guard against a hung test, never a measure of speed


@dataclass
class Destination:
    cli: Cli
    key_id: str
    secret: str

    def headers(self, method: str, path: str, body: bytes = b"", *, secret: str | None = None) -> dict[str, str]:
        return signing.sign_headers(self.key_id, secret or self.secret, method, path, "", body)

    def announcement(self, creation_date: str | None = None) -> dict[str, Any]:
        source_vault = f"arn:strongroom:backup:local:{SOURCE_ACCOUNT}:backup-vault:Default"
        return {
            "source_recovery_point_arn": source_vault.replace("backup-vault:Default", "recovery-point:p1"),
            "source_vault_arn": source_vault,
            "source_vault_id": "v" * 32,
            "resource_id": "files",
            "resource_type": "directory",
            "creation_date": creation_date or datetime.now(UTC).isoformat(),
            "delete_after_days": 30,
            "metadata": {},
            "streams": {"tree": {"size": 0, "chunk_count": 0}},
            "source_chunk_id_key": base64.b64encode(b"k" * 32).decode(),
        }

    def copy_jobs(self) -> list[dict[str, Any]]:
        return [j for j in self.cli.json("jobs", "list")["jobs"] if j["job_type"] == "COPY"]


@pytest.fixture(scope="module")
def destination(tmp_path_factory: pytest.TempPathFactory) -> Destination:
    """A destination account whose vault takes copies from SOURCE_ACCOUNT, and that account's credential."""
    home = tmp_path_factory.mktemp("boundary")
    cli = Cli(home / "destination")
    cli.run("init")
    policy = default_destination_policy(
        source_account_ids=[SOURCE_ACCOUNT],
        source_vault_arns=[f"arn:strongroom:backup:local:{SOURCE_ACCOUNT}:backup-vault:Default"],
        admin_principal_arns=[root_arn(account_id(cli))],
    )
    (home / "policy.json").write_text(json.dumps(policy))
    cli.run("vaults", "put-access-policy", "Default", "--file", str(home / "policy.json"))
    credential = issue_credential(cli, "copier", "--account-id", SOURCE_ACCOUNT)
    return Destination(cli, credential["access_key_id"], credential["secret_access_key"])


@pytest.fixture
def server(destination: Destination) -> Iterator[Server]:
    with serving(destination.cli) as running:
        yield running


# Raw HTTP: what an attacker sends is not limited to what httpx would ---------------------------------
def _head(method: str, path: str, headers: dict[str, str], length: int | None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    lines.append(f"content-length: {length}" if length is not None else "transfer-encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class Attempt:
    status: int | None  # None: the server closed the connection before an answer could be read
    body_bytes_sent: int
    closed: bool


def _send(port: int, head: bytes, body_size: int, *, chunked: bool = False) -> Attempt:
    """Send ``head`` then up to ``body_size`` bytes of body in 1 MiB pieces, for as long as the server
    takes them; then read the answer's status line and whether the server closed the connection."""
    piece = b"\0" * MiB
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as sock:
        try:
            sock.sendall(head)
            while sent < body_size:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                sent += len(piece)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        return _answer(sock, sent)


def _answer(sock: socket.socket, sent: int) -> Attempt:
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
            if len(received) > 1 << 16 or _complete(received):
                break
    except (ConnectionResetError, TimeoutError):
        pass
    status = int(received.split(b" ", 2)[1]) if received.startswith(b"HTTP/1.1 ") else None
    return Attempt(status, sent, b"connection: close" in received.lower())


def _complete(received: bytes) -> bool:
    head, separator, body = received.partition(b"\r\n\r\n")
    if not separator:
        return False
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def _signed_head(destination: Destination, method: str, path: str, length: int | None, body_sha256: str) -> bytes:
    """Headers signed with the source's real credential, for a body of the given hash."""
    timestamp = datetime.now(UTC).strftime(signing.DATE_FORMAT)
    nonce = secrets.token_hex(16)
    canonical = signing.canonical_request(method, path, "", timestamp, nonce, body_sha256)
    headers = {
        "authorization": f"{signing.ALGORITHM} Credential={destination.key_id}, "
        f"Signature={signing.signature(destination.secret, canonical)}",
        signing.DATE_HEADER: timestamp,
        signing.NONCE_HEADER: nonce,
        signing.BODY_HEADER: body_sha256,
    }
    return _head(method, path, headers, length)


def _zeros_sha256(size: int) -> str:
    digest = hashlib.sha256()
    for _ in range(size // MiB):
        digest.update(b"\0" * MiB)
    return digest.hexdigest()


def _peak_rss(pid: int) -> int:
    """The server process's peak resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


# No unauthenticated work; memory bounded -------------------------------------------------------------
FLOOD_BODY = 128 * MiB
FLOOD_ROUNDS = 2
FLOOD_CONNECTIONS = 4
GROWTH_LIMIT = 48 * MiB  # well below one flood body; main grew by more than the body on the first one


def test_a_flood_of_unsigned_and_oversized_bodies_leaves_the_server_small(
    destination: Destination, server: Server
) -> None:
    """Rounds of unsigned bodies and of signed bodies larger than their route allows, several connections
    at once: each is refused (401 / 413) after a few MiB at most, and the server's peak memory stays far
    below one body. The flood stops as soon as the server grows past the limit, so on a server that
    buffers bodies the test fails after one body instead of exhausting the machine."""
    pid = server.process.pid
    assert httpx.get(server.endpoint + "/v1/whoami", headers=destination.headers("GET", "/v1/whoami")).is_success
    baseline = _peak_rss(pid)
    zeros = _zeros_sha256(FLOOD_BODY)
    kinds = {
        "unsigned, announced": (lambda: _head("POST", "/v1/copy-in/x/chunks", {}, FLOOD_BODY), False, 401),
        "unsigned, chunked": (lambda: _head("PUT", "/v1/vaults/Default/access-policy", {}, None), True, 401),
        "wrong signature": (
            lambda: _head(
                "POST",
                "/v1/copy-in/x/chunks",
                destination.headers("POST", "/v1/copy-in/x/chunks", secret="not-the-secret"),
                FLOOD_BODY,
            ),
            False,
            401,
        ),
        "signed, announced too large": (
            lambda: _signed_head(destination, "POST", "/v1/copy-in/x/chunks", FLOOD_BODY, zeros),
            False,
            413,
        ),
        "signed, chunked too large": (
            lambda: _signed_head(destination, "POST", "/v1/copy-in/x/missing", None, zeros),
            True,
            413,
        ),
    }
    sent_total = 0
    with ThreadPoolExecutor(FLOOD_CONNECTIONS) as pool:
        for _ in range(FLOOD_ROUNDS):
            for name, (head, chunked, expected) in kinds.items():
                heads = [head() for _ in range(FLOOD_CONNECTIONS)]
                attempts = list(pool.map(partial(_send, server.port, body_size=FLOOD_BODY, chunked=chunked), heads))
                growth = _peak_rss(pid) - baseline
                assert growth < GROWTH_LIMIT, f"{name}: the server grew by {growth // MiB} MiB"
                assert {a.status for a in attempts} <= {expected, None}, (name, attempts)
                assert any(a.status == expected for a in attempts), (name, attempts)
                assert all(a.body_bytes_sent < FLOOD_BODY // 4 for a in attempts), (name, attempts)
                sent_total += sum(a.body_bytes_sent for a in attempts)
    attempted = FLOOD_ROUNDS * len(kinds) * FLOOD_CONNECTIONS * FLOOD_BODY
    assert sent_total < attempted // 8, (sent_total, attempted)  # refused early: the rest never crossed
    assert server.process.poll() is None
    assert httpx.get(server.endpoint + "/v1/whoami", headers=destination.headers("GET", "/v1/whoami")).is_success


SIGNED_BODY = 24 * MiB  # within the chunk frames route's limit: read to the end, as the source is trusted to
SIGNED_CONNECTIONS = 12


def test_a_flood_of_signed_bodies_within_their_limit_shares_one_memory_budget(
    destination: Destination, server: Server
) -> None:
    """A compromised source holds a valid credential: many large signed bodies at once are all read (and
    refused, there is no such session), but they queue for one budget of body bytes instead of each
    taking memory; the server's peak stays far below what they add up to."""
    pid = server.process.pid
    assert httpx.get(server.endpoint + "/v1/whoami", headers=destination.headers("GET", "/v1/whoami")).is_success
    baseline = _peak_rss(pid)
    zeros = _zeros_sha256(SIGNED_BODY)
    path = "/v1/copy-in/no-such-session/chunks"
    with ThreadPoolExecutor(SIGNED_CONNECTIONS) as pool:
        attempts = list(
            pool.map(
                lambda _: _send(server.port, _signed_head(destination, "POST", path, SIGNED_BODY, zeros), SIGNED_BODY),
                range(SIGNED_CONNECTIONS),
            )
        )
    assert [a.status for a in attempts] == [404] * SIGNED_CONNECTIONS, attempts  # read, checked, then refused
    growth = _peak_rss(pid) - baseline
    assert growth < SIGNED_CONNECTIONS * SIGNED_BODY // 2, f"the server grew by {growth // MiB} MiB"


def test_unsigned_and_oversized_requests_are_refused_before_the_body_is_read(
    destination: Destination, server: Server
) -> None:
    """Headers alone decide: the answers below arrive although not one byte of the announced body was sent,
    and each closes the connection so the body is never read afterwards either."""
    gib = 1 << 30
    unsigned = _send(server.port, _head("POST", "/v1/copy-in/x/chunks", {}, gib), 0)
    assert (unsigned.status, unsigned.closed) == (401, True), unsigned
    bad = _send(server.port, _head("GET", "/v1/whoami", destination.headers("GET", "/v1/whoami", secret="x"), gib), 0)
    assert (bad.status, bad.closed) == (401, True), bad
    for path, limit in _ROUTE_LIMITS.items():
        method = path.split()[0]
        route = path.split()[1]
        over = _send(server.port, _signed_head(destination, method, route, limit + 1, _zeros_sha256(0)), 0)
        assert (over.status, over.closed) == (413, True), (path, over)


_ROUTE_LIMITS = {
    "GET /v1/whoami": intake.NO_BODY,
    "DELETE /v1/recovery-points/x": intake.NO_BODY,
    "POST /v1/copy-in/x/commit": intake.NO_BODY,
    "PUT /v1/vaults/Default/access-policy": intake.JSON_LIMIT,
    "POST /v1/vaults/Default/copy-in": intake.JSON_LIMIT,
    "POST /v1/copy-in/x/missing": intake.ID_LIST_LIMIT,
    "POST /v1/copy-in/x/streams/tree": intake.ID_LIST_LIMIT,
    "POST /v1/copy-out/x/chunks": intake.ID_LIST_LIMIT,
    "POST /v1/copy-in/x/chunks": intake.CHUNK_FRAMES_LIMIT,
}


def test_a_body_that_is_not_the_signed_one_is_refused(destination: Destination, server: Server) -> None:
    path = "/v1/vaults/Default/copy-in"
    body = json.dumps(destination.announcement()).encode()
    headers = destination.headers("POST", path, body)
    forged = body.replace(b'"delete_after_days": 30', b'"delete_after_days": 31')
    before = destination.copy_jobs()
    answer = httpx.post(server.endpoint + path, content=forged, headers=headers)
    assert answer.status_code == 401, answer.text
    assert "does not match its signed hash" in answer.json()["error"]["message"]
    assert destination.copy_jobs() == before


def test_route_limits_fit_what_the_client_sends() -> None:
    """The limits refuse nothing a Strongroom client sends: a push's frames body stops growing past 8 MiB
    with one frame of at most the largest chunk (4 x the 4 MiB largest average), plus zstd's margin."""
    largest_chunk = 4 * 4 * MiB
    assert copy.MAX_BODY_BYTES + largest_chunk + largest_chunk // 128 + 128 <= intake.CHUNK_FRAMES_LIMIT
    assert 2 * copy.BATCH_REFS * 36 <= intake.ID_LIST_LIMIT
    assert intake.CHUNK_FRAMES_LIMIT <= intake.BODY_BUDGET


# Replays ---------------------------------------------------------------------------------------------
def _capture_copy_start(destination: Destination) -> tuple[str, bytes, dict[str, str]]:
    """A real signed request as it crossed the wire: the source starting a copy (it creates a job)."""
    path = "/v1/vaults/Default/copy-in"
    body = json.dumps(destination.announcement()).encode()
    return path, body, {**destination.headers("POST", path, body), "content-type": "application/json"}


def test_a_captured_request_replayed_after_a_restart_is_refused(destination: Destination) -> None:
    path, body, headers = _capture_copy_start(destination)
    before = len(destination.copy_jobs())
    with serving(destination.cli) as first:
        assert httpx.post(first.endpoint + path, content=body, headers=headers).status_code == 200
    with serving(destination.cli) as restarted:
        replay = httpx.post(restarted.endpoint + path, content=body, headers=headers)
    assert replay.status_code == 401, replay.text
    assert "replayed" in replay.json()["error"]["message"]
    assert len(destination.copy_jobs()) == before + 1  # the replay started nothing


def test_two_servers_of_one_home_accept_a_request_once(destination: Destination) -> None:
    """Two ``strongroom serve`` of the same home, the same signed requests sent to both at once: each is
    accepted by exactly one of them."""
    requests = [destination.headers("GET", "/v1/whoami") for _ in range(12)]
    with serving(destination.cli) as first, serving(destination.cli) as second:
        captured_path, body, headers = _capture_copy_start(destination)
        assert httpx.post(first.endpoint + captured_path, content=body, headers=headers).status_code == 200
        assert httpx.post(second.endpoint + captured_path, content=body, headers=headers).status_code == 401

        def race(headers: dict[str, str]) -> list[int]:
            barrier = threading.Barrier(2)

            def one(endpoint: str) -> int:
                barrier.wait()
                return httpx.get(endpoint + "/v1/whoami", headers=headers).status_code

            with ThreadPoolExecutor(2) as pool:
                return sorted(pool.map(one, (first.endpoint, second.endpoint)))

        outcomes = [race(h) for h in requests]
    assert all(outcome == [200, 401] for outcome in outcomes), outcomes


# Malformed input is bad input (400), never an internal error (500) -------------------------------------
def _deep(levels: int) -> bytes:
    return b'{"policy": ' + b"[" * levels + b"]" * levels + b"}"


@pytest.mark.parametrize(
    ("name", "method", "path", "body", "message"),
    [
        ("nested past the parser", "PUT", "/v1/vaults/Default/access-policy", _deep(100_000), "nested deeper"),
        ("nested below the parser", "PUT", "/v1/vaults/Default/access-policy", _deep(500), "nested deeper"),
        ("not an object", "PUT", "/v1/vaults/Default/lock", b"[1, 2]", "not a JSON object"),
        ("not JSON", "PUT", "/v1/vaults/Default/lock", b"\xff\xfe{", "not JSON"),
        (
            "huge integer",
            "PUT",
            "/v1/recovery-points/x/lifecycle",
            b'{"delete_after_days": 1' + b"0" * 40 + b"}",
            "integer out of range",
        ),
        (
            "integer past Python's digit limit",
            "PUT",
            "/v1/recovery-points/x/lifecycle",
            b'{"delete_after_days": ' + b"9" * 5000 + b"}",
            "integer out of range",
        ),
        ("NaN", "PUT", "/v1/recovery-points/x/lifecycle", b'{"delete_after_days": NaN}', "not a JSON number"),
        ("float overflow", "PUT", "/v1/vaults/Default/lock", b'{"min_retention_days": 1e999}', "out of range"),
        ("boolean days", "PUT", "/v1/recovery-points/x/lifecycle", b'{"delete_after_days": true}', "whole number"),
    ],
)
def test_malformed_bodies_are_bad_input(
    destination: Destination, server: Server, name: str, method: str, path: str, body: bytes, message: str
) -> None:
    headers = destination.headers(method, path, body)
    answer = httpx.request(method, server.endpoint + path, content=body, headers=headers)
    assert answer.status_code == 400, (name, answer.status_code, answer.text)
    error = answer.json()["error"]
    assert message in error["message"] and "\n" not in error["message"], (name, error)


def test_a_year_9999_creation_date_is_bad_input(destination: Destination, server: Server) -> None:
    path = "/v1/vaults/Default/copy-in"
    body = json.dumps(destination.announcement("9999-12-31T23:59:59+00:00")).encode()
    answer = httpx.post(server.endpoint + path, content=body, headers=destination.headers("POST", path, body))
    assert answer.status_code == 400, answer.text
    assert "cannot come from the future" in answer.json()["error"]["message"]  # a 400 with a reason, not a 500


def test_a_malformed_query_is_bad_input(destination: Destination, server: Server) -> None:
    path, query = "/v1/copy-out/x/streams/tree", "count=1&start=abc"
    headers = signing.sign_headers(destination.key_id, destination.secret, "GET", path, query, b"")
    answer = httpx.get(f"{server.endpoint}{path}?{query}", headers=headers)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["message"].startswith("malformed request: query.start")


# What a signed caller can make the server hold ----------------------------------------------------------
def test_a_copy_out_asking_for_too_much_at_once_is_refused(tmp_path: Path) -> None:
    """A source pulling its copy back asks for one chunk id many times over: the answer would be many
    times the chunk; the server stops at its answer limit (413) instead of building it, and the same
    session still serves a request of the client's own size."""
    source, destination = source_and_destination(tmp_path)
    source_id = account_id(source)
    make_files(tmp_path / "tree", count=3, size=1_500_000)
    source.run("resources", "add", "files", "--type", "directory", "--path", str(tmp_path / "tree"))
    credential = issue_credential(destination, "copier", "--account-id", source_id)
    with serving(destination) as running:
        register(source, "destination", running, credential)
        point = source.backup("files")["recovery_point_arn"]
        job = source.json(
            "copy", "start", "--recovery-point", point, "--destination-vault", vault_arn(destination), "--wait"
        )
        copied = job["result"]["destination_recovery_point_arn"].rsplit(":", 1)[1]
        with AccountClient(running.endpoint, credential["access_key_id"], credential["secret_access_key"]) as client:
            session = client.start_copy_out(copied, vault_arn(source))
            stream = next(iter(session["streams"]))
            chunk_id, size = max(client.copy_out_refs(session["session_id"], stream, 0, 1024), key=lambda r: r[1])
            greedy = [chunk_id] * (intake.CHUNK_ANSWER_LIMIT // size + 2)
            with pytest.raises(RequestTooLargeError, match="chunks asked for come to more than"):
                client.copy_out_chunks(session["session_id"], greedy)
            frames = list(wire.decode_frames(client.copy_out_chunks(session["session_id"], [chunk_id])))
            assert [(f.chunk_id, f.size) for f in frames] == [(chunk_id, size)]
