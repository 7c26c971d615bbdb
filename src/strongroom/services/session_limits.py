"""How long a copy session may live on the destination: set by its operator (``strongroom serve
--copy-idle-timeout/--copy-max-lifetime``), enforced by services/copy_sessions.py. Kept apart so the CLI can show
the defaults without loading the copy machinery."""

from __future__ import annotations

from dataclasses import dataclass

from strongroom.errors import UsageError

IDLE_SESSION_SECONDS = 30 * 60
MAX_SESSION_SECONDS = 24 * 60 * 60
REAP_AT_MOST_EVERY_SECONDS = 0.05
REAP_AT_LEAST_EVERY_SECONDS = 30.0


@dataclass(frozen=True)
class SessionLimits:
    """How long a copy session may live (``strongroom serve --copy-idle-timeout/--copy-max-lifetime``)."""

    idle_seconds: float = IDLE_SESSION_SECONDS
    max_lifetime_seconds: float = MAX_SESSION_SECONDS

    def __post_init__(self) -> None:
        if not (self.idle_seconds > 0 and self.max_lifetime_seconds > 0):
            raise UsageError("copy session limits must be more than 0 seconds")

    @property
    def reap_every_seconds(self) -> float:
        """How often the server looks for expired sessions: a session outlives its limit by at most this."""
        shortest = min(self.idle_seconds, self.max_lifetime_seconds)
        return min(max(shortest / 4, REAP_AT_MOST_EVERY_SECONDS), REAP_AT_LEAST_EVERY_SECONDS)
