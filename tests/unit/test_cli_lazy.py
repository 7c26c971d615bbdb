"""Command groups are imported when run (cli/lazy.py): `strongroom X` loads cli/X_cmd.py and no other group,
and `strongroom --help` lists every command from main.COMMANDS exactly as the loaded modules describe them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import typer
import typer.main

from strongroom.cli import context
from strongroom.cli.main import COMMANDS, command_tree, execute
from strongroom.services import account

HEAVY = ("rich", "pydantic", "psycopg", "cryptography", "boto3", "fastapi", "strongroom.services", "strongroom.vault")


def _imported_after(*args: str) -> list[str]:
    """Command groups and heavy packages a fresh interpreter holds after running ``strongroom ARGS``."""
    code = textwrap.dedent(
        f"""
        import json, sys
        from strongroom.cli.main import execute
        execute({list(args)!r})
        names = [m for m in sys.modules if m in {HEAVY!r} or (m.startswith("strongroom.cli.") and m.endswith("_cmd"))]
        print(json.dumps(sorted(names)))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return list(json.loads(out.splitlines()[-1]))


def test_version_imports_no_command_group_and_nothing_heavy() -> None:
    assert _imported_after("--version") == []


def test_a_command_imports_its_own_group_only() -> None:
    groups = [name for name in _imported_after("schedule", "next", "rate(1 hour)") if name.endswith("_cmd")]
    assert groups == ["strongroom.cli.schedule_cmd"]


def test_the_top_level_help_is_what_the_loaded_modules_say(capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["--help"]) == 0
    listed = capsys.readouterr().out
    with pytest.raises(typer.Exit):
        command_tree().make_context("strongroom", ["--help"])
    assert capsys.readouterr().out == listed


def test_each_module_registers_exactly_the_names_the_table_gives_it() -> None:
    for module in {entry.module for entry in COMMANDS}:
        scratch = typer.Typer()
        __import__(f"strongroom.cli.{module}", fromlist=["register"]).register(scratch)
        registered = set(typer.main.get_group(scratch).commands)
        assert registered == {entry.name for entry in COMMANDS if entry.module == module}, module


def test_an_unknown_command_is_still_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["jbos", "list"]) == 2
    assert "No such command 'jbos'" in capsys.readouterr().err


def test_the_passphrase_variable_is_the_services_one() -> None:
    assert context.ENV_PASSPHRASE == account.ENV_PASSPHRASE


def test_text_and_path_parameters_are_coerced_without_pydantic(tmp_path: Path) -> None:
    """Typer 0.29 builds a pydantic adapter per parameter; `wal push PATH` and the like need none."""
    loaded = _imported_after("--home", str(tmp_path / "nowhere"), "jobs", "describe", "job-1")
    assert "strongroom.cli.jobs_cmd" in loaded
    assert "pydantic" not in loaded


def test_a_path_given_as_text_still_arrives_as_the_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "nowhere"
    assert execute(["--home", str(home), "jobs", "describe", "job-1"]) != 0
    assert f"no Strongroom account at {home}" in capsys.readouterr().err
