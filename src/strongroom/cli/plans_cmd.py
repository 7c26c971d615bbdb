"""``strongroom plans list|describe|runs``: the applied backup plans, when they fire, and what their runs did."""

from __future__ import annotations

from typing import Any

import typer

from strongroom.cli import context, output
from strongroom.services.scheduler import RunState, describe_plan, describe_plans, list_runs

plans_app = typer.Typer(help="Backup plans applied to the account and their scheduled runs.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(plans_app, name="plans")


@plans_app.command("list")
def list_(ctx: typer.Context, json_output: bool = typer.Option(False, "--json")) -> None:
    """List the applied backup plans with their next run and the resources they select now."""
    with context.account(ctx) as account:
        described = describe_plans(account)
    if json_output:
        output.emit_json(described)
        return
    output.table(
        "Backup plans",
        ["Plan", "Enabled", "Rules", "Selected resources", "Next run"],
        [
            (
                p["backup_plan_name"],
                p["enable"],
                ", ".join(r["rule_name"] for r in p["rules"]),
                ", ".join(p["selected_resources"]),
                p["next_run"],
            )
            for p in described["backup_plans"]
        ],
    )
    holder = described["scheduler"]["lease_holder"]
    output.console.print(f"Scheduler: {'running as ' + holder if holder else 'no scheduler holds the lease'}")


@plans_app.command("describe")
def describe(ctx: typer.Context, name: str, json_output: bool = typer.Option(False, "--json")) -> None:
    """Show a plan: its selection, the resources it selects now, and each rule with its next run."""
    with context.account(ctx) as account:
        plan = describe_plan(account, name)
    if json_output:
        output.emit_json(plan)
        return
    output.details({key: value for key, value in plan.items() if key != "rules"})
    output.table(
        "Rules",
        [
            "Rule",
            "Schedule",
            "Vault",
            "Start / completion window (min)",
            "Delete after (days)",
            "Copies to",
            "Next run",
        ],
        [_rule_row(rule) for rule in plan["rules"]],
    )


def _rule_row(rule: dict[str, Any]) -> tuple[Any, ...]:
    copies = ", ".join(
        f"{c['destination_backup_vault_arn']} ({c['lifecycle']['delete_after_days']} d)" for c in rule["copy_actions"]
    )
    schedule = rule["schedule_expression"]
    if rule["schedule_expression_timezone"] != "UTC":
        schedule += f" {rule['schedule_expression_timezone']}"
    return (
        rule["rule_name"],
        schedule,
        rule["target_backup_vault_name"],
        f"{rule['start_window_minutes']} / {rule['completion_window_minutes']}",
        rule["lifecycle"]["delete_after_days"] or "forever",
        copies,
        rule["next_run"],
    )


@plans_app.command("runs")
def runs(
    ctx: typer.Context,
    plan: str | None = typer.Option(None, "--plan", help="Only the runs of this plan."),
    state: RunState | None = typer.Option(None, "--state", case_sensitive=False, help="Only runs in this state."),
    limit: int = typer.Option(50, "--limit", min=1, max=100_000, help="How many runs, newest first."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """List the scheduler's recent runs, newest first: one per rule occurrence and resource."""
    with context.account(ctx) as account:
        found = [
            run.as_dict()
            for run in list_runs(account, plan_name=plan, states=[state.value] if state else None, limit=limit)
        ]
    if json_output:
        output.emit_json({"schedule_runs": found})
        return
    output.table(
        "Schedule runs",
        ["Scheduled", "Plan", "Rule", "Resource", "State", "Attempts", "Job", "Copies", "Message"],
        [
            (
                r["scheduled_at"][:19],
                r["backup_plan_name"],
                r["rule_name"],
                r["resource_id"],
                r["state"],
                r["attempts"],
                r["backup_job_id"],
                ", ".join(c["state"] for c in r["copy_jobs"]),
                r["status_message"],
            )
            for r in found
        ],
    )
