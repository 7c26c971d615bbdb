#!/usr/bin/env python3
"""Start, stop and restart the sample app (app.py) in the background: what a DR runbook's ``restart_app`` calls.

    python appctl.py start   --state FILE [--log FILE] [--timeout S] -- <app.py arguments>
    python appctl.py stop    --state FILE [--timeout S]
    python appctl.py restart --state FILE [--timeout S]
    python appctl.py status  --state FILE

``start`` runs app.py detached (a new session; stdout and stderr appended to the log, by default the state
file's name with ``.log``), records its pid and arguments in the JSON state file, and waits until
``GET /health`` answers 200 (host and port read from the app's arguments). ``restart`` stops the app if it
runs and starts it again with the recorded arguments, so it reads its secret afresh: after a runbook's
``update_secret`` or ``rotate_credentials`` the app connects to the new database. ``status`` prints
``running (pid N)`` and exits 0, or ``stopped`` and exits 3.

The app inherits this command's environment (e.g. the variable ``app.py --secret-env`` reads, which a
runbook's restart_app step sets from the secret store); nothing of it is recorded.
Exit codes: 0 done, 1 failed (one line on stderr starting with ``error:``, the last line, after the tail of
the app's log when there is more to see), 2 usage, 3 stopped (``status``).
Standard library only. A demo, not production code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

APP = Path(__file__).resolve().with_name("app.py")
EXIT_FAILED, EXIT_USAGE, EXIT_STOPPED = 1, 2, 3
TAIL_LINES = 10


class Failure(Exception):
    """One line for stderr (and optionally the lines of a log tail after it)."""

    def __init__(self, message: str, tail: list[str] | None = None) -> None:
        super().__init__(message)
        self.tail = tail or []


# The state file -----------------------------------------------------------------------------------

def read_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise Failure(f"cannot read state file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not isinstance(state, dict):
        raise Failure(f"state file {path} is not a JSON object")
    return state


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Atomically: a reader sees the old state or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)


# Processes ----------------------------------------------------------------------------------------

def is_running(state: dict[str, Any]) -> bool:
    """The recorded pid is alive, not a zombie, and (where /proc tells) still runs app.py."""
    pid = state.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's: the cmdline check decides
    proc = Path("/proc") / str(pid)
    try:
        stat = (proc / "stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return False  # exited; its new parent has not reaped it yet
        cmdline = (proc / "cmdline").read_bytes().split(b"\0")
    except (OSError, IndexError):
        return not proc.parent.is_dir()  # no /proc (not Linux): trust kill(pid, 0)
    return str(state.get("app", APP)).encode() in cmdline  # the pid was not reused by another program


def wait_for_exit(state: dict[str, Any], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while is_running(state):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def health_url(app_args: list[str]) -> str:
    """``http://HOST:PORT/health`` from app.py's ``--host``/``--port`` (``--opt value`` or ``--opt=value``)."""
    values = {"--host": "127.0.0.1", "--port": ""}
    for index, arg in enumerate(app_args):
        name, equals, value = arg.partition("=")
        if name in values:
            values[name] = value if equals else (app_args[index + 1] if index + 1 < len(app_args) else "")
    host, port = values["--host"], values["--port"]
    if not port.isdigit():
        raise Failure("the app's arguments need --port N (app.py --help shows them)")
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/health"


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def log_tail(log: Path, offset: int) -> list[str]:
    """The non-empty lines the app wrote to its log since ``offset`` (this start), the last TAIL_LINES."""
    try:
        with log.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return [line.rstrip() for line in text.splitlines() if line.strip()][-TAIL_LINES:]


# Commands -----------------------------------------------------------------------------------------

