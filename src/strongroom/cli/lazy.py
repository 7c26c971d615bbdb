"""Command groups imported when they are run: ``strongroom X …`` imports ``cli/X_cmd.py`` and no other group.

Every ``strongroom`` call is a new process, and importing every group (and through them the services,
the vault engine, psycopg, the HTTP server …) cost ~0.2 s of CPU before any command ran. That is paid
once per WAL segment by ``archive_command = 'strongroom wal push %p'`` and once per CLI call by the
e2e suite. The root group knows each group by name, module and one-line summary only; ``strongroom
--help`` lists the summaries without importing anything, and ``strongroom X`` imports ``X_cmd``, calls
its ``register(app)`` on a scratch Typer app and adds what it registered (docs/architecture.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import typer
import typer.main
from typer.core import TyperGroup


@dataclass(frozen=True)
class LazyCommand:
    """A top-level command or group, known before its module is imported."""

    name: str  # as typed: "recovery-points"
    module: str  # in strongroom.cli: "recovery_points_cmd", whose register(app) adds ``name``
    summary: str  # the first paragraph of its help, as `strongroom --help` shows it


class LazyGroup(TyperGroup):
    """The root group: commands in ``lazy`` are imported on first use. Subclasses set ``lazy``."""

    lazy: ClassVar[tuple[LazyCommand, ...]] = ()
    _listing: bool = False

    def list_commands(self, ctx: typer.Context) -> list[str]:
        names = [entry.name for entry in self.lazy]
        return names + [name for name in self.commands if name not in names]

    def get_command(self, ctx: typer.Context, cmd_name: str) -> typer.core.TyperCommand | TyperGroup | None:
        command = self.commands.get(cmd_name)
        if command is not None:
            return command  # type: ignore[return-value]
        entry = next((entry for entry in self.lazy if entry.name == cmd_name), None)
        if entry is None:
            return None
        if self._listing:  # the help listing: name and summary, nothing imported
            return typer.core.TyperCommand(name=entry.name, help=entry.summary)
        self._load(entry.module)
        return self.commands.get(cmd_name)  # type: ignore[return-value]

    def format_help(self, ctx: typer.Context, formatter: typer.core._click.HelpFormatter) -> None:  # type: ignore[name-defined]
        with self._listing_only():
            super().format_help(ctx, formatter)

    def load_all(self) -> None:
        """Import every group (the tests that walk the whole command tree)."""
        for module in dict.fromkeys(entry.module for entry in self.lazy):
            self._load(module)

    def _load(self, module_name: str) -> None:
        module = importlib.import_module(f"strongroom.cli.{module_name}")
        scratch = typer.Typer()
        module.register(scratch)
        for name, command in typer.main.get_group(scratch).commands.items():
            self.commands.setdefault(name, command)

    @contextmanager
    def _listing_only(self) -> Iterator[None]:
        self._listing = True
        try:
            yield
        finally:
            self._listing = False
