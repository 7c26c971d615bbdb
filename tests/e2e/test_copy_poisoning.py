"""A compromised source cannot poison copies: not those made before its compromise, nor those made after.

The attacker holds the source account's home, passphrase and destination credential, and speaks the
wire protocol with the project's own client and frame encoder. The destination is a real
``strongroom serve`` on loopback. What counts is what a later, legitimate copy restores.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import zstandard

from strongroom.errors import IntegrityError, StrongroomError, UsageError
from strongroom.services.account import Account, open_account
from strongroom.services.remote import client_for
from strongroom.transport import wire
from strongroom.transport.client import AccountClient
from strongroom.vault.manifest import ChunkRef, Manifest, load_manifest, seal_manifest
from strongroom.vault.reader import RecoveryPointReader
from strongroom.vault.source import key_fingerprint, source_chunk_id
from strongroom.vault.vault import manifest_key
from strongroom.vault.writer import RecoveryPointWriter
from tests.e2e.test_copy import Pair, copy, two_accounts
from tests.support.cli import PASSPHRASE
from tests.support.trees import snapshot_tree


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    """A source, and a destination serving its API that trusts the source's copies."""
    with two_accounts(tmp_path) as built:
        yield built


@contextmanager
def opened(home: Path) -> Iterator[Account]:
    account = open_account(home, lambda: PASSPHRASE)
    try:
        yield account
    finally:
        account.catalog.close()


@contextmanager
def stolen_source(pair: Pair) -> Iterator[tuple[Account, AccountClient]]:
    """The source's home, passphrase and destination credential, in the attacker's hands."""
    with opened(pair.source.home) as account, client_for(account, "destination") as client:
        yield account, client


def point_refs(account: Account, arn: str) -> tuple[Manifest, dict[str, list[ChunkRef]]]:
    vault = account.vault()
    manifest = load_manifest(vault, arn.rsplit(":", 1)[1])
    with RecoveryPointReader(vault, manifest) as reader:
        return manifest, {name: list(reader.iter_refs(stream)) for name, stream in manifest.streams.items()}


def announcement(account: Account, arn: str, manifest: Manifest, id_key: bytes | None) -> dict[str, Any]:
    """What the source says when it starts a copy (as services/copy.py says it)."""
    import base64

    announce: dict[str, Any] = {
        "source_recovery_point_arn": arn,
        "source_vault_arn": account.vault_arn("Default"),
        "source_vault_id": manifest.vault_id,
        "resource_id": manifest.resource_id,
        "resource_type": manifest.resource_type,
        "creation_date": manifest.created_at,
        "delete_after_days": None,
        "metadata": manifest.metadata,
        "streams": {n: {"size": s.size, "chunk_count": s.chunk_count} for n, s in manifest.streams.items()},
    }
    if id_key is not None:
        announce["source_chunk_id_key"] = base64.b64encode(id_key).decode()
    return announce


def send_copy(
    client: AccountClient, announce: dict[str, Any], refs: dict[str, list[ChunkRef]], data: dict[bytes, bytes]
) -> StrongroomError | None:
    """Start a copy, send ``data`` under the given ids, append the refs and commit, as far as allowed."""
    compressor = zstandard.ZstdCompressor()
    try:
        session = client.start_copy_in("Default", announce)["copy_job_id"]
        client.put_chunks(
            session,
            b"".join(
                wire.encode_frame(chunk_id, len(body), compressor.compress(body)) for chunk_id, body in data.items()
            ),
        )
        for name, stream_refs in refs.items():
            client.append_refs(session, name, [(ref.id, ref.size) for ref in stream_refs])
        client.commit_copy_in(session)
    except StrongroomError as exc:
        return exc
    return None


def junk_for(refs: dict[str, list[ChunkRef]]) -> dict[bytes, bytes]:
    """Random bytes of each chunk's size, under each chunk's real id."""
    return {ref.id: os.urandom(ref.size) for stream in refs.values() for ref in stream}


def mappings(cli_home: Path) -> set[tuple[bytes, bytes]]:
    with sqlite3.connect(cli_home / "catalog.db") as db:
        return {(bytes(p), bytes(o)) for p, o in db.execute("SELECT peer_chunk_id, chunk_id FROM chunk_map")}


def copy_jobs(pair: Pair) -> list[dict[str, Any]]:
    return [j for j in pair.destination.json("jobs", "list")["jobs"] if j["job_type"] == "COPY"]


def assert_restores_the_original(pair: Pair, copied: str, name: str, original: Any = None) -> None:
    target = pair.tmp_path / name
    pair.destination.run("restore", "start", "--recovery-point", copied, "--target", str(target), "--wait")
    assert snapshot_tree(target) == (original or snapshot_tree(pair.tree))


