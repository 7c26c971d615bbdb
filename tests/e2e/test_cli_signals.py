"""Ctrl-C and SIGTERM during every long-running command: a documented exit code (130, 143), one line on
stderr, no traceback, the job ABORTED and nothing half-written (the vault verifies).

Each command is held at a known instant by a paused fault point (src/strongroom/faults.py) and signalled
there: no sleeps. Without a terminal through pipes; with one through a pseudo-terminal, where Ctrl-C is the
terminal's own interrupt character reaching the whole foreground process group.
"""

from __future__ import annotations

import os
import pty
import random
import re
import select
import signal
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from strongroom.faults import ENV_FAULT_PAUSE_AT, ENV_FAULT_PAUSED_FILE, ENV_FAULT_STOP_AT
from tests.support.accounts import serving
from tests.support.cli import Cli, Result, assert_one_line_error
from tests.support.locks import wait_until
from tests.support.trees import snapshot_tree

SIGNALS = [pytest.param(signal.SIGINT, id="SIGINT"), pytest.param(signal.SIGTERM, id="SIGTERM")]
MESSAGES = {signal.SIGINT: "interrupted by SIGINT (Ctrl-C)", signal.SIGTERM: "interrupted by SIGTERM"}


def _files(root: Path, count: int = 6, size: int = 300_000) -> None:
    rng = random.Random(11)
    root.mkdir(parents=True)
    for n in range(count):
        (root / f"f{n}.bin").write_bytes(rng.randbytes(size))


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    cli = Cli(tmp_path / "home")
    cli.run("init", "--chunk-size", "65536")  # small chunks: a backup or a read has many, the pause is mid-way
    _files(tmp_path / "tree")
    cli.run("resources", "add", "files", "--type", "directory", "--path", str(tmp_path / "tree"))
    return cli


def paused(cli: Cli, tmp_path: Path, point: str, *args: str) -> subprocess.Popen[str]:
    """``strongroom ARGS`` started and held at fault point ``point``."""
    marker = tmp_path / "paused"
    marker.unlink(missing_ok=True)
    env = {**cli.env, ENV_FAULT_PAUSE_AT: point, ENV_FAULT_PAUSED_FILE: str(marker)}
    process = subprocess.Popen(
        cli.command(*args),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: marker.exists() or process.poll() is not None, f"strongroom {args[0]} paused at {point}")
    if process.poll() is not None:
        out, err = process.communicate()
        raise AssertionError(f"exited ({process.returncode}) before {point}:\n{out}\n{err}")
    return process


def signalled(process: subprocess.Popen[str], signum: int) -> Result:
    process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    return Result(process.returncode, out, err)


def assert_interrupted(result: Result, signum: int) -> None:
    assert_one_line_error(result, 128 + signum, MESSAGES[signum])


def last_job(cli: Cli) -> dict:
    return dict(cli.json("jobs", "list")["jobs"][-1])


@pytest.mark.parametrize("signum", SIGNALS)
def test_backup_wait_interrupted(cli: Cli, tmp_path: Path, signum: int) -> None:
    process = paused(cli, tmp_path, "write:after-new-chunk", "backup", "start", "--resource", "files", "--wait")
    assert_interrupted(signalled(process, signum), signum)
    job = last_job(cli)
    assert (job["state"], job["status_message"]) == ("ABORTED", MESSAGES[signum])
    points = cli.json("recovery-points", "list", "--all")["recovery_points"]
    assert [p["status"] for p in points] == ["PARTIAL"]
    assert cli.json("recovery-points", "list")["recovery_points"] == []  # nobody restores it by mistake
    assert cli.json("verify", "--read-data")["ok"]
    assert cli.backup("files")["state"] == "COMPLETED"  # and the next backup is not in its way


