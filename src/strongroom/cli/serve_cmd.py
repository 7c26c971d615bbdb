"""``strongroom serve``: this account's HTTP API for other accounts, and the scheduler daemon (docs/scheduler.md)."""

from __future__ import annotations

import errno
import ipaddress
import logging
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import typer

from strongroom.cli import context, output
from strongroom.errors import ListenError, UsageError
from strongroom.faults import fault_point
from strongroom.services.account import Account
from strongroom.services.scheduler import STOP_GRACE_SECONDS, start_daemon
from strongroom.services.session_limits import IDLE_SESSION_SECONDS, MAX_SESSION_SECONDS, SessionLimits

DEFAULT_PORT = 8443
DEFAULT_POLL_SECONDS = 30.0
DEFAULT_MAX_JOBS = 2
LISTEN_BACKLOG = 2048  # uvicorn's own default


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (loopback unless told otherwise)."),
    port: int = typer.Option(
        DEFAULT_PORT, "--port", min=0, max=65535, help="TCP port to listen on (0: a free one, printed)."
    ),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="PEM certificate chain: serve HTTPS."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="PEM private key of --tls-cert."),
    allow_plaintext: bool = typer.Option(
        False, "--allow-plaintext", help="Serve plain HTTP on a non-loopback address (data crosses unencrypted)."
    ),
    no_scheduler: bool = typer.Option(False, "--no-scheduler", help="Serve the API only; run no backup plans."),
    scheduler_only: bool = typer.Option(
        False, "--scheduler-only", "--no-api", help="Run the scheduler only; serve no API."
    ),
    poll_seconds: float = typer.Option(
        DEFAULT_POLL_SECONDS, "--poll-seconds", min=0.05, help="Seconds between two ticks of the scheduler."
    ),
    max_jobs: int = typer.Option(
        DEFAULT_MAX_JOBS, "--max-jobs", min=1, help="Scheduled backup and copy jobs running at once."
    ),
    stop_timeout: float = typer.Option(
        STOP_GRACE_SECONDS,
        "--stop-timeout",
        min=0,
        help="On SIGTERM, seconds to wait for running scheduled jobs before they are aborted.",
    ),
    copy_idle_timeout: float = typer.Option(
        IDLE_SESSION_SECONDS,
        "--copy-idle-timeout",
        min=0.1,
        help="Seconds a copy session may go without a request before it is aborted (its locks released).",
    ),
    copy_max_lifetime: float = typer.Option(
        MAX_SESSION_SECONDS,
        "--copy-max-lifetime",
        min=0.1,
        help="Seconds a copy session may last in all, however active; then it is aborted (bounds how long "
        "it can hold the vault's writers lock, which garbage collection waits for).",
    ),
    metrics_bind: str | None = typer.Option(
        None,
        "--metrics-bind",
        metavar="[HOST:]PORT",
        help="Serve /metrics (Prometheus) and /healthz on this separate listener (host 127.0.0.1 unless given).",
    ),
    metrics_token_file: Path | None = typer.Option(
        None,
        "--metrics-token-file",
        help="File holding a bearer token /metrics and /healthz require (mode 0600; required off loopback).",
    ),
) -> None:
    """Serve this account's API (copies in and out, policy-checked vault operations) and run its backup plans,
    until stopped by SIGTERM or Ctrl-C."""
    if no_scheduler and scheduler_only:
        raise UsageError("--no-scheduler and --scheduler-only exclude each other: that would run nothing")
    if not scheduler_only:
        _check_listener(host, tls_cert, tls_key, allow_plaintext)
    limits = SessionLimits(copy_idle_timeout, copy_max_lifetime)
    metrics_address = _metrics_address(metrics_bind, metrics_token_file)
    metrics_token = _metrics_token(metrics_token_file) if metrics_token_file is not None else None
    stop = threading.Event()
    from strongroom.server.malloc_arenas import limit_malloc_arenas  # lazily, as the server's other modules

    limit_malloc_arenas()  # before the scheduler's, the requests' and the copies' threads start
    with context.account(ctx) as account:
        account.passphrase()  # asked here, in the main thread, and checked before anything starts
        _log_to_stderr()
        _on_signals(stop)
        daemon = None
        if not no_scheduler:
            daemon = start_daemon(
                account.home,
                account.passphrase,
                stop,
                poll_seconds=poll_seconds,
                max_jobs=max_jobs,
                stop_grace=stop_timeout,
            )
            output.console.print(f"Strongroom account {account.account_id}: scheduler running every {poll_seconds:g} s")
        join_metrics = None
        try:
            if metrics_address is not None:
                join_metrics = _start_metrics(account, metrics_address, metrics_token, daemon, poll_seconds, stop)
            if scheduler_only:
                _wait(stop, daemon)
            else:
                _serve_api(account, host, port, tls_cert, tls_key, limits, stop)
        finally:
            stop.set()
            if daemon is not None:
                daemon.join()
            if join_metrics is not None:
                join_metrics()