def start(state_path: Path, app_args: list[str], log: Path | None, timeout: float) -> str:
    state = read_state(state_path)
    if is_running(state):
        raise Failure(f"the app is already running (pid {state['pid']}); use restart")
    if not app_args:
        raise Failure("no app arguments: start --state FILE -- --secret NAME --home DIR --port N")
    url = health_url(app_args)
    log = (log or Path(state.get("log") or state_path.with_suffix(".log"))).resolve()
    log.parent.mkdir(parents=True, exist_ok=True)
    offset = log.stat().st_size if log.exists() else 0
    with log.open("ab") as log_handle:
        proc = subprocess.Popen(
            [sys.executable, str(APP), *app_args], stdin=subprocess.DEVNULL, stdout=log_handle,
            stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
        )
    state = {"pid": proc.pid, "app": str(APP), "python": sys.executable, "args": app_args, "log": str(log),
             "health": url, "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_state(state_path, state)

    deadline = time.monotonic() + timeout
    while True:
        code = proc.poll()
        if code is not None:
            write_state(state_path, {**state, "pid": None, "exit_code": code})
            tail = log_tail(log, offset)
            reason = tail[-1].removeprefix("error: ") if tail else "nothing in its log"
            raise Failure(f"the app exited with code {code} before it was healthy: {reason} (log: {log})", tail[:-1])
        if healthy(url):
            return f"started (pid {proc.pid}), healthy at {url}"
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    # Not healthy in time: do not leave a half-started app behind.
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    write_state(state_path, {**state, "pid": None, "exit_code": proc.returncode})
    raise Failure(f"the app was not healthy at {url} within {timeout:g} s; stopped it (log: {log})",
                  log_tail(log, offset))


def stop(state_path: Path, timeout: float) -> str:
    state = read_state(state_path)
    if not is_running(state):
        if state.get("pid"):
            write_state(state_path, {**state, "pid": None})
        return "not running"
    pid = state["pid"]
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not wait_for_exit(state, timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not wait_for_exit(state, 10):
            raise Failure(f"the app (pid {pid}) did not stop after SIGTERM and SIGKILL")
        write_state(state_path, {**state, "pid": None})
        return f"killed (pid {pid}): it did not stop within {timeout:g} s of SIGTERM"
    write_state(state_path, {**state, "pid": None})
    return f"stopped (pid {pid})"


def restart(state_path: Path, timeout: float) -> str:
    state = read_state(state_path)
    if not state.get("args"):
        raise Failure(f"no app recorded in {state_path}: use start first")
    stopped = stop(state_path, timeout)
    started = start(state_path, list(state["args"]), Path(state["log"]) if state.get("log") else None, timeout)
    return f"{stopped}; {started}"


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    app_args: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, app_args = argv[:split], argv[split + 1:]
    parser = argparse.ArgumentParser(description="Control the sample app in the background.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("start", "start app.py detached: start --state FILE [--log FILE] -- <app.py arguments>"),
                       ("stop", "send SIGTERM and wait"), ("restart", "stop, then start with the recorded arguments"),
                       ("status", "print running or stopped (exit 0 or 3)")):
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("--state", required=True, type=Path, metavar="FILE", help="the JSON state file")
        if name == "start":
            command.add_argument("--log", type=Path, metavar="FILE", help="the app's log (default: STATE.log)")
        if name != "status":
            command.add_argument("--timeout", type=float, default=30.0, metavar="S",
                                 help="seconds to wait for /health (start) or for the exit (stop); default 30")
    args = parser.parse_args(argv)
    if app_args and args.command != "start":
        parser.error(f"{args.command} takes no app arguments (restart reuses the recorded ones)")
    return args, app_args


def main(argv: list[str] | None = None) -> int:
    args, app_args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "status":
            state = read_state(args.state)
            if is_running(state):
                print(f"running (pid {state['pid']})")
                return 0
            print("stopped")
            return EXIT_STOPPED
        if args.command == "start":
            message = start(args.state, app_args, args.log, args.timeout)
        elif args.command == "stop":
            message = stop(args.state, args.timeout)
        else:
            message = restart(args.state, args.timeout)
    except Failure as exc:
        # The tail first, the error line last: a runbook runner quotes a failed command's last line.
        sys.stderr.writelines(f"  | {line}\n" for line in exc.tail)
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_FAILED
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
