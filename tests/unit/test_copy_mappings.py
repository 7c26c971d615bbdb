"""Chunk mappings of copies (catalog ``chunk_map``): never silently replaced; old ones are marked unchecked."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from strongroom.catalog import Catalog
from strongroom.catalog.migrations import MIGRATIONS
from strongroom.catalog.records import ChunkMapping
from strongroom.errors import FormatError, IntegrityError
from strongroom.vault.source import SourceRecord, key_fingerprint

PEER, OWN, OTHER = b"p" * 32, b"o" * 32, b"x" * 32
KEY_A, KEY_B = key_fingerprint(b"a" * 32), key_fingerprint(b"b" * 32)


def test_a_checked_mapping_is_never_replaced_by_a_different_one(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    assert catalog.map_chunks("Default", "v", [(PEER, OWN)], KEY_A) == 0
    with pytest.raises(IntegrityError, match="two different chunks"):
        catalog.map_chunks("Default", "v", [(PEER, OTHER)], KEY_A)
    catalog.map_chunks("Default", "v", [(PEER, OTHER)], None)  # unchecked (a pull): ignored
    assert catalog.mapped_chunks("Default", "v", [PEER]) == {PEER: ChunkMapping(OWN, KEY_A)}


def test_an_unchecked_mapping_gives_way_to_a_checked_one(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    catalog.map_chunks("Default", "v", [(PEER, OTHER)], None)
    assert catalog.map_chunks("Default", "v", [(PEER, OWN)], KEY_B) == 1
    assert catalog.mapped_chunks("Default", "v", [PEER]) == {PEER: ChunkMapping(OWN, KEY_B)}
    catalog.forget_mappings("Default", "v", [(PEER, OTHER)])  # names another chunk: kept
    assert catalog.mapped_chunks("Default", "v", [PEER])
    catalog.forget_mappings("Default", "v", [(PEER, OWN)])
    assert catalog.mapped_chunks("Default", "v", [PEER]) == {}


def test_mappings_from_before_the_upgrade_are_unchecked(tmp_path: Path) -> None:
    upgrade = next(i for i, script in enumerate(MIGRATIONS) if "source_id_keys" in script)
    with sqlite3.connect(tmp_path / "c.db") as db:
        db.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT)")
        for version, script in enumerate(MIGRATIONS[:upgrade], start=1):
            db.executescript(script)
            db.execute("INSERT INTO schema_migrations VALUES (?, 'then')", (version,))
        db.execute("INSERT INTO chunk_map VALUES ('Default', 'v', ?, ?)", (PEER, OWN))
    catalog = Catalog(tmp_path / "c.db")
    assert catalog.mapped_chunks("Default", "v", [PEER]) == {PEER: ChunkMapping(OWN, None)}


def test_a_proof_is_recorded_with_its_mapping_and_follows_a_replacement(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    catalog.map_chunks("Default", "v", [(PEER, OTHER)], None)  # a pull: no proof
    assert catalog.mapped_chunks("Default", "v", [PEER]) == {PEER: ChunkMapping(OTHER, None)}
    catalog.set_mappings_checked("Default", "v", [(PEER, OTHER)], KEY_A, {PEER: (7, b"proof-a")})
    assert catalog.mapped_chunks("Default", "v", [PEER]) == {PEER: ChunkMapping(OTHER, KEY_A, 7, b"proof-a")}
    assert catalog.map_chunks("Default", "v", [(PEER, OWN)], KEY_B, {PEER: (9, b"proof-b")}) == 1
    assert catalog.mapped_chunks("Default", "v", [PEER]) == {PEER: ChunkMapping(OWN, KEY_B, 9, b"proof-b")}
    catalog.map_chunks("Default", "v", [(PEER, OWN)], KEY_B)  # the same mapping without a proof keeps its proof
    assert catalog.mapped_chunks("Default", "v", [PEER])[PEER].proof == b"proof-b"


def test_a_pinned_key_stays_pinned(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    assert catalog.pin_source_key("111111111111", "v", "sealed-a", KEY_A) == "sealed-a"
    assert catalog.pin_source_key("111111111111", "v", "sealed-b", KEY_B) == "sealed-a"
    assert catalog.pin_source_key("222222222222", "v", "sealed-b", KEY_B) == "sealed-b"  # per source account


def test_source_record_round_trip_and_damage() -> None:
    record = SourceRecord("arn:rp", "arn:vault", "v", b"k" * 32, {"tree": "00" * 32})
    assert SourceRecord.from_json(record.to_json()) == record
    assert "k" * 8 not in repr(record)
    with pytest.raises(FormatError, match="wrong length"):
        SourceRecord.from_json({**record.to_json(), "id_key": "AAAA"})
    with pytest.raises(FormatError, match="malformed"):
        SourceRecord.from_json({"recovery_point_arn": "x"})
