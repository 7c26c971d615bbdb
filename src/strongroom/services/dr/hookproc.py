"""A hook's processes: started in a session (and process group) of their own, never outliving the run.

A hook's command may start children (``terraform`` runs providers, a deploy script starts ``curl``).
They all share the hook's process group, whose id (the command's pid) is saved in the step's
checkpoint before the command runs. Three things end them:

- the run stops waiting (timeout, an exception, SIGTERM or Ctrl-C of ``dr run``): the whole group is killed;
- ``dr run`` dies by SIGKILL (or OOM): the command itself gets SIGKILL from the kernel
  (``PR_SET_PDEATHSIG``, Linux), set in the child between fork and exec;
- its children, which PDEATHSIG does not reach, are killed by the next attempt of the step
  (``dr resume``) before it starts the command again: it finds the saved group in ``/proc``, checks
  that its processes carry this run's ``STRONGROOM_DR_RUN_ID`` (a recycled group id is never
  signalled), kills the group and waits until no live process is left in it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from strongroom.errors import HookFailedError

PR_SET_PDEATHSIG = 1
RUN_ID_VARIABLE = "STRONGROOM_DR_RUN_ID"
GONE_WAIT_SECONDS = 30.0
POLL_SECONDS = 0.05


def start(argv: list[str], env: dict[str, str], cwd: str | None, out: IO[bytes]) -> subprocess.Popen[bytes]:
    """Start ``argv`` as the leader of a new session, to die with this process."""
    return subprocess.Popen(
        argv,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=out,
        start_new_session=True,
        preexec_fn=_die_with_parent(os.getpid()),  # only prctl and getppid run there (fork-safe)
    )


def wait(proc: subprocess.Popen[bytes], timeout: float, tick: Callable[[], None]) -> int | None:
    """The command's exit status, or None after ``timeout`` s; its group is killed on the way out unless it
    exited. ``tick`` runs between short waits (a crash test's fault point)."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                return proc.wait(timeout=min(remaining, 0.2))
            except subprocess.TimeoutExpired:
                tick()
    finally:
        if proc.returncode is None:
            kill_group(proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=GONE_WAIT_SECONDS)


def stop_previous(group: int, run_id: str) -> bool:
    """Kill what an earlier attempt of this run's hook left in process group ``group``; True if anything was."""
    members = live_group_members(group)
    if not members or not any(_carries_run(pid, run_id) for pid in members):
        return False
    kill_group(group)
    deadline = time.monotonic() + GONE_WAIT_SECONDS
    while live_group_members(group):
        if time.monotonic() >= deadline:
            raise HookFailedError(
                f"the previous attempt's processes (group {group}) are still running after SIGKILL",
                hint="stop them (kill -KILL -- -GROUP) and resume again",
            )
        time.sleep(POLL_SECONDS)
    return True


def kill_group(group: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, killed and awaiting its reaper, is not)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return status.rpartition(")")[2].split()[0] not in ("Z", "X")


def live_group_members(group: int) -> list[int]:
    """The processes of process group ``group`` that are not zombies (/proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue  # it ended while we looked
        if int(fields[2]) == group and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _carries_run(pid: int, run_id: str) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{RUN_ID_VARIABLE}={run_id}".encode() in environ.split(b"\0")


def _die_with_parent(parent: int) -> Callable[[], None]:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the line above: do not run orphaned
            os._exit(1)

    return preexec
