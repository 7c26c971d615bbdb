"""Restore testing hooks' HTTP headers, sealed in the catalog as notification URLs are.

A hook's ``headers`` may carry a token. ``apply`` stores each value sealed with the account key (AES-GCM,
bound to the plan, selection and header name, so a sealed value cannot be moved to another header); the
plans are opened where a hook is called and where ``apply`` compares the file with what is applied. A value
stored before sealing (no prefix) is read as it is and sealed by the next ``apply`` that changes the plan.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from strongroom.services.account import Account
from strongroom.services.credentials import open_secret, seal_secret

SEALED = "sealed:"


def seal_headers(account: Account, plans: dict[str, Any]) -> dict[str, Any]:
    """The stored plans with every hook header value sealed."""

    def seal(label: str, value: str) -> str:
        return value if value.startswith(SEALED) else SEALED + seal_secret(account, value, label)

    return _map_headers(plans, seal)


def open_headers(account: Account, plans: dict[str, Any]) -> dict[str, Any]:
    """The stored plans with every sealed hook header value opened (IntegrityError if one was tampered with)."""

    def opened(label: str, value: str) -> str:
        return open_secret(account, value.removeprefix(SEALED), label) if value.startswith(SEALED) else value

    return _map_headers(plans, opened)


def _map_headers(plans: dict[str, Any], change: Callable[[str, str], str]) -> dict[str, Any]:
    changed = copy.deepcopy(plans)
    for plan_name, plan in changed.items():
        for selection_name, selection in (plan.get("selections") or {}).items():
            hook = (selection.get("validation") or {}).get("hook") or {}
            headers = hook.get("headers") or {}
            for header, value in headers.items():
                label = f"restore testing plan {plan_name} selection {selection_name} header {header}"
                headers[header] = change(label, str(value))
    return changed