def _serve_api(
    account: Account,
    host: str,
    port: int,
    tls_cert: Path | None,
    tls_key: Path | None,
    limits: SessionLimits,
    stop: threading.Event,
) -> None:
    import uvicorn

    from strongroom.server.app import create_app

    config = uvicorn.Config(
        create_app(account, limits),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
    )
    _load_tls(config, tls_cert)
    listener = _listen(host, port)  # bound before anything says "serving on", and refused in one line
    port = listener.getsockname()[1]  # the one the system chose for --port 0
    scheme = "https" if tls_cert else "http"
    server = uvicorn.Server(config)
    # From here a SIGTERM/SIGINT asks the server to stop: uvicorn takes them while it serves and raises them
    # again once stopped; one that arrives before uvicorn's own handlers are in (just after "serving on") must
    # stop it too, not only the scheduler.
    _on_signals(stop, server)
    output.console.print(f"Strongroom account {account.account_id} serving on {scheme}://{host}:{port}")
    fault_point("serve:before-run")
    try:
        server.run(sockets=[listener])
    except SystemExit:  # uvicorn's way to say its start-up failed (exit 3, the passphrase's code)
        raise ListenError(f"the API on {scheme}://{host}:{port} failed to start (see the lines above)") from None
    finally:
        listener.close()


def _load_tls(config: Any, tls_cert: Path | None) -> None:
    """Read the certificate and key now, so a bad one is a usage error and not a failed start-up."""
    try:
        config.load()
    except (OSError, ValueError) as exc:
        if tls_cert is None:
            raise
        raise UsageError(
            f"cannot load --tls-cert {tls_cert} / --tls-key: {getattr(exc, 'strerror', None) or exc}",
            hint="give a PEM certificate chain and its unencrypted private key",
        ) from None


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or a :class:`ListenError` that says why not."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise UsageError(f"cannot listen on --host {host}: {exc.strerror}", hint="give an IP address") from None
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(LISTEN_BACKLOG)
    except OSError as exc:
        listener.close()
        raise ListenError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="stop what holds that port, or choose another with --port" if exc.errno == errno.EADDRINUSE else "",
        ) from None
    listener.set_inheritable(False)
    return listener


def _metrics_address(bind: str | None, token_file: Path | None) -> tuple[str, int] | None:
    if bind is None:
        if token_file is not None:
            raise UsageError("--metrics-token-file goes with --metrics-bind")
        return None
    host, _, port_text = bind.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UsageError(f"--metrics-bind {bind}: give PORT or HOST:PORT with a port from 1 to 65535")
    if not _is_loopback(host) and token_file is None:
        raise UsageError(
            f"refusing to serve metrics on {host} without a token: anyone who reaches it could read them",
            hint="Pass --metrics-token-file FILE, or bind to 127.0.0.1",
        )
    return host, int(port_text)


def _metrics_token(token_file: Path) -> str:
    try:
        mode = token_file.stat().st_mode
        token = token_file.read_text().strip()
    except OSError as exc:
        raise UsageError(f"cannot read --metrics-token-file {token_file}: {exc.strerror}") from None
    if mode & 0o077:
        raise UsageError(
            f"--metrics-token-file {token_file} is readable by others", hint=f"Run: chmod 600 {token_file}"
        )
    if not token or any(c.isspace() for c in token):
        raise UsageError(f"--metrics-token-file {token_file} must hold one token, without spaces")
    return token


def _start_metrics(
    account: Account,
    address: tuple[str, int],
    token: str | None,
    daemon: threading.Thread | None,
    poll_seconds: float,
    stop: threading.Event,
) -> Callable[[], None]:
    from strongroom.server.metrics_listener import MetricsSettings, start_metrics_listener
    from strongroom.services.health import SchedulerWatch

    watch = SchedulerWatch(daemon.is_alive, poll_seconds) if daemon is not None else None
    settings = MetricsSettings(address[0], address[1], token, watch)
    try:
        join = start_metrics_listener(account.home, account.passphrase, settings, stop)
    except OSError as exc:
        raise UsageError(f"cannot serve metrics on {address[0]}:{address[1]}: {exc.strerror}") from None
    output.console.print(
        f"Strongroom account {account.account_id}: metrics on http://{address[0]}:{address[1]}/metrics"
    )
    return join


def _wait(stop: threading.Event, daemon: threading.Thread | None) -> None:
    """Block until ``stop`` is set or the scheduler thread ends, looking twice a second."""
    while daemon is not None and daemon.is_alive():
        if stop.wait(0.5):
            return


def _on_signals(stop: threading.Event, server: Any = None) -> None:
    """SIGTERM and SIGINT set ``stop`` (the scheduler's) and the API server's ``should_exit``, which uvicorn
    checks after its start-up and while it serves."""

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()
        if server is not None:
            server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handle)


def _log_to_stderr() -> None:
    """The scheduler's log lines (runs fired, jobs started and finished) go to stderr: journald, docker logs."""
    logger = logging.getLogger("strongroom")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _check_listener(host: str, tls_cert: Path | None, tls_key: Path | None, allow_plaintext: bool) -> None:
    if bool(tls_cert) != bool(tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    if not tls_cert and not _is_loopback(host) and not allow_plaintext:
        raise UsageError(
            f"refusing to serve plain HTTP on {host}: copies carry backup data",
            hint="Pass --tls-cert and --tls-key, or --allow-plaintext on a network you trust",
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
