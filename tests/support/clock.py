"""A clock tests set by hand, for ``model.driven_clock`` and the services' ``clock`` parameters."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass
class ManualClock:
    moment: datetime

    def __call__(self) -> datetime:
        return self.moment
