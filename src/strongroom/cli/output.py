"""Rendering: JSON for scripts (a documented contract, docs/cli-json.md), tables and bars for people."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

console = Console(soft_wrap=True)
error_console = Console(stderr=True)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    view = Table(title=title, title_justify="left")
    for column in columns:
        view.add_column(column)
    for row in rows:
        view.add_row(*["" if cell is None else str(cell) for cell in row])
    console.print(view)


def details(data: dict[str, Any]) -> None:
    view = Table(show_header=False, box=None)
    view.add_column(style="bold")
    view.add_column()
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
