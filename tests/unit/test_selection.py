"""Tag selection of backup plans, as the NHS blueprint does it: exact, case-sensitive, ANDed."""

from __future__ import annotations

from typing import Any

import pytest

from strongroom.plans import selection
from strongroom.plans.records import BackupPlan

# The seed's plans, in the stored (blueprint-shaped) form: PostgreSQL on, DynamoDB switched off.
POSTGRES: dict[str, Any] = {
    "enable": True,
    "selection_tag": "BackupSource",
    "selection_tag_value": "True",
    "selection_tags": [],
    "compliance_resource_types": ["postgres"],
    "rules": [],
}
DYNAMODB: dict[str, Any] = {**POSTGRES, "enable": False, "compliance_resource_types": ["dynamodb"]}


def selects(plan: dict[str, Any], resource_type: str, tags: dict[str, str]) -> bool:
    """``selection.selects`` of the plan stored as ``plan``."""
    return selection.selects(BackupPlan.of(plan), resource_type, tags)


def required_tags(plan: dict[str, Any]) -> list[tuple[str, str]]:
    return selection.required_tags(BackupPlan.of(plan))


@pytest.mark.parametrize(
    ("value", "selected"),
    [
        ("True", True),
        ("true", False),
        ("TRUE", False),
        ("True ", False),
        ("yes", False),
        ("", False),
    ],
)
def test_the_tag_value_matches_exactly_case_included(value: str, selected: bool) -> None:
    assert selects(POSTGRES, "postgres", {"BackupSource": value}) is selected


def test_the_tag_key_is_case_sensitive_too() -> None:
    assert not selects(POSTGRES, "postgres", {"backupsource": "True"})
    assert not selects(POSTGRES, "postgres", {})


def test_the_tag_value_defaults_to_True() -> None:
    plan = {"selection_tag": "BackupSource"}
    assert selects(plan, "postgres", {"BackupSource": "True"})
    assert not selects(plan, "postgres", {"BackupSource": "true"})
    assert required_tags(plan) == [("BackupSource", "True")]


def test_a_custom_tag_value() -> None:
    plan = {**POSTGRES, "selection_tag_value": "nightly"}
    assert selects(plan, "postgres", {"BackupSource": "nightly"})
    assert not selects(plan, "postgres", {"BackupSource": "True"})


def test_selection_tags_are_anded_with_the_selection_tag() -> None:
    plan = {
        **POSTGRES,
        "selection_tags": [{"key": "environment", "value": "production"}, {"key": "team", "value": "mavis"}],
    }
    everything = {"BackupSource": "True", "environment": "production", "team": "mavis", "other": "x"}
    assert selects(plan, "postgres", everything)
    assert not selects(plan, "postgres", {**everything, "team": "Mavis"})
    assert not selects(plan, "postgres", {k: v for k, v in everything.items() if k != "environment"})
    assert not selects(plan, "postgres", {**everything, "BackupSource": "False"})
    assert required_tags(plan) == [("BackupSource", "True"), ("environment", "production"), ("team", "mavis")]


def test_compliance_resource_types_limit_the_plan_to_those_types() -> None:
    tags = {"BackupSource": "True"}
    assert selects(POSTGRES, "postgres", tags)
    assert not selects(POSTGRES, "postgres-cluster", tags)
    assert not selects(POSTGRES, "Postgres", tags)
    both = {**POSTGRES, "compliance_resource_types": ["postgres", "postgres-cluster"]}
    assert selects(both, "postgres-cluster", tags)


def test_without_compliance_resource_types_every_type_is_selected() -> None:
    plan = {**POSTGRES, "compliance_resource_types": []}
    assert selects(plan, "postgres-cluster", {"BackupSource": "True"})
    assert selects(
        {k: v for k, v in plan.items() if k != "compliance_resource_types"}, "directory", {"BackupSource": "True"}
    )


def test_a_disabled_plan_selects_nothing() -> None:
    assert not selects(DYNAMODB, "dynamodb", {"BackupSource": "True"})
    assert not selects({**POSTGRES, "enable": False}, "postgres", {"BackupSource": "True"})


def test_one_plan_per_resource_type_as_the_seed_does() -> None:
    plans = {"postgres": POSTGRES, "dynamodb": DYNAMODB}
    resources = {
        "mavis-db": ("postgres", {"BackupSource": "True"}),
        "sessions": ("dynamodb", {"BackupSource": "True"}),
        "scratch": ("postgres", {"BackupSource": "true"}),
    }
    chosen = {
        (plan, resource)
        for plan, spec in plans.items()
        for resource, (kind, tags) in resources.items()
        if selects(spec, kind, tags)
    }
    assert chosen == {("postgres", "mavis-db")}


def test_a_plan_without_a_selection_tag_selects_nothing() -> None:
    assert not selects({"enable": True}, "postgres", {"BackupSource": "True"})
    assert required_tags({}) == []