def test_junk_under_real_ids_never_reaches_a_later_copy(pair: Pair) -> None:
    """The attacker re-sends the real ids of a point the destination already holds and of one it does not,
    with junk bytes; after it has gone, legitimate copies of both restore the original bytes."""
    original = snapshot_tree(pair.tree)
    copied_before = copy(pair.source, pair.source.backup("files")["recovery_point_arn"], pair.destination_vault)
    fresh_point = pair.source.backup("files")["recovery_point_arn"]
    (pair.tree / "f03.bin").write_bytes(os.urandom(400_000))
    not_yet_copied = pair.source.backup("files")["recovery_point_arn"]  # the destination holds none of f03
    held_before = mappings(pair.destination.home)

    refused = []
    with stolen_source(pair) as (account, client):
        # The key goes to a destination that asks for it (wire protocol 2); an older one would refuse it.
        id_key = account.vault().keys.id_key if client.whoami()["api_version"] != "1" else None
        for arn in (fresh_point, not_yet_copied):
            manifest, refs = point_refs(account, arn)
            refused.append(send_copy(client, announcement(account, arn, manifest, id_key), refs, junk_for(refs)))

    later = copy(pair.source, not_yet_copied, pair.destination_vault)  # the attacker has gone
    assert later["state"] == "COMPLETED", later
    assert_restores_the_original(pair, later["result"]["destination_recovery_point_arn"], "later")
    assert_restores_the_original(pair, copied_before["result"]["destination_recovery_point_arn"], "before", original)
    assert pair.destination.json("verify", "--read-data")["ok"]

    for error in refused:
        assert isinstance(error, IntegrityError), error
        assert "not the content that id names" in error.message, error.message
    attacks = [j for j in copy_jobs(pair) if j["state"] != "COMPLETED"]
    assert len(attacks) == 2 and all(j["state"] == "FAILED" for j in attacks), attacks
    assert all("not the content that id names" in (j.get("status_message") or "") for j in attacks), attacks
    assert held_before <= mappings(pair.destination.home)  # nothing replaced


def test_poisoned_mapping_from_before_the_upgrade_heals_on_the_next_copy(pair: Pair) -> None:
    first = copy(pair.source, pair.source.backup("files")["recovery_point_arn"], pair.destination_vault)
    assert first["state"] == "COMPLETED", first
    with opened(pair.source.home) as account:
        _, refs = point_refs(account, first["result"]["source_recovery_point_arn"])
    victim = next(ref for stream in refs.values() for ref in stream[1:])
    poison_mapping(pair, victim, checked_under=None)  # as an old Strongroom left it: never checked

    second = copy(pair.source, pair.source.backup("files")["recovery_point_arn"], pair.destination_vault)
    assert second["state"] == "COMPLETED", second
    assert_restores_the_original(pair, second["result"]["destination_recovery_point_arn"], "second")
    assert pair.destination.json("verify", "--read-data")["ok"]
    stats = pair.destination.json("jobs", "describe", second["result"]["destination_copy_job_id"])["result"]
    assert stats["mappings_dropped"] == 1 and stats["mappings_checked"] >= 1, stats
    assert stats["chunks_received"] >= 1, stats


def test_a_wrongly_trusted_mapping_fails_the_copy_and_is_dropped(pair: Pair) -> None:
    """Defence in depth: even a poisoned mapping the catalog claims was checked never makes a copy
    COMPLETED; the copy fails naming the source point, and the next one heals."""
    first = copy(pair.source, pair.source.backup("files")["recovery_point_arn"], pair.destination_vault)
    with opened(pair.source.home) as account:
        _, refs = point_refs(account, first["result"]["source_recovery_point_arn"])
        fingerprint = key_fingerprint(account.vault().keys.id_key)
    victim = next(ref for stream in refs.values() for ref in stream[1:])
    poison_mapping(pair, victim, checked_under=fingerprint)

    point = pair.source.backup("files")["recovery_point_arn"]
    failed = pair.source.run(
        "copy", "start", "--recovery-point", point, "--destination-vault", pair.destination_vault, "--wait", ok=False
    )
    assert failed.returncode == 7, failed.stderr
    assert "holds other data than the source described" in failed.stderr
    healed = copy(pair.source, point, pair.destination_vault)
    assert healed["state"] == "COMPLETED", healed
    assert_restores_the_original(pair, healed["result"]["destination_recovery_point_arn"], "healed")


