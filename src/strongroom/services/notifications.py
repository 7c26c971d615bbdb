"""Vault notifications: AWS Backup's vault events, queued in an outbox and sent to each vault's sinks.

A vault's settings (AWS PutBackupVaultNotifications): ``events`` it emits, ``exclude_states`` (the
blueprint's SNS filter ``{"State": [{"anything-but": "COMPLETED"}]}``) and sinks, each a URL with
optional ``events`` / ``exclude_states`` of its own. Sink URLs hold secrets (Slack tokens, webhook
paths): they are sealed with the account key (services/credentials.py) in ``vaults.notifications``
and in each outbox row, and shown only masked (scheme and host).

``notify`` never raises: a notification problem never fails a job. It queues one outbox row per
matching sink; jobs then deliver their own rows at once with a short timeout, and ``deliver_pending``
(the daemon on every tick, ``strongroom notifications deliver``) retries failures with exponential
backoff, up to ``MAX_ATTEMPTS``. Sinks: ``log:///ABSOLUTE/PATH`` (one JSON line per event),
``webhook+https://…`` / ``webhook+http://…`` (POSTs exactly the JSON payload), and every URL Apprise
knows (Slack, email, Microsoft Teams, ``json://``…). docs/notifications.md has the details.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from strongroom import model
from strongroom.errors import ConfigError, NotFoundError, StrongroomError, UsageError
from strongroom.model import (
    NOTIFICATION_EVENTS,
    NOTIFICATION_STATES,
    Job,
    JobState,
    JobType,
    RecoveryPoint,
    VaultRecord,
    iso,
)
from strongroom.services.account import Account
from strongroom.services.credentials import open_secret, seal_secret

if TYPE_CHECKING:  # loaded where a configuration is planned: every job imports this module, few plan
    from strongroom.config.changes import Change
    from strongroom.config.loader import LoadedConfig
    from strongroom.config.schema import NotificationsConfig

EVENTS: frozenset[str] = frozenset(NOTIFICATION_EVENTS)
STATES: frozenset[str] = frozenset(NOTIFICATION_STATES)
MAX_ATTEMPTS = 10  # 30 s, 1, 2, 4, 8, 16, 32 min, then hourly: about 3 hours in all
FIRST_RETRY_SECONDS = 30
MAX_RETRY_SECONDS = 3600
JOB_DELIVERY_TIMEOUT = 5.0  # what a job waits for each sink before it leaves the event to the retries
SLOW_SINK_SECONDS = 60  # a sink that timed out is not tried again at once by this process for this long
CHANGE_KIND = "vault_notifications"  # the plan's change type
LOG_SCHEME = "log://"
WEBHOOK_PREFIX = "webhook+"
APPRISE_JSON_SCHEMES = ("json", "jsons", "form", "forms", "xml", "xmls")
DELIVERED, PENDING, FAILED = "DELIVERED", "PENDING", "FAILED"
STARTED_STATE = "RUNNING"

_LOG = logging.getLogger(__name__)
_APPRISE_LOG = logging.getLogger("apprise")
_APPRISE_LOG.addHandler(logging.NullHandler())
_APPRISE_LOG.propagate = False  # Apprise logs whole URLs ("Unparseable URL ..."): never into ours
_APPRISE_LOCK = threading.Lock()
_SLOW_SINKS: dict[str, float] = {}


class DeliveryError(Exception):
    """A sink refused or did not answer; the message is already scrubbed of the sink's URL."""


# Settings -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sink:
    url: str  # the plain URL: in memory only
    events: tuple[str, ...] | None = None  # None: the vault's
    exclude_states: tuple[str, ...] | None = None  # None: the vault's


@dataclass(frozen=True)
class Settings:
    events: tuple[str, ...]
    exclude_states: tuple[str, ...]
    sinks: tuple[Sink, ...]

    def view(self) -> dict[str, Any]:
        """The settings as anyone may see them: sink URLs masked."""
        return {"events": list(self.events), "exclude_states": list(self.exclude_states),
                "sinks": [_sink_view(sink) for sink in self.sinks]}


def _sink_view(sink: Sink) -> dict[str, Any]:
    return {"sink": mask_url(sink.url), "events": _listed(sink.events), "exclude_states": _listed(sink.exclude_states)}


