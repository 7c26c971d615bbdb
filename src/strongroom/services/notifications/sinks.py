"""Notification sinks: the URLs Strongroom can send to, masked for display, and sending one event to one.

``log:///ABSOLUTE/PATH`` (one JSON line per event), ``webhook+https://…`` / ``webhook+http://…`` (POSTs
exactly the JSON payload), and every URL Apprise knows (Slack, email, Microsoft Teams, ``json://``…).
Sink URLs hold secrets: what a sink answers is scrubbed of its URL, and Apprise's own log (which names
whole URLs) never reaches ours.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from strongroom.errors import ConfigError
from strongroom.services.notifications.messages import message

LOG_SCHEME = "log://"
WEBHOOK_PREFIX = "webhook+"
APPRISE_JSON_SCHEMES = ("json", "jsons", "form", "forms", "xml", "xmls")

_APPRISE_LOG = logging.getLogger("apprise")
_APPRISE_LOG.addHandler(logging.NullHandler())
_APPRISE_LOG.propagate = False  # Apprise logs whole URLs ("Unparseable URL ..."): never into ours
_APPRISE_LOCK = threading.Lock()


class DeliveryError(Exception):
    """A sink refused or did not answer; the message is already scrubbed of the sink's URL."""


def check_url(url: str) -> None:
    """ConfigError (naming the URL masked) unless a built-in sink or Apprise can send to it."""
    url = url.strip()
    if url.startswith(LOG_SCHEME):
        if not url[len(LOG_SCHEME) :].startswith("/"):
            raise ConfigError(f"notification sink {mask_url(url)}: a log sink is log:///ABSOLUTE/PATH")
        return
    if url.startswith(WEBHOOK_PREFIX):
        target = urlsplit(url[len(WEBHOOK_PREFIX) :])
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
        parts = urlsplit(url[len(WEBHOOK_PREFIX) :] if url.startswith(WEBHOOK_PREFIX) else url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host or not (host == "localhost" or "." in host or ":" in host):
        return None
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port}" if port else shown


def send(url: str, payload: dict[str, Any], timeout: float) -> None:
    """Send one event to one sink; DeliveryError (scrubbed of the URL) when it does not arrive."""
    try:
        if url.startswith(LOG_SCHEME):
            _append_line(Path(url[len(LOG_SCHEME) :]), payload)
        elif url.startswith(WEBHOOK_PREFIX):
            _post_json(url[len(WEBHOOK_PREFIX) :], payload, timeout)
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
    response = httpx.post(
        target, content=json.dumps(payload, sort_keys=True), headers=headers, timeout=timeout, follow_redirects=False
    )
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
        sent = sender.notify(
            body=body, title=payload["summary"], notify_type=_notify_type(payload), body_format=body_format
        )
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
