"""``serve --metrics-bind``: ``GET /metrics`` (Prometheus text) and ``GET /healthz`` on a listener of their own.

Prometheus cannot sign requests, so these two routes never share the signed account API's port: they are
served only when asked for, on loopback unless told otherwise, and behind a bearer token when one is given
(required off loopback). They expose names, counts, sizes and times, never an ARN, URL or secret
(docs/metrics.md). One thread serves every request, on its own catalog connection, opened in that thread;
each scrape reads the catalog afresh through a custom collector, so no value can go stale in the process.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from strongroom import clock
from strongroom.services import metrics
from strongroom.services.account import Account, PassphraseSource, open_account
from strongroom.services.health import SchedulerWatch, check_health

log = logging.getLogger("strongroom.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REQUEST_TIMEOUT_SECONDS = 10.0  # one thread serves all: a client that stalls is cut off


@dataclass(frozen=True)
class MetricsSettings:
    host: str
    port: int
    token: str | None
    scheduler: SchedulerWatch | None


class CatalogCollector(Collector):
    """Reads the catalog on every ``collect`` (every scrape); holds nothing between scrapes."""

    def __init__(self, account: Account) -> None:
        self.account = account

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for family in metrics.collect(self.account, clock.now()):
            gauge = GaugeMetricFamily(family.full_name, family.help, labels=list(family.labels))
            for sample in family.samples:
                gauge.add_metric([sample.labels[name] for name in family.labels], sample.value)
            yield gauge


class MetricsServer(HTTPServer):
    def __init__(self, settings: MetricsSettings, account: Account) -> None:
        self.settings = settings
        self.account = account
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(CatalogCollector(account))
        super().__init__((settings.host, settings.port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer
    timeout = REQUEST_TIMEOUT_SECONDS
    server_version = "strongroom-metrics"
    sys_version = ""

    def do_GET(self) -> None:
        if not self._authorised():
            self._send(401, b"a bearer token is required\n", "text/plain", {"WWW-Authenticate": "Bearer"})
            return
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._scrape()
        elif path == "/healthz":
            self._health()
        else:
            self._send(404, b"not found: /metrics and /healthz only\n", "text/plain")

    def _authorised(self) -> bool:
        token = self.server.settings.token
        if token is None:
            return True
        given = self.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    def _scrape(self) -> None:
        try:
            body = generate_latest(self.server.registry)
        except Exception as exc:  # the scrape fails visibly (Prometheus records up == 0)
            log.error("metrics scrape failed: %s", type(exc).__name__)
            self._send(500, b"the catalog could not be read\n", "text/plain")
            return
        self._send(200, body, CONTENT_TYPE)

    def _health(self) -> None:
        health = check_health(self.server.account, clock.now(), self.server.settings.scheduler)
        body = json.dumps(health.as_dict()).encode() + b"\n"
        self._send(200 if health.ok else 503, body, "application/json")

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # no access log, as on the API port


def start_metrics_listener(
    home: Path, passphrase: PassphraseSource, settings: MetricsSettings, stop: threading.Event
) -> Callable[[], None]:
    """Bind now (a port in use fails ``serve`` at once), then serve in a thread until ``stop``; returns a join."""
    ready = threading.Event()
    failure: list[BaseException] = []
    servers: list[MetricsServer] = []

    def main() -> None:
        try:
            account = open_account(home, passphrase)
            server = MetricsServer(settings, account)
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            return
        servers.append(server)
        ready.set()
        try:
            server.serve_forever(poll_interval=0.5)
        finally:
            server.server_close()
            account.close()

    thread = threading.Thread(target=main, name="strongroom-metrics", daemon=True)
    thread.start()
    ready.wait()
    if failure:
        raise failure[0]

    def watch_stop() -> None:
        stop.wait()
        servers[0].shutdown()

    threading.Thread(target=watch_stop, name="strongroom-metrics-stop", daemon=True).start()
    return lambda: thread.join(timeout=5)
