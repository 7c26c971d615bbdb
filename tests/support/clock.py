"""Clocks tests set by hand, for ``model.driven_clock`` and the services' ``clock`` parameters."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass
class ManualClock:
    moment: datetime

    def __call__(self) -> datetime:
        return self.moment


class RunningClock:
    """A driven clock that runs: set to a moment, it reads that moment exactly once (a scheduler tick's ``now``
    is the instant it was set to), then goes on at the real pace, so what takes real time (a restore) has a
    real duration in the records while the days are simulated."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    @property
    def moment(self) -> datetime:
        reading = time.monotonic()
        if self._started is None:
            self._started = reading
        return self._moment + timedelta(seconds=reading - self._started)

    @moment.setter
    def moment(self, value: datetime) -> None:
        self._moment, self._started = value, None

    def __call__(self) -> datetime:
        return self.moment
