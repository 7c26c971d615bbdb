"""Command groups imported when they are run: ``strongroom X …`` imports ``cli/X_cmd.py`` and no other group.

Every ``strongroom`` call is a new process, and importing every group (and through them the services,
the vault engine, psycopg, the HTTP server …) cost ~0.2 s of CPU before any command ran. That is paid
once per WAL segment by ``archive_command = 'strongroom wal push %p'`` and once per CLI call by the
e2e suite. The root group knows each group by name, module and one-line summary only; ``strongroom
--help`` lists the summaries without importing anything, and ``strongroom X`` imports ``X_cmd``, calls
its ``register(app)`` on a scratch Typer app and adds what it registered (docs/architecture.md).

Typer 0.29 coerces every parameter that is not a flag through a pydantic ``TypeAdapter``; importing
pydantic and building the adapters is ~0.05 s of a ``wal push``'s ~0.2 s. ``str``, ``bool`` and
``Path`` parameters without custom parsing are coerced here without pydantic, paths with Typer's own
checks (``plain_coercions``); every other parameter, or every parameter under a Typer whose internals
differ, keeps Typer's coercion.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import typer
import typer.main
from typer._click import Command, Context, HelpFormatter  # the click Typer ships, which its groups subclass
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

    def list_commands(self, ctx: Context) -> list[str]:
        names = [entry.name for entry in self.lazy]
        return names + [name for name in self.commands if name not in names]

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        command = self.commands.get(cmd_name)
        if command is not None:
            return command
        entry = next((entry for entry in self.lazy if entry.name == cmd_name), None)
        if entry is None:
            return None
        if self._listing:  # the help listing: name and summary, nothing imported
            return typer.core.TyperCommand(name=entry.name, help=entry.summary)
        self._load(entry.module)
        return self.commands.get(cmd_name)

    def format_help(self, ctx: Context, formatter: HelpFormatter) -> None:
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
            plain_coercions(command)
            self.commands.setdefault(name, command)

    @contextmanager
    def _listing_only(self) -> Iterator[None]:
        self._listing = True
        try:
            yield
        finally:
            self._listing = False


def plain_coercions(command: Any) -> None:
    """Give the ``str``, ``bool`` and ``Path`` parameters of ``command`` (its subcommands' too, and their
    ``--help``) a coercion without pydantic. Relies on Typer internals (``_TyperParameter._runtime_param``,
    ``RuntimeParam``); when they are not there, nothing changes and Typer coerces as always."""
    try:
        from typer._coercion import RuntimeParam
        from typer._param_types import coerce_cli_path
    except ImportError:  # another Typer: its own coercion, only slower to start
        return

    class Plain(RuntimeParam):
        """A value of the annotated type as it is (command-line text, a flag); anything else as Typer would."""

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            if isinstance(value, self.annotation):
                return value
            return _typer_coercion(param).coerce(value, param=param, ctx=ctx)

    class PlainPath(RuntimeParam):
        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            path = Path(value) if isinstance(value, str) else value  # as pydantic's Path validator makes it
            return coerce_cli_path(path, self.parameter_info, path_type=Path, param=param, ctx=ctx)

    for param in _parameters(command):
        descriptor = getattr(param, "type_descriptor", None)
        if descriptor is None or getattr(param, "_runtime_param", "missing") is not None:
            continue
        info = descriptor.parameter_info
        if getattr(info, "parser", None) is not None or getattr(info, "click_type", None) is not None:
            continue
        if descriptor.annotation in (str, bool):
            param._runtime_param = Plain(parameter_info=info, annotation=descriptor.annotation)
        elif descriptor.annotation is Path and info.path_type in (None, Path) and not info.allow_dash:
            param._runtime_param = PlainPath(parameter_info=info, annotation=Path)


def _parameters(command: Any) -> Iterator[Any]:
    """The parameters of ``command`` and its subcommands, with the ``--help`` option Click makes on demand."""
    yield from getattr(command, "params", ())
    with suppress(Exception):  # made and cached now, as Click would on the first parse
        help_option = command.get_help_option(Context(command))
        if help_option is not None:
            yield help_option
    for sub in getattr(command, "commands", {}).values():
        yield from _parameters(sub)


def _typer_coercion(param: Any) -> Any:
    from typer._coercion import build_runtime_param

    return build_runtime_param(param.type_descriptor)
