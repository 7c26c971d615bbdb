"""``serve --metrics-bind``: /metrics scraped over HTTP and parsed with Prometheus's own text parser after
real backups, copies and restores; /healthz with a store made unreachable and a scheduler that cannot tick;
the listener's security (token, separate port, nothing secret in the output). docs/metrics.md."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

from strongroom.catalog.dr_records import DrRun, DrState
from strongroom.clock import system_clock
from strongroom.services import metrics
from strongroom.services.account import open_account
from tests.e2e.test_copy import Pair, copy, two_accounts
from tests.support.accounts import Server, account_id, serving
from tests.support.cli import PASSPHRASE, Cli
from tests.support.ports import free_port
from tests.support.scrape import get, scrape, value

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "monitoring"
HEALTH_POLLS = 200  # a fresh scheduler's first tick comes at once; bounded, never a time limit


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@dataclass
class World:
    pair: Pair
    source_server: Server
    metrics_port: int
    backup: dict
    copy_job: dict
    restore: dict
    secrets: list[str]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A source that backed up, copied to the destination account and restored, serving its metrics."""
    with two_accounts(tmp_path_factory.mktemp("metrics")) as pair:
        backup = pair.source.backup("files")
        copied = copy(pair.source, backup["recovery_point_arn"], pair.destination_vault)
        assert copied["state"] == "COMPLETED", copied
        target = pair.tmp_path / "restored"
        restore = pair.source.json(
            "restore", "start", "--recovery-point", backup["recovery_point_arn"], "--target", str(target), "--wait"
        )
        assert restore["state"] == "COMPLETED", restore
        port = free_port()
        with serving(pair.source, "--metrics-bind", str(port)) as server:
            yield World(pair, server, port, backup, copied, restore, [PASSPHRASE])


def test_scrape_reports_what_the_catalog_holds(world: World) -> None:
    source, destination = world.pair.source, world.pair.destination
    point = source.json("recovery-points", "describe", "--recovery-point", world.backup["recovery_point_arn"])
    before = system_clock().timestamp()
    samples = scrape(world.metrics_port)
    after = system_clock().timestamp()
    where = {"resource_id": "files", "vault": "Default"}

    completed = at(point["completion_date"])
    assert value(samples, "strongroom_backup_last_success_timestamp_seconds", **where) == completed
    rpo = value(samples, "strongroom_resource_rpo_seconds", **where)
    assert before - completed <= rpo <= after - completed
    assert value(samples, "strongroom_resource_source_bytes", **where) == point["source_bytes"]
    assert value(samples, "strongroom_resource_stored_bytes", **where) == point["stored_bytes"]
    assert value(samples, "strongroom_vault_recovery_points", vault="Default", state="COMPLETED") == 1
    assert value(samples, "strongroom_vault_stored_bytes", vault="Default") == point["stored_bytes"]

    jobs = source.json("jobs", "list")
    jobs = jobs["jobs"] if isinstance(jobs, dict) else jobs
    for job_type in ("BACKUP", "COPY", "RESTORE"):
        expected = sum(1 for j in jobs if j["job_type"] == job_type and j["state"] == "COMPLETED")
        assert value(samples, "strongroom_jobs", job_type=job_type, state="COMPLETED") == expected == 1
        assert value(samples, "strongroom_jobs", job_type=job_type, state="FAILED") == 0

    to = {"resource_id": "files", "destination_account": account_id(destination), "destination_vault": "Default"}
    copy_job = source.json("jobs", "describe", world.copy_job["job_id"])
    assert value(samples, "strongroom_copy_last_success_timestamp_seconds", **to) == at(copy_job["completion_date"])
    assert before - completed <= value(samples, "strongroom_copy_rpo_seconds", **to) <= after - completed

    restore = source.json("jobs", "describe", world.restore["job_id"])
    measured = at(restore["completion_date"]) - at(restore["start_date"])
    ended = at(restore["completion_date"])
    assert value(samples, "strongroom_restore_last_success_timestamp_seconds", resource_id="files") == ended
    rto = value(samples, "strongroom_resource_last_rto_seconds", resource_id="files", source="restore_job")
    assert rto == pytest.approx(measured, abs=1e-3)
    assert value(
        samples, "strongroom_job_last_duration_seconds", resource_id="files", job_type="RESTORE"
    ) == pytest.approx(measured, abs=1e-3)
    assert value(
        samples, "strongroom_job_last_end_timestamp_seconds", resource_id="files", job_type="COPY", state="COMPLETED"
    ) == at(copy_job["completion_date"])


