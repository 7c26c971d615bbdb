"""The outbox: one row per event and sink that wants it, delivered at once by jobs and retried by the daemon.

``notify`` never raises: a notification problem never fails a job. It queues one outbox row per matching
sink (the sink URL sealed in the row); jobs then deliver their own rows at once with a short timeout, and
``deliver_pending`` (the daemon on every tick, ``strongroom notifications deliver``) retries failures with
exponential backoff, up to ``MAX_ATTEMPTS``.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from strongroom import model
from strongroom.errors import StrongroomError, UsageError
from strongroom.model import DeliveryStatus, OutboxRow, VaultRecord, iso
from strongroom.services.account import Account
from strongroom.services.credentials import open_secret
from strongroom.services.notifications.messages import summary
from strongroom.services.notifications.sinks import DeliveryError, send
from strongroom.services.notifications.vault_settings import EVENTS, sink_label

MAX_ATTEMPTS = 10  # 30 s, 1, 2, 4, 8, 16, 32 min, then hourly: about 3 hours in all
FIRST_RETRY_SECONDS = 30
MAX_RETRY_SECONDS = 3600
JOB_DELIVERY_TIMEOUT = 5.0  # what a job waits for each sink before it leaves the event to the retries
SLOW_SINK_SECONDS = 60  # a sink that timed out is not tried again at once by this process for this long

_LOG = logging.getLogger(__name__)
_SLOW_SINKS: dict[str, float] = {}


def notify(account: Account, vault_name: str, event: str, payload: dict[str, Any]) -> None:
    """Queue ``event`` for every sink of the vault that wants it; never raises."""
    queue_safely(account, vault_name, event, payload)


def queue_safely(account: Account, vault_name: str, event: str, payload: dict[str, Any]) -> list[int]:
    try:
        return _queue(account, vault_name, event, payload)
    except Exception as exc:  # a notification problem never fails the job that raised the event
        _LOG.warning("could not queue %s of vault %s: %s", event, vault_name, type(exc).__name__)
        return []


def _queue(account: Account, vault_name: str, event: str, payload: dict[str, Any]) -> list[int]:
    if event not in EVENTS:
        raise UsageError(f"unknown event {event}")
    record = account.catalog.get_vault(vault_name)
    stored = record.notifications
    if not stored or event not in stored["events"]:
        return []
    full = _complete(account, record, event, payload)
    stamp = _stamp(model.now())
    rows = [
        OutboxRow(record.name, event, full, _sink_column(sink), next_attempt_at=stamp, created_at=stamp)
        for sink in stored["sinks"]
        if _wants(stored, sink, event, full.get("state"))
    ]
    return account.catalog.add_notifications(rows) if rows else []


def _sink_column(sink: dict[str, Any]) -> str:
    return json.dumps({"display": sink["display"], "sealed": sink["sealed_url"]})


def _wants(stored: dict[str, Any], sink: dict[str, Any], event: str, state: str | None) -> bool:
    events: list[str] = sink["events"] if sink.get("events") is not None else stored["events"]
    excluded: list[str] = sink["exclude_states"] if sink.get("exclude_states") is not None else stored["exclude_states"]
    return event in events and state not in excluded


def _complete(account: Account, record: VaultRecord, event: str, payload: dict[str, Any]) -> dict[str, Any]:
    full = {
        "state": None,
        **payload,
        "event": event,
        "account_id": account.account_id,
        "region": account.region,
        "backup_vault_name": record.name,
        "backup_vault_arn": record.arn,
    }
    full.setdefault("event_time", iso(model.now()))
    full["summary"] = summary(full)
    return full


def deliver_pending(
    account: Account, *, now: datetime | None = None, timeout: float = 10, retry_now: bool = False
) -> dict[str, Any]:
    """Send every due outbox row (``retry_now``: every PENDING one, whatever its backoff); a failure is retried
    later with backoff, until MAX_ATTEMPTS (then FAILED)."""
    moment = now or model.now()
    due_by = moment + timedelta(days=365 * 100) if retry_now else moment
    rows = account.catalog.due_notifications(_stamp(due_by), MAX_ATTEMPTS)
    return _deliver(account, rows, moment, timeout, skip_slow=False)


def deliver_now(account: Account, ids: list[int], timeout: float = JOB_DELIVERY_TIMEOUT) -> dict[str, Any]:
    """What a job does right after queueing its rows: try them once, briefly; the retries do the rest."""
    if not ids:
        return _counts()
    moment = model.now()
    rows = account.catalog.due_notifications(_stamp(moment), MAX_ATTEMPTS, ids=ids)
    return _deliver(account, rows, moment, timeout, skip_slow=True)


def _counts() -> dict[str, Any]:
    return {"attempted": 0, "delivered": 0, "retrying": 0, "failed": 0}


def _deliver(
    account: Account, rows: list[OutboxRow], moment: datetime, timeout: float, *, skip_slow: bool
) -> dict[str, Any]:
    counts = _counts()
    for row in rows:
        if skip_slow and _SLOW_SINKS.get(row.sink, 0) > time.monotonic():
            continue
        lease = _stamp(moment + timedelta(seconds=timeout * 3 + 60))
        if not account.catalog.claim_notification(row.id, row.next_attempt_at, MAX_ATTEMPTS, lease):
            continue  # another process took it
        counts["attempted"] += 1
        counts[_attempt(account, row, moment, timeout)] += 1
    return counts


def _attempt(account: Account, row: OutboxRow, moment: datetime, timeout: float) -> str:
    sink = json.loads(row.sink)
    attempts = row.attempts + 1
    started = time.monotonic()
    try:
        url = open_secret(account, sink["sealed"], sink_label(row.vault_name))
        send(url, row.payload, timeout)
    except Exception as exc:  # send() scrubs its errors; opening the URL names no URL
        if time.monotonic() - started >= timeout * 0.9:
            _SLOW_SINKS[row.sink] = time.monotonic() + SLOW_SINK_SECONDS
        return _failed(account, row.id, attempts, moment, f"{sink['display']}: {_reason(exc)}"[:1000])
    account.catalog.finish_notification(
        row.id, attempts=attempts, next_attempt_at=_stamp(moment), delivered_at=_stamp(moment), last_error=None
    )
    return "delivered"


def _reason(exc: Exception) -> str:
    if isinstance(exc, DeliveryError):
        return str(exc)
    if isinstance(exc, StrongroomError):
        return exc.one_line()
    return f"the stored sink URL cannot be opened: {type(exc).__name__}"


def _failed(account: Account, row_id: int, attempts: int, moment: datetime, error: str) -> str:
    delay = min(FIRST_RETRY_SECONDS * 2 ** (attempts - 1), MAX_RETRY_SECONDS)
    account.catalog.finish_notification(
        row_id,
        attempts=attempts,
        delivered_at=None,
        last_error=error,
        next_attempt_at=_stamp(moment + timedelta(seconds=delay)),
    )
    return "failed" if attempts >= MAX_ATTEMPTS else "retrying"


# Reading the outbox ---------------------------------------------------------------------------------------
def list_outbox(account: Account, *, pending_only: bool = False) -> list[dict[str, Any]]:
    """Outbox rows as anyone may see them: the sink masked, the delivery status, the payload."""
    rows = account.catalog.list_notifications(pending_only=pending_only, max_attempts=MAX_ATTEMPTS)
    return [_row_view(row) for row in rows]


def _row_view(row: OutboxRow) -> dict[str, Any]:
    status = row.status(MAX_ATTEMPTS)
    return {
        "id": row.id,
        "backup_vault_name": row.vault_name,
        "event": row.event,
        "state": row.payload.get("state"),
        "sink": json.loads(row.sink)["display"],
        "delivery_status": status.value,
        "attempts": row.attempts,
        "next_attempt_at": row.next_attempt_at if status == DeliveryStatus.PENDING else None,
        "delivered_at": row.delivered_at,
        "last_error": row.last_error,
        "created_at": row.created_at,
        "summary": row.payload.get("summary"),
        "payload": row.payload,
    }


def _stamp(moment: datetime) -> str:
    """UTC in one fixed format, so the catalog compares outbox times as text."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
