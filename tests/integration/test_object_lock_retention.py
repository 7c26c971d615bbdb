"""Object Lock as the vault lock, in the vault engine on a real S3 server (moto on loopback): every object a
recovery point needs is written under its retention, shared objects are extended (never shortened) with no
request beyond the HEAD deduplication makes anyway, and the collector never deletes what is still retained.

Retain-until dates are set relative to the store's clock, never waited for: a date already past is what a
retention that has ended looks like to S3 (moto accepts it at PUT, as S3 does once the date passes).
"""

from __future__ import annotations

import io
import os
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from strongroom.store.base import LockMode, Retention, covers, open_store
from strongroom.store.s3 import S3Store
from strongroom.vault import Vault, gc
from strongroom.vault.retention import retain_point
from strongroom.vault.vault import CHUNKS_PREFIX, CONFIG_KEY, KEYS_PREFIX, manifest_key
from strongroom.vault.writer import RecoveryPointWriter
from tests.support.s3server import S3Server
from tests.support.vaults import FAST_SCRYPT

DATA = os.urandom(3 * 1024 * 1024)


def _locked_vault(s3_server: S3Server) -> Vault:
    """A format-1 vault (one object per chunk), as S3 vaults made before packs are: they must keep working.
    The same guarantees on packed vaults (format 2): tests/integration/test_packs.py."""
    store = open_store(s3_server.new_store_url(object_lock=True))
    return Vault.create(store, "passphrase", scrypt_params=FAST_SCRYPT, packed=False)


def _in(days: float) -> datetime:
    return (datetime.now(UTC) + timedelta(days=days)).replace(microsecond=0)


def _write(vault: Vault, rp_id: str, data: bytes, retention: Retention | None) -> RecoveryPointWriter:
    with RecoveryPointWriter(vault, rp_id, retention=retention) as writer:
        writer.store_stream("data", io.BytesIO(data))
        writer.commit("r", "directory", {})
    return writer


def _count_requests(store: S3Store) -> Counter[str]:
    """Every S3 operation the store's client sends from now on, by name (botocore's own event hook)."""
    counts: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        counts[model.name] += 1

    store.client.meta.events.register("before-call.s3", count)
    return counts


def _retentions(vault: Vault, prefix: str = "") -> dict[str, Retention | None]:
    return {key: vault.store.retention(key) for key in vault.store.list(prefix)}


def test_every_object_a_point_needs_is_written_under_its_retention(s3_server: S3Server) -> None:
    vault = _locked_vault(s3_server)
    wanted = Retention(LockMode.GOVERNANCE, _in(2))
    _write(vault, "rp-1", DATA, wanted)
    vault.write_record("catalog/points/rp-1", b"{}")  # records written after a locked write are retained too
    held = _retentions(vault)
    assert {CONFIG_KEY, manifest_key("rp-1"), "catalog/points/rp-1"} <= set(held)
    assert any(key.startswith(KEYS_PREFIX) for key in held) and any(key.startswith(CHUNKS_PREFIX) for key in held)
    assert {key: r for key, r in held.items() if not covers(r, wanted)} == {}


def test_a_shared_chunk_is_extended_once_and_never_shortened(s3_server: S3Server) -> None:
    vault = _locked_vault(s3_server)
    _write(vault, "rp-1", DATA, Retention(LockMode.GOVERNANCE, _in(1)))
    chunks = set(vault.store.list(CHUNKS_PREFIX))
    store = vault.store
    assert isinstance(store, S3Store)

    later = Retention(LockMode.GOVERNANCE, _in(3))
    requests = _count_requests(store)
    second = _write(vault, "rp-2", DATA, later)
    assert set(vault.store.list(CHUNKS_PREFIX)) == chunks  # all shared: nothing new stored
    # One PutObjectRetention per object whose date was short (the chunks, the index, the keys, the config),
    # and no HEAD beyond the one deduplication sends per object anyway: the retention comes with it.
    assert requests["PutObjectRetention"] == second.keeper.extended == len(chunks) + 2
    # Where If-None-Match is not honoured (Ceph RGW 16.2 on a versioned bucket) the manifest's put-if-absent
    # is a HEAD then a PUT: one HEAD more.
    fallback_heads = 0 if s3_server.is_moto else 1
    assert requests["HeadObject"] <= len(chunks) + 2 + fallback_heads
    assert all(covers(r, later) for r in _retentions(vault, CHUNKS_PREFIX).values())

    requests.clear()
    _write(vault, "rp-3", DATA, Retention(LockMode.GOVERNANCE, _in(2)))  # needs less than the objects hold
    assert requests["PutObjectRetention"] == 0
    assert all(r is not None and r.until >= later.until for r in _retentions(vault, CHUNKS_PREFIX).values())


