"""Docs are part of the product: a command, option or environment variable without its doc fails here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from strongroom.cli.main import command_tree

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _commands(group: Any, prefix: str = "") -> list[tuple[str, Any]]:
    found = []
    for name, command in group.commands.items():
        if command.hidden:
            continue
        path = f"{prefix}{name}"
        if hasattr(command, "commands"):
            found += _commands(command, f"{path} ")
        else:
            found.append((path, command))
    return found


def test_every_command_and_option_is_documented() -> None:
    reference = (DOCS / "cli-json.md").read_text() + (DOCS / "configuration.md").read_text()
    root = command_tree()
    missing = []
    for path, command in _commands(root):
        if path not in reference:
            missing.append(path)
        for param in command.params:
            for option in getattr(param, "opts", []):
                if option.startswith("--") and option not in ("--help",) and option not in reference:
                    missing.append(f"{path} {option}")
    assert not missing, f"undocumented in docs/cli-json.md or docs/configuration.md: {missing}"


def test_every_environment_variable_is_documented() -> None:
    import re

    reference = (DOCS / "configuration.md").read_text()
    source = "".join(p.read_text() for p in (Path(__file__).resolve().parents[2] / "src").rglob("*.py"))
    variables = set(re.findall(r'"(STRONGROOM_[A-Z_]+)"', source)) - {"STRONGROOM_JOB_LOCK_FD", "STRONGROOM_ERROR"}
    assert variables, "expected some STRONGROOM_ variables"
    assert not {v for v in variables if v not in reference}
