"""``restore`` (a recovery point into a NEW identifier, copied back first when it is in another
account) and ``wait_healthy`` (the restored database answers and is out of recovery)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import psycopg

from strongroom.adapters.base import ResourceSpec, RestoreRequest, get_adapter, runbook_types
from strongroom.config.runbook import RestoreStep, WaitHealthyStep
from strongroom.errors import ConfigError, IdentifierInUseError, NotFoundError, StrongroomError, TargetError
from strongroom.faults import fault_after_first_mib, fault_point
from strongroom.model import Arn, Job, JobState, RecoveryPoint
from strongroom.policy.principals import root_arn
from strongroom.services import vault_ops
from strongroom.services.copy import create_copy_job, run_copy_job
from strongroom.services.dr import preflight
from strongroom.services.dr.context import StepContext, first_line
from strongroom.services.remote import client_for
from strongroom.services.restore import create_restore_job, run_restore_job

# What a dry run predicts when no earlier step says which type the point is (the common runbook's).
PREDICTED_TYPE = "postgres-cluster"


class Restore:
    def run(self, ctx: StepContext[RestoreStep]) -> dict[str, Any]:
        rp = self._local_point(ctx)
        request = _request(ctx, rp)
        adapter = get_adapter(rp.resource_type)
        job_id = ctx.checkpoint.get("restore_job_id")
        if job_id and ctx.account.catalog.get_job(job_id).state == JobState.COMPLETED:
            return _outputs(ctx, rp, request, job_id)
        if ctx.checkpoint.get("owned_target"):
            adapter.discard_restore(request, ctx.account.home, rp.metadata)  # an earlier attempt's leftovers
        else:
            _check_free(ctx, rp, request)
            ctx.checkpoint_set(owned_target=True)
        job, lock = create_restore_job(ctx.account, rp.arn, request)
        ctx.checkpoint_set(restore_job_id=job.id)
        run_restore_job(ctx.account, job.id, lock, progress=fault_after_first_mib("dr.restore:middle"))
        outputs = _outputs(ctx, rp, request, job.id)
        ctx.changes.append(
            f"restored {rp.arn} as {rp.resource_type} {outputs['identifier']} on {outputs['host']}:{outputs['port']}"
        )
        if outputs.get("disabled_on_restore"):
            ctx.changes.append(f"disabled in the restored configuration: {', '.join(outputs['disabled_on_restore'])}")
        return outputs

    def describe(self, ctx: StepContext[RestoreStep]) -> tuple[str, dict[str, Any], list[str]]:
        step = ctx.step
        identifier = ctx.scratch_name(step.target_identifier)
        selected = ctx.previous("select_recovery_point") or {}
        arn = step.recovery_point or selected.get("recovery_point_arn") or "the selected recovery point"
        problems: list[str] = []
        copy = ""
        if _is_remote(ctx, arn):
            copy = f"copy it back into vault {step.copy_back_vault} of this account, then "
        resource_type = selected.get("resource_type") or PREDICTED_TYPE
        text = f"{copy}restore {arn} as a new {resource_type} named {identifier}"
        predicted = {
            "identifier": identifier,
            "host": "127.0.0.1",
            "port": step.port or "<a free port>",
            "resource_type": resource_type,
        }
        try:
            adapter = get_adapter(resource_type)
            request = _request_for(ctx, resource_type, selected.get("resource_id"), identifier)
            text += adapter.restore_caveat(request)
            reason = adapter.restore_target_in_use(request, ctx.account.home)
            if reason:
                problems.append(reason)
            predicted.update(adapter.restore_location(request, ctx.account.home))
            point = None if _is_remote(ctx, arn) or not arn.startswith("arn:") else _point_or_none(ctx, arn)
            facts = preflight.forecast_restore(ctx.account, adapter, request, point)
            problems += facts.problems
            predicted.update(facts.outputs())
        except StrongroomError as exc:  # a dry run lists every problem
            problems.append(exc.one_line())
        return text, predicted, problems

    def clean_up(self, ctx: StepContext[RestoreStep], outputs: dict[str, Any]) -> list[str]:
        if outputs.get("partial") and not outputs.get("owned_target"):
            return []  # stopped before it made anything
        selected = ctx.previous("select_recovery_point") or {}
        arn = (
            outputs.get("recovery_point_arn")
            or outputs.get("local_recovery_point_arn")
            or ctx.step.recovery_point
            or selected.get("recovery_point_arn")
        )
        if not arn or _is_remote(ctx, arn):
            return []
        rp = ctx.account.catalog.get_recovery_point(arn)
        removed = get_adapter(rp.resource_type).discard_restore(_request(ctx, rp), ctx.account.home, rp.metadata)
        if outputs.get("copied_back") or outputs.get("local_recovery_point_arn"):
            for copied in filter(None, (rp.arn, ctx.checkpoint.get("copied_base_arn"))):
                try:
                    vault_ops.delete_recovery_point(ctx.account, root_arn(ctx.account.account_id), copied)
                    removed.append(f"deleted the copied-back recovery point {copied}")
                except StrongroomError as exc:
                    removed.append(f"kept the copied-back recovery point {copied}: {exc.one_line()}")
        return removed

    def _local_point(self, ctx: StepContext[RestoreStep]) -> RecoveryPoint:
        """The point to restore, in this account: copied back (CopyFromBackupVault) when it is elsewhere."""
        selected = ctx.previous("select_recovery_point") or {}
        arn = ctx.step.recovery_point or selected.get("recovery_point_arn")
        if not arn:
            raise ConfigError(
                f"step '{ctx.step.name}' has no recovery point to restore",
                hint="add a select_recovery_point step before it, or give recovery_point: ARN",
            )
        if not _is_remote(ctx, arn):
            return ctx.account.catalog.get_recovery_point(arn)
        if ctx.checkpoint.get("local_recovery_point_arn"):
            return ctx.account.catalog.get_recovery_point(ctx.checkpoint["local_recovery_point_arn"])
        vault = ctx.account.catalog.get_vault(ctx.step.copy_back_vault)
        if (
            selected.get("restore_time")
            and selected.get("base_recovery_point_arn")
            and arn == selected.get("recovery_point_arn")
        ):
            return self._copy_back_continuous(ctx, arn, selected["base_recovery_point_arn"], vault.name)
        finished = _finished_copy(ctx)  # a copy an interrupted attempt completed is not made twice
        if finished is None:
            job, lock = create_copy_job(ctx.account, arn, vault.arn)
            ctx.checkpoint_set(copy_job_id=job.id)
            finished = run_copy_job(ctx.account, job.id, lock, progress=fault_after_first_mib("dr.copy_back:middle"))
            fault_point("dr.copy_back:done")
        local = finished.result["destination_recovery_point_arn"]
        ctx.changes.append(f"copied {arn} back into vault {vault.name} as {local}")
        ctx.checkpoint_set(local_recovery_point_arn=local)
        return ctx.account.catalog.get_recovery_point(local)

    def _copy_back_continuous(
        self, ctx: StepContext[RestoreStep], arn: str, base_arn: str, vault_name: str
    ) -> RecoveryPoint:
        """Another account's continuous point, selected to a second: copy its base backup back, then the
        cluster's WAL (the files this vault lacks, checked and sealed under its keys), and keep a continuous
        point here to restore from (docs/pitr.md, "Both accounts")."""
        from strongroom.services.wal_copy import pull_wal
        from strongroom.services.wal_receive import keep_copied_continuous_point

        vault = ctx.account.catalog.get_vault(vault_name)
        finished = _finished_copy(ctx)
        if finished is None:
            job, lock = create_copy_job(ctx.account, base_arn, vault.arn)
            ctx.checkpoint_set(copy_job_id=job.id)
            finished = run_copy_job(ctx.account, job.id, lock, progress=fault_after_first_mib("dr.copy_back:middle"))
            fault_point("dr.copy_back:done")
        base = ctx.account.catalog.get_recovery_point(finished.result["destination_recovery_point_arn"])
        ctx.checkpoint_set(copied_base_arn=base.arn)
        remote_id = Arn.parse(arn)
        with client_for(ctx.account, remote_id.account_id) as client:
            wal = pull_wal(ctx.account, client, arn, vault.name)
            days = int((client.get_recovery_point(remote_id.name).get("metadata") or {}).get("window_days") or 35)
        whence = {"direction": "pull", "source_recovery_point_arn": arn}
        local = keep_copied_continuous_point(ctx.account, vault.name, base.resource_id, wal["system_identifier"],
                                             min(days, 35), whence)["recovery_point_arn"]  # fmt: skip
        ctx.changes.append(
            f"copied base backup {base_arn} back into vault {vault.name} as {base.arn}, and the cluster's WAL"
            f" ({wal['files_received']} files, {wal['files_held']} held already); continuous point {local}"
        )
        ctx.checkpoint_set(local_recovery_point_arn=local)
        return ctx.account.catalog.get_recovery_point(local)


class WaitHealthy:
    def run(self, ctx: StepContext[WaitHealthyStep]) -> dict[str, Any]:
        restored = ctx.required("restore")
        deadline = time.monotonic() + ctx.step.timeout_seconds
        started, attempts, reason = time.monotonic(), 0, ""
        while True:
            attempts += 1
            reason = _health(restored["dsn"])
            if not reason:
                return {"healthy": True, "attempts": attempts, "waited_seconds": round(time.monotonic() - started, 3)}
            if time.monotonic() >= deadline:
                raise TargetError(
                    f"{restored['identifier']} did not become healthy within {ctx.step.timeout_seconds} s: {reason}",
                    hint="see the restored cluster's log; raise timeout_seconds if it is still recovering",
                )
            time.sleep(ctx.step.interval_seconds)

    def describe(self, ctx: StepContext[WaitHealthyStep]) -> tuple[str, dict[str, Any], list[str]]:
        restored = ctx.previous("restore") or {}
        return (
            (
                f"wait up to {ctx.step.timeout_seconds} s until {restored.get('identifier', 'the restored target')}"
                " accepts connections and is out of recovery"
            ),
            {"healthy": True},
            [],
        )

    def clean_up(self, ctx: StepContext[WaitHealthyStep], outputs: dict[str, Any]) -> list[str]:
        return []


def _health(dsn: str) -> str:
    """Empty when the server answers and is not in recovery; else why not."""
    try:
        with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    except psycopg.Error as exc:
        return first_line(exc)
    return "still in recovery" if row and row[0] else ""


def _point_or_none(ctx: StepContext[RestoreStep], arn: str) -> RecoveryPoint | None:
    try:
        return ctx.account.catalog.get_recovery_point(arn)
    except NotFoundError:
        return None


def _is_remote(ctx: StepContext[RestoreStep], arn: str) -> bool:
    return arn.startswith("arn:") and Arn.parse(arn).account_id != ctx.account.account_id


def _check_free(ctx: StepContext[RestoreStep], rp: RecoveryPoint, request: RestoreRequest) -> None:
    identifier = request.target_identifier or ""
    known = {resource.id for resource in ctx.account.catalog.list_resources()}
    if identifier in known:
        raise IdentifierInUseError(
            f"target identifier {identifier} is already in use by resource {identifier}",
            hint="choose a new target_identifier (or --var), or remove that resource",
        )
    reason = get_adapter(rp.resource_type).restore_target_in_use(request, ctx.account.home)
    if reason:
        raise IdentifierInUseError(
            f"target identifier {identifier}: {reason}",
            hint="choose a new target_identifier (or --var); the original is never touched",
        )


def _request(ctx: StepContext[RestoreStep], rp: RecoveryPoint) -> RestoreRequest:
    if not get_adapter(rp.resource_type).supports_runbooks:
        raise ConfigError(
            f"a runbook restores {', '.join(runbook_types())} recovery points, not {rp.resource_type}",
            hint="restore it with 'strongroom restore start'",
        )
    request = _request_for(ctx, rp.resource_type, rp.resource_id, ctx.scratch_name(ctx.step.target_identifier))
    selected = ctx.previous("select_recovery_point") or {}
    copied = bool(selected.get("remote") and rp.metadata.get("continuous"))  # another account's, copied back
    if selected.get("restore_time") and (selected.get("recovery_point_arn") == rp.arn or copied):  # to a second
        recovery = {"target": "time", "value": selected["restore_time"], "timeline": None}
        request = replace(request, options={**request.options, "recovery": recovery})
    return request


def _request_for(
    ctx: StepContext[RestoreStep], resource_type: str, resource_id: str | None, identifier: str
) -> RestoreRequest:
    return get_adapter(resource_type).runbook_restore_request(ctx.step, identifier, _original(ctx, resource_id))


def _original(ctx: StepContext[RestoreStep], resource_id: str | None) -> ResourceSpec | None:
    """The resource the point was taken of, when this account still has it (it may be gone with its account)."""
    try:
        resource = ctx.account.catalog.get_resource(resource_id or "")
    except NotFoundError:
        return None
    return ResourceSpec(resource.id, resource.type, resource.settings, resource.tags)


def _outputs(ctx: StepContext[RestoreStep], rp: RecoveryPoint, request: RestoreRequest, job_id: str) -> dict[str, Any]:
    result = ctx.account.catalog.get_job(job_id).result
    selected = ctx.previous("select_recovery_point") or {}
    outputs: dict[str, Any] = {
        "identifier": request.target_identifier,
        "resource_type": rp.resource_type,
        "recovery_point_arn": rp.arn,
        "selected_recovery_point_arn": selected.get("recovery_point_arn", rp.arn),
        "copied_back": bool(ctx.checkpoint.get("local_recovery_point_arn")),
        "restore_job_id": job_id,
    }
    outputs.update(get_adapter(rp.resource_type).restored_endpoint(result).as_outputs())
    return outputs


def _finished_copy(ctx: StepContext[RestoreStep]) -> Job | None:
    job_id = ctx.checkpoint.get("copy_job_id")
    if not job_id:
        return None
    job = ctx.account.catalog.get_job(job_id)
    return job if job.state == JobState.COMPLETED else None