@pytest.mark.parametrize("signum", SIGNALS)
def test_a_detached_job_s_worker_signalled_aborts_its_job(cli: Cli, tmp_path: Path, signum: int) -> None:
    """A job started without --wait runs in a worker process; `kill` (or `systemctl stop`) reaching it ends
    the job ABORTED with its half-made point PARTIAL at once — not RUNNING until a later command notices."""
    marker = tmp_path / "paused"
    env = {ENV_FAULT_PAUSE_AT: "write:after-new-chunk", ENV_FAULT_PAUSED_FILE: str(marker)}
    started = cli.run("backup", "start", "--resource", "files", "--json", env=env).json()
    wait_until(marker.exists, "the detached backup paused")
    worker = int(marker.read_text())
    os.kill(worker, signum)
    wait_until(lambda: not Path(f"/proc/{worker}").exists() or _zombie(worker), "the worker exited")
    log = (cli.home / "tmp" / f"job-{started['job_id']}.log").read_text()
    assert f"error: {MESSAGES[signum]}" in log and "Traceback" not in log, log
    job = cli.json("jobs", "describe", started["job_id"])
    assert (job["state"], job["status_message"]) == ("ABORTED", MESSAGES[signum]), job
    assert [p["status"] for p in cli.json("recovery-points", "list", "--all")["recovery_points"]] == ["PARTIAL"]
    assert cli.json("verify", "--read-data")["ok"]


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_backup_and_echo_ok_prints_nothing_after_an_interrupt(cli: Cli, tmp_path: Path) -> None:
    """The issue's own shell line: `strongroom backup … && echo ok` must not say ok."""
    marker = tmp_path / "paused"
    script = '"$@" backup start --resource files --wait && echo ok'
    env = {**cli.env, ENV_FAULT_PAUSE_AT: "write:after-new-chunk", ENV_FAULT_PAUSED_FILE: str(marker)}
    process = subprocess.Popen(
        ["sh", "-c", script, "sh", *cli.command()],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: marker.exists() or process.poll() is not None, "the backup paused")
    os.kill(int(marker.read_text()), signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert "ok" not in out and process.returncode == 130, (out, err)


def test_ctrl_c_at_a_terminal(cli: Cli, tmp_path: Path) -> None:
    """At a terminal Ctrl-C is the tty's interrupt character: SIGINT to the foreground process group."""
    marker = tmp_path / "paused"
    env = {**cli.env, ENV_FAULT_PAUSE_AT: "write:after-new-chunk", ENV_FAULT_PAUSED_FILE: str(marker)}
    pid, fd = pty.fork()
    if pid == 0:  # the child: a session of its own with the pty as controlling terminal
        os.execve(cli.command()[0], [*cli.command("backup", "start", "--resource", "files", "--wait")], env)
    try:
        wait_until(lambda: marker.exists() or os.waitpid(pid, os.WNOHANG) != (0, 0), "the backup paused")
        os.write(fd, b"\x03")  # Ctrl-C, as typed
        output = _read_all(fd)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 130, output
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.decode())  # colours, cursor moves
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    shown = [line for line in lines if line != "^C" and not line.startswith("Backing up")]  # the (erased) bar
    assert shown == ["error: interrupted by SIGINT (Ctrl-C)"], output
    assert last_job(cli)["state"] == "ABORTED"


def _read_all(fd: int) -> bytes:
    """Everything the child writes to its terminal until it closes it (bounded: a read a second)."""
    chunks = []
    for _ in range(600):
        ready, _, _ = select.select([fd], [], [], 1.0)
        if not ready:
            continue
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO: the child closed its terminal
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


@pytest.mark.parametrize("signum", SIGNALS)
def test_restore_wait_interrupted_leaves_no_half_tree(cli: Cli, tmp_path: Path, signum: int) -> None:
    point = cli.backup("files")["recovery_point_arn"]
    target = tmp_path / "restored"
    args = ("restore", "start", "--recovery-point", point, "--target", str(target), "--wait")
    process = paused(cli, tmp_path, "read:after-first-chunk", *args)
    assert_interrupted(signalled(process, signum), signum)
    assert last_job(cli)["state"] == "ABORTED"
    assert not target.exists() or not any(target.iterdir())  # what it wrote is gone
    cli.run(*args)  # and the restore can simply be run again
    assert snapshot_tree(target) == snapshot_tree(tmp_path / "tree")


@pytest.mark.parametrize("signum", SIGNALS)
def test_verify_read_data_interrupted(cli: Cli, tmp_path: Path, signum: int) -> None:
    cli.backup("files")
    process = paused(cli, tmp_path, "read:after-first-chunk", "verify", "--read-data")
    assert_interrupted(signalled(process, signum), signum)
    assert cli.json("verify", "--read-data")["ok"]