def poison_mapping(pair: Pair, victim: ChunkRef, checked_under: bytes | None) -> None:
    """Point the destination's mapping of ``victim`` at an authentic chunk of junk of the same size."""
    with opened(pair.destination.home) as account, RecoveryPointWriter(account.vault(), secrets.token_hex(8)) as w:
        junk = w.store_chunk(os.urandom(victim.size)).id
    with sqlite3.connect(pair.destination.home / "catalog.db") as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(chunk_map)")}
        assert db.execute("UPDATE chunk_map SET chunk_id = ? WHERE peer_chunk_id = ?", (junk, victim.id)).rowcount
        if "checked_under" in columns:
            db.execute("UPDATE chunk_map SET checked_under = NULL")  # every mapping is from before the upgrade
            db.execute("UPDATE chunk_map SET checked_under = ? WHERE peer_chunk_id = ?", (checked_under, victim.id))


def test_another_id_key_for_a_pinned_source_vault_is_refused(pair: Pair) -> None:
    first = copy(pair.source, pair.source.backup("files")["recovery_point_arn"], pair.destination_vault)
    arn = first["result"]["source_recovery_point_arn"]
    held_before = mappings(pair.destination.home)
    with stolen_source(pair) as (account, client):
        manifest, refs = point_refs(account, arn)
        own_key = secrets.token_bytes(32)  # junk whose ids check out under a key of the attacker's choosing
        junk = {ref.id: os.urandom(ref.size) for stream in refs.values() for ref in stream}
        forged = {source_chunk_id(own_key, body): body for body in junk.values()}
        forged_refs = {
            name: [ChunkRef(source_chunk_id(own_key, junk[r.id]), r.size) for r in stream]
            for name, stream in refs.items()
        }
        swapped = send_copy(client, announcement(account, arn, manifest, own_key), forged_refs, forged)
        keyless = send_copy(client, announcement(account, arn, manifest, None), refs, junk)

    assert isinstance(swapped, IntegrityError), swapped
    assert "other than the one pinned on its first copy" in swapped.one_line(), swapped
    assert "\n" not in swapped.one_line()
    assert isinstance(keyless, UsageError) and "wire protocol 2" in keyless.message, keyless
    failed = [j for j in copy_jobs(pair) if j["state"] == "FAILED"]
    assert len(failed) == 1 and "other than the one pinned" in failed[0]["status_message"], failed
    assert mappings(pair.destination.home) == held_before
    again = copy(pair.source, arn, pair.destination_vault)
    assert again["state"] == "COMPLETED", again


def test_verify_read_data_proves_a_copy_is_what_its_source_described(pair: Pair) -> None:
    job = copy(pair.source, pair.source.backup("files")["recovery_point_arn"], pair.destination_vault)
    copied = job["result"]["destination_recovery_point_arn"]
    assert pair.destination.json("verify", "--read-data")["ok"]

    # One chunk of the copy is swapped for an authentic chunk of the destination's own of the same size:
    # every object still authenticates, only the source's description tells them apart.
    with opened(pair.destination.home) as account:
        vault = account.vault()
        rp_id = copied.rsplit(":", 1)[1]
        manifest = load_manifest(vault, rp_id)
        with RecoveryPointReader(vault, manifest) as reader, RecoveryPointWriter(vault, rp_id) as writer:
            streams = {}
            for name, stream in manifest.streams.items():
                refs = list(reader.iter_refs(stream))
                if len(refs) > 1:
                    refs[1] = writer.store_chunk(os.urandom(refs[1].size))
                builder = writer.stream()
                builder.append_refs(refs)
                streams[name] = builder.finish()
            writer.drain()
        vault.store.put(manifest_key(rp_id), seal_manifest(vault, dataclasses.replace(manifest, streams=streams)))

    assert pair.destination.json("verify")["ok"]  # every object is there
    result = pair.destination.run("verify", "--read-data", "--json", ok=False)
    assert result.returncode == 7, result.stderr
    damaged = result.json()
    assert list(damaged["damaged_recovery_points"]) == [copied], damaged
    (problem,) = damaged["damaged_objects"].values()
    assert "holds other data than its source described" in problem, problem
    assert damaged["copies_checked_against_source"] == 1, damaged