def test_rpo_grows_with_the_clock_and_resets_with_a_new_backup(world: World, tmp_path: Path) -> None:
    account = open_account(world.pair.source.home, lambda: PASSPHRASE)
    try:
        now = system_clock()
        first = _rpo(metrics.collect(account, now))
        later = _rpo(metrics.collect(account, now + timedelta(hours=25)))
        assert later - first == pytest.approx(25 * 3600)
        recovery = metrics.resource_recovery(account, "files", now + timedelta(hours=25))
        assert recovery["rpo"][0]["rpo_seconds"] == pytest.approx(later, abs=1e-3)
    finally:
        account.close()


def _rpo(families: list[metrics.Family]) -> float:
    family = next(f for f in families if f.name == "resource_rpo_seconds")
    return next(s.value for s in family.samples if s.labels["vault"] == "Default")


def test_describe_shows_rpo_per_vault_and_destination_and_last_rto(world: World) -> None:
    source = world.pair.source
    described = source.json("resources", "describe", "files")
    point = source.json("recovery-points", "describe", "--recovery-point", world.backup["recovery_point_arn"])
    by_place = {entry.get("vault") or entry["destination"]: entry for entry in described["rpo"]}
    assert by_place["Default"]["newest_completed_point"] == point["completion_date"]
    assert by_place["Default"]["rpo_seconds"] > 0
    copied = by_place[f"{account_id(world.pair.destination)}:Default"]
    assert copied["newest_completed_point"] == point["completion_date"]
    assert described["last_rto"]["measured_by"] == "restore_job"
    restore = source.json("jobs", "describe", world.restore["job_id"])
    assert described["last_rto"]["measured_at"] == restore["completion_date"]
    text = source.run("resources", "describe", "files").stdout
    assert "last_rto" in text and "rpo" in text


def test_scrape_and_health_expose_no_secret_arn_or_url(world: World) -> None:
    body = get(f"http://127.0.0.1:{world.metrics_port}/metrics").body
    health = get(f"http://127.0.0.1:{world.metrics_port}/healthz").body
    catalog_secrets = world.pair.source.json("accounts", "list")
    remotes = catalog_secrets["accounts"] if isinstance(catalog_secrets, dict) else catalog_secrets
    endpoints = [r["endpoint"] for r in remotes]
    assert endpoints, "the source talks to the destination"
    for text in (body, health):
        for secret in world.secrets:
            assert secret not in text
        assert "arn:" not in text
        assert "://" not in text
        assert str(world.pair.source.home) not in text
        for endpoint in endpoints:
            assert endpoint not in text


def test_the_api_port_does_not_serve_metrics_or_health(world: World) -> None:
    for path in ("/metrics", "/healthz"):
        answer = get(f"{world.source_server.endpoint}{path}")
        assert answer.status == 404, answer
        assert "strongroom_" not in answer.body and "checks" not in answer.body


