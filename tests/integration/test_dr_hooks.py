"""The runbook steps that reach outside Strongroom, against a real HTTP server on 127.0.0.1 and real
commands: ``http`` (a webhook with a header read from the secret store), ``run`` and ``restart_app``."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from strongroom.config.runbook import RunbookStep
from strongroom.errors import HookFailedError
from strongroom.services import secrets
from strongroom.services.account import Account, init_account
from strongroom.services.dr.context import StepContext
from strongroom.services.dr.hooks import HttpCall, RestartApp, RunCommand
from tests.support.vaults import FAST_SCRYPT

TOKEN = "webhook-token-9f8e7d"


class Recorder(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []
    status = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Recorder.received.append(
            {"path": self.path, "auth": self.headers.get("Authorization"), "body": json.loads(body or b"null")}
        )
        self.send_response(Recorder.status)
        self.end_headers()

    do_GET = do_POST

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    Recorder.received, Recorder.status = [], 200
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def account(tmp_path: Path) -> Iterator[Account]:
    opened = init_account(tmp_path / "home", "hooks passphrase", scrypt_params=FAST_SCRYPT)
    secrets.put_secret(opened, "ci/webhook", {"token": TOKEN})
    yield opened
    opened.close()


def context(account: Account, step: dict[str, Any], *, rehearsal: bool = False) -> StepContext:
    earlier = [
        {
            "name": "restore",
            "type": "restore",
            "state": "COMPLETED",
            "outputs": {"identifier": "mavis-x-restored", "host": "127.0.0.1", "port": 5499},
        }
    ]
    fields = RunbookStep.of({"name": "hook", **step}).fields  # validated as a loaded runbook's step
    return StepContext(account, "run12345-abcd", rehearsal, fields, earlier)


def http_step(url: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "http",
        "url": url,
        "method": "POST",
        "body": {"restored": "mavis-x-restored"},
        "headers": {"Authorization": "Bearer ${secret.ci/webhook.token}"},
        "expect_status": [],
        "timeout_seconds": 10,
        "rehearse": False,
        **fields,
    }


def test_http_step_posts_json_with_a_header_from_the_secret_store(account: Account, server: str) -> None:
    ctx = context(account, http_step(f"{server}/hooks/dr?sig=abc"))
    assert HttpCall().run(ctx) == {"status": 200}
    assert Recorder.received == [
        {"path": "/hooks/dr?sig=abc", "auth": f"Bearer {TOKEN}", "body": {"restored": "mavis-x-restored"}}
    ]
    assert all(TOKEN not in change and "sig=abc" not in change for change in ctx.changes)


def test_http_step_fails_on_an_unexpected_status_without_showing_the_query(account: Account, server: str) -> None:
    Recorder.status = 503
    with pytest.raises(HookFailedError) as error:
        HttpCall().run(context(account, http_step(f"{server}/hooks/dr?sig=abc")))
    assert "answered 503 (expected 2xx)" in error.value.message
    assert "sig=abc" not in error.value.message and TOKEN not in error.value.message
    Recorder.status = 202
    with pytest.raises(HookFailedError, match="answered 202 \\(expected 200\\)"):
        HttpCall().run(context(account, http_step(f"{server}/x", expect_status=[200])))


def test_hooks_are_skipped_in_a_rehearsal_unless_they_say_so(account: Account, server: str) -> None:
    assert HttpCall().run(context(account, http_step(f"{server}/x"), rehearsal=True)) == {"skipped": "rehearsal"}
    assert Recorder.received == []
    assert HttpCall().run(context(account, http_step(f"{server}/x", rehearse=True), rehearsal=True))["status"] == 200


def test_run_step_gets_the_restored_target_in_its_environment(account: Account, tmp_path: Path) -> None:
    out = tmp_path / "env.txt"
    step = {
        "type": "run",
        "command": f"echo $STRONGROOM_DR_RESTORED_PORT $STRONGROOM_DR_RUN_ID $WHO > {out}",
        "env": {"WHO": "${secret.ci/webhook.token}"},
        "timeout_seconds": 10,
        "rehearse": False,
    }
    RunCommand().run(context(account, step))
    assert out.read_text().split() == ["5499", "run12345-abcd", TOKEN]
    log = account.home / "logs" / "dr" / "run12345-abcd.log"
    assert log.stat().st_mode & 0o077 == 0


def test_failing_command_and_unhealthy_app_are_hook_failures(account: Account, server: str) -> None:
    with pytest.raises(HookFailedError, match="exited with status 4: boom"):
        RunCommand().run(context(account, {"type": "run", "command": "echo boom >&2; exit 4", "timeout_seconds": 10}))
    with pytest.raises(HookFailedError, match="no-such-deploy-tool: command not found"):
        RunCommand().run(context(account, {"type": "run", "command": ["no-such-deploy-tool"], "timeout_seconds": 5}))
    Recorder.status = 500
    step = {"type": "restart_app", "command": None, "health_url": f"{server}/health", "timeout_seconds": 1}
    with pytest.raises(HookFailedError, match="did not answer 2xx within 1 s \\(last: status 500\\)"):
        RestartApp().run(context(account, step))


def environment_seen_by(tmp_path: Path, account: Account, step_type: str, **fields: Any) -> dict[str, str]:
    """What a hook's command finds in its environment (it dumps it to a file)."""
    out = tmp_path / f"{step_type}.env"
    step = {"type": step_type, "command": f"env > {out}", "timeout_seconds": 10, "rehearse": False, **fields}
    (RunCommand() if step_type == "run" else RestartApp()).run(context(account, step))
    return dict(line.partition("=")[::2] for line in out.read_text().splitlines() if "=" in line)


@pytest.mark.parametrize("step_type", ["run", "restart_app"])
def test_hooks_never_see_the_passphrase_only_what_the_step_declares(
    account: Account, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step_type: str
) -> None:
    """A runbook's command runs other programs (terraform, a deploy tool, the app): the passphrase opens every
    vault and secret of the account, so it is never handed to them, nor any other variable of ours by default."""
    monkeypatch.setenv("STRONGROOM_PASSPHRASE", "hooks passphrase")
    monkeypatch.setenv("STRONGROOM_SECRET_VALUE", "a secret being stored")
    monkeypatch.setenv("PGPASSWORD", "the backup role's password")
    monkeypatch.setenv("AWS_PROFILE", "dr")
    monkeypatch.setenv("AWS_REGION", "eu-west-2")
    monkeypatch.setenv("UNRELATED_TOKEN", "not for hooks")
    seen = environment_seen_by(
        tmp_path, account, step_type, pass_env=["AWS_*", "STRONGROOM_*"], env={"APP_DB_SECRET": "${secret.ci/webhook}"}
    )
    assert "hooks passphrase" not in seen.values() and "STRONGROOM_PASSPHRASE" not in seen
    assert not {"STRONGROOM_SECRET_VALUE", "PGPASSWORD", "UNRELATED_TOKEN"} & set(seen)
    assert (seen["AWS_PROFILE"], seen["AWS_REGION"]) == ("dr", "eu-west-2")  # passed: pass_env names them
    assert json.loads(seen["APP_DB_SECRET"]) == {"token": TOKEN}  # declared: read from the secret store
    assert seen["STRONGROOM_DR_RESTORED_PORT"] == "5499" and seen["PATH"] == os.environ["PATH"]

    # Only a step that names it exactly gets the passphrase (e.g. to run strongroom itself).
    named = environment_seen_by(tmp_path, account, step_type, pass_env=["STRONGROOM_PASSPHRASE"])
    assert named["STRONGROOM_PASSPHRASE"] == "hooks passphrase"
