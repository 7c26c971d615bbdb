"""WAL arithmetic and the backup manifest of direct base backups."""

from __future__ import annotations

import hashlib
import json

import pytest

from strongroom.adapters.postgres.direct import (
    ManifestEntry,
    StopResult,
    backup_manifest,
    format_lsn,
    parse_lsn,
    parse_size,
    wal_segment_names,
)
from strongroom.errors import SourceError

MB16 = 16 << 20


@pytest.mark.parametrize(
    ("timeline", "start", "end", "size", "names"),
    [
        (1, "0/2000028", "0/2000100", MB16, ["000000010000000000000002"]),
        (1, "0/2000028", "0/4000000", MB16, [f"00000001000000000000000{n}" for n in (2, 3)]),  # ends on a boundary
        (1, "0/2000028", "0/4000001", MB16, [f"00000001000000000000000{n}" for n in (2, 3, 4)]),
        (3, "1/FF000028", "2/1000000", MB16, ["0000000300000001000000FF", "000000030000000200000000"]),
        (1, "0/2FFF28", "0/300010", 1 << 20, ["000000010000000000000002", "000000010000000000000003"]),
        (2, "0/5E000028", "0/5E000028", MB16, ["00000002000000000000005E"]),
    ],
)
def test_wal_segment_names(timeline: int, start: str, end: str, size: int, names: list[str]) -> None:
    assert wal_segment_names(timeline, parse_lsn(start), parse_lsn(end), size) == names


def test_lsn_and_size_parsing() -> None:
    assert format_lsn(parse_lsn("1A/FF000028")) == "1A/FF000028"
    assert parse_size("16MB") == MB16 and parse_size("1MB") == 1 << 20 and parse_size("1GB") == 1 << 30
    with pytest.raises(SourceError):
        parse_size("sixteen")


def test_the_manifest_is_postgresql_format_with_its_own_checksum() -> None:
    label = "START WAL LOCATION: 0/5E000028 (file 00000001000000000000005E)\nSTART TIMELINE: 1\n"
    files = [ManifestEntry("PG_VERSION", 3, 0.0), ManifestEntry("base/1/ñ", 8192, 86400.0)]
    data = backup_manifest(files, StopResult(parse_lsn("0/5E000100"), label, ""))
    parsed = json.loads(data)
    assert parsed["PostgreSQL-Backup-Manifest-Version"] == 1
    assert parsed["Files"][1] == {"Path": "base/1/ñ", "Size": 8192, "Last-Modified": "1970-01-02 00:00:00 GMT"}
    assert parsed["WAL-Ranges"] == [{"Timeline": 1, "Start-LSN": "0/5E000028", "End-LSN": "0/5E000100"}]
    body = data[: data.rindex(b'"Manifest-Checksum"')]
    assert parsed["Manifest-Checksum"] == hashlib.sha256(body).hexdigest() and data.endswith(b"}\n")