def test_an_attacker_who_copied_first_is_unpinned_by_the_destinations_owner(pair: Pair) -> None:
    """The attacker's key was pinned by the very first copy: every real copy is refused until the
    destination's owner clears the pin; then the real copy pins the real key and restores the original."""
    arn = pair.source.backup("files")["recovery_point_arn"]
    with stolen_source(pair) as (account, client):
        manifest, refs = point_refs(account, arn)
        own_key = secrets.token_bytes(32)
        junk = {ref.id: os.urandom(ref.size) for stream in refs.values() for ref in stream}
        forged = {source_chunk_id(own_key, body): body for body in junk.values()}
        forged_refs = {
            name: [ChunkRef(source_chunk_id(own_key, junk[r.id]), r.size) for r in stream]
            for name, stream in refs.items()
        }
        assert send_copy(client, announcement(account, arn, manifest, own_key), forged_refs, forged) is None
    (pin,) = pair.destination.json("accounts", "source-keys")["source_keys"]
    assert pin["source_vault_id"] == manifest.vault_id and pin["fingerprint"] == key_fingerprint(own_key).hex()
    refused = pair.source.run(
        "copy", "start", "--recovery-point", arn, "--destination-vault", pair.destination_vault, "--wait", ok=False
    )
    assert refused.returncode != 0 and "other than the one pinned" in refused.stderr, refused.stderr
    assert "unpin-source-key" in refused.stderr and "\n" not in refused.stderr.strip()

    unconfirmed = pair.destination.run(
        "accounts", "unpin-source-key", pin["source_account_id"], manifest.vault_id, ok=False
    )
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr, unconfirmed.stderr
    unpinned = pair.destination.json(
        "accounts", "unpin-source-key", pin["source_account_id"], manifest.vault_id, "--yes"
    )
    assert unpinned["mappings_dropped"] == len(forged), unpinned
    assert mappings(pair.destination.home) == set()
    missing = pair.destination.run(
        "accounts", "unpin-source-key", pin["source_account_id"], manifest.vault_id, "--yes", ok=False
    )
    assert missing.returncode == 2 and "no chunk-id key is pinned" in missing.stderr, missing.stderr

    job = copy(pair.source, arn, pair.destination_vault)
    assert job["state"] == "COMPLETED", job
    (repinned,) = pair.destination.json("accounts", "source-keys")["source_keys"]
    assert repinned["fingerprint"] != pin["fingerprint"]
    assert_restores_the_original(pair, job["result"]["destination_recovery_point_arn"], "after-unpin")


# A push is proved without reading it back: every chunk it references is a received one (hashed under the
# source's pinned key, its size checked) or a held one reused through a mapping whose size and proof (a MAC
# under the destination vault's key over the key's fingerprint, both ids and the size) were recorded when it
# was received or first checked. Each test below would end in a COMPLETED copy that differs from what its
# source described if the destination merely dropped the read-back and trusted ``checked_under``.


def send_held(client: AccountClient, announce: dict[str, Any], refs: dict[str, list[ChunkRef]]) -> StrongroomError:
    """Start a copy of chunks the destination holds: ask which are missing (none), append the refs, commit."""
    try:
        session = client.start_copy_in("Default", announce)["copy_job_id"]
        ids = list(dict.fromkeys(ref.id for stream in refs.values() for ref in stream))
        assert not any(client.missing(session, ids)), "the destination should hold every chunk"
        for name, stream_refs in refs.items():
            client.append_refs(session, name, [(ref.id, ref.size) for ref in stream_refs])
        client.commit_copy_in(session)
    except StrongroomError as exc:
        return exc
    raise AssertionError("the destination accepted the copy")


def completed_points(pair: Pair) -> list[str]:
    points = pair.destination.json("recovery-points", "list")["recovery_points"]
    return sorted(p["recovery_point_arn"] for p in points if p["status"] == "COMPLETED")


def proofs(home: Path) -> dict[bytes, tuple[int | None, bytes | None]]:
    with sqlite3.connect(home / "catalog.db") as db:
        return {bytes(p): (s, None if f is None else bytes(f)) for p, s, f in db.execute(
            "SELECT peer_chunk_id, size, proof FROM chunk_map"
        )}  # fmt: skip


def test_a_held_chunk_announced_with_another_size_is_refused_and_nothing_is_committed(pair: Pair) -> None:
    """The attacker copies again a point the destination holds, giving one held chunk one byte more (and its
    stream the size that adds up): refused when the refs are appended, one line, the job FAILED, no point."""
    first = copy(pair.source, pair.source.backup("files")["recovery_point_arn"], pair.destination_vault)
    arn = first["result"]["source_recovery_point_arn"]
    points_before = completed_points(pair)
    with stolen_source(pair) as (account, client):
        manifest, refs = point_refs(account, arn)
        name, stream = next((n, s) for n, s in refs.items() if len(s) > 1)
        victim = stream[1]
        refs[name] = [dataclasses.replace(r, size=r.size + 1) if r.id == victim.id else r for r in stream]
        announce = announcement(account, arn, manifest, account.vault().keys.id_key)
        announce["streams"][name]["size"] += sum(r.id == victim.id for r in stream)
        error = send_held(client, announce, refs)

    assert isinstance(error, IntegrityError), error
    assert f"gives chunk {victim.id.hex()} {victim.size + 1} bytes, but that chunk holds {victim.size}" in (
        error.one_line()
    )
    assert "\n" not in error.one_line()
    assert completed_points(pair) == points_before
    (failed,) = [j for j in copy_jobs(pair) if j["state"] == "FAILED"]
    assert "but that chunk holds" in failed["status_message"], failed