def test_a_compliance_point_upgrades_governance_objects_it_shares(s3_server: S3Server) -> None:
    vault = _locked_vault(s3_server)
    _write(vault, "rp-1", DATA, Retention(LockMode.GOVERNANCE, _in(2)))
    _write(vault, "rp-2", DATA, Retention(LockMode.COMPLIANCE, _in(1)))
    held = _retentions(vault, CHUNKS_PREFIX).values()
    assert all(
        r is not None and r.mode == LockMode.COMPLIANCE and r.until >= _in(2) - timedelta(seconds=5) for r in held
    )


def test_retaining_an_existing_point_extends_what_it_needs(s3_server: S3Server) -> None:
    vault = _locked_vault(s3_server)
    _write(vault, "rp-1", DATA, None)  # written before any lock
    assert all(r is None for r in _retentions(vault).values())
    wanted = Retention(LockMode.GOVERNANCE, _in(5))
    extended = retain_point(vault, "rp-1", wanted)
    assert extended.extended == extended.objects
    assert all(covers(r, wanted) for r in _retentions(vault).values())
    assert retain_point(vault, "rp-1", wanted).extended == 0


def _versions(s3_server: S3Server, vault: Vault, key: str) -> list[dict[str, Any]]:
    store = vault.store
    assert isinstance(store, S3Store)
    full = store.location.prefix + key
    listed = s3_server.client().list_object_versions(Bucket=store.location.bucket, Prefix=full)
    return [v for v in listed.get("Versions", []) + listed.get("DeleteMarkers", []) if v["Key"] == full]


def test_the_collector_leaves_retained_objects_and_deletes_them_once_retention_ended(s3_server: S3Server) -> None:
    if not s3_server.is_moto:  # an ended retention is written as a past date, which only moto accepts
        pytest.skip("real S3 servers refuse a retain-until date in the past")
    vault = _locked_vault(s3_server)
    ended = Retention(LockMode.GOVERNANCE, _in(-1))  # its retention is over
    kept = Retention(LockMode.GOVERNANCE, _in(1))
    _write(vault, "rp-old", os.urandom(2 * 1024 * 1024), ended)
    old_chunks = set(vault.store.list(CHUNKS_PREFIX))
    _write(vault, "rp-new", os.urandom(2 * 1024 * 1024), kept)
    new_chunks = set(vault.store.list(CHUNKS_PREFIX)) - old_chunks
    for rp_id in ("rp-old", "rp-new"):
        vault.withdraw_manifest(rp_id)
    assert _versions(s3_server, vault, manifest_key("rp-old")) == []  # ended: gone for good, every version
    assert len(_versions(s3_server, vault, manifest_key("rp-new"))) == 2  # retained: hidden by a marker only

    doomed = gc.candidates(gc.mark(vault), gc.stored_objects(vault))
    deleted = gc.delete_objects(vault, doomed)
    assert deleted.objects == len(old_chunks) and deleted.retained == len(new_chunks)
    assert deleted.retained_until == kept.until
    assert all(_versions(s3_server, vault, key) == [] for key in old_chunks)
    assert set(vault.store.list(CHUNKS_PREFIX)) == new_chunks

    # Strongroom's clock claims the retention is over; S3's clock says no: the storage holds the line.
    lying = gc.delete_objects(vault, gc.stored_objects(vault), now=_in(30))
    assert (lying.objects, lying.retained) == (0, len(new_chunks))
    assert set(vault.store.list(CHUNKS_PREFIX)) == new_chunks


@pytest.mark.parametrize("mode", [LockMode.GOVERNANCE, LockMode.COMPLIANCE])
def test_a_store_without_object_lock_refuses_a_locked_write(s3_server: S3Server, mode: LockMode) -> None:
    vault = Vault.create(open_store(s3_server.new_store_url()), "passphrase", scrypt_params=FAST_SCRYPT)
    from strongroom.errors import StorageError

    with pytest.raises(StorageError, match="no Object Lock"):
        _write(vault, "rp-1", b"x" * 1000, Retention(mode, _in(1)))
