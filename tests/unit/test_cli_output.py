"""Human output: values as people read them (no Python reprs), tables that fit the terminal."""

from __future__ import annotations

import pytest

from strongroom.cli import output

ARN = "arn:strongroom:backup:local:123456789012:recovery-point:70fe4ab4-ed80-ed58-1c8d-2f3f98967c7e"


def test_values_are_never_python_reprs() -> None:
    shown = output.text([{"name": "db", "tags": {"env": "prod"}}, ("a", None)])
    assert shown == "name=db, tags=env=prod, a, "
    assert "[" not in shown and "{" not in shown and "'" not in shown


def render(rows: list[list[object]], width: int, *, wide: bool = False) -> str:
    console = output.console
    saved = console.width
    console.width = width
    try:
        with console.capture() as captured:
            output.table("Things", ["ARN", "Tags", "Message"], rows, wide=wide)
    finally:
        console.width = saved
    return captured.get()


@pytest.mark.parametrize("width", [80, 60])
def test_narrow_tables_shorten_arns_and_fold_messages(width: int) -> None:
    rows = [[ARN, {"env": "prod"}, "a long message " * 12]] * 2
    shown = render(rows, width)
    assert all(len(line) <= width for line in shown.splitlines()), shown
    assert "70fe4ab4-ed80-ed58-1c8d-2f3f98967c7e" in shown and "--wide or --json" in shown
    assert "…" not in shown and "{" not in shown
    assert " ".join(shown.split()).count("a long message") == 24  # folded, nothing cut off


def test_wide_tables_keep_whole_arns() -> None:
    assert ARN in render([[ARN, None, "m"]], 80, wide=True)
