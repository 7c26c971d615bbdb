"""Which resources a backup plan selects: the NHS blueprint's tag selection, exactly.

A plan (the stored, blueprint-shaped dict of config/schema.py ``BackupPlanConfig``) selects a resource
when all of these hold:

- ``enable`` is not false;
- ``compliance_resource_types``, when given, names the resource's type (exact match, e.g. ``postgres``);
- the resource's tag ``selection_tag`` equals ``selection_tag_value`` (default ``"True"``), and every
  ``{key, value}`` of ``selection_tags`` matches too (ANDed).

Tag keys and values compare exactly, case included: ``True`` is not ``true``, as in AWS. A plan without a
``selection_tag`` selects nothing.
"""

from __future__ import annotations

from typing import Any

DEFAULT_TAG_VALUE = "True"


def selects(plan: dict[str, Any], resource_type: str, tags: dict[str, str]) -> bool:
    """True when ``plan`` selects a resource of ``resource_type`` carrying ``tags``."""
    if not plan.get("enable", True):
        return False
    types = plan.get("compliance_resource_types") or []
    if types and resource_type not in types:
        return False
    wanted = required_tags(plan)
    return bool(wanted) and all(tags.get(key) == value for key, value in wanted)


def required_tags(plan: dict[str, Any]) -> list[tuple[str, str]]:
    """The (key, value) pairs a resource must carry, all of them: the selection tag, then ``selection_tags``."""
    key = plan.get("selection_tag")
    if not key:
        return []
    value = plan.get("selection_tag_value")
    first = (key, DEFAULT_TAG_VALUE if value is None else value)
    return [first, *((item["key"], item["value"]) for item in plan.get("selection_tags") or [])]
