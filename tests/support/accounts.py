"""Two accounts on one machine, talking only through ``strongroom serve`` on loopback."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from strongroom.adapters.pgtools import free_port
from tests.support.cli import Cli


@dataclass
class Server:
    cli: Cli
    port: int
    process: subprocess.Popen[str]
    log: Path

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def serving(cli: Cli, *extra: str) -> Iterator[Server]:
    """Run ``strongroom serve`` for the account of ``cli`` until the block ends."""
    port = free_port()
    log = cli.home.parent / f"serve-{port}.log"
    with open(log, "w") as sink:
        process = subprocess.Popen(
            cli.command("serve", "--port", str(port), *extra), env=cli.env, stdin=subprocess.DEVNULL,
            stdout=sink, stderr=subprocess.STDOUT, text=True,
        )
    server = Server(cli, port, process, log)
    try:
        _wait_until_up(server)
        yield server
    finally:
        server.stop()


def _wait_until_up(server: Server, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"strongroom serve exited: {server.log.read_text()}")
        try:
            httpx.get(f"{server.endpoint}/v1/whoami", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("strongroom serve did not start listening")


def issue_credential(cli: Cli, principal: str, *extra: str) -> dict[str, Any]:
    return dict(cli.json("credentials", "create", "--principal", principal, *extra))


def register(source: Cli, name: str, server: Server, credential: dict[str, Any]) -> None:
    """Register ``server``'s account in ``source`` with ``credential`` (secret through the environment)."""
    source.run("accounts", "add", name, "--endpoint", server.endpoint, "--key-id", credential["access_key_id"],
               env={"STRONGROOM_REMOTE_SECRET": credential["secret_access_key"]})


def account_id(cli: Cli) -> str:
    import json

    return str(json.loads((cli.home / "account.json").read_text())["account_id"])


def vault_arn(cli: Cli, name: str = "Default") -> str:
    return str(cli.json("vaults", "describe", name)["backup_vault_arn"])
