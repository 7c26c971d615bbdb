"""Findability: the command group ``X`` lives in ``cli/X_cmd.py`` (``recovery-points`` in
``recovery_points_cmd.py``), a top-level command ``Y`` in ``cli/Y_cmd.py``, and no ``*_cmd.py`` module
is left without its command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from strongroom.cli.main import command_tree

CLI_DIR = Path(__file__).resolve().parents[2] / "src" / "strongroom" / "cli"
# Top-level commands that belong to a family: the configuration workflow (docs/configuration.md).
FAMILIES = {"plan": "config", "apply": "config", "output": "config"}


def _leaves(command: Any, path: str) -> list[tuple[str, Any]]:
    if not hasattr(command, "commands"):
        return [(path, command)]
    return [leaf for name, sub in command.commands.items() for leaf in _leaves(sub, f"{path} {name}")]


def _module_for(top_level: str) -> str:
    return FAMILIES.get(top_level, top_level).replace("-", "_") + "_cmd"


def _defining_module(command: Any) -> str:
    callback = command.callback
    return getattr(callback, "__wrapped__", callback).__module__


def test_every_command_lives_in_the_module_named_after_its_group() -> None:
    root = command_tree()
    misplaced = []
    for name, command in root.commands.items():
        expected = f"strongroom.cli.{_module_for(name)}"
        for path, leaf in _leaves(command, name):
            if _defining_module(leaf) != expected:
                misplaced.append(f"'{path}' is in {_defining_module(leaf)}, not {expected}")
    assert not misplaced, misplaced


def test_every_command_module_holds_a_command() -> None:
    root = command_tree()
    named = {_module_for(name) for name in root.commands}
    stray = sorted(p.stem for p in CLI_DIR.glob("*_cmd.py") if p.stem not in named)
    assert not stray, f"cli modules named like a command group that is not one: {stray}"


def test_no_lower_layer_names_a_front_end_module() -> None:
    """import-linter sees imports, not a module named in a string (a spawned process's argv): this does."""
    package = CLI_DIR.parent
    lower = [
        package / name
        for name in ("services", "transport", "config", "plans", "policy", "adapters", "catalog", "vault", "store")
    ]
    naming = sorted(
        str(path.relative_to(package))
        for layer in lower
        for path in layer.rglob("*.py")
        if "strongroom.cli" in path.read_text() or "strongroom.server" in path.read_text()
    )
    assert not naming, f"modules below the front ends naming one: {naming}"
