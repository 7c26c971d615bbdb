"""Vault notifications on a real account: jobs queue events, a real local webhook receives them.

The receiver is ``http.server`` on 127.0.0.1 in a thread; nothing is mocked. Sink URLs carry a secret
token that must never show up anywhere but in the request the sink receives.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from strongroom import model
from strongroom.adapters.base import RestoreRequest
from strongroom.errors import ConfigError, SourceError
from strongroom.model import JobState
from strongroom.policy.principals import root_arn
from strongroom.services import notifications
from strongroom.services.account import Account, init_account
from strongroom.services.backup import create_backup_job, run_backup_job
from strongroom.services.notifications import MAX_ATTEMPTS, Sink
from strongroom.services.resources import add_resource
from strongroom.services.restore import create_restore_job, run_restore_job
from strongroom.services.vault_ops import delete_recovery_point, update_recovery_point_lifecycle
from tests.support.ports import free_port
from tests.support.vaults import FAST_SCRYPT

PASSPHRASE = "notifications test passphrase"
SECRET = "xoxb-SECRET-7a1f0c9e5d"  # stands for a Slack token or a webhook's secret path
ALL_EVENTS = [
    "BACKUP_JOB_STARTED",
    "BACKUP_JOB_COMPLETED",
    "RESTORE_JOB_STARTED",
    "RESTORE_JOB_COMPLETED",
    "RECOVERY_POINT_MODIFIED",
]


class Webhook:
    """A JSON webhook receiver on 127.0.0.1: records what each POST carried; stops and restarts on its port."""

    def __init__(self, status: int = 200) -> None:
        self.port = free_port()
        self.status = status
        self.received: list[dict[str, Any]] = []
        self._server: ThreadingHTTPServer | None = None

    def url(self, name: str = "all", scheme: str = "webhook+http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/hooks/{name}/{SECRET}"

    def start(self) -> Webhook:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.received.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
                self.send_response(hook.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def bodies(self, name: str = "all") -> list[dict[str, Any]]:
        return [r["body"] for r in self.received if r["path"].startswith(f"/hooks/{name}/")]

    def events(self, name: str = "all") -> list[tuple[str, str]]:
        return [(b["event"], b["state"]) for b in self.bodies(name)]

    def wait_for(self, count: int, name: str = "all", timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.bodies(name)) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.bodies(name)


@pytest.fixture
def account(tmp_path: Path) -> Iterator[Account]:
    opened = init_account(tmp_path / "home", PASSPHRASE, scrypt_params=FAST_SCRYPT)
    yield opened
    opened.close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook().start()
    yield hook
    hook.stop()


def files(account: Account, tmp_path: Path, name: str = "files") -> Path:
    tree = tmp_path / name
    tree.mkdir()
    (tree / "a.txt").write_text("alpha " * 5000)
    (tree / "b.bin").write_bytes(bytes(range(256)) * 400)
    add_resource(account, name, "directory", {"path": str(tree)}, {"app": "mavis"})
    return tree


def back_up(account: Account, resource: str = "files") -> model.Job:
    job, lock = create_backup_job(account, resource)
    return run_backup_job(account, job.id, lock)


def configure(account: Account, *sinks: Sink, events: list[str] | None = None, exclude: list[str] = ()) -> None:
    wanted = notifications.settings(events or ALL_EVENTS, list(exclude), list(sinks))
    notifications.put_notifications(account, "Default", wanted)


def everything_shown(account: Account) -> str:
    """Every place a user or a log could see: settings, outbox, jobs, recovery points, the vault."""
    shown = [
        notifications.get_notifications(account, "Default"),
        notifications.list_outbox(account),
        [job.as_dict() for job in account.catalog.list_jobs()],
        [rp.as_dict() for rp in account.catalog.list_recovery_points()],
        account.catalog.get_vault("Default").as_dict(),
    ]
    return json.dumps(shown, default=str)


# Backups reach the webhook ----------------------------------------------------------------------------
def test_a_successful_backup_reaches_the_webhook_with_its_fields(
    account: Account, tmp_path: Path, webhook: Webhook
) -> None:
    files(account, tmp_path)
    configure(account, Sink(webhook.url()))
    job = back_up(account)
    assert job.state == JobState.COMPLETED
    assert webhook.events() == [("BACKUP_JOB_STARTED", "RUNNING"), ("BACKUP_JOB_COMPLETED", "COMPLETED")]
    completed = webhook.bodies()[1]
    rp = account.catalog.get_recovery_point(job.recovery_point_arn or "")
    assert (
        completed
        | {
            "event": "BACKUP_JOB_COMPLETED",
            "state": "COMPLETED",
            "account_id": account.account_id,
            "resource_id": "files",
            "resource_type": "directory",
            "backup_vault_name": "Default",
            "backup_vault_arn": account.vault_arn("Default"),
            "job_id": job.id,
            "job_type": "BACKUP",
            "recovery_point_arn": rp.arn,
            "source_bytes": rp.source_bytes,
            "stored_bytes": rp.stored_bytes,
            "new_bytes": rp.new_bytes,
            "error": None,
            "creation_date": job.creation_date,
            "completion_date": job.completion_date,
        }
        == completed
    )
    assert rp.source_bytes > 0 and completed["duration_seconds"] >= 0
    assert completed["summary"] == (f"Backup job COMPLETED: files in vault Default (account {account.account_id})")
    request = webhook.received[1]
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["headers"]["X-Strongroom-Event"] == "BACKUP_JOB_COMPLETED"
    assert [r["delivery_status"] for r in notifications.list_outbox(account)] == ["DELIVERED", "DELIVERED"]


def test_a_failed_backup_reaches_the_webhook_with_the_error(account: Account, tmp_path: Path, webhook: Webhook) -> None:
    tree = files(account, tmp_path)
    configure(account, Sink(webhook.url()))
    shutil.rmtree(tree)  # the directory vanished
    job, lock = create_backup_job(account, "files")
    with pytest.raises(SourceError):
        run_backup_job(account, job.id, lock)
    assert webhook.events() == [("BACKUP_JOB_STARTED", "RUNNING"), ("BACKUP_JOB_COMPLETED", "FAILED")]
    failed = webhook.bodies()[1]
    assert failed["error"] == account.catalog.get_job(job.id).status_message
    assert str(tree) in failed["error"]
    assert failed["status_message"] == failed["error"]
    assert failed["resource_type"] == "directory" and failed["job_id"] == job.id
    assert failed["summary"].startswith("Backup job FAILED: files in vault Default")


def test_only_what_is_not_completed_reaches_people(account: Account, tmp_path: Path, webhook: Webhook) -> None:
    tree = files(account, tmp_path)
    people = Sink(webhook.url("people"), events=("BACKUP_JOB_COMPLETED",), exclude_states=("COMPLETED",))
    configure(account, people, Sink(webhook.url("all")))
    back_up(account)
    shutil.rmtree(tree)
    with pytest.raises(SourceError):
        back_up(account)
    assert webhook.events("people") == [("BACKUP_JOB_COMPLETED", "FAILED")]
    assert webhook.events("all") == [
        ("BACKUP_JOB_STARTED", "RUNNING"),
        ("BACKUP_JOB_COMPLETED", "COMPLETED"),
        ("BACKUP_JOB_STARTED", "RUNNING"),
        ("BACKUP_JOB_COMPLETED", "FAILED"),
    ]


def test_the_vault_wide_filter_applies_to_sinks_without_their_own(
    account: Account, tmp_path: Path, webhook: Webhook
) -> None:
    files(account, tmp_path)
    configure(
        account,
        Sink(webhook.url("quiet")),
        Sink(webhook.url("loud"), exclude_states=()),
        events=["BACKUP_JOB_COMPLETED"],
        exclude=["COMPLETED"],
    )
    back_up(account)
    assert webhook.events("quiet") == []
    assert webhook.events("loud") == [("BACKUP_JOB_COMPLETED", "COMPLETED")]


# A failing sink never fails a job, and is retried ----------------------------------------------------
def test_a_sink_that_is_down_is_retried_until_it_is_back(account: Account, tmp_path: Path) -> None:
    files(account, tmp_path)
    hook = Webhook()  # not started: nothing listens on its port
    configure(account, Sink(hook.url()))
    job = back_up(account)
    assert job.state == JobState.COMPLETED and job.status_message is None
    pending = notifications.list_outbox(account, pending_only=True)
    assert [(r["event"], r["attempts"], r["delivery_status"]) for r in pending] == [
        ("BACKUP_JOB_STARTED", 1, "PENDING"),
        ("BACKUP_JOB_COMPLETED", 1, "PENDING"),
    ]
    assert all(r["last_error"].startswith(f"webhook+http://127.0.0.1:{hook.port}: ") for r in pending)

    now = model.now()
    assert notifications.deliver_pending(account, now=now)["attempted"] == 0  # backing off
    hook.start()
    try:
        report = notifications.deliver_pending(account, now=now + timedelta(seconds=notifications.FIRST_RETRY_SECONDS))
        assert report == {"attempted": 2, "delivered": 2, "retrying": 0, "failed": 0}
        assert hook.events() == [("BACKUP_JOB_STARTED", "RUNNING"), ("BACKUP_JOB_COMPLETED", "COMPLETED")]
        assert notifications.list_outbox(account, pending_only=True) == []
        assert notifications.deliver_pending(account, now=now + timedelta(days=1))["attempted"] == 0  # sent once
    finally:
        hook.stop()
    assert SECRET not in everything_shown(account)


def test_retries_back_off_and_stop_after_the_last_attempt(account: Account, tmp_path: Path) -> None:
    files(account, tmp_path)
    hook = Webhook(status=503).start()
    waits = []
    try:
        configure(account, Sink(hook.url()), events=["BACKUP_JOB_COMPLETED"])
        back_up(account)  # attempt 1, by the job itself
        moment = model.now()
        for attempt in range(1, MAX_ATTEMPTS):
            [row] = notifications.list_outbox(account)
            assert (row["attempts"], row["delivery_status"]) == (attempt, "PENDING")
            due = datetime.fromisoformat(row["next_attempt_at"])
            if attempt > 1:
                waits.append((due - moment).total_seconds())
            assert notifications.deliver_pending(account, now=due - timedelta(seconds=1))["attempted"] == 0
            moment = due
            assert notifications.deliver_pending(account, now=moment)["attempted"] == 1
    finally:
        hook.stop()
    assert waits == [min(30 * 2 ** (n - 1), 3600) for n in range(2, MAX_ATTEMPTS)]
    [row] = notifications.list_outbox(account)
    assert (row["delivery_status"], row["attempts"], row["next_attempt_at"]) == ("FAILED", MAX_ATTEMPTS, None)
    assert "HTTP 503" in row["last_error"] and SECRET not in row["last_error"]
    assert notifications.list_outbox(account, pending_only=True) == []
    assert notifications.deliver_pending(account, now=moment + timedelta(days=30))["attempted"] == 0
    assert len(hook.received) == MAX_ATTEMPTS


def test_notify_never_raises(account: Account) -> None:
    notifications.notify(account, "NoSuchVault", "BACKUP_JOB_COMPLETED", {"state": "FAILED"})
    notifications.notify(account, "Default", "NOT_AN_EVENT", {})
    notifications.job_finished(account, "no-such-job")
    notifications.recovery_point_modified(account, "no-such-point", "deleted")
    assert notifications.list_outbox(account) == []


# Sinks ----------------------------------------------------------------------------------------------
def test_the_log_sink_appends_one_json_line_per_event(account: Account, tmp_path: Path) -> None:
    files(account, tmp_path)
    log = tmp_path / "logs" / "events.jsonl"
    configure(account, Sink(f"log://{log}"))
    first, second = back_up(account), back_up(account)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(line["event"], line["job_id"]) for line in lines] == [
        ("BACKUP_JOB_STARTED", first.id),
        ("BACKUP_JOB_COMPLETED", first.id),
        ("BACKUP_JOB_STARTED", second.id),
        ("BACKUP_JOB_COMPLETED", second.id),
    ]
    assert lines[3]["recovery_point_arn"] == second.recovery_point_arn
    assert notifications.get_notifications(account, "Default")["sinks"][0]["sink"] == f"log://{log}"


def test_apprise_json_sink_wraps_the_payload(account: Account, tmp_path: Path, webhook: Webhook) -> None:
    """Apprise's json:// POSTs its own envelope; the payload travels as JSON text in ``message``."""
    files(account, tmp_path)
    configure(account, Sink(webhook.url(scheme="json")), events=["BACKUP_JOB_COMPLETED"])
    job = back_up(account)
    [envelope] = webhook.wait_for(1)
    assert set(envelope) >= {"version", "title", "message", "type"}
    assert envelope["type"] == "success"
    payload = json.loads(envelope["message"])
    assert payload["event"] == "BACKUP_JOB_COMPLETED" and payload["job_id"] == job.id
    assert envelope["title"] == payload["summary"]


