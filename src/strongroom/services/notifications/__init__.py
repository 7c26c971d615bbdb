"""Vault notifications: AWS Backup's vault events, queued in an outbox and sent to each vault's sinks.

- ``vault_settings.py``: a vault's settings (events, excluded states, sinks), checked, sealed, shown masked;
- ``events.py``: which event a job or recovery point raises, and its payload;
- ``outbox.py``: queueing (``notify`` never raises), delivery at once and retries with backoff;
- ``sinks.py``: the sink URLs (log file, webhook, Apprise), masking, sending, scrubbing;
- ``messages.py``: the summary and Markdown lines people read;
- ``plan.py``: ``strongroom plan``/``apply`` for notifications (the only part that reads a configuration
  file; import it as ``strongroom.services.notifications.plan``).

docs/notifications.md has the details.
"""

from strongroom.services.notifications.events import (
    job_events,
    job_finished,
    job_payload,
    job_started,
    recovery_point_modified,
)
from strongroom.services.notifications.messages import message, summary
from strongroom.services.notifications.outbox import (
    FIRST_RETRY_SECONDS,
    MAX_ATTEMPTS,
    deliver_now,
    deliver_pending,
    list_outbox,
    notify,
)
from strongroom.services.notifications.sinks import DeliveryError, check_url, mask_url, scrub, send
from strongroom.services.notifications.vault_settings import (
    EVENTS,
    STATES,
    Settings,
    Sink,
    delete_notifications,
    get_notifications,
    put_notifications,
    settings,
    stored_settings,
)

__all__ = [
    "EVENTS",
    "FIRST_RETRY_SECONDS",
    "MAX_ATTEMPTS",
    "STATES",
    "DeliveryError",
    "Settings",
    "Sink",
    "check_url",
    "delete_notifications",
    "deliver_now",
    "deliver_pending",
    "get_notifications",
    "job_events",
    "job_finished",
    "job_payload",
    "job_started",
    "list_outbox",
    "mask_url",
    "message",
    "notify",
    "put_notifications",
    "recovery_point_modified",
    "scrub",
    "send",
    "settings",
    "stored_settings",
    "summary",
]
