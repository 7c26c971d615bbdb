"""The ``strongroom`` command: global options, command groups, and error → exit code mapping."""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
import typer.main

from strongroom import __version__, signals
from strongroom.cli.context import DEFAULT_HOME, ENV_HOME, CliState
from strongroom.cli.lazy import LazyCommand, LazyGroup, plain_coercions
from strongroom.errors import StorageError, StrongroomError, UsageError

ENV_TRACEBACK = "STRONGROOM_TRACEBACK"

# Each command group X lives in cli/X_cmd.py (tests/unit/test_cli_modules.py holds it) and is imported only
# when X is run: adding a group is one line here (docs/architecture.md "The command line"). The summary is what
# `strongroom --help` lists without importing the module (tests/unit/test_cli_lazy.py compares them).
COMMANDS = (
    LazyCommand("init", "init_cmd", "Create an account home: catalog, account id, keys and the Default vault."),
    LazyCommand(
        "verify",
        "verify_cmd",
        "Check that recovery points are whole and that the catalog agrees with the vaults; with --read-data,\n"
        "that every byte is intact.",
    ),
    LazyCommand(
        "plan",
        "config_cmd",
        "Show what 'apply' would change in this account, and what its vault policies or locks would refuse.",
    ),
    LazyCommand(
        "apply",
        "config_cmd",
        "Make the account match its configuration file: create, change and remove what the plan shows.",
    ),
    LazyCommand("output", "config_cmd", "Print the outputs of the last apply, such as destination_vault_arn."),
    LazyCommand(
        "serve",
        "serve_cmd",
        "Serve this account's API (copies in and out, policy-checked vault operations) and run its backup plans,\n"
        "until stopped by SIGTERM or Ctrl-C.",
    ),
    LazyCommand("vaults", "vaults_cmd", "Backup vaults of this account."),
    LazyCommand("resources", "resources_cmd", "Resources this account protects."),
    LazyCommand("backup", "backup_cmd", "Backup jobs."),
    LazyCommand("restore", "restore_cmd", "Restore jobs."),
    LazyCommand("recovery-points", "recovery_points_cmd", "Recovery points in the account's vaults."),
    LazyCommand("jobs", "jobs_cmd", "Backup and restore jobs."),
    LazyCommand("notifications", "notifications_cmd", "The notification outbox: events queued for vault sinks."),
    LazyCommand("lifecycle", "lifecycle_cmd", "Retention of recovery points and garbage collection."),
    LazyCommand("copy", "copy_cmd", "Copy jobs between accounts."),
    LazyCommand("accounts", "accounts_cmd", "Other accounts this account copies to or from."),
    LazyCommand("credentials", "credentials_cmd", "Access keys other accounts use to call this account's API."),
    LazyCommand("plans", "plans_cmd", "Backup plans applied to the account and their scheduled runs."),
    LazyCommand("schedule", "schedule_cmd", "AWS cron/rate schedule expressions (see docs/schedules.md)."),
    LazyCommand("secrets", "secrets_cmd", "The account's encrypted secret store (e.g. database credentials)."),
    LazyCommand("dr", "dr_cmd", "Disaster recovery: run, resume and rehearse runbooks."),
    LazyCommand(
        "restore-testing",
        "restore_testing_cmd",
        "Restore testing plans: scheduled test restores into scratch targets, validated and removed.",
    ),
    LazyCommand(
        "frameworks",
        "frameworks_cmd",
        "Audit frameworks: AWS Backup Audit Manager controls evaluated against the catalog.",
    ),
    LazyCommand("report-plans", "report_plans_cmd", "Report plans: scheduled CSV/JSON reports for auditors."),
    LazyCommand("reports", "reports_cmd", "Report jobs: make a report plan's report now, list what was made."),
    LazyCommand("wal", "wal_cmd", "Continuous WAL archiving (point-in-time recovery of postgres-cluster)."),
)


class StrongroomGroup(LazyGroup):
    lazy = COMMANDS


app = typer.Typer(
    name="strongroom",
    help="Encrypted, deduplicated, immutable backups and one-command disaster recovery.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=StrongroomGroup,
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"strongroom {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    home: Path = typer.Option(
        DEFAULT_HOME, "--home", envvar=ENV_HOME, help="The account's home directory.", show_default=True
    ),
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_show_version, help="Print the version and exit."
    ),
) -> None:
    ctx.obj = CliState(home=home.expanduser())


