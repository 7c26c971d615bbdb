"""The one reader of the wall clock: every timestamp Strongroom writes comes from :func:`now`.

Pure functions take ``now`` as a parameter; services and the vault engine call :func:`now`, which tests may
drive; request signing uses :func:`system_clock`, which they cannot, since another process checks it. Ruff's TID251
bans ``datetime.now`` everywhere else (pyproject.toml), so a test that drives this clock drives them all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """The machine's real time, never driven: for times another machine checks (request signatures)."""
    return datetime.now(UTC)


_clock: Clock = system_clock


def now() -> datetime:
    """The current time for every record the services write (jobs, recovery points, schedules).

    The scheduler's tests drive it (``driven_clock``) to simulate weeks of schedules in seconds; only code
    running in the same process can, so no command-line flag or environment variable moves it.
    """
    return _clock()


@contextmanager
def driven_clock(clock: Clock) -> Iterator[None]:
    """Within the block, ``now()`` is ``clock()`` (one process; for simulations and tests)."""
    global _clock
    previous, _clock = _clock, clock
    try:
        yield
    finally:
        _clock = previous
