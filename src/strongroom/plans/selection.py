"""Which resources a backup plan selects: the NHS blueprint's tag selection, exactly.

A plan (plans/records.py ``BackupPlan``, from config/schema.py ``BackupPlanConfig``) selects a resource
when all of these hold:

- ``enable`` is not false;
- ``compliance_resource_types``, when given, names the resource's type (exact match, e.g. ``postgres``);
- the resource's tag ``selection_tag`` equals ``selection_tag_value`` (default ``"True"``), and every
  ``{key, value}`` of ``selection_tags`` matches too (ANDed).

Tag keys and values compare exactly, case included: ``True`` is not ``true``, as in AWS. A plan without a
``selection_tag`` selects nothing.
"""

from __future__ import annotations

from strongroom.plans.records import BackupPlan

DEFAULT_TAG_VALUE = "True"


def selects(plan: BackupPlan, resource_type: str, tags: dict[str, str]) -> bool:
    """True when ``plan`` selects a resource of ``resource_type`` carrying ``tags``."""
    if not plan.enable:
        return False
    types = plan.compliance_resource_types
    if types and resource_type not in types:
        return False
    wanted = required_tags(plan)
    return bool(wanted) and all(tags.get(key) == value for key, value in wanted)


def required_tags(plan: BackupPlan) -> list[tuple[str, str]]:
    """The (key, value) pairs a resource must carry, all of them: the selection tag, then ``selection_tags``."""
    if not plan.selection_tag:
        return []
    return [(plan.selection_tag, plan.selection_tag_value), *plan.selection_tags]
