"""``strongroom serve``: this account's HTTP API for other accounts, and the scheduler daemon (docs/scheduler.md)."""

from __future__ import annotations

import ipaddress
import logging
import signal
import threading
from pathlib import Path
from types import FrameType

import typer

from strongroom.cli import context, output
from strongroom.errors import UsageError
from strongroom.services.account import Account
from strongroom.services.scheduler import STOP_GRACE_SECONDS, start_daemon
from strongroom.services.session_limits import IDLE_SESSION_SECONDS, MAX_SESSION_SECONDS, SessionLimits

DEFAULT_PORT = 8443
DEFAULT_POLL_SECONDS = 30.0
DEFAULT_MAX_JOBS = 2
UVICORN_STARTUP_FAILURE = 3  # uvicorn.run's exit codes: the server did not start,
UVICORN_BIND_FAILURE = 1  # or its address could not be bound


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (loopback unless told otherwise)."),
    port: int = typer.Option(
        DEFAULT_PORT, "--port", help="TCP port to listen on; 0: any free port, named on the 'serving on' line."
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
) -> None:
    """Serve this account's API (copies in and out, policy-checked vault operations) and run its backup plans,
    until stopped by SIGTERM or Ctrl-C."""
    if no_scheduler and scheduler_only:
        raise UsageError("--no-scheduler and --scheduler-only exclude each other: that would run nothing")
    if not scheduler_only:
        _check_listener(host, tls_cert, tls_key, allow_plaintext)
    limits = SessionLimits(copy_idle_timeout, copy_max_lifetime)
    stop = threading.Event()
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
        try:
            if scheduler_only:
                _wait(stop, daemon)
            else:
                _serve_api(account, host, port, tls_cert, tls_key, limits)
        finally:
            stop.set()
            if daemon is not None:
                daemon.join()


def _serve_api(
    account: Account, host: str, port: int, tls_cert: Path | None, tls_key: Path | None, limits: SessionLimits
) -> None:
    import uvicorn

    from strongroom.server.app import create_app

    scheme = "https" if tls_cert else "http"
    app = create_app(account, limits)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
    )
    try:
        listener = config.bind_socket()  # bound first, so that --port 0 can say which port the kernel gave
    except SystemExit:  # it logged why (e.g. the address is in use)
        raise SystemExit(UVICORN_BIND_FAILURE) from None
    bound = listener.getsockname()[1]
    output.console.print(f"Strongroom account {account.account_id} serving on {scheme}://{host}:{bound}")
    # uvicorn takes SIGTERM/SIGINT while it serves and raises them again, to _on_signals' handler, once stopped.
    server = uvicorn.Server(config)
    server.run(sockets=[listener])
    if not server.started:  # as uvicorn.run: a server that never started is a failed start
        raise SystemExit(UVICORN_STARTUP_FAILURE)


def _wait(stop: threading.Event, daemon: threading.Thread | None) -> None:
    """Block until ``stop`` is set or the scheduler thread ends, looking twice a second."""
    while daemon is not None and daemon.is_alive():
        if stop.wait(0.5):
            return


def _on_signals(stop: threading.Event) -> None:
    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

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