def _listed(values: tuple[str, ...] | None) -> list[str] | None:
    return None if values is None else list(values)


def settings(events: list[str], exclude_states: list[str], sinks: list[Sink]) -> Settings:
    """Checked settings: known events and states, each sink's events among the vault's, URLs Strongroom can use."""
    _check_names(events, EVENTS, "event")
    _check_names(exclude_states, STATES, "state")
    if not events:
        raise UsageError("give at least one event", hint=f"Events: {', '.join(NOTIFICATION_EVENTS)}")
    if not sinks:
        raise UsageError("give at least one sink URL")
    checked = []
    for sink in sinks:
        check_url(sink.url)
        _check_names(list(sink.events or ()), set(events), "sink event (a sink's events are among the vault's):")
        _check_names(list(sink.exclude_states or ()), STATES, "state")
        checked.append(Sink(sink.url.strip(), _sorted(sink.events), _sorted(sink.exclude_states)))
    return Settings(tuple(sorted(set(events))), tuple(sorted(set(exclude_states))), tuple(checked))


def _check_names(values: list[str], allowed: frozenset[str] | set[str], what: str) -> None:
    unknown = [value for value in values if value not in allowed]
    if unknown:
        raise UsageError(f"unknown {what} {', '.join(unknown)}", hint=f"Known: {', '.join(sorted(allowed))}")


