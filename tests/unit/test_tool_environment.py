"""What the processes Strongroom starts for PostgreSQL see in their environment: a client tool
(pg_dump, pg_restore, psql, pg_basebackup) keeps what it needs to reach its server (PGPASSWORD of the
target) but never a ``STRONGROOM_*`` variable; a server a restore starts gets a minimal environment."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from strongroom.adapters.postgres.tools import ToolProcess, server_environment, tool_environment

ENV = Path("/usr/bin/env")


def seen_by_a_tool(env: dict[str, str]) -> dict[str, str]:
    """Run the real ``env`` program as ToolProcess runs pg_restore, and read what it printed."""
    with ToolProcess([ENV], env=env, stdout=subprocess.PIPE) as tool:
        printed = tool.stdout.read().decode()
        assert tool.wait() == 0
    return dict(line.partition("=")[::2] for line in printed.splitlines() if "=" in line)


def test_tools_keep_the_targets_password_but_never_a_strongroom_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRONGROOM_PASSPHRASE", "account passphrase")
    monkeypatch.setenv("STRONGROOM_SECRET_VALUE", "a secret being stored")
    seen = seen_by_a_tool(tool_environment({"PGPASSWORD": "target password"}))
    assert seen["PGPASSWORD"] == "target password" and seen["LC_MESSAGES"] == "C"
    assert not [name for name in seen if name.startswith("STRONGROOM_")]
    assert "account passphrase" not in seen.values()


def test_a_restored_server_gets_a_minimal_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "STRONGROOM_PASSPHRASE": "account passphrase",
        "PGPASSWORD": "pw",
        "PGDATA": "/elsewhere",
        "PGPORT": "1",
        "AWS_SECRET_ACCESS_KEY": "aws",
        "LANG": "C.UTF-8",
        "TZ": "UTC",
        "LC_ALL": "de_DE.UTF-8",
    }.items():
        monkeypatch.setenv(name, value)
    seen = seen_by_a_tool(server_environment())
    assert set(seen) <= {"PATH", "LANG", "TZ", "TMPDIR", "LD_LIBRARY_PATH", "LC_MESSAGES"} | {
        name for name in seen if name.startswith("LC_") and name != "LC_ALL"
    }
    assert (seen["LANG"], seen["TZ"], seen["LC_MESSAGES"]) == ("C.UTF-8", "UTC", "C")
