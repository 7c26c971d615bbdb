"""Registering the resources an account protects."""

from __future__ import annotations

import re

from strongroom.adapters.base import get_adapter
from strongroom.errors import ConfigError
from strongroom.model import Resource, iso, now
from strongroom.services.account import Account

RESOURCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def add_resource(account: Account, resource_id: str, type_name: str, settings: dict, tags: dict[str, str]) -> Resource:
    if not RESOURCE_ID.match(resource_id):
        raise ConfigError(
            f"'{resource_id}' is not a valid resource id",
            hint="Use letters, digits, '.', '_' and '-', starting with a letter or digit",
        )
    adapter = get_adapter(type_name)
    resource = Resource(resource_id, type_name, adapter.validate_settings(settings), tags, iso(now()) or "")
    account.catalog.add_resource(resource)
    return resource


def parse_tags(pairs: list[str], what: str = "tag") -> dict[str, str]:
    tags = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"{what} '{pair}' is not KEY=VALUE")
        tags[key] = value
    return tags