def _sorted(values: tuple[str, ...] | list[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(sorted(set(values)))


def from_config(config: NotificationsConfig) -> Settings:
    sinks = [Sink(s) if isinstance(s, str) else Sink(s.url, _sorted(s.events), _sorted(s.exclude_states))
             for s in config.sinks]
    return settings(list(config.events), list(config.exclude_states), sinks)


def check_url(url: str) -> None:
    """ConfigError (naming the URL masked) unless a built-in sink or Apprise can send to it."""
    url = url.strip()
    if url.startswith(LOG_SCHEME):
        if not url[len(LOG_SCHEME):].startswith("/"):
            raise ConfigError(f"notification sink {mask_url(url)}: a log sink is log:///ABSOLUTE/PATH")
        return
    if url.startswith(WEBHOOK_PREFIX):
        target = urlsplit(url[len(WEBHOOK_PREFIX):])
        if target.scheme not in ("http", "https") or not target.hostname:
            raise ConfigError(f"notification sink {mask_url(url)}: write webhook+https://HOST/PATH")
        return
    with _APPRISE_LOCK, _quiet_imports():
        known = _apprise().Apprise.instantiate(url) is not None
    if not known:
        raise ConfigError(
            f"notification sink {mask_url(url)} is not a URL Apprise or Strongroom knows",
            hint="See docs/notifications.md for the Slack, email, Teams, webhook and log:// forms",
        )


def mask_url(url: str) -> str:
    """Scheme and host only (``slack://***`` when the host part is itself a token); a log sink's path is shown."""
    url = url.strip()
    if url.startswith(LOG_SCHEME + "/"):
        return url
    scheme = url.split("://", 1)[0] if "://" in url else "?"
    host = _visible_host(url)
    return f"{scheme}://{host or '***'}"


def _visible_host(url: str) -> str | None:
    try:
        parts = urlsplit(url[len(WEBHOOK_PREFIX):] if url.startswith(WEBHOOK_PREFIX) else url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host or not (host == "localhost" or "." in host or ":" in host):
        return None
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port}" if port else shown


# Storing settings -----------------------------------------------------------------------------------
def _label(vault_name: str) -> str:
    return f"notification sink of vault {vault_name}"


def put_notifications(account: Account, vault_name: str, wanted: Settings) -> dict[str, Any]:
    record = account.catalog.get_vault(vault_name)
    sinks = [{"sealed_url": seal_secret(account, sink.url, _label(record.name)), "display": mask_url(sink.url),
              "events": _listed(sink.events), "exclude_states": _listed(sink.exclude_states)}
             for sink in wanted.sinks]
    stored = {"events": list(wanted.events), "exclude_states": list(wanted.exclude_states), "sinks": sinks}
    account.catalog.update_vault(record.name, notifications=stored)
    return get_notifications(account, record.name)


def get_notifications(account: Account, vault_name: str) -> dict[str, Any]:
    """The vault's settings, URLs masked (no settings: empty lists)."""
    record = account.catalog.get_vault(vault_name)
    stored = record.notifications or {}
    sinks = [{"sink": s["display"], "events": s.get("events"), "exclude_states": s.get("exclude_states")}
             for s in stored.get("sinks", [])]
    return {"backup_vault_name": record.name, "backup_vault_arn": record.arn, "events": stored.get("events", []),
            "exclude_states": stored.get("exclude_states", []), "sinks": sinks}


def delete_notifications(account: Account, vault_name: str) -> None:
    record = account.catalog.get_vault(vault_name)
    if not record.notifications:
        raise NotFoundError(f"vault '{record.name}' has no notification settings")
    account.catalog.update_vault(record.name, notifications=None)


def stored_settings(account: Account, record: VaultRecord) -> Settings | None:
    """The vault's settings with the sink URLs opened (needs the account passphrase)."""
    stored = record.notifications
    if not stored:
        return None
    sinks = tuple(Sink(open_secret(account, s["sealed_url"], _label(record.name)), _sorted(s.get("events")),
                       _sorted(s.get("exclude_states"))) for s in stored["sinks"])
    return Settings(tuple(stored["events"]), tuple(stored["exclude_states"]), sinks)


# plan / apply ------------------------------------------------------------------------------------------
def planned_changes(account: Account, loaded: LoadedConfig) -> list[Change]:
    """One change per vault of the file whose notification settings differ from the account's."""
    existing = {record.name: record for record in account.catalog.list_vaults()}
    changes = []
    for name, vault in loaded.config.vaults.items():
        wanted = _wanted(loaded, name, vault.notifications)
        current = stored_settings(account, existing[name]) if name in existing else None
        if current != wanted:
            changes.append(_change(name, current, wanted))
    return changes


def _wanted(loaded: LoadedConfig, vault: str, config: NotificationsConfig | None) -> Settings | None:
    if config is None:
        return None
    try:
        return from_config(config)
    except StrongroomError as exc:
        where = loaded.where(("vaults", vault, "notifications"))
        raise ConfigError(f"{where}: vaults.{vault}.notifications: {exc.one_line()}") from None


def _change(name: str, current: Settings | None, wanted: Settings | None) -> Change:
    from strongroom.config.changes import CREATE, DELETE, UPDATE, Change

    before, after = (s.view() if s else None for s in (current, wanted))
    if current is None:
        return Change(CREATE, CHANGE_KIND, name, after=after, details=tuple(_lines(after)))
    if wanted is None:
        return Change(DELETE, CHANGE_KIND, name, before=before)
    details = [f"{key}: {json.dumps(before[key])} -> {json.dumps(after[key])}"
               for key in ("events", "exclude_states") if before[key] != after[key]]
    if current.sinks != wanted.sinks:
        details.append(f"sinks: {_shown_sinks(current)} -> {_shown_sinks(wanted)} (URLs hidden)")
    return Change(UPDATE, CHANGE_KIND, name, before=before, after=after, details=tuple(details))


def _lines(view: dict[str, Any] | None) -> list[str]:
    view = view or {}
    return [f"events = {json.dumps(view['events'])}", f"exclude_states = {json.dumps(view['exclude_states'])}",
            f"sinks = {json.dumps([s['sink'] for s in view['sinks']])}"]


def _shown_sinks(current: Settings) -> str:
    return json.dumps([mask_url(sink.url) for sink in current.sinks])


def apply_change(account: Account, loaded: LoadedConfig, vault_name: str) -> None:
    config = loaded.config.vaults[vault_name].notifications
    if config is None:
        delete_notifications(account, vault_name)
    else:
        put_notifications(account, vault_name, from_config(config))


# Queueing ---------------------------------------------------------------------------------------------
def notify(account: Account, vault_name: str, event: str, payload: dict[str, Any]) -> None:
    """Queue ``event`` for every sink of the vault that wants it; never raises."""
    _queue_safely(account, vault_name, event, payload)


def _queue_safely(account: Account, vault_name: str, event: str, payload: dict[str, Any]) -> list[int]:
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
    rows = [{"vault_name": record.name, "event": event, "payload": full, "created_at": stamp,
             "next_attempt_at": stamp, "sink": json.dumps({"display": sink["display"], "sealed": sink["sealed_url"]})}
            for sink in stored["sinks"] if _wants(stored, sink, event, full.get("state"))]
    return account.catalog.add_notifications(rows) if rows else []


def _wants(stored: dict[str, Any], sink: dict[str, Any], event: str, state: str | None) -> bool:
    events = sink.get("events") if sink.get("events") is not None else stored["events"]
    excluded = sink.get("exclude_states") if sink.get("exclude_states") is not None else stored["exclude_states"]
    return event in events and state not in excluded


def _complete(account: Account, record: VaultRecord, event: str, payload: dict[str, Any]) -> dict[str, Any]:
    full = {"state": None, **payload, "event": event, "account_id": account.account_id, "region": account.region,
            "backup_vault_name": record.name, "backup_vault_arn": record.arn}
    full.setdefault("event_time", iso(model.now()))
    full["summary"] = summary(full)
    return full


# Events of jobs and recovery points ---------------------------------------------------------------------
STARTED_EVENTS = {JobType.BACKUP: "BACKUP_JOB_STARTED", JobType.COPY: "COPY_JOB_STARTED",
                  JobType.RESTORE: "RESTORE_JOB_STARTED"}


def job_started(account: Account, job_id: str, **extra: Any) -> None:
    """Queue and deliver the job's *_STARTED event; never raises."""
    _job_event(account, job_id, extra, started=True)


def job_finished(account: Account, job_id: str, **extra: Any) -> None:
    """Queue and deliver the event of a finished job (BACKUP_JOB_COMPLETED with its state, COPY_JOB_SUCCESSFUL
    or COPY_JOB_FAILED, RESTORE_JOB_COMPLETED); nothing for a job still running; never raises."""
    _job_event(account, job_id, extra, started=False)


@contextmanager
def job_events(account: Account, job_id: str) -> Iterator[None]:
    """The job's started event now, its finished event when the block ends (whatever way it ends)."""
    job_started(account, job_id)
    try:
        yield
    finally:
        job_finished(account, job_id)


def _job_event(account: Account, job_id: str, extra: dict[str, Any], *, started: bool) -> None:
    try:
        job = account.catalog.get_job(job_id)
        event = STARTED_EVENTS[job.job_type] if started else _finished_event(job)
        if event is None or not job.vault_name:
            return
        payload = {**job_payload(account, job), **extra}
        if started:
            payload.update(state=STARTED_STATE, start_date=job.start_date or iso(model.now()))
        deliver_now(account, _queue_safely(account, job.vault_name, event, payload))
    except Exception as exc:  # never fail the job
        _LOG.warning("could not notify about job %s: %s", job_id, type(exc).__name__)


def _finished_event(job: Job) -> str | None:
    if not job.state.finished:
        return None
    if job.job_type == JobType.COPY:
        return "COPY_JOB_SUCCESSFUL" if job.state == JobState.COMPLETED else "COPY_JOB_FAILED"
    return "BACKUP_JOB_COMPLETED" if job.job_type == JobType.BACKUP else "RESTORE_JOB_COMPLETED"


def job_payload(account: Account, job: Job) -> dict[str, Any]:
    described = job.as_dict()
    params, result = job.parameters, job.result
    payload = {key: described[key] for key in (
        "job_id", "job_type", "state", "resource_id", "recovery_point_arn", "creation_date", "start_date",
        "completion_date", "duration_seconds", "bytes_processed", "status_message")}
    failed = job.state.finished and job.state != JobState.COMPLETED
    payload["error"] = job.status_message if failed else None
    payload["backup_plan_name"] = params.get("backup_plan_name") or params.get("plan_name")
    payload["rule_name"] = params.get("rule_name")
    payload.update(_point_fields(account, job.recovery_point_arn if job.job_type != JobType.RESTORE else None))
    payload["resource_type"] = payload.get("resource_type") or _resource_type(account, job)
    if job.job_type == JobType.COPY:
        payload.update(_copy_fields(params, result))
    if job.job_type == JobType.RESTORE:
        payload["source_recovery_point_arn"] = job.recovery_point_arn
    return payload


def _point_fields(account: Account, arn: str | None) -> dict[str, Any]:
    if not arn:
        return {"source_bytes": None, "stored_bytes": None, "new_bytes": None}
    rp = account.catalog.get_recovery_point(arn)
    return {"resource_type": rp.resource_type, "source_bytes": rp.source_bytes, "stored_bytes": rp.stored_bytes,
            "new_bytes": rp.new_bytes, "recovery_point_status": rp.status.value}


def _resource_type(account: Account, job: Job) -> str | None:
    try:
        if job.job_type == JobType.RESTORE and job.recovery_point_arn:
            return account.catalog.get_recovery_point(job.recovery_point_arn).resource_type
        return account.catalog.get_resource(job.resource_id or "").type
    except StrongroomError:
        return None


def _copy_fields(params: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    return {"direction": params.get("direction"),
            "source_recovery_point_arn": params.get("source_recovery_point_arn"),
            "source_backup_vault_arn": params.get("source_backup_vault_arn"),
            "destination_backup_vault_arn": params.get("destination_backup_vault_arn"),
            "destination_recovery_point_arn": result.get("destination_recovery_point_arn"),
            "bytes_transferred": result.get("bytes_transferred"), "bytes_on_wire": result.get("bytes_on_wire")}


def recovery_point_modified(account: Account, recovery_point: str, change: str, **extra: Any) -> None:
    """Queue and deliver RECOVERY_POINT_MODIFIED (``state``: the point's status now); never raises."""
    try:
        rp = account.catalog.get_recovery_point(recovery_point)
        payload = {**_point_payload(rp), "change": change, **extra}
        deliver_now(account, _queue_safely(account, rp.vault_name, "RECOVERY_POINT_MODIFIED", payload))
    except Exception as exc:  # never fail the operation
        _LOG.warning("could not notify about recovery point %s: %s", recovery_point, type(exc).__name__)


def _point_payload(rp: RecoveryPoint) -> dict[str, Any]:
    described = rp.as_dict()
    keys = ("recovery_point_arn", "resource_id", "resource_type", "status_message", "creation_date",
            "completion_date", "source_bytes", "stored_bytes", "new_bytes", "lifecycle", "calculated_lifecycle",
            "backup_job_id", "source_recovery_point_arn")
    return {"state": rp.status.value, **{key: described[key] for key in keys}}


# The message people read ------------------------------------------------------------------------------
_TITLES = {
    "BACKUP_JOB_STARTED": "Backup job started", "BACKUP_JOB_COMPLETED": "Backup job {state}",
    "COPY_JOB_STARTED": "Copy job started", "COPY_JOB_SUCCESSFUL": "Copy job COMPLETED",
    "COPY_JOB_FAILED": "Copy job {state}", "RESTORE_JOB_STARTED": "Restore job started",
    "RESTORE_JOB_COMPLETED": "Restore job {state}", "RECOVERY_POINT_MODIFIED": "Recovery point {state}",
}


def summary(payload: dict[str, Any]) -> str:
    """One line: what happened to which resource in which vault."""
    title = _TITLES.get(payload["event"], payload["event"]).format(state=payload.get("state") or "")
    resource = payload.get("resource_id") or "?"
    return f"{title}: {resource} in vault {payload['backup_vault_name']} (account {payload['account_id']})"


def message(payload: dict[str, Any]) -> str:
    """A few Markdown lines under the summary: error, job, plan, sizes, duration, recovery point."""
    lines = []
    if payload.get("error"):
        lines.append(f"**Error:** {payload['error']}")
    elif payload.get("change"):
        lines.append(f"**Change:** {payload['change']}")
    if payload.get("job_id"):
        lines.append(f"**Job:** `{payload['job_id']}` ({payload.get('job_type', '').lower()})")
    if payload.get("backup_plan_name") or payload.get("rule_name"):
        lines.append(f"**Plan:** {payload.get('backup_plan_name') or '?'}, rule {payload.get('rule_name') or '?'}")
    sizes = _sizes(payload)
    if sizes:
        lines.append(f"**Size:** {sizes}")
    if payload.get("duration_seconds") is not None:
        lines.append(f"**Duration:** {payload['duration_seconds']:g} s")
    arn = payload.get("destination_recovery_point_arn") or payload.get("recovery_point_arn")
    if arn:
        lines.append(f"**Recovery point:** `{arn}`")
    lines.append(f"**When:** {payload.get('completion_date') or payload.get('event_time')}")
    return "\n".join(lines)


def _sizes(payload: dict[str, Any]) -> str:
    if payload.get("source_bytes"):
        return (f"{_bytes(payload['source_bytes'])} read, {_bytes(payload.get('stored_bytes'))} stored, "
                f"{_bytes(payload.get('new_bytes'))} new")
    if payload.get("bytes_transferred"):
        return f"{_bytes(payload['bytes_transferred'])} copied"
    return ""


def _bytes(count: int | None) -> str:
    value = float(count or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


# Delivery ------------------------------------------------------------------------------------------------
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


def _deliver(account: Account, rows: list[dict[str, Any]], moment: datetime, timeout: float, *,
             skip_slow: bool) -> dict[str, Any]:
    counts = _counts()
    for row in rows:
        if skip_slow and _SLOW_SINKS.get(row["sink"], 0) > time.monotonic():
            continue
        lease = _stamp(moment + timedelta(seconds=timeout * 3 + 60))
        if not account.catalog.claim_notification(row["id"], row["next_attempt_at"], MAX_ATTEMPTS, lease):
            continue  # another process took it
        counts["attempted"] += 1
        counts[_attempt(account, row, moment, timeout)] += 1
    return counts


def _attempt(account: Account, row: dict[str, Any], moment: datetime, timeout: float) -> str:
    sink = json.loads(row["sink"])
    attempts = row["attempts"] + 1
    started = time.monotonic()
    try:
        url = open_secret(account, sink["sealed"], _label(row["vault_name"]))
        send(url, row["payload"], timeout)
    except Exception as exc:  # send() scrubs its errors; opening the URL names no URL
        if time.monotonic() - started >= timeout * 0.9:
            _SLOW_SINKS[row["sink"]] = time.monotonic() + SLOW_SINK_SECONDS
        return _failed(account, row["id"], attempts, moment, f"{sink['display']}: {_reason(exc)}"[:1000])
    account.catalog.finish_notification(row["id"], attempts=attempts, next_attempt_at=_stamp(moment),
                                        delivered_at=_stamp(moment), last_error=None)
    return "delivered"


def _reason(exc: Exception) -> str:
    if isinstance(exc, DeliveryError):
        return str(exc)
    if isinstance(exc, StrongroomError):
        return exc.one_line()
    return f"the stored sink URL cannot be opened: {type(exc).__name__}"


def _failed(account: Account, row_id: int, attempts: int, moment: datetime, error: str) -> str:
    delay = min(FIRST_RETRY_SECONDS * 2 ** (attempts - 1), MAX_RETRY_SECONDS)
    account.catalog.finish_notification(row_id, attempts=attempts, delivered_at=None, last_error=error,
                                        next_attempt_at=_stamp(moment + timedelta(seconds=delay)))
    return "failed" if attempts >= MAX_ATTEMPTS else "retrying"


def send(url: str, payload: dict[str, Any], timeout: float) -> None:
    """Send one event to one sink; DeliveryError (scrubbed of the URL) when it does not arrive."""
    try:
        if url.startswith(LOG_SCHEME):
            _append_line(Path(url[len(LOG_SCHEME):]), payload)
        elif url.startswith(WEBHOOK_PREFIX):
            _post_json(url[len(WEBHOOK_PREFIX):], payload, timeout)
        else:
            _send_apprise(url, payload, timeout)
    except DeliveryError as exc:
        raise DeliveryError(scrub(str(exc), url)) from None
    except Exception as exc:
        raise DeliveryError(scrub(f"{type(exc).__name__}: {exc}", url)) from None


def _append_line(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(payload, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)  # one write with O_APPEND: lines of concurrent writers never interleave
    finally:
        os.close(fd)


def _post_json(target: str, payload: dict[str, Any], timeout: float) -> None:
    import httpx  # only a webhook needs it: every job imports this module

    headers = {"Content-Type": "application/json", "User-Agent": "Strongroom", "X-Strongroom-Event": payload["event"]}
    response = httpx.post(target, content=json.dumps(payload, sort_keys=True), headers=headers, timeout=timeout,
                          follow_redirects=False)
    if not 200 <= response.status_code < 300:
        raise DeliveryError(f"HTTP {response.status_code} from the webhook")


def _send_apprise(url: str, payload: dict[str, Any], timeout: float) -> None:
    apprise = _apprise()
    generic = url.split("://", 1)[0].lower() in APPRISE_JSON_SCHEMES
    body = json.dumps(payload, sort_keys=True) if generic else message(payload)
    body_format = apprise.NotifyFormat.TEXT if generic else apprise.NotifyFormat.MARKDOWN
    with _APPRISE_LOCK, _captured() as captured:
        with _quiet_imports():
            sender = apprise.Apprise(asset=_asset())
            added = sender.add(url)
        if not added:
            raise DeliveryError("Apprise no longer accepts this URL")
        for service in sender:
            service.socket_connect_timeout = service.socket_read_timeout = timeout
        sent = sender.notify(body=body, title=payload["summary"], notify_type=_notify_type(payload),
                             body_format=body_format)
    if not sent:
        raise DeliveryError(" / ".join(captured[-2:]) or "Apprise could not deliver the notification")


def _notify_type(payload: dict[str, Any]) -> str:
    state = payload.get("state")
    if state in ("FAILED", "ABORTED", "EXPIRED", "PARTIAL"):
        return "failure"
    if payload["event"] == "RECOVERY_POINT_MODIFIED":
        return "warning" if state == "DELETED" else "info"
    return "success" if state == "COMPLETED" else "info"


def _apprise() -> Any:
    with _quiet_imports():
        import apprise
    return apprise


def _asset() -> Any:
    return _apprise().AppriseAsset(app_id="Strongroom", app_desc="Strongroom backups", storage_mode="memory")


@contextmanager
def _quiet_imports() -> Iterator[None]:
    """Apprise loads its plugins on first use; some import deprecated modules (imghdr) that warn."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


@contextmanager
def _captured() -> Iterator[list[str]]:
    """Apprise's warnings and errors while the block runs (the caller scrubs them before use)."""
    lines: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = _Collect(level=logging.WARNING)
    previous = _APPRISE_LOG.level
    _APPRISE_LOG.addHandler(handler)
    if previous == logging.NOTSET or previous > logging.WARNING:
        _APPRISE_LOG.setLevel(logging.WARNING)
    try:
        yield lines
    finally:
        _APPRISE_LOG.removeHandler(handler)
        _APPRISE_LOG.setLevel(previous)


def scrub(text: str, url: str) -> str:
    """``text`` without any secret-looking part of ``url`` (user, password, path segments, query values)."""
    for part in sorted(_secret_parts(url), key=len, reverse=True):
        text = text.replace(part, "***")
    return text


def _secret_parts(url: str) -> set[str]:
    rest = url.split("://", 1)[-1]
    parts = {url, rest, unquote(url), unquote(rest)}
    for form in (rest, unquote(rest)):
        parts |= {piece for piece in re.split(r"[/:@?&=#,;+]+", form) if len(piece) >= 4}
    host = (_visible_host(url) or "").split(":")[0].strip("[]")
    return {part for part in parts if part and part != host}


# Reading the outbox ---------------------------------------------------------------------------------------
def list_outbox(account: Account, *, pending_only: bool = False) -> list[dict[str, Any]]:
    """Outbox rows as anyone may see them: the sink masked, the delivery status, the payload."""
    rows = account.catalog.list_notifications(pending_only=pending_only, max_attempts=MAX_ATTEMPTS)
    return [_row_view(row) for row in rows]


def _row_view(row: dict[str, Any]) -> dict[str, Any]:
    status = DELIVERED if row["delivered_at"] else FAILED if row["attempts"] >= MAX_ATTEMPTS else PENDING
    return {"id": row["id"], "backup_vault_name": row["vault_name"], "event": row["event"],
            "state": row["payload"].get("state"), "sink": json.loads(row["sink"])["display"],
            "delivery_status": status, "attempts": row["attempts"],
            "next_attempt_at": row["next_attempt_at"] if status == PENDING else None,
            "delivered_at": row["delivered_at"], "last_error": row["last_error"], "created_at": row["created_at"],
            "summary": row["payload"].get("summary"), "payload": row["payload"]}


def _stamp(moment: datetime) -> str:
    """UTC in one fixed format, so the catalog compares outbox times as text."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
