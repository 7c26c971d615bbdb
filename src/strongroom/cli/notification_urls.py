"""Sink URLs for ``strongroom vaults put-notifications``: one per line from STRONGROOM_NOTIFICATION_URLS or
stdin (asked for without echo in a terminal), never from arguments, since they hold secrets."""

from __future__ import annotations

import getpass
import os
import sys

from strongroom.errors import UsageError
from strongroom.services import notifications
from strongroom.services.notifications import Sink

ENV_NOTIFICATION_URLS = "STRONGROOM_NOTIFICATION_URLS"
SINK_OPTIONS = ("events", "exclude_states")


def url_lines() -> list[str]:
    text = os.environ.get(ENV_NOTIFICATION_URLS)
    if text is None:
        text = _prompted() if sys.stdin.isatty() else sys.stdin.read()
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        raise UsageError(
            f"no sink URLs: give them one per line in {ENV_NOTIFICATION_URLS} or on stdin",
            hint="URLs hold secrets, so they are never command-line arguments",
        )
    return lines


def _prompted() -> str:
    lines = []
    while line := getpass.getpass("Sink URL (empty line to finish): ").strip():
        lines.append(line)
    return "\n".join(lines)


def sink(line: str) -> Sink:
    """``URL [events=E,E] [exclude_states=S,S]``: a sink, optionally with its own filter."""
    url, *options = line.split()
    fields: dict[str, tuple[str, ...]] = {}
    for option in options:
        key, _, value = option.partition("=")
        if key not in SINK_OPTIONS:
            raise UsageError(
                f"unknown sink option after the sink {notifications.mask_url(url)} (not shown: it may "
                "be part of a secret)",
                hint="A line is: URL [events=E,E] [exclude_states=S,S]",
            )
        fields[key] = tuple(v.strip().upper() for v in value.split(",") if v.strip())
    return Sink(url, fields.get("events"), fields.get("exclude_states"))
