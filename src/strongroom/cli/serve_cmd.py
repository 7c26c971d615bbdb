"""``strongroom serve``: this account's HTTP API for other accounts."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import typer

from strongroom.cli import context, output
from strongroom.errors import UsageError

DEFAULT_PORT = 8443


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (loopback unless told otherwise)."),
    port: int = typer.Option(DEFAULT_PORT, "--port", help="TCP port to listen on."),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="PEM certificate chain: serve HTTPS."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="PEM private key of --tls-cert."),
    allow_plaintext: bool = typer.Option(
        False, "--allow-plaintext", help="Serve plain HTTP on a non-loopback address (data crosses unencrypted)."
    ),
) -> None:
    """Serve this account's API (copies in and out, policy-checked vault operations) until stopped."""
    import uvicorn

    from strongroom.server.app import create_app

    if bool(tls_cert) != bool(tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    if not tls_cert and not _is_loopback(host) and not allow_plaintext:
        raise UsageError(
            f"refusing to serve plain HTTP on {host}: copies carry backup data",
            hint="Pass --tls-cert and --tls-key, or --allow-plaintext on a network you trust",
        )
    scheme = "https" if tls_cert else "http"
    with context.account(ctx) as account:
        app = create_app(account)
        output.console.print(f"Strongroom account {account.account_id} serving on {scheme}://{host}:{port}")
        uvicorn.run(
            app, host=host, port=port, log_level="warning", access_log=False,
            ssl_certfile=str(tls_cert) if tls_cert else None, ssl_keyfile=str(tls_key) if tls_key else None,
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
