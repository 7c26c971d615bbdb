"""``strongroom frameworks list|describe``: the applied frameworks, each control's status and its evidence."""

from __future__ import annotations

import typer

from strongroom import model
from strongroom.cli import context, output
from strongroom.errors import NotFoundError
from strongroom.services.compliance.snapshot import applied_frameworks
from strongroom.services.compliance.state import evaluate_all, framework_view

frameworks_app = typer.Typer(
    help="Audit frameworks: AWS Backup Audit Manager controls evaluated against the catalog.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(frameworks_app, name="frameworks")


@frameworks_app.command("list")
def list_(ctx: typer.Context, json_output: bool = typer.Option(False, "--json")) -> None:
    """List the applied frameworks with their status, evaluated now."""
    with context.account(ctx) as account:
        evaluate_all(account, model.now())
        views = [framework_view(account, name) for name in sorted(applied_frameworks(account))]
    summary = [
        {
            "framework_name": v["framework_name"],
            "framework_description": v["framework_description"],
            "framework_status": v["framework_status"],
            "number_of_controls": len(v["controls"]),
            "non_compliant_controls": [
                c["control_name"] for c in v["controls"] if c["control_compliance_status"] == "NON_COMPLIANT"
            ],
        }
        for v in views
    ]
    if json_output:
        output.emit_json({"frameworks": summary})
        return
    output.table(
        "Frameworks",
        ["Framework", "Status", "Controls", "Non-compliant controls"],
        [
            (
                s["framework_name"],
                s["framework_status"],
                s["number_of_controls"],
                ", ".join(s["non_compliant_controls"]),
            )
            for s in summary
        ],
    )


@frameworks_app.command("describe")
def describe(ctx: typer.Context, name: str, json_output: bool = typer.Option(False, "--json")) -> None:
    """Evaluate a framework now and show COMPLIANT / NON_COMPLIANT per control and resource, with the reason."""
    with context.account(ctx) as account:
        if name not in applied_frameworks(account):
            raise NotFoundError(
                f"no framework named '{name}' is applied", hint="List them with 'strongroom frameworks list'"
            )
        evaluate_all(account, model.now())
        view = framework_view(account, name)
    if json_output:
        output.emit_json(view)
        return
    output.details({k: v for k, v in view.items() if k != "controls"})
    output.table(
        "Controls",
        ["Control", "Status", "Compliant", "Non-compliant"],
        [
            (
                c["control_name"],
                c["control_compliance_status"],
                c["num_resources_compliant"],
                c["num_resources_non_compliant"],
            )
            for c in view["controls"]
        ],
    )
    output.table(
        "Evaluations",
        ["Control", "Resource", "Status", "Reason"],
        [
            (c["control_name"], r["resource_id"], r["compliance_status"], r["reason"])
            for c in view["controls"]
            for r in c["resources"]
        ],
    )
