"""``select_recovery_point``: the latest COMPLETED point of a resource, the latest at or before a time
(an RPO target), or one ARN; in this account's vault or another account's (the destination)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from strongroom.config.runbook import SelectRecoveryPointStep
from strongroom.errors import NoRecoveryPointError, StrongroomError
from strongroom.model import Arn, RecoveryPointStatus
from strongroom.services import remote
from strongroom.services.dr.context import StepContext

LATEST = "latest"
AFTER_INCIDENT_HINT = (
    "give --incident-time as when the disaster struck (at or after the point's creation), or leave it out (now)"
)


class SelectRecoveryPoint:
    def run(self, ctx: StepContext[SelectRecoveryPointStep]) -> dict[str, Any]:
        step = ctx.step
        points = _candidates(ctx)
        chosen = _choose(points, step, ctx.incident_time)
        to_the_second = _continuous(ctx, points)
        if to_the_second is not None:
            return to_the_second
        if chosen is None:
            late = _choose(points, step, None)  # there is one, but after the incident: the RPO would be negative
            if late is not None and ctx.incident_time is not None:
                raise NoRecoveryPointError(_after_incident(step, points, ctx.incident_time), hint=AFTER_INCIDENT_HINT)
            raise NoRecoveryPointError(_nothing_matches(step), hint=_hint(step))
        where = f"account {step.account}" if step.account else "this account"
        ctx.changes.append(
            f"selected {chosen['recovery_point_arn']} (created {chosen['creation_date']}) in vault"
            f" {_vault_name(step.vault)} of {where}"
        )
        return {
            "recovery_point_arn": chosen["recovery_point_arn"],
            "creation_date": chosen["creation_date"],
            "resource_id": chosen["resource_id"],
            "resource_type": chosen["resource_type"],
            "vault": _vault_name(step.vault),
            "account": step.account,
            "account_id": Arn.parse(chosen["recovery_point_arn"]).account_id,
            "remote": bool(step.account),
            "source_bytes": chosen.get("source_bytes"),
        }

    def describe(self, ctx: StepContext[SelectRecoveryPointStep]) -> tuple[str, dict[str, Any], list[str]]:
        step = ctx.step
        which = _which(step)
        where = (
            f"vault {_vault_name(step.vault)} of account {step.account}"
            if step.account
            else f"vault {_vault_name(step.vault)} of this account"
        )
        text = f"select {which} recovery point of resource {step.resource} in {where}"
        try:
            outputs = self.run(ctx)
        except StrongroomError as exc:  # a dry run lists every problem
            return text, {}, [exc.one_line()]
        ctx.changes.clear()
        return f"{text}: {outputs['recovery_point_arn']} (created {outputs['creation_date']})", outputs, []

    def clean_up(self, ctx: StepContext[SelectRecoveryPointStep], outputs: dict[str, Any]) -> list[str]:
        return []


def _continuous(ctx: StepContext[SelectRecoveryPointStep], points: list[dict[str, Any]]) -> dict[str, Any] | None:
    """With ``at_or_before``, this account's continuous point of the resource when its window covers that
    second (docs/pitr.md): the restore replays WAL to it, and the RPO is the time since it, not since a snapshot."""
    step = ctx.step
    if step.recovery_point != LATEST or not step.at_or_before:
        return None
    moment = _aware(step.at_or_before)
    if ctx.incident_time is not None and moment > ctx.incident_time:
        return None
    continuous = [
        p for p in points
        if p["status"] == RecoveryPointStatus.COMPLETED.value and p["resource_id"] == step.resource
        and (p.get("metadata") or {}).get("continuous")
    ]  # fmt: skip
    if not continuous:
        return None
    if step.account:
        return _remote_continuous(ctx, points, continuous[0], moment)
    from strongroom.services.pitr import RecoveryTarget, TargetKind, plan_recovery  # PostgreSQL's tools

    point = ctx.account.catalog.get_recovery_point(continuous[0]["recovery_point_arn"])
    try:
        plan = plan_recovery(ctx.account, point, RecoveryTarget(TargetKind.TIME, moment.isoformat()))
    except StrongroomError:
        return None  # outside its window: a snapshot at or before the moment is what there is
    restore_time = moment.isoformat().replace("+00:00", "Z")
    ctx.changes.append(
        f"selected {point.arn} (continuous; restore to {restore_time}, from base backup {plan.base.arn}) in vault"
        f" {_vault_name(step.vault)} of this account"
    )
    return {
        "recovery_point_arn": point.arn,
        "creation_date": moment.isoformat(),  # the data's time: the run's RPO counts from it
        "restore_time": restore_time,
        "base_recovery_point_arn": plan.base.arn,
        "resource_id": point.resource_id,
        "resource_type": point.resource_type,
        "vault": _vault_name(step.vault),
        "account": None,
        "account_id": Arn.parse(point.arn).account_id,
        "remote": False,
        "source_bytes": plan.base.source_bytes,
    }


def _remote_continuous(
    ctx: StepContext[SelectRecoveryPointStep], points: list[dict[str, Any]], point: dict[str, Any], moment: datetime
) -> dict[str, Any] | None:
    """Another account's continuous point when one of its base backups of the cluster began by ``moment``: the
    restore copies that base backup and the cluster's WAL back, then replays to the second. The window's end
    (the newest WAL there) is checked once the WAL is here: a second after it fails the restore, with the window."""
    system = (point.get("metadata") or {}).get("system_identifier")
    bases = [
        p for p in points
        if p["status"] == RecoveryPointStatus.COMPLETED.value and p["resource_id"] == point["resource_id"]
        and p.get("resource_type") == point["resource_type"] and not (p.get("metadata") or {}).get("continuous")
        and (p.get("metadata") or {}).get("system_identifier") == system and _base_time(p) <= moment
    ]  # fmt: skip
    if not system or not bases:
        return None
    base = max(bases, key=_base_time)
    step = ctx.step
    restore_time = moment.isoformat().replace("+00:00", "Z")
    ctx.changes.append(
        f"selected {point['recovery_point_arn']} (continuous; restore to {restore_time}, from base backup"
        f" {base['recovery_point_arn']}) in vault {_vault_name(step.vault)} of account {step.account}"
    )
    return {
        "recovery_point_arn": point["recovery_point_arn"],
        "creation_date": moment.isoformat(),  # the data's time: the run's RPO counts from it
        "restore_time": restore_time,
        "base_recovery_point_arn": base["recovery_point_arn"],
        "resource_id": point["resource_id"],
        "resource_type": point["resource_type"],
        "vault": _vault_name(step.vault),
        "account": step.account,
        "account_id": Arn.parse(point["recovery_point_arn"]).account_id,
        "remote": True,
        "source_bytes": base.get("source_bytes"),
    }


def _base_time(point: dict[str, Any]) -> datetime:
    """When the cluster was as a base backup holds it (services/pitr.completed_at): a copy's from its origin."""
    if point.get("source_recovery_point_arn"):
        return _aware(datetime.fromisoformat(point["creation_date"]))
    return vouched_time(point)


