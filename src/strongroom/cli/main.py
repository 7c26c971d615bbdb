"""The ``strongroom`` command: global options, command groups, and error → exit code mapping."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.markup import escape

from strongroom.cli import (
    accounts_cmd,
    backup_cmd,
    config_cmd,
    copy_cmd,
    credentials_cmd,
    dr_cmd,
    init_cmd,
    jobs_cmd,
    lifecycle_cmd,
    notifications_cmd,
    plans_cmd,
    recovery_points_cmd,
    resources_cmd,
    restore_cmd,
    schedule_cmd,
    secrets_cmd,
    serve_cmd,
    vaults_cmd,
    verify_cmd,
)
from strongroom.cli.context import DEFAULT_HOME, ENV_HOME, CliState
from strongroom.cli.output import error_console
from strongroom.errors import StorageError, StrongroomError

app = typer.Typer(
    name="strongroom",
    help="Encrypted, deduplicated, immutable backups and one-command disaster recovery.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def main(
    ctx: typer.Context,
    home: Path = typer.Option(
        DEFAULT_HOME, "--home", envvar=ENV_HOME, help="The account's home directory.", show_default=True
    ),
) -> None:
    ctx.obj = CliState(home=home.expanduser())


# Each command group X lives in cli/X_cmd.py (tests/unit/test_cli_modules.py holds it).
init_cmd.register(app)
vaults_cmd.register(app)
resources_cmd.register(app)
backup_cmd.register(app)
restore_cmd.register(app)
recovery_points_cmd.register(app)
jobs_cmd.register(app)
verify_cmd.register(app)
config_cmd.register(app)
notifications_cmd.register(app)
lifecycle_cmd.register(app)
copy_cmd.register(app)
accounts_cmd.register(app)
credentials_cmd.register(app)
serve_cmd.register(app)
plans_cmd.register(app)
schedule_cmd.register(app)
secrets_cmd.register(app)
dr_cmd.register(app)


def run() -> None:
    try:
        app(standalone_mode=False)
    except StrongroomError as exc:
        error_console.print(f"[bold red]error:[/] {escape(exc.one_line())}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        error_console.print("[bold red]error:[/] interrupted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        error_console.print("[bold red]error:[/] aborted")
        sys.exit(1)
    except OSError as exc:  # an I/O failure no layer expected (a failing disk): one line, not a traceback
        where = f": {exc.filename}" if exc.filename else ""
        error_console.print(f"[bold red]error:[/] {escape(exc.strerror or str(exc))}{escape(where)}", highlight=False)
        sys.exit(StorageError.exit_code)
    except Exception as exc:  # click usage errors and the like (typer ships its own copy of click's classes)
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        raise


if __name__ == "__main__":
    run()
