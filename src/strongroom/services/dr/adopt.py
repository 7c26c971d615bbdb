"""``adopt_resource``: the restored database becomes the protected resource (the seed's ``terraform
import`` + ``apply``), so the original's backup plans pick it up and backups continue.

``adopt_as: new_resource`` (default) registers it under its own id (the restored identifier) with the
original's tags, and the original loses its tags (``untag``) so plans stop trying the dead one;
``adopt_as: original_resource`` points the original resource at the restored database instead (same
id, tags and recovery-point history: what a config-managed resource wants). Either way a plan must
select it (``require_plan``), and ``backup_now`` takes its first backup under each selecting rule.
"""

from __future__ import annotations

from typing import Any

from strongroom.config.runbook import AdoptResourceStep
from strongroom.errors import ConfigError, IdentifierInUseError, NotFoundError, StrongroomError
from strongroom.model import Resource
from strongroom.plans.selection import selects
from strongroom.services.backup import create_backup_job, run_backup_job
from strongroom.services.dr.context import StepContext
from strongroom.services.resources import add_resource
from strongroom.services.scheduler import applied_plans, rule_snapshot

Ctx = StepContext[AdoptResourceStep]
REPLACED_BY = "strongroom:replaced-by"


class AdoptResource:
    def run(self, ctx: Ctx) -> dict[str, Any]:
        restored = ctx.required("restore")
        original = _original(ctx)
        tags = {**(original.tags if original else {}), **ctx.step.tags}
        rules = _selecting_rules(ctx, restored["resource_type"], tags)
        resource_id = _resource_id(ctx, restored, original)
        outputs: dict[str, Any] = {
            "resource_id": resource_id,
            "tags": tags,
            "plans": sorted({plan for plan, _ in rules}),
        }
        if ctx.rehearsal:
            ctx.changes.append(
                f"checked: plans {', '.join(outputs['plans']) or 'none'} would back up the restored"
                " database (a rehearsal adopts nothing)"
            )
            return outputs
        if ctx.step.adopt_as == "original_resource":
            _repoint(ctx, original, restored)
        else:
            _register(ctx, resource_id, restored, tags, original)
        if ctx.step.backup_now:
            outputs["backups"] = _first_backups(ctx, resource_id, rules)
        return outputs

    def describe(self, ctx: Ctx) -> tuple[str, dict[str, Any], list[str]]:
        restored = ctx.previous("restore") or {}
        problems: list[str] = []
        try:
            original = _original(ctx)
            tags = {**(original.tags if original else {}), **ctx.step.tags}
            plans = sorted({plan for plan, _ in _selecting_rules(ctx, restored.get("resource_type", ""), tags)})
        except StrongroomError as exc:  # a dry run lists every problem
            problems.append(exc.one_line())
            original, plans = None, []
        name = original.id if original else "the original resource"
        how = (
            f"point resource {name} at {restored.get('identifier', 'the restored database')}"
            if ctx.step.adopt_as == "original_resource"
            else f"register {restored.get('identifier', 'the restored database')} as a resource with {name}'s tags"
            + (f" and remove {name}'s tags" if ctx.step.original_action == "untag" else "")
        )
        after = " and take a first backup" if ctx.step.backup_now else ""
        return f"{how}; backup plans {', '.join(plans) or '(none)'} select it{after}", {"plans": plans}, problems

    def clean_up(self, ctx: Ctx, outputs: dict[str, Any]) -> list[str]:
        return []  # a rehearsal registers nothing


def _original(ctx: Ctx) -> Resource | None:
    selected = ctx.previous("select_recovery_point") or {}
    original_id = ctx.step.original or selected.get("resource_id")
    if not original_id:
        raise ConfigError("adopt_resource needs original: the id of the resource being replaced")
    try:
        return ctx.account.catalog.get_resource(original_id)
    except NotFoundError:
        if ctx.step.adopt_as == "original_resource":
            raise
        return None  # lost with its account: the step's tags say what the new one needs


def _resource_id(ctx: Ctx, restored: dict[str, Any], original: Resource | None) -> str:
    if ctx.step.adopt_as == "original_resource" and original is not None:
        return original.id
    return ctx.step.resource_id or restored["identifier"]


def _selecting_rules(ctx: Ctx, resource_type: str, tags: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    destination = ctx.account.catalog.get_setting("destination_vault_arn")
    plans = sorted(applied_plans(ctx.account).items())
    rules = [
        (name, {**rule_snapshot(rule, destination).as_dict(), "rule_name": rule.name})
        for name, plan in plans
        if selects(plan, resource_type, tags)
        for rule in plan.rules
    ]
    if not rules and ctx.step.require_plan:
        shown = ", ".join(f"{key}={value}" for key, value in sorted(tags.items())) or "no tags"
        raise ConfigError(
            f"no backup plan of this account selects a {resource_type} resource with {shown}",
            hint="apply the plan (strongroom apply), add tags to the step, or set require_plan: false",
        )
    return rules


def _register(
    ctx: Ctx, resource_id: str, restored: dict[str, Any], tags: dict[str, str], original: Resource | None
) -> None:
    settings = {"dsn": restored["dsn"]}
    try:
        existing = ctx.account.catalog.get_resource(resource_id)
    except NotFoundError:
        existing = None
    if existing is None:
        add_resource(ctx.account, resource_id, restored["resource_type"], settings, tags)
        ctx.changes.append(f"resource {resource_id} registered ({restored['dsn']}) with tags {_shown(tags)}")
    elif existing.settings.get("dsn") != restored["dsn"]:
        raise IdentifierInUseError(
            f"resource id {resource_id} is already in use by another resource",
            hint="give adopt_resource a resource_id, or remove that resource",
        )
    if (
        original is not None
        and ctx.step.original_action == "untag"
        and original.id != resource_id
        and original.tags != {REPLACED_BY: resource_id}
    ):
        ctx.account.catalog.update_resource(original.id, tags={REPLACED_BY: resource_id})
        ctx.changes.append(f"resource {original.id} untagged (was {_shown(original.tags)}): plans no longer select it")


def _repoint(ctx: Ctx, original: Resource | None, restored: dict[str, Any]) -> None:
    assert original is not None
    if original.settings.get("dsn") != restored["dsn"]:
        ctx.account.catalog.update_resource(original.id, settings={**original.settings, "dsn": restored["dsn"]})
        ctx.changes.append(
            f"resource {original.id} now points at {restored['dsn']} (was {original.settings.get('dsn')})"
        )


def _first_backups(ctx: Ctx, resource_id: str, rules: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """One backup per selecting rule, into its vault with its retention (checkpointed: never twice)."""
    done: dict[str, str] = dict(ctx.checkpoint.get("backups") or {})
    for plan, rule in rules:
        key = f"{plan}/{rule['rule_name']}"
        if key in done:
            continue
        job, lock = create_backup_job(ctx.account, resource_id, rule["target_vault_name"], rule["delete_after_days"])
        finished = run_backup_job(ctx.account, job.id, lock)
        done[key] = finished.recovery_point_arn or ""
        ctx.changes.append(f"backup of {resource_id} under plan {plan}, rule {rule['rule_name']}: {done[key]}")
        ctx.checkpoint_set(backups=done)
    return sorted(done.values())


def _shown(tags: dict[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(tags.items())) or "none"
