"""Checking a vault: every object a recovery point needs is present and, with read_data, intact."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field

from strongroom.errors import StrongroomError
from strongroom.faults import fault_point
from strongroom.vault.envelope import Kind
from strongroom.vault.manifest import decode_index, load_manifest
from strongroom.vault.reader import read_object
from strongroom.vault.source import StreamDigest, source_chunk_id
from strongroom.vault.vault import Vault, chunk_key, manifest_key


@dataclass
class VerifyReport:
    recovery_points_checked: int = 0
    copies_checked_against_source: int = 0  # copies proved to hold what their source described
    objects_checked: int = 0
    bytes_read: int = 0
    damaged_objects: dict[str, str] = field(default_factory=dict)  # object key -> what is wrong
    damaged_recovery_points: dict[str, list[str]] = field(default_factory=dict)  # rp id -> damaged keys
    catalog_findings: list[str] = field(default_factory=list)  # where the catalog disagrees with the vaults
    # object key -> how it is hidden on a versioned store (vault/versions.py); reads go past it
    hidden_objects: dict[str, str] = field(default_factory=dict)
    repaired_objects: list[str] = field(default_factory=list)  # hidden objects put back on top (--repair)

    @property
    def ok(self) -> bool:
        return not self.damaged_objects and not self.catalog_findings and not self.hidden_objects

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "recovery_points_checked": self.recovery_points_checked,
            "copies_checked_against_source": self.copies_checked_against_source,
            "objects_checked": self.objects_checked,
            "bytes_read": self.bytes_read,
            "damaged_objects": self.damaged_objects,
            "damaged_recovery_points": self.damaged_recovery_points,
            "catalog_findings": self.catalog_findings,
            "hidden_objects": self.hidden_objects,
            "repaired_objects": self.repaired_objects,
        }


def verify_recovery_points(
    vault: Vault,
    recovery_point_ids: Iterable[str],
    *,
    read_data: bool,
    progress: Callable[[int], None] | None = None,
    hidden: Collection[str] = (),
) -> VerifyReport:
    """Check each recovery point; an object shared by several is read once and blamed on all.

    With ``read_data``, a copy whose manifest records what its source described (§6.4) is also proved
    to hold exactly that: the source's chunk ids are recomputed from the plaintext and each stream's
    digest compared; a difference is damage of the copy's manifest. Keys in ``hidden`` (an older locked
    version under a delete marker: reported on their own) count as present.
    """
    report = VerifyReport()
    users: dict[str, set[str]] = defaultdict(set)  # object key -> recovery points that need it
    verdicts: dict[str, str | None] = {}
    source_ids: dict[tuple[bytes, bytes], tuple[bytes, int]] = {}  # (key, chunk id) -> (source's id, size)

    def check(rp_id: str, object_id: bytes, kind: Kind) -> bytes | None:
        key = chunk_key(object_id)
        users[key].add(rp_id)
        if key in verdicts and kind != Kind.INDEX:
            return None
        data = None
        try:
            if read_data or kind == Kind.INDEX:
                data = read_object(vault, object_id, kind)
                if read_data and report.objects_checked == 0:
                    fault_point("read:after-first-chunk")  # signal tests: a verify --read-data under way
                report.bytes_read += len(data)
                if progress:
                    progress(len(data))
            elif not vault.objects.exists(object_id, hidden):
                raise StrongroomError(f"object {key} is missing from the vault")
            verdicts[key] = None
        except StrongroomError as exc:
            verdicts[key] = exc.message
        report.objects_checked += 1
        return data

    def source_id(id_key: bytes, chunk_id: bytes, plaintext: bytes | None) -> tuple[bytes, int] | None:
        """The source's id of a chunk (None when the chunk is damaged: reported on its own)."""
        cached = source_ids.get((id_key, chunk_id))
        if cached is None:
            if plaintext is None:
                if verdicts.get(chunk_key(chunk_id)) is not None:
                    return None
                try:  # read for a recovery point of another source: read again under this key
                    plaintext = read_object(vault, chunk_id, Kind.CHUNK)
                except StrongroomError:
                    return None
            cached = source_ids[(id_key, chunk_id)] = (source_chunk_id(id_key, plaintext), len(plaintext))
        return cached

    for rp_id in recovery_point_ids:
        report.recovery_points_checked += 1
        try:
            manifest = load_manifest(vault, rp_id)
        except StrongroomError as exc:
            key = manifest_key(rp_id)
            verdicts[key] = exc.message
            users[key].add(rp_id)
            continue
        described = manifest.source if read_data else None
        report.copies_checked_against_source += described is not None
        for name, stream in manifest.streams.items():
            digest: StreamDigest | None = StreamDigest() if described else None
            for index_id in stream.index:
                data = check(rp_id, index_id, Kind.INDEX)
                if data is None:
                    digest = None
                    continue
                for ref in decode_index(data, f"index object {index_id.hex()}"):
                    plaintext = check(rp_id, ref.id, Kind.CHUNK)
                    if ref.base is not None:  # a delta chunk needs its base chunk too
                        check(rp_id, ref.base, Kind.CHUNK)
                    if digest is not None and described is not None:
                        found = source_id(described.id_key, ref.id, plaintext)
                        if found is None:
                            digest = None
                        else:
                            digest.add(*found)
            if described is not None and digest is not None and digest.hexdigest() != described.streams.get(name):
                key = manifest_key(rp_id)
                users[key].add(rp_id)
                verdicts[key] = verdicts.get(key) or (
                    f"stream '{name}' of the copy holds other data than its source described"
                    f" ({described.recovery_point_arn})"
                )
        if described is not None and set(described.streams) != set(manifest.streams):
            key = manifest_key(rp_id)
            users[key].add(rp_id)
            verdicts[key] = verdicts.get(key) or "the copy's streams are not the ones its source described"

    for key, verdict in verdicts.items():
        if verdict is not None:
            report.damaged_objects[key] = verdict
            for rp_id in sorted(users[key]):
                report.damaged_recovery_points.setdefault(rp_id, []).append(key)
    return report


def manifest_exists(vault: Vault, recovery_point_id: str) -> bool:
    return vault.store.exists(manifest_key(recovery_point_id))