def test_alert_rules_reference_only_metrics_a_live_scrape_has(world: World) -> None:
    samples = scrape(world.metrics_port)
    rules = yaml.safe_load((EXAMPLES / "alerts.yml").read_text())
    names = [rule["alert"] for group in rules["groups"] for rule in group["rules"]]
    assert {"StrongroomDaemonDown", "StrongroomSchedulerStale", "StrongroomBackupTooOld"} <= set(names)
    assert "StrongroomCopyFailing" in names
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            used = set(re.findall(r"\bstrongroom_[a-z_]+", rule["expr"]))
            assert used or "up{" in rule["expr"], rule
            assert used <= set(samples), (rule["alert"], used - set(samples))
    dashboard = json.loads((EXAMPLES / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert exprs
    for expr in exprs:
        assert set(re.findall(r"\bstrongroom_[a-z_]+", expr)) <= set(samples), expr


def test_health_fails_when_a_vault_store_is_unreachable(world: World) -> None:
    url = f"http://127.0.0.1:{world.metrics_port}/healthz"
    healthy = get(url)
    assert healthy.status == 200, healthy
    assert json.loads(healthy.body)["checks"]["vault:Default"]["status"] == "ok"
    vault_dir = world.pair.source.home / "vaults" / "Default"
    moved = vault_dir.with_name("Default.moved")
    vault_dir.rename(moved)
    try:
        failing = get(url)
    finally:
        moved.rename(vault_dir)
    assert failing.status == 503, failing
    report = json.loads(failing.body)
    assert report["status"] == "failing"
    assert report["checks"]["vault:Default"]["status"] == "failing"
    assert report["checks"]["catalog"]["status"] == "ok"
    assert get(url).status == 200


# Own accounts ------------------------------------------------------------------------------------------
@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    made = Cli(tmp_path / "home")
    made.run("init")
    return made


def test_a_token_is_required_when_configured(cli: Cli, tmp_path: Path) -> None:
    token_file = tmp_path / "metrics.token"
    token_file.write_text("s3cr3t-token-for-prometheus\n")
    token_file.chmod(0o600)
    port = free_port()
    with serving(cli, "--metrics-bind", f"127.0.0.1:{port}", "--metrics-token-file", str(token_file)):
        for path in ("/metrics", "/healthz"):
            url = f"http://127.0.0.1:{port}{path}"
            refused = get(url)
            assert refused.status == 401 and "strongroom_" not in refused.body, refused
            assert get(url, "wrong-token").status == 401
            assert get(url, "s3cr3t-token-for-prometheus-and-more").status == 401
        assert "strongroom_jobs" in get(f"http://127.0.0.1:{port}/metrics", "s3cr3t-token-for-prometheus").body
        answer = get(f"http://127.0.0.1:{port}/metrics", "s3cr3t-token-for-prometheus")
        assert "s3cr3t" not in answer.body


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--metrics-bind", "0.0.0.0:9100"), "without a token"),
        (("--metrics-bind", "127.0.0.1:notaport"), "--metrics-bind"),
        (("--metrics-token-file", "/nonexistent"), "goes with --metrics-bind"),
    ],
)
def test_unsafe_or_malformed_metrics_options_are_refused(cli: Cli, args: tuple[str, ...], fragment: str) -> None:
    result = cli.run("serve", "--no-scheduler", *args, ok=False)
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr and "Traceback" not in result.stderr


def test_a_token_file_others_can_read_is_refused(cli: Cli, tmp_path: Path) -> None:
    token_file = tmp_path / "metrics.token"
    token_file.write_text("token\n")
    token_file.chmod(0o644)
    result = cli.run(
        "serve", "--no-scheduler", "--metrics-bind", "9100", "--metrics-token-file", str(token_file), ok=False
    )
    assert result.returncode == 2 and "readable by others" in result.stderr, result.stderr


def test_health_fails_when_the_scheduler_cannot_tick(cli: Cli) -> None:
    account = open_account(cli.home, lambda: PASSPHRASE)
    try:  # a daemon that died without releasing its lease: ours may not act until it lapses
        moment = system_clock()
        account.catalog.acquire_lease("scheduler", "ghost:1:dead", moment, moment + timedelta(days=1))
    finally:
        account.close()
    port = free_port()
    with serving(cli, "--metrics-bind", str(port), "--poll-seconds", "0.2", scheduler=True):
        answer = get(f"http://127.0.0.1:{port}/healthz")
        assert answer.status == 503, answer
        check = json.loads(answer.body)["checks"]["scheduler"]
        assert check["status"] == "failing" and "no scheduler tick" in check["detail"]
        assert scrape(port)["strongroom_scheduler_last_tick_timestamp_seconds"] == []