def test_an_apprise_failure_is_recorded_without_the_url(account: Account, tmp_path: Path) -> None:
    files(account, tmp_path)
    hook = Webhook(status=500).start()
    try:
        configure(account, Sink(hook.url(scheme="json")), events=["BACKUP_JOB_COMPLETED"])
        assert back_up(account).state == JobState.COMPLETED
    finally:
        hook.stop()
    [row] = notifications.list_outbox(account)
    assert row["delivery_status"] == "PENDING" and row["last_error"].startswith(f"json://127.0.0.1:{hook.port}: ")
    assert len(row["last_error"]) > len(f"json://127.0.0.1:{hook.port}: ")
    assert SECRET not in everything_shown(account)


def test_urls_are_checked_and_never_echoed(account: Account) -> None:
    for bad in (f"bogus://{SECRET}@host/x", f"webhook+ftp://host/{SECRET}", f"log://relative/{SECRET}"):
        with pytest.raises(ConfigError) as refused:
            configure(account, Sink(bad))
        assert SECRET not in refused.value.one_line()
    assert notifications.mask_url(f"slack://T0AAA/B0BBB/{SECRET}") == "slack://***"
    assert notifications.mask_url(f"https://hooks.slack.com/services/T0/B0/{SECRET}") == "https://hooks.slack.com"
    assert notifications.mask_url(f"mailto://me:{SECRET}@example.com") == "mailto://example.com"
    url = f"webhook+https://hooks.example.com/services/{SECRET}"
    scrubbed = notifications.scrub(f"POST https://hooks.example.com/services/{SECRET}: 404; token {SECRET}", url)
    assert scrubbed == "POST https://***: 404; token ***"


