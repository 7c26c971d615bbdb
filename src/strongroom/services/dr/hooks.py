"""Steps that reach outside Strongroom: ``run`` (a command, e.g. ``terraform import``), ``http`` (a
webhook) and ``restart_app`` (a deploy or restart command, then a health URL until it answers).

Commands get an argv list (a string runs under ``sh -c``) and an environment of their own, not
Strongroom's (which holds ``STRONGROOM_PASSPHRASE``, the key to every vault and secret of the
account): ``PATH``, ``HOME``, ``USER``, ``LOGNAME``, ``SHELL``, ``LANG``, ``LC_*``, ``TZ``, ``TMPDIR``,
``TERM`` and the CA bundle variables (``SSL_CERT_FILE`` ...) of ours; the variables the step names
in ``pass_env`` (``NAME`` or ``PREFIX*``; a pattern never matches a ``STRONGROOM_*`` name, which must
be named exactly); the step's ``env``
(``${secret.NAME.FIELD}`` read at that moment: how a hook gets a credential it needs); and the
``STRONGROOM_DR_*`` variables. Their output goes to the run's log directory, never to the catalog
beyond a short tail. A rehearsal skips them unless the step says ``rehearse: true`` (then
``STRONGROOM_DR_REHEARSAL=1`` tells the command it is a rehearsal).

A command runs in a process group of its own that never outlives the run: killed with the run's
timeout or interruption, by the kernel when ``dr run`` is SIGKILLed, and what is left of it by the
step's next attempt (``dr resume``) before the command starts again (``hookproc``).
"""

from __future__ import annotations

import os
import re
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from shutil import which
from typing import Any, TypeVar

import httpx

from strongroom.config.runbook import HttpStep, RestartAppStep, RunStep
from strongroom.errors import HookFailedError
from strongroom.faults import fault_armed, fault_point
from strongroom.services.dr import hookproc
from strongroom.services.dr.context import StepContext, resolve_secrets

AnyHook = TypeVar("AnyHook", RunStep, HttpStep, RestartAppStep)
CommandHook = TypeVar("CommandHook", RunStep, RestartAppStep)
TAIL_BYTES = 2000
HOOK_ENVIRONMENT = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "TZ",
        "TMPDIR",
        "TERM",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
    }
)
STRONGROOM_PREFIX = "STRONGROOM_"


class RunCommand:
    def run(self, ctx: StepContext[RunStep]) -> dict[str, Any]:
        if _skipped(ctx):
            return {"skipped": "rehearsal"}
        outputs = run_command(ctx, ctx.step.command)
        ctx.changes.append(f"ran {_shown(ctx.step.command)} (exit 0)")
        return outputs

    def describe(self, ctx: StepContext[RunStep]) -> tuple[str, dict[str, Any], list[str]]:
        verb = "skip (rehearsal):" if _skipped(ctx) else "run"
        problems = _command_problems(ctx.step.command) + _secret_problems(ctx, ctx.step.env)
        return f"{verb} {_shown(ctx.step.command)}", {}, problems

    def clean_up(self, ctx: StepContext[RunStep], outputs: dict[str, Any]) -> list[str]:
        return []


class HttpCall:
    def run(self, ctx: StepContext[HttpStep]) -> dict[str, Any]:
        if _skipped(ctx):
            return {"skipped": "rehearsal"}
        step = ctx.step
        url = resolve_secrets(step.url, ctx.account)
        headers = resolve_secrets(step.headers, ctx.account)
        try:
            response = httpx.request(step.method, url, json=step.body, headers=headers, timeout=step.timeout_seconds)
        except httpx.HTTPError as exc:
            raise HookFailedError(f"{step.method} {_safe_url(step.url)} failed: {exc}") from None
        expected = step.expect_status
        if (expected and response.status_code not in expected) or (not expected and not response.is_success):
            raise HookFailedError(
                f"{step.method} {_safe_url(step.url)} answered {response.status_code}"
                f" ({'expected ' + ', '.join(map(str, expected)) if expected else 'expected 2xx'})"
            )
        ctx.changes.append(f"{step.method} {_safe_url(step.url)}: {response.status_code}")
        return {"status": response.status_code}

    def describe(self, ctx: StepContext[HttpStep]) -> tuple[str, dict[str, Any], list[str]]:
        verb = "skip (rehearsal):" if _skipped(ctx) else "call"
        problems = _secret_problems(ctx, [ctx.step.url, ctx.step.headers])
        return f"{verb} {ctx.step.method} {_safe_url(ctx.step.url)}", {}, problems

    def clean_up(self, ctx: StepContext[HttpStep], outputs: dict[str, Any]) -> list[str]:
        return []


