"""``strongroom plan``, ``strongroom apply`` and ``strongroom output``: the account as declared in a YAML file."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from strongroom.cli import context, output
from strongroom.errors import NotFoundError, UsageError

if TYPE_CHECKING:  # the config and apply modules load only when one of these commands runs
    from strongroom.config.changes import Change, Plan

SENSITIVE = "(sensitive)"
SYMBOLS = {"create": ("+", "green", "create"), "delete": ("-", "red", "destroy")}
UPDATE_SYMBOL = ("~", "yellow", "update")

FILE_OPTION = typer.Option(..., "-f", "--file", metavar="FILE", help="The account's configuration file (YAML).")
VAR_OPTION = typer.Option(
    [], "--var", metavar="NAME=VALUE", help="Value of a declared variable, repeatable; wins over var files."
)
VAR_FILE_OPTION = typer.Option(
    [], "--var-file", metavar="FILE", help="YAML file of NAME: VALUE, repeatable; later files win."
)
JSON_OPTION = typer.Option(False, "--json", help="Print JSON.")


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)
    app.command("apply")(apply)
    app.command("output")(output_)


def plan(
    ctx: typer.Context,
    file: Path = FILE_OPTION,
    var: list[str] = VAR_OPTION,
    var_file: list[Path] = VAR_FILE_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Show what 'apply' would change in this account, and what its vault policies or locks would refuse."""
    from strongroom.services.apply import load, make_plan

    with context.account(ctx) as account:
        planned = make_plan(account, load(account, file, cli_vars=var, var_files=var_file))
    if json_output:
        output.emit_json(planned.as_dict())
    else:
        show_plan(planned)


def apply(
    ctx: typer.Context,
    file: Path = FILE_OPTION,
    var: list[str] = VAR_OPTION,
    var_file: list[Path] = VAR_FILE_OPTION,
    auto_approve: bool = typer.Option(False, "--auto-approve", help="Apply without asking for 'yes'."),
    lock_timeout: float = typer.Option(
        0, "--lock-timeout", metavar="SECONDS", min=0, help="Wait this long for another apply to finish."
    ),
    json_output: bool = JSON_OPTION,
) -> None:
    """Make the account match its configuration file: create, change and remove what the plan shows."""
    from strongroom.services.apply import apply_config, shown_outputs

    if not auto_approve and not sys.stdin.isatty():
        raise UsageError(
            "apply needs approval and there is no terminal to ask",
            hint="Review 'strongroom plan', then pass --auto-approve",
        )
    with context.account(ctx) as account:
        result = apply_config(
            account,
            file,
            cli_vars=var,
            var_files=var_file,
            lock_timeout=lock_timeout,
            approve=None if auto_approve else _ask,
        )
    if json_output:
        output.emit_json(result.as_dict())
        return
    if auto_approve:
        show_plan(result.plan)
    if result.plan.changes:
        summary = result.plan.summary()
        output.console.print(
            f"Apply complete: {summary['create']} created, {summary['update']} updated, {summary['delete']} destroyed.",
            highlight=False,
        )
    _show_outputs(shown_outputs(result.outputs))


def output_(
    ctx: typer.Context,
    name: str | None = typer.Argument(None, metavar="[NAME]", help="One output; its value is shown even if sensitive."),
    raw: bool = typer.Option(False, "--raw", help="Print only the value as plain text (one output, for scripts)."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Print the outputs of the last apply, such as destination_vault_arn."""
    from strongroom.services.apply import read_outputs, shown_outputs

    if raw and json_output:
        raise UsageError("give --raw or --json, not both")
    with context.account(ctx) as account:
        outputs = read_outputs(account)
    if name is None:
        if raw:
            raise UsageError("--raw prints one output", hint="Name it: strongroom output NAME --raw")
        output.emit_json(shown_outputs(outputs)) if json_output else _show_outputs(shown_outputs(outputs))
        return
    if name not in outputs:
        known = ", ".join(outputs) or "none (run 'strongroom apply' first)"
        raise NotFoundError(f"no output named '{name}'", hint=f"Outputs: {known}")
    value = outputs[name].value
    if json_output:
        output.emit_json(value)
    elif raw:
        sys.stdout.write(_raw(value) + "\n")
    else:
        output.console.print(f"{name} = {json.dumps(value)}", highlight=False)


def _raw(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


# Rendering ----------------------------------------------------------------------------------------
def show_plan(planned: Plan) -> None:
    for warning in planned.warnings:
        output.console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    if not planned.changes:
        output.console.print("No changes. The account matches the configuration.")
        return
    for change in planned.changes:
        _show_change(change)
    summary = planned.summary()
    line = f"Plan: {summary['create']} to create, {summary['update']} to update, {summary['delete']} to destroy"
    if summary["refused"]:
        line += f", [red]{summary['refused']} refused[/]"
    output.console.print(f"\n{line}.", highlight=False)


def _show_change(change: Change) -> None:
    symbol, colour, verb = SYMBOLS.get(change.action, UPDATE_SYMBOL)
    label = change.kind if change.kind == "destination" else f"{change.kind} {change.name}"
    if change.refused:
        output.console.print(f"[red]![/] refused: {verb} {escape(label)}: {escape(change.refused)}", highlight=False)
        return
    output.console.print(f"[{colour}]{symbol}[/] {verb} {escape(label)}", highlight=False)
    for detail in change.details:
        output.console.print(f"      {detail}", highlight=False, markup=False)


def _show_outputs(outputs: dict[str, Any]) -> None:
    """Outputs as shown_outputs() gives them (sensitive values already hidden)."""
    if not outputs:
        return
    output.console.print("\nOutputs:")
    for name, value in outputs.items():
        text = SENSITIVE if value == SENSITIVE else json.dumps(value)
        output.console.print(f"  {name} = {text}", highlight=False, markup=False)


def _ask(planned: Plan) -> bool:
    show_plan(planned)
    output.console.print("\nDo you want to apply these changes? Only 'yes' will be accepted.", highlight=False)
    try:
        answer = input("  Enter a value: ")
    except EOFError:
        return False
    return answer.strip() == "yes"