@pytest.mark.parametrize("signum", SIGNALS)
def test_lifecycle_run_interrupted_mid_collection(cli: Cli, tmp_path: Path, signum: int) -> None:
    """Stopped while the collector deletes: one line, and what is left is consistent; the next run finishes."""
    cli.run("backup", "start", "--resource", "files", "--delete-after", "1", "--wait")
    for path in (tmp_path / "tree").iterdir():
        path.write_bytes(os.urandom(300_000))  # the first point's chunks become garbage once it expires
    kept = cli.backup("files")
    later = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    process = paused(cli, tmp_path, "gc:after-first-delete", "lifecycle", "run", "--now", later)
    assert_interrupted(signalled(process, signum), signum)
    assert cli.json("verify", "--read-data")["ok"]
    report = cli.json("lifecycle", "run", "--now", later, "--json")
    assert [g["status"] for g in report["garbage_collection"]] == ["COMPLETED"], report
    assert report["garbage_collection"][0]["objects_deleted"] > 0, report
    points = cli.json("recovery-points", "list")["recovery_points"]
    assert [p["recovery_point_arn"] for p in points] == [kept["recovery_point_arn"]]
    assert cli.json("verify", "--read-data")["ok"]


@pytest.mark.parametrize("signum", SIGNALS)
def test_copy_wait_interrupted(tmp_path: Path, signum: int) -> None:
    from tests.e2e.test_copy import two_accounts

    with two_accounts(tmp_path) as pair:
        point = pair.source.backup("files")["recovery_point_arn"]
        args = ("copy", "start", "--recovery-point", point, "--destination-vault", pair.destination_vault, "--wait")
        process = paused(pair.source, tmp_path, "read:after-first-chunk", *args)
        assert_interrupted(signalled(process, signum), signum)
        assert last_job(pair.source)["state"] == "ABORTED"
        assert pair.destination.json("recovery-points", "list")["recovery_points"] == []
        job = pair.source.json(*args, "--json")  # run again, it completes
        assert job["state"] == "COMPLETED"
        assert pair.destination.json("verify", "--read-data")["ok"]


@pytest.mark.parametrize("signum", SIGNALS)
def test_dr_run_interrupted_is_resumable(cli: Cli, tmp_path: Path, signum: int) -> None:
    done = tmp_path / "done"
    runbook = tmp_path / "runbook.yaml"
    runbook.write_text(
        "runbook: signals\nsteps:\n"
        f"  - {{name: first, type: run, command: [touch, '{tmp_path / 'first'}']}}\n"
        f"  - {{name: second, type: run, command: [touch, '{done}']}}\n"
    )
    process = paused(cli, tmp_path, "dr.before:second", "dr", "run", str(runbook))
    result = signalled(process, signum)
    assert result.returncode == 128 + signum, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert errors == [f"error: {MESSAGES[signum]}"], result.stderr
    assert not done.exists()
    run = cli.json("dr", "list")["runs"][-1]
    assert run["state"] == "INTERRUPTED" and run["current_step"] == "second", run
    cli.run("dr", "resume", run["run_id"])
    assert done.exists()


@pytest.mark.parametrize("signum", SIGNALS)
def test_serve_stops_cleanly_on_a_signal(cli: Cli, signum: int) -> None:
    """A daemon's normal end: SIGTERM (systemd, docker stop) or Ctrl-C stops it, exit 0, no error line."""
    with serving(cli) as server:
        server.process.send_signal(signum)
        assert server.process.wait(timeout=120) == 0, server.log.read_text()
    assert "Traceback" not in server.log.read_text() and "error" not in server.log.read_text().lower()


def test_serve_signalled_before_it_serves_stops(cli: Cli, tmp_path: Path) -> None:
    """A SIGTERM that arrives between "serving on" and uvicorn's own handlers stops the server too (it used to
    stop only the scheduler, and the API served on). The server stalls itself there (SIGSTOP) for the test."""
    env = {**cli.env, ENV_FAULT_STOP_AT: "serve:before-run"}
    command = cli.command("serve", "--no-scheduler", "--port", "0")
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stat = Path(f"/proc/{process.pid}/stat")
        wait_until(
            lambda: process.poll() is not None or stat.read_text().rpartition(")")[2].split()[0] in ("T", "t"),
            "serve stalled at serve:before-run",
        )
        process.send_signal(signal.SIGTERM)  # pending while it is stopped, handled as soon as it goes on
    finally:
        os.kill(process.pid, signal.SIGCONT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "serving on" in out and "Traceback" not in err