class RestartApp:
    def run(self, ctx: StepContext[RestartAppStep]) -> dict[str, Any]:
        if _skipped(ctx):
            return {"skipped": "rehearsal"}
        outputs: dict[str, Any] = {}
        if ctx.step.command:
            outputs = run_command(ctx, ctx.step.command)
            ctx.changes.append(f"restarted the app: {_shown(ctx.step.command)}")
        if ctx.step.health_url:
            outputs["health"] = _wait_for(ctx.step.health_url, ctx.step.timeout_seconds)
        return outputs

    def describe(self, ctx: StepContext[RestartAppStep]) -> tuple[str, dict[str, Any], list[str]]:
        step = ctx.step
        parts = [f"run {_shown(step.command)}"] if step.command else []
        if step.health_url:
            parts.append(f"wait up to {step.timeout_seconds} s for {step.health_url} to answer 2xx")
        verb = "skip (rehearsal): " if _skipped(ctx) else ""
        problems = _command_problems(step.command) if step.command else []
        problems += _secret_problems(ctx, step.env)
        if not step.command and not step.health_url:
            problems.append("restart_app needs a command, a health_url or both")
        return verb + " then ".join(parts), {}, problems

    def clean_up(self, ctx: StepContext[RestartAppStep], outputs: dict[str, Any]) -> list[str]:
        return []


def run_command(ctx: StepContext[CommandHook], command: list[str] | str) -> dict[str, Any]:
    argv = ["sh", "-c", command] if isinstance(command, str) else list(command)
    log = _log_file(ctx)
    env = hook_environment(ctx)
    _stop_previous_attempt(ctx, log)
    with log.open("ab") as out:
        out.write(f"--- {ctx.step.name}: {_shown(command)}\n".encode())
        out.flush()
        tick = _output_fault(ctx, log)
        try:
            proc = hookproc.start(argv, env, getattr(ctx.step, "cwd", None), out)
        except FileNotFoundError:
            raise HookFailedError(f"{argv[0]}: command not found", hint="install it or fix the step") from None
        ctx.checkpoint_set(hook_process_group=proc.pid)
        status = hookproc.wait(proc, ctx.step.timeout_seconds, tick)
    # Finished (or its group killed): what it left running on purpose (an app it started) is not the
    # next attempt's to kill.
    ctx.checkpoint_set(hook_process_group=None)
    if status is None:
        raise HookFailedError(
            f"{_shown(command)} did not finish within {ctx.step.timeout_seconds} s", hint=f"see {log}"
        )
    tail = _tail(log)
    if status != 0:
        last = tail.strip().splitlines()[-1] if tail.strip() else "no output"
        raise HookFailedError(f"{_shown(command)} exited with status {status}: {last}", hint=f"see {log}")
    return {"exit_status": 0, "log": str(log)}


def _stop_previous_attempt(ctx: StepContext[CommandHook], log: Path) -> None:
    """A resumed step first ends what its killed attempt's command left running (hookproc's docstring)."""
    group = ctx.checkpoint.get("hook_process_group")
    if isinstance(group, int) and hookproc.stop_previous(group, ctx.run_id):  # it was cut off mid-command
        with log.open("ab") as out:
            out.write(f"--- {ctx.step.name}: killed process group {group} of the previous attempt\n".encode())
        ctx.changes.append(f"killed what the previous attempt of {ctx.step.name} left running (process group {group})")