def command_tree() -> StrongroomGroup:
    """The whole command tree with every group imported (for tests and tools that walk it)."""
    root = typer.main.get_command(app)
    assert isinstance(root, StrongroomGroup)
    root.load_all()
    return root


def run(args: Sequence[str] | None = None) -> None:
    """The ``strongroom`` entry point: run one command and exit with its code (docs/operations.md)."""
    sys.exit(execute(sys.argv[1:] if args is None else args))


def execute(args: Sequence[str]) -> int:
    """Run one command; its exit code. Every failure is one line on stderr, never a traceback.

    Click's own ``main`` (and Typer's copy of it) is not used: in standalone mode it turns Ctrl-C into
    "Aborted!" and exit 1, and outside it Typer's copy (0.29) *returns* 130 for an interrupt, which the
    caller dropped: exit 0. The command is invoked directly and every exception is mapped here.
    """
    previous = signals.install()
    try:
        return _invoke(args)
    finally:
        signals.restore(previous)


def _invoke(args: Sequence[str]) -> int:
    command = typer.main.get_command(app)
    plain_coercions(command)  # --home: a Path, without pydantic (cli/lazy.py)
    undecodable = next((arg for arg in args if _has_surrogates(arg)), None)
    if undecodable is not None:  # bytes that are not UTF-8 in argv: no name, path or ARN is made of them
        return _fail(f"argument {undecodable!r} is not valid UTF-8", UsageError.exit_code)
    try:
        with command.make_context("strongroom", list(args)) as ctx:
            command.invoke(ctx)
        return 0
    except StrongroomError as exc:
        return _fail(exc.one_line(), exc.exit_code)
    except signals.Interrupted as exc:
        return _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:  # a SIGINT before our handler was in place
        return _fail("interrupted", signals.exit_code(signal.SIGINT))
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        return _fail("aborted", 1)
    except sqlite3.Error as exc:  # the catalog failed beneath a command (a disk that turned read-only)
        return _fail(f"the account's catalog failed: {exc}", StorageError.exit_code)
    except OSError as exc:  # an I/O failure no layer expected (a failing disk): one line, not a traceback
        where = f": {exc.filename}" if exc.filename else ""
        return _fail(f"{exc.strerror or exc}{where}", StorageError.exit_code)
    except Exception as exc:
        if _is_click_error(exc):
            return _click_error(exc)
        if os.environ.get(ENV_TRACEBACK):
            raise
        message = f"internal error: {type(exc).__name__}: {_one_line(str(exc)).rstrip('.')}"
        return _fail(f"{message}. This is a bug: rerun with {ENV_TRACEBACK}=1 and report the traceback", 1)


def _is_click_error(exc: Exception) -> bool:
    """Click's exceptions (a bad option value, a missing argument), whichever copy of click Typer ships."""
    return callable(getattr(exc, "format_message", None)) and isinstance(getattr(exc, "exit_code", None), int)


def _click_error(exc: Any) -> int:
    if type(exc).__name__ == "NoArgsIsHelpError":  # `strongroom` or `strongroom vaults` alone: the help
        exc.show()
        return int(exc.exit_code)
    context = getattr(exc, "ctx", None)
    where = f". See '{context.command_path} --help'" if context is not None else ""
    return _fail(f"{_one_line(exc.format_message()).rstrip('.')}{where}", int(exc.exit_code))


def _fail(message: str, exit_code: int) -> int:
    from rich.markup import escape  # Rich loads when there is something to print (start-up, docs/architecture.md)

    from strongroom.cli.output import error_console

    error_console.print(f"[bold red]error:[/] {escape(_printable(message))}", highlight=False, soft_wrap=True)
    return exit_code


def _has_surrogates(text: str) -> bool:
    return any("\udc80" <= char <= "\udcff" for char in text)


def _printable(text: str) -> str:
    """``text`` with control characters (a terminal escape in a hostile argument echoed back, a newline)
    and undecodable bytes shown escaped, so the error stays one harmless line."""
    return "".join(ascii(char)[1:-1] if unicodedata.category(char) in ("Cc", "Cs") else char for char in text)


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":
    run()
