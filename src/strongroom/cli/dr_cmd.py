"""``strongroom dr``: disaster recovery as one resumable command (docs/disaster-recovery.md)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from strongroom.cli import context, output
from strongroom.cli.config_cmd import JSON_OPTION, VAR_FILE_OPTION, VAR_OPTION
from strongroom.errors import UsageError
from strongroom.services.account import Account

if TYPE_CHECKING:
    from strongroom.catalog.dr_records import DrStep
    from strongroom.config.runbook import Runbook

# The runbook model and the engine (psycopg, httpx, pydantic models) load only when a dr command runs:
# every other command starts that much faster.

dr_app = typer.Typer(help="Disaster recovery: run, resume and rehearse runbooks.", no_args_is_help=True)
RUNBOOK_ARGUMENT = typer.Argument(..., metavar="RUNBOOK", help="The runbook file (YAML).")
DRY_RUN_OPTION = typer.Option(False, "--dry-run", help="Print what would happen, step by step; change nothing.")


def register(app: typer.Typer) -> None:
    app.add_typer(dr_app, name="dr")


@dr_app.command("run")
def run(
    ctx: typer.Context,
    runbook: Path = RUNBOOK_ARGUMENT,
    var: list[str] = VAR_OPTION,
    var_file: list[Path] = VAR_FILE_OPTION,
    incident_time: datetime | None = typer.Option(
        None,
        "--incident-time",
        formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M%z", "%Y-%m-%d %H:%M:%S%z"],
        help="When the disaster struck (ISO 8601 with a zone): no point taken later is chosen; the RPO is the"
        " data's age then. Default: now.",
    ),
    dry_run: bool = DRY_RUN_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Run a runbook: restore, repoint credentials, adopt, restart, verify. Resumable if it stops."""
    _start(ctx, runbook, var, var_file, incident_time, dry_run, json_output, rehearsal=False)


