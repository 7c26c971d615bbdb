"""Checking a vault: every object a recovery point needs is present and, with read_data, intact."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from strongroom.errors import StrongroomError
from strongroom.vault.envelope import Kind
from strongroom.vault.manifest import decode_index, load_manifest
from strongroom.vault.reader import read_object
from strongroom.vault.vault import Vault, chunk_key, manifest_key


@dataclass
class VerifyReport:
    recovery_points_checked: int = 0
    objects_checked: int = 0
    bytes_read: int = 0
    damaged_objects: dict[str, str] = field(default_factory=dict)  # object key -> what is wrong
    damaged_recovery_points: dict[str, list[str]] = field(default_factory=dict)  # rp id -> damaged keys
    catalog_findings: list[str] = field(default_factory=list)  # where the catalog disagrees with the vaults

    @property
    def ok(self) -> bool:
        return not self.damaged_objects and not self.catalog_findings

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "recovery_points_checked": self.recovery_points_checked,
            "objects_checked": self.objects_checked,
            "bytes_read": self.bytes_read,
            "damaged_objects": self.damaged_objects,
            "damaged_recovery_points": self.damaged_recovery_points,
            "catalog_findings": self.catalog_findings,
        }


def verify_recovery_points(
    vault: Vault,
    recovery_point_ids: Iterable[str],
    *,
    read_data: bool,
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Check each recovery point; an object shared by several is read once and blamed on all."""
    report = VerifyReport()
    users: dict[str, set[str]] = defaultdict(set)  # object key -> recovery points that need it
    verdicts: dict[str, str | None] = {}

    def check(rp_id: str, object_id: bytes, kind: Kind) -> bytes | None:
        key = chunk_key(object_id)
        users[key].add(rp_id)
        if key in verdicts and kind != Kind.INDEX:
            return None
        data = None
        try:
            if read_data or kind == Kind.INDEX:
                data = read_object(vault, object_id, kind)
                report.bytes_read += len(data)
                if progress:
                    progress(len(data))
            elif vault.store.head(key) is None:
                raise StrongroomError(f"object {key} is missing from the vault")
            verdicts[key] = None
        except StrongroomError as exc:
            verdicts[key] = exc.message
        report.objects_checked += 1
        return data

    for rp_id in recovery_point_ids:
        report.recovery_points_checked += 1
        try:
            manifest = load_manifest(vault, rp_id)
        except StrongroomError as exc:
            key = manifest_key(rp_id)
            verdicts[key] = exc.message
            users[key].add(rp_id)
            continue
        for stream in manifest.streams.values():
            for index_id in stream.index:
                data = check(rp_id, index_id, Kind.INDEX)
                if data is None:
                    continue
                for ref in decode_index(data, f"index object {index_id.hex()}"):
                    check(rp_id, ref.id, Kind.CHUNK)
                    if ref.base is not None:  # a delta chunk needs its base chunk too
                        check(rp_id, ref.base, Kind.CHUNK)

    for key, verdict in verdicts.items():
        if verdict is not None:
            report.damaged_objects[key] = verdict
            for rp_id in sorted(users[key]):
                report.damaged_recovery_points.setdefault(rp_id, []).append(key)
    return report


def manifest_exists(vault: Vault, recovery_point_id: str) -> bool:
    return vault.store.exists(manifest_key(recovery_point_id))
