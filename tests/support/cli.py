"""Run the real ``strongroom`` command in a subprocess, as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from strongroom.vault.keys import ENV_KDF_PROFILE, INSECURE_FAST_PROFILE

PASSPHRASE = "correct horse battery staple"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


class Cli:
    def __init__(self, home: Path, passphrase: str | None = PASSPHRASE) -> None:
        self.home = home
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
        self.env["STRONGROOM_HOME"] = str(home)
        # Key files made by these commands cost scrypt 2^10, not 2^15 (docs/testing.md): every command unlocks.
        self.env[ENV_KDF_PROFILE] = INSECURE_FAST_PROFILE
        if passphrase is not None:
            self.env["STRONGROOM_PASSPHRASE"] = passphrase
        self.env["COLUMNS"] = "200"

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "strongroom.cli.main", *args]

    def run(self, *args: str, ok: bool = True, env: dict[str, str] | None = None, timeout: float = 600) -> Result:
        proc = subprocess.run(
            self.command(*args),
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            stdin=subprocess.DEVNULL,
            timeout=timeout,
        )
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        if ok and proc.returncode != 0:
            raise AssertionError(f"strongroom {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return result

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(*args),
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def json(self, *args: str) -> Any:
        return self.run(*args, "--json").json()

    def backup(self, resource: str) -> dict[str, Any]:
        return self.json("backup", "start", "--resource", resource, "--wait")

    def wait_for_job(self, job_id: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.json("jobs", "describe", job_id)
            if job["state"] in ("COMPLETED", "FAILED", "ABORTED") or time.monotonic() > deadline:
                return job
            time.sleep(0.2)


def assert_one_line_error(result: Result, code: int, *fragments: str) -> None:
    """A failure is one clear line on stderr, a meaningful exit code, and no traceback."""
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def edit_catalog_as_owner(cli: Cli, sql: str, *params: Any) -> None:
    """The account's owner edits its catalog directly (tests move time so), then vouches for the result
    with the account key, as ``trust_catalog_as_is`` does: the rows are signed and the vaults' records
    rewritten. Without that last step the edit is what an attacker's would be, and is refused."""
    import sqlite3

    from strongroom.services.account import open_account
    from strongroom.services.catalog_integrity import trust_catalog_as_is

    with sqlite3.connect(cli.home / "catalog.db") as db:
        db.execute(sql, params)
    db.close()
    account = open_account(cli.home, lambda: cli.env["STRONGROOM_PASSPHRASE"])
    try:
        trust_catalog_as_is(account)
    finally:
        account.close()
