"""Report rows as the bytes of a file: CSV (a header of the template's columns) or JSON (``{"reportItems": [...]}``)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

EXTENSIONS = {"CSV": "csv", "JSON": "json"}


def render(fmt: str, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> bytes:
    if fmt == "JSON":
        items = [{column: row.get(column, "") for column in columns} for row in rows]
        return (json.dumps({"reportItems": items}, indent=2) + "\n").encode()
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({column: _cell(row.get(column, "")) for column in columns})
    return out.getvalue().encode()


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    # A cell a spreadsheet would run as a formula is quoted with a leading apostrophe (CSV injection).
    return "'" + text if text[:1] in ("=", "+", "-", "@") and not _number(text) else text


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
