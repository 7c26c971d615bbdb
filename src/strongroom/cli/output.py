"""Rendering: JSON for scripts (a documented contract, docs/cli-json.md), tables and bars for people."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich.console import Console

if TYPE_CHECKING:
    from rich.table import Table

console = Console(soft_wrap=True)
error_console = Console(stderr=True)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


ARN_PREFIX = "arn:"
SHORTENED_NOTE = "ARNs shortened to their ids; --wide or --json shows them whole"


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, wide: bool = False) -> None:
    """Rows under a title. When they do not fit the terminal (and not ``wide``), ARNs are shortened to
    their last part (an id every command accepts), and if that is not enough each row is printed as a
    block of ``column  value`` lines: values fold once at the edge instead of shrinking to a letter a line."""
    cells = [[text(cell) for cell in row] for row in rows]
    view = _grid(title, columns, cells)
    needed = _width_of(view)
    if needed <= console.width:
        console.print(view)
        return
    if wide:
        width = console.width
        console.width = needed  # print() caps its width at the console's
        try:
            console.print(view)
        finally:
            console.width = width
        return
    short = [[_short_arn(cell) for cell in row] for row in cells]
    note = SHORTENED_NOTE if short != cells else None
    view = _grid(title, columns, short)
    if _width_of(view) <= console.width:
        view.caption, view.caption_justify = note, "left"
        console.print(view)
    else:
        _records(title, note, columns, short)


def _grid(title: str, columns: Sequence[str], cells: Sequence[Sequence[str]]) -> Table:
    from rich.table import Table  # tables, bars and measuring are imported when drawn: CLI start-up

    view = Table(title=title, title_justify="left")
    for column in columns:
        view.add_column(column, overflow="fold")
    for row in cells:
        view.add_row(*row)
    return view


def _width_of(view: Table) -> int:
    """The width ``view`` needs to show every cell on one line."""
    from rich.measure import Measurement

    return Measurement.get(console, console.options.update(width=10**6), view).maximum


def _short_arn(cell: str) -> str:
    if not cell.startswith(ARN_PREFIX):
        return cell
    return cell.rsplit(":", 1)[-1].rsplit("/", 1)[-1] or cell


def _records(title: str, note: str | None, columns: Sequence[str], cells: Sequence[Sequence[str]]) -> None:
    """One block per row, ``column  value`` a line, for a terminal too narrow for the table."""
    from rich.table import Table

    console.print(title, style="italic", highlight=False, markup=False, soft_wrap=False)
    if note:
        console.print(f"({note})", style="italic", highlight=False, markup=False, soft_wrap=False)
    for row in cells:
        view = Table(show_header=False, box=None, padding=(0, 1, 0, 0))
        view.add_column(style="bold", no_wrap=True)
        view.add_column(overflow="fold")
        for column, value in zip(columns, row, strict=True):
            view.add_row(column, value)
        console.print()
        console.print(view)


def text(value: Any) -> str:
    """A value as people read it: lists joined with commas, mappings as ``key=value``; never a Python repr."""
    if value is None:
        return ""
    if isinstance(value, dict):
        return ", ".join(f"{key}={text(item)}" for key, item in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(text(item) for item in value)
    return str(value)


def details(data: dict[str, Any]) -> None:
    from rich.table import Table

    view = Table(show_header=False, box=None)
    view.add_column(style="bold", no_wrap=True)
    view.add_column(overflow="fold")  # an ARN wider than the terminal folds whole, it is not cut short
    for key, value in data.items():
        if isinstance(value, dict | list):
            value = json.dumps(value, indent=1, default=str) if value else ""
        view.add_row(key, "" if value is None else str(value))
    console.print(view)


def human_bytes(count: int | None) -> str:
    value = float(count or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value} B"


@contextmanager
def progress_bar(description: str, total: int | None, enabled: bool) -> Iterator[Callable[[int], None] | None]:
    """A bar with bytes, rate and ETA on a terminal; nothing when piped or with --json."""
    if not enabled or not error_console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=error_console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
