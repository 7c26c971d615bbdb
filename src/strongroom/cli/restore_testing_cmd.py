"""``strongroom restore-testing list-plans|describe-plan|start-run|list-jobs`` (docs/restore-testing.md)."""

from __future__ import annotations

import typer

from strongroom.cli import context, output
from strongroom.errors import RestoreTestFailedError
from strongroom.services import restore_testing
from strongroom.services.restore_testing_records import RestoreTestStatus

restore_testing_app = typer.Typer(
    help="Restore testing plans: scheduled test restores into scratch targets, validated and removed.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(restore_testing_app, name="restore-testing")


@restore_testing_app.command("list-plans")
def list_plans(ctx: typer.Context, json_output: bool = typer.Option(False, "--json")) -> None:
    """List the applied restore testing plans with their schedule and next run."""
    with context.account(ctx, display=True) as account:
        plans = [restore_testing.describe_plan(account, name) for name in restore_testing.applied_plans(account)]
    if json_output:
        output.emit_json({"restore_testing_plans": plans})
        return
    output.table(
        "Restore testing plans",
        ["Plan", "Schedule", "Selections", "Next run", "Last run"],
        [
            (
                p["restore_testing_plan_name"],
                p["schedule_expression"],
                ", ".join(p["selections"]),
                p["next_run"],
                p["last_run"],
            )
            for p in plans
        ],
    )


@restore_testing_app.command("describe-plan")
def describe_plan(ctx: typer.Context, name: str, json_output: bool = typer.Option(False, "--json")) -> None:
    """Show a restore testing plan: its recovery point selection and selections."""
    with context.account(ctx, display=True) as account:
        plan = restore_testing.describe_plan(account, name)
    output.emit_json(plan) if json_output else output.details(plan)


@restore_testing_app.command("start-run")
def start_run(ctx: typer.Context, name: str, json_output: bool = typer.Option(False, "--json")) -> None:
    """Run a restore testing plan now: restore, validate and remove each point it picks (exit 11 if one fails)."""
    with context.account(ctx) as account:
        say = None if json_output else output.console.print
        run = restore_testing.start_run(account, name, progress=say)
    tests = [t.as_dict() for t in run.tests]
    if json_output:
        output.emit_json({"restore_jobs": tests, "not_started": run.not_started})
    else:
        _table(tests)
    failed = [t for t in tests if t["status"] != RestoreTestStatus.SUCCESSFUL]
    if failed:
        first = failed[0]
        raise RestoreTestFailedError(
            f"{len(failed)} of {len(tests) + len(run.not_started)} restore tests did not succeed;"
            f" {first['resource_id']}: {first['status']}, {first['validation_status']}:"
            f" {first['validation_status_message']}"
        )
    if run.not_started:
        raise RestoreTestFailedError(
            f"{len(run.not_started)} of {len(tests) + len(run.not_started)} restore tests could not start;"
            f" {run.not_started[0]}"
        )


@restore_testing_app.command("list-jobs")
def list_jobs(
    ctx: typer.Context,
    plan: str | None = typer.Option(None, "--plan", help="Only this plan's restore jobs."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """List restore testing jobs, oldest first, with their status and validation."""
    with context.account(ctx, display=True) as account:
        tests = [t.as_dict() for t in restore_testing.list_tests(account, plan)]
    if json_output:
        output.emit_json({"restore_jobs": tests})
        return
    _table(tests)


def _table(tests: list[dict[str, object]]) -> None:
    output.table(
        "Restore testing jobs",
        ["Job", "Plan", "Resource", "Status", "Validation", "Restore s", "Cleanup", "Message"],
        [
            (
                t["restore_job_id"],
                t["restore_testing_plan_name"],
                t["resource_id"],
                t["status"],
                t["validation_status"],
                t["restore_seconds"],
                t["cleanup"],
                t["validation_status_message"],
            )
            for t in tests
        ],
    )
