"""Named fault points for crash tests: a process told to die at a point dies there, by SIGKILL; one told
to stall there stops, by SIGSTOP.

``STRONGROOM_FAULT_KILL_AT`` holds comma-separated point names (e.g. ``dr.after:restore``). A SIGKILL at a
named point is what a power cut, an OOM kill or an operator's ``kill -9`` does at that instant, made
repeatable. ``STRONGROOM_FAULT_STOP_AT`` names points where the process stops itself (SIGSTOP) the first
time it reaches them, until it is sent SIGCONT: a writer stalled in flight at a known instant, however
loaded the machine. Nothing else reads these variables; unset (always, outside tests) every point is a no-op.
"""

from __future__ import annotations

import os
import signal

ENV_FAULT_KILL_AT = "STRONGROOM_FAULT_KILL_AT"
ENV_FAULT_STOP_AT = "STRONGROOM_FAULT_STOP_AT"

_stopped_at: set[str] = set()


def fault_point(name: str) -> None:
    if _named(ENV_FAULT_KILL_AT, name):
        os.kill(os.getpid(), signal.SIGKILL)
    if name not in _stopped_at and _named(ENV_FAULT_STOP_AT, name):
        _stopped_at.add(name)
        os.kill(os.getpid(), signal.SIGSTOP)


def _named(variable: str, name: str) -> bool:
    wanted = os.environ.get(variable)
    return bool(wanted) and name in (point.strip() for point in (wanted or "").split(","))