def test_health_and_last_tick_follow_a_ticking_scheduler(cli: Cli) -> None:
    port = free_port()
    with serving(cli, "--metrics-bind", str(port), "--poll-seconds", "0.2", scheduler=True):
        answer = get(f"http://127.0.0.1:{port}/healthz")
        for _ in range(HEALTH_POLLS):
            if answer.status == 200:
                break
            time.sleep(0.1)
            answer = get(f"http://127.0.0.1:{port}/healthz")
        assert answer.status == 200, answer
        assert json.loads(answer.body)["checks"]["scheduler"]["status"] == "ok"
        ticked = value(scrape(port), "strongroom_scheduler_last_tick_timestamp_seconds")
        assert ticked <= system_clock().timestamp()


def test_a_completed_dr_rehearsal_is_the_last_measured_rto(cli: Cli, tmp_path: Path) -> None:
    """As the DR engine records it (services/dr/engine.py): a run row, then COMPLETED with its report."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a").write_text("a")
    cli.run("resources", "add", "files", "--type", "directory", "--path", str(tree))
    cli.backup("files")
    account = open_account(cli.home, lambda: PASSPHRASE)
    try:
        started = system_clock()
        ended = started + timedelta(seconds=42.5)
        run = DrRun(
            "run-1", "rb", {}, True, DrState.RUNNING, started.isoformat(), started.isoformat(), started.isoformat()
        )
        account.catalog.add_dr_run(run, [])
        report = {"recovery_point": {"resource_id": "files"}, "rto_seconds": 42.5}
        account.catalog.update_dr_run(
            "run-1", state=DrState.COMPLETED.value, completed_at=ended.isoformat(), report=report
        )
        families = {f.name: f for f in metrics.collect(account, ended)}
    finally:
        account.close()
    [rto] = families["resource_last_rto_seconds"].samples
    assert rto.labels == {"resource_id": "files", "resource_type": "directory", "source": "dr_rehearsal"}
    assert rto.value == 42.5
    [restored] = families["restore_last_success_timestamp_seconds"].samples
    assert restored.value == ended.timestamp()
    described = cli.json("resources", "describe", "files")["last_rto"]
    assert described == {"rto_seconds": 42.5, "measured_by": "dr_rehearsal", "measured_at": ended.isoformat()}


def test_health_fails_when_the_last_tick_is_stale(cli: Cli) -> None:
    port = free_port()
    with serving(cli, "--metrics-bind", str(port), "--poll-seconds", "3600", scheduler=True):
        url = f"http://127.0.0.1:{port}/healthz"
        answer = get(url)
        for _ in range(HEALTH_POLLS):  # the first tick, at start; the next one is an hour away
            if answer.status == 200:
                break
            time.sleep(0.1)
            answer = get(url)
        assert answer.status == 200, answer
        account = open_account(cli.home, lambda: PASSPHRASE)
        try:  # a scheduler wedged for a day: its last tick is what it was then
            day_ago = (system_clock() - timedelta(days=1)).isoformat()
            account.catalog.set_setting("scheduler_last_tick", {"at": day_ago, "holder": "wedged"})
        finally:
            account.close()
        stale = get(url)
        assert stale.status == 503, stale
        check = json.loads(stale.body)["checks"]["scheduler"]
        assert check["status"] == "failing" and "stale after" in check["detail"]
        ticked = value(scrape(port), "strongroom_scheduler_last_tick_timestamp_seconds")
        assert ticked == datetime.fromisoformat(day_ago).timestamp()