def _output_fault(ctx: StepContext[CommandHook], log: Path) -> Callable[[], None]:
    """Crash tests' fault point ``dr.hook:output:STEP``: dr run dies once the command has written output."""
    name = f"dr.hook:output:{ctx.step.name}"
    if not fault_armed(name):
        return lambda: None
    start = log.stat().st_size

    def tick() -> None:
        if log.stat().st_size > start:
            fault_point(name)

    return tick


def hook_environment(ctx: StepContext[CommandHook]) -> dict[str, str]:
    """What a hook's command sees: a minimal environment, what the step passes or declares, the DR variables."""
    patterns = list(ctx.step.pass_env or [])
    inherited = {
        name: value
        for name, value in os.environ.items()
        if name in HOOK_ENVIRONMENT or name.startswith("LC_") or _passed(name, patterns)
    }
    return {**inherited, **resolve_secrets(ctx.step.env or {}, ctx.account), **_dr_environment(ctx)}


def _passed(name: str, patterns: list[str]) -> bool:
    if name in patterns:
        return True
    if name.startswith(STRONGROOM_PREFIX):
        return False  # the passphrase and its kin are passed only when named exactly
    return any(pattern.endswith("*") and name.startswith(pattern[:-1]) for pattern in patterns)


def _secret_problems(ctx: StepContext[AnyHook], value: Any) -> list[str]:
    """The secrets the step reads that will not exist when it runs (none matter when a rehearsal skips it)."""
    return [] if _skipped(ctx) else ctx.missing_secrets(value)


def _skipped(ctx: StepContext[AnyHook]) -> bool:
    return ctx.rehearsal and not ctx.step.rehearse


def _dr_environment(ctx: StepContext[AnyHook]) -> dict[str, str]:
    env = {
        "STRONGROOM_DR_RUN_ID": ctx.run_id,
        "STRONGROOM_DR_REHEARSAL": "1" if ctx.rehearsal else "0",
        "STRONGROOM_HOME": str(ctx.account.home),
    }
    restored = ctx.previous("restore") or {}
    for key in ("identifier", "host", "port", "dbname"):
        if restored.get(key) is not None:
            env[f"STRONGROOM_DR_RESTORED_{key.upper()}"] = str(restored[key])
    return env


def _log_file(ctx: StepContext[AnyHook]) -> Path:
    directory = ctx.account.home / "logs" / "dr"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    log = directory / f"{ctx.run_id}.log"
    log.touch(mode=0o600, exist_ok=True)  # hooks' output may say more than it should: only the owner reads it
    return log


def _tail(log: Path) -> str:
    with log.open("rb") as handle:
        handle.seek(max(0, log.stat().st_size - TAIL_BYTES))
        return handle.read().decode("utf-8", "replace")


def _wait_for(url: str, timeout: float) -> dict[str, Any]:
    deadline, last = time.monotonic() + timeout, "no answer"
    while True:
        try:
            response = httpx.get(url, timeout=5)
            if response.is_success:
                return {"url": url, "status": response.status_code}
            last = f"status {response.status_code}"
        except httpx.HTTPError as exc:
            last = str(exc) or type(exc).__name__
        if time.monotonic() >= deadline:
            raise HookFailedError(
                f"{url} did not answer 2xx within {timeout:g} s (last: {last})", hint="see the app's log"
            )
        time.sleep(0.5)


def _command_problems(command: list[str] | str) -> list[str]:
    argv0 = (
        shlex.split(command)[0]
        if isinstance(command, str) and command.strip()
        else (command[0] if isinstance(command, list) and command else "")
    )
    if not argv0:
        return ["the command is empty"]
    if "/" in argv0:
        return [] if os.access(argv0, os.X_OK) else [f"{argv0} is not an executable file"]
    return [] if which(argv0) or isinstance(command, str) else [f"{argv0}: command not found"]


def _shown(command: list[str] | str) -> str:
    return command if isinstance(command, str) else shlex.join(command)


def _safe_url(url: str) -> str:
    """A URL for messages: no query string and no credentials (webhook tokens live there)."""
    return re.sub(r"//[^/@]*@", "//", url.split("?", 1)[0])
