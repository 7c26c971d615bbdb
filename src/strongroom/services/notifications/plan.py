"""``strongroom plan`` / ``apply`` for vault notifications: the changes a configuration file asks for, and
applying one."""

from __future__ import annotations

import json
from typing import Any

from strongroom.config.changes import CREATE, DELETE, UPDATE, Change
from strongroom.config.loader import LoadedConfig
from strongroom.config.schema import NotificationsConfig
from strongroom.errors import ConfigError, StrongroomError
from strongroom.services.account import Account
from strongroom.services.notifications.sinks import mask_url
from strongroom.services.notifications.vault_settings import (
    Settings,
    Sink,
    delete_notifications,
    put_notifications,
    settings,
    sorted_names,
    stored_settings,
)

CHANGE_KIND = "vault_notifications"  # the plan's change type


def from_config(config: NotificationsConfig) -> Settings:
    sinks = [
        Sink(s) if isinstance(s, str) else Sink(s.url, sorted_names(s.events), sorted_names(s.exclude_states))
        for s in config.sinks
    ]
    return settings(list(config.events), list(config.exclude_states), sinks)


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
    if current is None:
        after = wanted.view() if wanted else None
        return Change(CREATE, CHANGE_KIND, name, after=after, details=tuple(_lines(after)))
    before = current.view()
    if wanted is None:
        return Change(DELETE, CHANGE_KIND, name, before=before)
    after = wanted.view()
    details = [
        f"{key}: {json.dumps(before[key])} -> {json.dumps(after[key])}"
        for key in ("events", "exclude_states")
        if before[key] != after[key]
    ]
    if current.sinks != wanted.sinks:
        details.append(f"sinks: {_shown_sinks(current)} -> {_shown_sinks(wanted)} (URLs hidden)")
    return Change(UPDATE, CHANGE_KIND, name, before=before, after=after, details=tuple(details))


def _lines(view: dict[str, Any] | None) -> list[str]:
    view = view or {}
    return [
        f"events = {json.dumps(view['events'])}",
        f"exclude_states = {json.dumps(view['exclude_states'])}",
        f"sinks = {json.dumps([s['sink'] for s in view['sinks']])}",
    ]


def _shown_sinks(current: Settings) -> str:
    return json.dumps([mask_url(sink.url) for sink in current.sinks])


def apply_change(account: Account, loaded: LoadedConfig, vault_name: str) -> None:
    config = loaded.config.vaults[vault_name].notifications
    if config is None:
        delete_notifications(account, vault_name)
    else:
        put_notifications(account, vault_name, from_config(config))
