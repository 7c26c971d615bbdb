"""A vault's notification settings (AWS PutBackupVaultNotifications), checked, stored and shown.

``events`` the vault emits, ``exclude_states`` (the blueprint's SNS filter ``{"State": [{"anything-but":
"COMPLETED"}]}``) and sinks, each a URL with optional ``events`` / ``exclude_states`` of its own. Sink URLs
hold secrets (Slack tokens, webhook paths): they are sealed with the account key (services/credentials.py)
in ``vaults.notifications`` and shown only masked (scheme and host).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from strongroom.errors import NotFoundError, UsageError
from strongroom.model import NOTIFICATION_EVENTS, NOTIFICATION_STATES, VaultRecord
from strongroom.services.account import Account
from strongroom.services.credentials import open_secret, seal_secret
from strongroom.services.notifications.sinks import check_url, mask_url

EVENTS: frozenset[str] = frozenset(NOTIFICATION_EVENTS)
STATES: frozenset[str] = frozenset(NOTIFICATION_STATES)


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
        return {
            "events": list(self.events),
            "exclude_states": list(self.exclude_states),
            "sinks": [_sink_view(sink) for sink in self.sinks],
        }


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
        checked.append(Sink(sink.url.strip(), sorted_names(sink.events), sorted_names(sink.exclude_states)))
    return Settings(tuple(sorted(set(events))), tuple(sorted(set(exclude_states))), tuple(checked))


def _check_names(values: list[str], allowed: frozenset[str] | set[str], what: str) -> None:
    unknown = [value for value in values if value not in allowed]
    if unknown:
        raise UsageError(f"unknown {what} {', '.join(unknown)}", hint=f"Known: {', '.join(sorted(allowed))}")


def sorted_names(values: tuple[str, ...] | list[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(sorted(set(values)))


# Storing settings -----------------------------------------------------------------------------------
def sink_label(vault_name: str) -> str:
    return f"notification sink of vault {vault_name}"


def put_notifications(account: Account, vault_name: str, wanted: Settings) -> dict[str, Any]:
    record = account.catalog.get_vault(vault_name)
    sinks = [
        {
            "sealed_url": seal_secret(account, sink.url, sink_label(record.name)),
            "display": mask_url(sink.url),
            "events": _listed(sink.events),
            "exclude_states": _listed(sink.exclude_states),
        }
        for sink in wanted.sinks
    ]
    stored = {"events": list(wanted.events), "exclude_states": list(wanted.exclude_states), "sinks": sinks}
    account.catalog.update_vault(record.name, notifications=stored)
    return get_notifications(account, record.name)


def get_notifications(account: Account, vault_name: str) -> dict[str, Any]:
    """The vault's settings, URLs masked (no settings: empty lists)."""
    record = account.catalog.get_vault(vault_name)
    stored = record.notifications or {}
    sinks = [
        {"sink": s["display"], "events": s.get("events"), "exclude_states": s.get("exclude_states")}
        for s in stored.get("sinks", [])
    ]
    return {
        "backup_vault_name": record.name,
        "backup_vault_arn": record.arn,
        "events": stored.get("events", []),
        "exclude_states": stored.get("exclude_states", []),
        "sinks": sinks,
    }


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
    sinks = tuple(
        Sink(
            open_secret(account, s["sealed_url"], sink_label(record.name)),
            sorted_names(s.get("events")),
            sorted_names(s.get("exclude_states")),
        )
        for s in stored["sinks"]
    )
    return Settings(tuple(stored["events"]), tuple(stored["exclude_states"]), sinks)