def test_settings_are_sealed_in_the_catalog(account: Account, webhook: Webhook) -> None:
    configure(account, Sink(webhook.url()))
    stored = json.dumps(account.catalog.get_vault("Default").notifications)
    assert SECRET not in stored and str(webhook.port) in stored  # only the masked form is readable
    record = account.catalog.get_vault("Default")
    assert notifications.stored_settings(account, record).sinks[0].url == webhook.url()  # type: ignore[union-attr]
    notifications.delete_notifications(account, "Default")
    assert notifications.get_notifications(account, "Default")["sinks"] == []


# Restores and recovery points ---------------------------------------------------------------------------
def test_restore_and_recovery_point_events(account: Account, tmp_path: Path, webhook: Webhook) -> None:
    files(account, tmp_path)
    first = back_up(account)
    configure(
        account, Sink(webhook.url()), events=["RESTORE_JOB_STARTED", "RESTORE_JOB_COMPLETED", "RECOVERY_POINT_MODIFIED"]
    )
    job, lock = create_restore_job(
        account, first.recovery_point_arn or "", RestoreRequest(target=str(tmp_path / "restored"))
    )
    run_restore_job(account, job.id, lock)
    root = root_arn(account.account_id)
    update_recovery_point_lifecycle(account, root, first.recovery_point_arn or "", 30)
    delete_recovery_point(account, root, first.recovery_point_arn or "")
    assert webhook.events() == [
        ("RESTORE_JOB_STARTED", "RUNNING"),
        ("RESTORE_JOB_COMPLETED", "COMPLETED"),
        ("RECOVERY_POINT_MODIFIED", "COMPLETED"),
        ("RECOVERY_POINT_MODIFIED", "DELETED"),
    ]
    restore, lifecycle, deleted = webhook.bodies()[1:]
    assert restore["source_recovery_point_arn"] == first.recovery_point_arn and restore["resource_id"] == "files"
    assert lifecycle["change"] == "retention set to 30 days"
    assert lifecycle["lifecycle"] == {"delete_after_days": 30}
    assert deleted["change"] == f"deleted by {root}" and deleted["recovery_point_arn"] == first.recovery_point_arn
