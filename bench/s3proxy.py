"""A counting HTTP proxy on loopback in front of an S3 server, for bench/s3_restic.py (stdlib only).

Every request a client sends to ``http://127.0.0.1:PORT`` is forwarded unchanged (method, path, query,
headers including ``Host``, so SigV4 signatures still match) to the upstream S3 server, after an optional
fixed delay standing in for a network round trip (moto and RGW on loopback have none). Requests are counted
by the class S3 bills them in: PUT/POST/LIST ("tier 1", PUT, COPY, POST, LIST), GET/HEAD ("tier 2"), DELETE
(free), with bytes up and down. Path-style addressing only (``/BUCKET/KEY``), which both boto3 and restic use
for an IP address endpoint.
"""

from __future__ import annotations

import http.client
import http.server
import os
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade", "trailer"}


def request_class(method: str, path: str) -> str:
    """``put``, ``post``, ``list``, ``get``, ``head``, ``delete`` or ``other``: what S3 bills."""
    parsed = urllib.parse.urlsplit(path)
    is_bucket = parsed.path.strip("/").count("/") == 0  # /BUCKET or /BUCKET/ : a bucket-level request
    query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
    if method == "GET" and (is_bucket or "uploads" in query or "versions" in query):
        return "list"
    return {"PUT": "put", "POST": "post", "GET": "get", "HEAD": "head", "DELETE": "delete"}.get(method, "other")


@dataclass
class Counts:
    requests: Counter[str] = field(default_factory=Counter)
    bytes_up: int = 0
    bytes_down: int = 0

    def snapshot(self) -> Counts:
        return Counts(Counter(self.requests), self.bytes_up, self.bytes_down)

    def minus(self, before: Counts) -> dict[str, int]:
        diff = {name: self.requests[name] - before.requests[name] for name in set(self.requests) | set(before.requests)}
        diff = {name: count for name, count in diff.items() if count}
        tier1 = sum(diff.get(name, 0) for name in ("put", "post", "list"))
        tier2 = sum(diff.get(name, 0) for name in ("get", "head", "other"))
        return {
            **diff,
            "tier1_put_post_list": tier1,
            "tier2_get_head": tier2,
            "total": sum(diff.values()),
            "bytes_up": self.bytes_up - before.bytes_up,
            "bytes_down": self.bytes_down - before.bytes_down,
        }


class CountingProxy:
    def __init__(self, upstream: str, delay: float = 0.0) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream_host, self.upstream_port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.delay = delay
        self.counts = Counts()
        self._lock = threading.Lock()
        self._local = threading.local()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _forward(self) -> None:
                proxy.forward(self)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> CountingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def snapshot(self) -> Counts:
        with self._lock:
            return self.counts.snapshot()

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=300)
            self._local.connection = connection
        return connection

    def _read_body(self, handler: http.server.BaseHTTPRequestHandler) -> bytes:
        if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(handler.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(handler.rfile.read(size))
                handler.rfile.readline()
        length = int(handler.headers.get("Content-Length") or 0)
        return handler.rfile.read(length) if length else b""

    def forward(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        body = self._read_body(handler)
        headers = {name: value for name, value in handler.headers.items() if name.lower() not in HOP_BY_HOP}
        if body or handler.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        if self.delay:
            time.sleep(self.delay)
        for attempt in range(2):  # a kept-alive upstream connection the server closed: one fresh retry
            connection = self._connection()
            try:
                connection.request(handler.command, handler.path, body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
                break
            except (http.client.HTTPException, OSError):
                connection.close()
                self._local.connection = None
                if attempt:
                    raise
        with self._lock:
            self.counts.requests[request_class(handler.command, handler.path)] += 1
            if log_path := os.environ.get("S3PROXY_LOG"):  # one line per request: which ones a step makes
                with open(log_path, "a") as log:
                    rng = handler.headers.get("Range", "")
                    klass = request_class(handler.command, handler.path)
                    log.write(f"{time.monotonic():.3f} {klass} {handler.path} {rng}\n")
            self.counts.bytes_up += len(body)
            self.counts.bytes_down += len(payload)
        handler.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                handler.send_header(name, value)
        length = response.getheader("Content-Length") if handler.command == "HEAD" else str(len(payload))
        handler.send_header("Content-Length", length or "0")
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(payload)