@dr_app.command("rehearse")
def rehearse(
    ctx: typer.Context,
    runbook: Path = RUNBOOK_ARGUMENT,
    var: list[str] = VAR_OPTION,
    var_file: list[Path] = VAR_FILE_OPTION,
    dry_run: bool = DRY_RUN_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Run the whole runbook against scratch names, verify, and remove everything it made."""
    _start(ctx, runbook, var, var_file, None, dry_run, json_output, rehearsal=True)


@dr_app.command("resume")
def resume(
    ctx: typer.Context, run_id: str = typer.Argument(..., metavar="RUN_ID"), json_output: bool = JSON_OPTION
) -> None:
    """Continue a run that stopped (a failed step, a crash, a kill); finished steps are not repeated."""
    with context.account(ctx) as account:
        _execute(account, run_id, json_output, resumed=True)


@dr_app.command("list")
def list_runs(ctx: typer.Context, json_output: bool = JSON_OPTION) -> None:
    """Every disaster-recovery run and rehearsal of this account, oldest first."""
    from strongroom.services.dr import engine

    with context.account(ctx) as account:
        runs = engine.list_runs(account)
    if json_output:
        output.emit_json({"runs": runs})
        return
    rows = [
        (
            r["run_id"],
            r["runbook"],
            "rehearsal" if r["rehearsal"] else "run",
            r["state"],
            r["current_step"] or "",
            r["created_at"],
            r["completed_at"] or "",
        )
        for r in runs
    ]
    output.table(
        "Disaster-recovery runs", ["Run", "Runbook", "Kind", "State", "Stopped at", "Started", "Completed"], rows
    )


@dr_app.command("describe")
def describe(
    ctx: typer.Context, run_id: str = typer.Argument(..., metavar="RUN_ID"), json_output: bool = JSON_OPTION
) -> None:
    """A run's report: recovery point, RPO, RTO, each step's state and duration, every change."""
    from strongroom.services.dr import engine

    with context.account(ctx) as account:
        report = engine.describe_run(account, run_id)
    if json_output:
        output.emit_json(report)
    else:
        _print_report(report)


def _start(
    ctx: typer.Context,
    path: Path,
    var: list[str],
    var_file: list[Path],
    incident: datetime | None,
    dry_run: bool,
    json_output: bool,
    *,
    rehearsal: bool,
) -> None:
    from strongroom.config.runbook import load_runbook
    from strongroom.services.apply import identity_of
    from strongroom.services.dr import engine

    with context.account(ctx) as account:
        runbook = load_runbook(path, identity=identity_of(account), cli_vars=var, var_files=var_file)
        if dry_run:
            _dry_run(account, runbook, rehearsal, json_output, incident)
            return
        run_id = engine.start_run(account, runbook, rehearsal=rehearsal, incident_time=incident)
        if not json_output:
            kind = "Rehearsal" if rehearsal else "Disaster-recovery run"
            output.console.print(
                f"{kind} {run_id} of runbook {runbook.name} ({len(runbook.steps)} steps)", markup=False, highlight=False
            )
        _execute(account, run_id, json_output, resumed=False)


def _execute(account: Account, run_id: str, json_output: bool, *, resumed: bool) -> None:
    from strongroom.services.dr import engine

    if resumed and not json_output:
        output.console.print(f"Resuming disaster-recovery run {run_id}", markup=False, highlight=False)
    report = engine.execute(account, run_id, observer=None if json_output else _progress)
    if json_output:
        output.emit_json(report)
    else:
        _print_report(report)


def _progress(event: str, row: DrStep) -> None:
    label = f"{row.position + 1}. {row.name} ({row.type})"
    if event == "start":
        output.console.print(f"  {label} ...", markup=False, highlight=False)
    elif event == "skip":
        output.console.print(f"  {label} skipped", markup=False, highlight=False)
    else:
        output.console.print(f"  {label} done in {_duration(row.duration_seconds)}", markup=False, highlight=False)


def _dry_run(account: Account, runbook: Runbook, rehearsal: bool, json_output: bool, incident: datetime | None) -> None:
    from strongroom.services.dr import engine

    plan = engine.dry_run(account, runbook, rehearsal=rehearsal, incident_time=incident)
    if json_output:
        output.emit_json(plan)
    else:
        kind = "rehearsal" if rehearsal else "run"
        say = output.console.print
        say(
            f"Dry run of the {kind} of runbook {plan['runbook']} ({plan['file']}); nothing is changed.",
            markup=False,
            highlight=False,
        )
        for name, value in sorted(plan["variables"].items()):
            say(f"   var.{name} = {output.text(value)}", markup=False, highlight=False)
        for step in plan["steps"]:
            say(
                f"{step['position']:>2}. {step['name']} ({step['type']}): {step['action']}",
                markup=False,
                highlight=False,
            )
            for problem in step["problems"]:
                say(f"    ! {problem}", markup=False, highlight=False)
    if plan["problems"]:
        count = plan["problems"]
        raise UsageError(
            f"the dry run found {count} problem{'s' if count != 1 else ''} (marked !)",
            hint="fix them before the real run",
        )
    if not json_output:
        output.console.print("No problems found.", markup=False, highlight=False)


def _print_report(report: dict[str, Any]) -> None:
    say = output.console.print
    kind = "Rehearsal" if report["rehearsal"] else "Disaster-recovery run"
    say(f"{kind} {report['run_id']} {report['state']} (runbook {report['runbook']})", markup=False, highlight=False)
    point = report.get("recovery_point")
    if point:
        where = f"vault {point['vault']}" + (f" of account {point['account']}" if point.get("account") else "")
        say(
            f"Recovery point: {point['recovery_point_arn']} (created {point['creation_date']}, {where})",
            markup=False,
            highlight=False,
        )
        if point.get("copied_back_as"):
            say(f"Copied back as: {point['copied_back_as']}", markup=False, highlight=False)
    if report.get("rpo_seconds") is not None:
        say(
            f"RPO: {_duration(report['rpo_seconds'])} of data lost at most (the recovery point's age at the"
            f" incident, {report['incident_time']})",
            markup=False,
            highlight=False,
        )
    say(
        f"RTO: {_duration(report['rto_seconds'])} (wall time of the run; its steps took"
        f" {_duration(report['steps_seconds'])})",
        markup=False,
        highlight=False,
    )
    restored = report.get("restored")
    if restored:
        say(
            f"Restored: {restored.get('identifier')} on {restored.get('host')}:{restored.get('port')}",
            markup=False,
            highlight=False,
        )
    rows = [
        (str(i + 1), s["name"], s["type"], s["state"], str(s["attempts"]), _duration(s["duration_seconds"]))
        for i, s in enumerate(report["steps"])
    ]
    output.table("Steps", ["#", "Step", "Type", "State", "Attempts", "Took"], rows)
    if report["changes"]:
        say("Changes:", markup=False, highlight=False)
        for change in report["changes"]:
            say(f"  - {change}", markup=False, highlight=False)
    if report.get("cleanup"):
        say("Cleaned up after the rehearsal:", markup=False, highlight=False)
        for item in report["cleanup"]:
            say(f"  - {item}", markup=False, highlight=False)
    if report.get("error"):
        say(f"Stopped: {report['error']}", markup=False, highlight=False)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {rest:02d} s"
