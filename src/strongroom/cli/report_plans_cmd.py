"""``strongroom report-plans list|describe``: the applied report plans and their newest report job."""

from __future__ import annotations

from typing import Any

import typer

from strongroom.cli import context, output
from strongroom.services.account import Account
from strongroom.services.reports.jobs import applied_report_plans, report_plan, store_url

report_plans_app = typer.Typer(help="Report plans: scheduled CSV/JSON reports for auditors.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(report_plans_app, name="report-plans")


def _view(account: Account, name: str, plan: dict[str, Any]) -> dict[str, Any]:
    jobs = account.catalog.list_report_jobs(name)
    return {
        "report_plan_name": name,
        "report_plan_description": plan.get("description") or "",
        "report_template": plan["report_setting"]["report_template"],
        "framework_arns": plan["report_setting"].get("framework_arns") or [],
        "formats": plan["report_delivery_channel"]["formats"],
        "report_destination": store_url(plan),
        "schedule": plan.get("schedule"),
        "last_report_job": jobs[-1].as_dict() if jobs else None,
    }


@report_plans_app.command("list")
def list_(ctx: typer.Context, json_output: bool = typer.Option(False, "--json")) -> None:
    """List the applied report plans with their newest report job."""
    with context.account(ctx) as account:
        views = [_view(account, name, plan) for name, plan in sorted(applied_report_plans(account).items())]
    if json_output:
        output.emit_json({"report_plans": views})
        return
    output.table(
        "Report plans",
        ["Plan", "Template", "Formats", "Destination", "Last job"],
        [
            (
                v["report_plan_name"],
                v["report_template"],
                ", ".join(v["formats"]),
                v["report_destination"],
                (v["last_report_job"] or {}).get("status", ""),
            )
            for v in views
        ],
    )


@report_plans_app.command("describe")
def describe(ctx: typer.Context, name: str, json_output: bool = typer.Option(False, "--json")) -> None:
    """Show a report plan: template, frameworks, formats, destination, schedule and its newest job."""
    with context.account(ctx) as account:
        view = _view(account, name, report_plan(account, name))
    if json_output:
        output.emit_json(view)
        return
    output.details(view)
