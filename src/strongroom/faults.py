"""Named fault points for crash and signal tests: a process told to die, stall or pause at a point does so there.

``STRONGROOM_FAULT_KILL_AT`` holds comma-separated point names (e.g. ``dr.after:restore``): the process
kills itself with SIGKILL when it reaches one — what a power cut, an OOM kill or an operator's ``kill -9``
does at that instant, made repeatable.

``STRONGROOM_FAULT_STOP_AT`` names points where the process stops itself (SIGSTOP) the first time it
reaches them, until it is sent SIGCONT: a writer stalled in flight at a known instant, however loaded the
machine.

``STRONGROOM_FAULT_PAUSE_AT`` names points where the process instead creates the file
``STRONGROOM_FAULT_PAUSED_FILE`` (holding its pid) and waits, up to ``PAUSE_LIMIT_SECONDS``, for a signal:
a test sends SIGINT or SIGTERM at a known instant instead of after a guessed sleep. The CLI's signal
handler calls :func:`release_pauses` so a point paused in a worker thread lets go too.

Nothing else reads these variables; unset (always, outside tests) every point is a no-op.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

ENV_FAULT_KILL_AT = "STRONGROOM_FAULT_KILL_AT"
ENV_FAULT_STOP_AT = "STRONGROOM_FAULT_STOP_AT"
ENV_FAULT_PAUSE_AT = "STRONGROOM_FAULT_PAUSE_AT"
ENV_FAULT_PAUSED_FILE = "STRONGROOM_FAULT_PAUSED_FILE"
PAUSE_LIMIT_SECONDS = 600.0
_released = threading.Event()
_stopped_at: set[str] = set()


def fault_armed(name: str) -> bool:
    """Whether ``fault_point(name)`` would kill: for points that need work to reach (watching a hook's output)."""
    return _named(ENV_FAULT_KILL_AT, name)


def fault_point(name: str) -> None:
    if fault_armed(name):
        os.kill(os.getpid(), signal.SIGKILL)
    if name not in _stopped_at and _named(ENV_FAULT_STOP_AT, name):
        _stopped_at.add(name)
        os.kill(os.getpid(), signal.SIGSTOP)
    if _named(ENV_FAULT_PAUSE_AT, name):
        _pause()


MIDDLE_BYTES = 1 << 20  # the crash tests' "middle" of a restore or copy: after its first MiB


def fault_after_first_mib(name: str) -> Callable[[int], None]:
    """A progress callback (bytes done so far, in steps) that is fault point ``name`` once the first MiB is done."""
    done = 0

    def progress(count: int) -> None:
        nonlocal done
        before, done = done, done + count
        if before < MIDDLE_BYTES <= done:
            fault_point(name)

    return progress


def release_pauses() -> None:
    """Let every paused point go on (a signal arrived: the process is winding up)."""
    _released.set()


def _named(variable: str, name: str) -> bool:
    wanted = os.environ.get(variable)
    return bool(wanted) and name in (point.strip() for point in (wanted or "").split(","))


def _pause() -> None:
    if _released.is_set():
        return
    marker = os.environ.get(ENV_FAULT_PAUSED_FILE)
    if marker:
        Path(marker).write_text(str(os.getpid()))
    if threading.current_thread() is threading.main_thread():
        deadline = time.monotonic() + PAUSE_LIMIT_SECONDS
        while not _released.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)  # a signal's handler runs here, and its exception leaves through this frame
    else:
        _released.wait(PAUSE_LIMIT_SECONDS)
