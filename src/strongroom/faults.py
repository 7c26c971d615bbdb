"""Named crash points for crash tests: a process told to die at a point dies there, by SIGKILL.

``STRONGROOM_FAULT_KILL_AT`` holds comma-separated point names (e.g. ``dr.after:restore``). Nothing
else reads it; unset (always, outside tests) every point is a no-op. A SIGKILL at a named point is
what a power cut, an OOM kill or an operator's ``kill -9`` does at that instant, made repeatable.
"""

from __future__ import annotations

import os
import signal

ENV_FAULT_KILL_AT = "STRONGROOM_FAULT_KILL_AT"


def fault_armed(name: str) -> bool:
    """Whether ``fault_point(name)`` would kill: for points that need work to reach (watching a hook's output)."""
    wanted = os.environ.get(ENV_FAULT_KILL_AT)
    return bool(wanted) and name in (point.strip() for point in (wanted or "").split(","))


def fault_point(name: str) -> None:
    if fault_armed(name):
        os.kill(os.getpid(), signal.SIGKILL)
