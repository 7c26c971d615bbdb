"""SIGINT and SIGTERM while a command or a job worker runs: an exception, so every job and lock is wound up in order.

Python turns SIGINT into ``KeyboardInterrupt`` but lets SIGTERM kill the process on the spot, leaving a
job RUNNING until the next command notices its process is gone. Here both raise :class:`Interrupted` (a
``KeyboardInterrupt``, so the code that marks a job ABORTED and removes half-made things handles both
alike) and the command exits 128 + the signal's number: 130 for SIGINT, 143 for SIGTERM.

The first signal is the polite one. It also puts both signals back to their default action, so a second
Ctrl-C or SIGTERM while the command winds up ends it at once (the next command then marks its job FAILED).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from strongroom.faults import release_pauses

HANDLED = (signal.SIGINT, signal.SIGTERM)


def exit_code(signum: int) -> int:
    """The shell's convention for a process ended by a signal."""
    return 128 + signum


class Interrupted(KeyboardInterrupt):
    """The command was asked to stop by a signal; ``str()`` says which (it becomes the job's message)."""

    def __init__(self, signum: int) -> None:
        name = signal.Signals(signum).name
        super().__init__(f"interrupted by {name}" + (" (Ctrl-C)" if signum == signal.SIGINT else ""))
        self.signum = signum
        self.exit_code = exit_code(signum)


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    for handled in HANDLED:
        signal.signal(handled, signal.SIG_DFL)
    release_pauses()  # a test's paused fault point (faults.py) in a worker thread must not hold the exit
    raise Interrupted(signum)


def install() -> dict[int, Any]:
    """Make SIGINT and SIGTERM raise :class:`Interrupted`; the handlers they had (for :func:`restore`)."""
    if threading.current_thread() is not threading.main_thread():
        return {}  # signals reach the main thread only (an in-process test runner may use another)
    previous: dict[int, Any] = {signum: signal.getsignal(signum) for signum in HANDLED}
    for signum in HANDLED:
        signal.signal(signum, _raise_interrupted)
    return previous


def restore(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)
