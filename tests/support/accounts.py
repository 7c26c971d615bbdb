"""Two accounts on one machine, talking only through ``strongroom serve`` on loopback."""

from __future__ import annotations

import json
import re
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from strongroom.policy.document import default_destination_policy
from strongroom.policy.principals import root_arn
from tests.support.cli import Cli


@dataclass
class Server:
    cli: Cli
    port: int
    process: subprocess.Popen[str]
    log: Path
    scheme: str = "http"

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def serving(cli: Cli, *extra: str, scheduler: bool = False) -> Iterator[Server]:
    """Run ``strongroom serve`` for the account of ``cli`` until the block ends (the API only, unless
    ``scheduler``: a plan applied in the account must not fire during an unrelated test).

    It listens on port 0 and its "serving on" line names the port the kernel gave it: no port is chosen
    here, so servers of parallel test workers cannot race for one."""
    log = cli.home.parent / f"serve-{secrets.token_hex(4)}.log"
    with open(log, "w") as sink:
        process = subprocess.Popen(
            cli.command("serve", "--port", "0", *extra, *(() if scheduler else ("--no-scheduler",))),
            env=cli.env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )
    server = Server(cli, 0, process, log, "https" if "--tls-cert" in extra else "http")
    try:
        server.port = _wait_until_up(server)
        yield server
    finally:
        server.stop()


SERVING_ON = re.compile(r"serving on https?://\S+:(\d+)")


def _wait_until_up(server: Server, timeout: float = 30) -> int:
    """The port ``server`` said it listens on, once a connection to it succeeds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"strongroom serve exited: {server.log.read_text()}")
        said = SERVING_ON.search(server.log.read_text(errors="replace"))
        try:
            if said:
                socket.create_connection(("127.0.0.1", int(said[1])), timeout=1).close()
                return int(said[1])
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"strongroom serve did not start listening: {server.log.read_text()}")


def issue_credential(cli: Cli, principal: str, *extra: str) -> dict[str, Any]:
    return dict(cli.json("credentials", "create", "--principal", principal, *extra))


def register(source: Cli, name: str, server: Server, credential: dict[str, Any]) -> None:
    """Register ``server``'s account in ``source`` with ``credential`` (secret through the environment)."""
    source.run(
        "accounts",
        "add",
        name,
        "--endpoint",
        server.endpoint,
        "--key-id",
        credential["access_key_id"],
        env={"STRONGROOM_REMOTE_SECRET": credential["secret_access_key"]},
    )


def account_id(cli: Cli) -> str:
    import json

    return str(json.loads((cli.home / "account.json").read_text())["account_id"])


def vault_arn(cli: Cli, name: str = "Default") -> str:
    return str(cli.json("vaults", "describe", name)["backup_vault_arn"])


def source_and_destination(tmp_path: Path) -> tuple[Cli, Cli]:
    """Two new accounts under ``tmp_path``; the destination's Default vault takes copies from the source's
    Default vault (the default destination policy, its owner as admin)."""
    source, destination = Cli(tmp_path / "source"), Cli(tmp_path / "destination")
    source.run("init")
    destination.run("init")
    policy = default_destination_policy(
        source_account_ids=[account_id(source)],
        source_vault_arns=[vault_arn(source)],
        admin_principal_arns=[root_arn(account_id(destination))],
    )
    (tmp_path / "policy.json").write_text(json.dumps(policy))
    destination.run("vaults", "put-access-policy", "Default", "--file", str(tmp_path / "policy.json"))
    return source, destination


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (PEM files); the certificate is its own CA."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "strongroom test destination")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path
