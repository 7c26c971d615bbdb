"""Every command, walked from the Typer app (a new command is covered by itself), given hostile values
for each of its options and arguments: the exit code is a documented one, stderr holds at most one line,
and no traceback. In-process through ``strongroom.cli.main.execute`` (the entry point's own mapping, not
Typer's test runner); a sample runs as a real subprocess too.
"""

from __future__ import annotations

import enum
import typing
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from strongroom.cli.main import command_tree, execute
from tests.support.cli import Cli

# docs/operations.md "Exit codes": 1 is a bug, never an answer to bad input.
DOCUMENTED = {0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 126}  # 126: wal fetch, any failure but "never archived"
LONG_RUNNING = {"serve"}  # would serve until stopped: given hostile values without an account only


def leaves(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if hasattr(command, "commands"):
        for name, sub in sorted(command.commands.items()):
            yield from leaves(sub, (*path, name))
    else:
        yield path, command


ALL_COMMANDS = list(leaves(command_tree()))


def kind_of(command: Any, param: Any) -> Any:
    """The Python type a parameter is declared with (``int | None`` and ``list[int]`` give ``int``)."""
    callback = getattr(command.callback, "__wrapped__", command.callback)
    hint = typing.get_type_hints(callback).get(param.name, str)
    while typing.get_args(hint):
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint


def hostile_values(kind: Any, tmp: Path) -> list[str]:
    if kind is int:
        return ["-1", "70000", str(10**30)]
    if kind is float:
        return ["-1", "nan", "1e999"]
    if kind is Path:
        return [str(tmp / "missing" / "file"), str(tmp / "unreadable"), str(tmp), ""]
    if kind is datetime:
        return ["yesterday", "9999-99-99T99:99:99+00:00"]
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return ["", "NOPE\x01"]
    return ["", "\x01\x1b[31mred\udcff", "arn:aws:iam::123:role/x", "../" * 10 + "etc/passwd", "x" * 5000]


def benign(kind: Any, tmp: Path) -> str:
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return str(next(iter(kind)).value)
    return {int: "1", float: "1", Path: str(tmp / "none.yaml"), datetime: "2026-01-01T00:00:00+00:00"}.get(kind, "x")


def invocations(path: tuple[str, ...], command: Any, tmp: Path) -> Iterator[list[str]]:
    params = [p for p in command.params if p.name != "help" and not getattr(p, "is_flag", False)]
    kinds = {p.name: kind_of(command, p) for p in params}
    for target in params:
        for value in hostile_values(kinds[target.name], tmp):
            args = [*path]
            for param in params:
                if param is not target and not param.required:
                    continue
                text = value if param is target else benign(kinds[param.name], tmp)
                if param.param_type_name == "argument":
                    args.append(text)
                else:
                    args += [param.opts[0], text]
            yield args


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("hostile")
    cli = Cli(base / "home")
    cli.run("init")
    unreadable = base / "unreadable"
    unreadable.write_text("{}")
    unreadable.chmod(0)
    return base


def _check(args: list[str], code: int, err: str) -> str | None:
    lines = [line for line in err.splitlines() if line.strip()]
    if code not in DOCUMENTED or len(lines) > 1 or "Traceback" in err:
        return f"strongroom {' '.join(map(repr, args))}: exit {code}, stderr {err[:300]!r}"
    return None


@pytest.mark.parametrize(("path", "command"), ALL_COMMANDS, ids=[" ".join(p) for p, _ in ALL_COMMANDS])
def test_hostile_values(
    path: tuple[str, ...], command: Any, home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    for name, value in Cli(home / "home").env.items():
        monkeypatch.setenv(name, value)
    if path[0] in LONG_RUNNING:
        monkeypatch.setenv("STRONGROOM_HOME", str(home / "no-account"))
    monkeypatch.setenv("STRONGROOM_SECRET_VALUE", "x")
    problems = []
    for args in invocations(path, command, home):
        code = execute(args)
        err = capsys.readouterr().err
        problem = _check(args, code, err)
        if problem:
            problems.append(problem)
    assert not problems, "\n".join(problems)


def test_a_sample_as_a_real_process(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    cli.run("init")
    samples = [
        ("serve", "--port", "70000"),
        ("backup", "start", "--resource", "x", "--delete-after", str(10**30)),
        ("recovery-points", "describe", "--recovery-point", "arn:aws:backup:x"),
        ("jobs", "describe", "\x01\x1b[2J"),
        ("apply", "-f", str(tmp_path / "missing.yaml"), "--auto-approve"),
        ("nonsense",),
    ]
    for args in samples:
        result = cli.run(*args, ok=False)
        assert _check(list(args), result.returncode, result.stderr) is None, result
        assert result.returncode != 0