def _candidates(ctx: StepContext[SelectRecoveryPointStep]) -> list[dict[str, Any]]:
    step, vault = ctx.step, _vault_name(ctx.step.vault)
    if step.account:
        with remote.client_for(ctx.account, step.account) as client:
            return client.list_recovery_points(vault)
    ctx.account.catalog.get_vault(vault)
    return [rp.as_dict() for rp in ctx.account.catalog.list_recovery_points(vault_name=vault)]


def _choose(
    points: list[dict[str, Any]], step: SelectRecoveryPointStep, incident: datetime | None = None
) -> dict[str, Any] | None:
    """The point the step selects, never one taken after ``incident`` (its data would postdate the disaster)."""
    completed = [
        p
        for p in points
        if p["status"] == RecoveryPointStatus.COMPLETED.value
        and p["resource_id"] == step.resource
        and not (p.get("metadata") or {}).get("continuous")  # restores to a time: runbooks select snapshots
        and (incident is None or _at_or_before(p, incident))
    ]
    if step.recovery_point != LATEST:
        return next((p for p in completed if p["recovery_point_arn"] == step.recovery_point), None)
    limit = _aware(step.at_or_before) if step.at_or_before else None
    matching = [p for p in completed if limit is None or vouched_time(p) <= limit]
    return max(matching, key=vouched_time, default=None)


def _at_or_before(point: dict[str, Any], moment: datetime) -> bool:
    """Taken and recorded complete at or before ``moment``: the RPO at ``moment`` is zero or more."""
    return vouched_time(point) <= moment and _aware(datetime.fromisoformat(point["creation_date"])) <= moment


def _after_incident(step: SelectRecoveryPointStep, points: list[dict[str, Any]], incident: datetime) -> str:
    ours = [
        p for p in points if p["status"] == RecoveryPointStatus.COMPLETED.value and p["resource_id"] == step.resource
    ]
    earliest = min(ours, key=vouched_time)
    where = f" of account {step.account}" if step.account else ""
    return (
        f"no recovery point matches: {_which(step)} of resource {step.resource} in vault {_vault_name(step.vault)}"
        f"{where} taken at or before the incident time {incident.isoformat().replace('+00:00', 'Z')} (a later one"
        f" would mean a negative RPO); the earliest there is {earliest['recovery_point_arn']}"
        f" (created {earliest['creation_date']})"
    )


def vouched_time(point: dict[str, Any]) -> datetime:
    """When the vault's own account recorded the point complete (``completion_date``, its clock): what selection
    ranks by. A copy's ``creation_date`` is what the sending account claimed, so a forged date (2099, or just
    before an incident) can neither make a point "latest" nor slip it under ``at_or_before``."""
    moment = point.get("completion_date") or point.get("arrival_date") or point["creation_date"]
    return _aware(datetime.fromisoformat(moment))


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _vault_name(vault: str) -> str:
    return Arn.parse(vault).name if vault.startswith("arn:") else vault


def _which(step: SelectRecoveryPointStep) -> str:
    if step.recovery_point != LATEST:
        return f"the COMPLETED {step.recovery_point}"
    if step.at_or_before:
        return f"the latest COMPLETED (at or before {_as_written(step)})"
    return "the latest COMPLETED"


def _as_written(step: SelectRecoveryPointStep) -> str:
    """``at_or_before`` as the runbook's JSON form writes it (``2026-11-25T09:30:00Z``)."""
    return str(step.model_dump(mode="json", include={"at_or_before"})["at_or_before"])


def _nothing_matches(step: SelectRecoveryPointStep) -> str:
    where = f" of account {step.account}" if step.account else ""
    return (
        f"no recovery point matches: {_which(step)} of resource {step.resource} in vault "
        f"{_vault_name(step.vault)}{where}"
    )


def _hint(step: SelectRecoveryPointStep) -> str:
    if step.recovery_point != LATEST:
        return "check the ARN (a COMPLETED point of this resource) with 'strongroom recovery-points list'"
    if step.at_or_before:
        return "choose a later at_or_before, or select from the other vault"
    return "check the resource id and the vault ('strongroom recovery-points list'), or select from the other vault"