def test_a_proof_moved_onto_a_poisoned_mapping_is_caught_and_the_next_copy_heals(pair: Pair) -> None:
    """Write access to the destination's catalog: a mapping is pointed at an authentic chunk of junk of the
    same size and given another mapping's genuine proof and size, and every row claims the source's key
    checked it; but a proof covers both ids (and a size), so it fails. The chunk is read before reuse: the
    copy fails (its stream would hold other data than the source described), the mapping is dropped, and
    the next copy heals."""
    first = copy(pair.source, pair.source.backup("files")["recovery_point_arn"], pair.destination_vault)
    with opened(pair.source.home) as account:
        _, refs = point_refs(account, first["result"]["source_recovery_point_arn"])
        fingerprint = key_fingerprint(account.vault().keys.id_key)
    flat = [ref for stream in refs.values() for ref in stream]
    victim = flat[1]
    donor = next(ref for ref in flat if ref.id != victim.id)
    recorded = proofs(pair.destination.home)
    assert recorded[donor.id][0] == donor.size and recorded[donor.id][1], recorded[donor.id]
    poison_mapping(pair, victim, checked_under=fingerprint)
    with sqlite3.connect(pair.destination.home / "catalog.db") as db:
        db.execute("UPDATE chunk_map SET checked_under = ?", (fingerprint,))  # every row claims it was checked
        db.execute("UPDATE chunk_map SET size = ?, proof = ? WHERE peer_chunk_id = ?", (*recorded[donor.id], victim.id))

    point = pair.source.backup("files")["recovery_point_arn"]
    failed = pair.source.run(
        "copy", "start", "--recovery-point", point, "--destination-vault", pair.destination_vault, "--wait", ok=False
    )
    assert failed.returncode == 7, failed.stderr
    assert "holds other data than the source described" in failed.stderr
    assert victim.id not in proofs(pair.destination.home)
    healed = copy(pair.source, point, pair.destination_vault)
    assert healed["state"] == "COMPLETED", healed
    assert_restores_the_original(pair, healed["result"]["destination_recovery_point_arn"], "healed")


def test_a_mapping_never_proved_is_read_once_then_reused_without_reading(pair: Pair) -> None:
    """Mappings from before proofs existed (checked under the key, no size or proof): the next copy reads each
    held chunk once and records its proof; the copy after reads none. A poisoned one among them fails the copy
    (``test_a_wrongly_trusted_mapping_fails_the_copy_and_is_dropped``)."""
    first = copy(pair.source, pair.source.backup("files")["recovery_point_arn"], pair.destination_vault)
    with sqlite3.connect(pair.destination.home / "catalog.db") as db:
        unproved = db.execute("UPDATE chunk_map SET size = NULL, proof = NULL").rowcount
    assert unproved == first["result"]["chunks_sent"], first

    (pair.tree / "f00.bin").write_bytes(os.urandom(400_000))
    second = copy(pair.source, pair.source.backup("files")["recovery_point_arn"], pair.destination_vault)
    stats = pair.destination.json("jobs", "describe", second["result"]["destination_copy_job_id"])["result"]
    assert stats["mappings_checked"] >= second["result"]["chunks_skipped"] > 0, stats
    assert stats["mappings_dropped"] == 0, stats
    with opened(pair.source.home) as account:
        _, refs = point_refs(account, second["result"]["source_recovery_point_arn"])
    recorded = proofs(pair.destination.home)
    assert all(
        recorded[ref.id] == (ref.size, recorded[ref.id][1]) and recorded[ref.id][1] for s in refs.values() for ref in s
    )

    third = copy(pair.source, pair.source.backup("files")["recovery_point_arn"], pair.destination_vault)
    stats = pair.destination.json("jobs", "describe", third["result"]["destination_copy_job_id"])["result"]
    assert stats["mappings_checked"] == 0 and stats["chunks_already_held"] > 0, stats
    assert_restores_the_original(pair, third["result"]["destination_recovery_point_arn"], "third")
