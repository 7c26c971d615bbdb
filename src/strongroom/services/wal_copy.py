"""The source's side of WAL copies: a cluster's archived WAL follows its base backups to the destination.

After a copy of a ``postgres-cluster`` base backup (or on ``copy start`` of the continuous point), the source
asks the destination which WAL files of that cluster it holds, sends the others (each read and authenticated
from this vault first, zstd-compressed on the wire), then names its continuous point's window so that the
destination keeps a continuous point of its own. The source only ever adds files: the destination refuses
to replace one (services/wal_receive.py). docs/pitr.md, "Both accounts"; docs/wire-protocol.md.
"""

from __future__ import annotations

from typing import Any

import zstandard

from strongroom.errors import RemoteError
from strongroom.model import Arn, RecoveryPoint
from strongroom.services.account import Account
from strongroom.store.base import open_store
from strongroom.transport.client import AccountClient
from strongroom.vault.wal import SYSTEM_IDENTIFIER, WalArchive, WalKeys, check_name

CLUSTER_TYPE = "postgres-cluster"
WAL_API_VERSION = 3  # the destination's api_version from which it takes WAL
COMPRESSION_LEVEL = 3


def speaks_wal(client: AccountClient) -> bool:
    version = str(client.whoami().get("api_version", "1"))
    return version.isdigit() and int(version) >= WAL_API_VERSION


def copies_wal(rp: RecoveryPoint) -> bool:
    return rp.resource_type == CLUSTER_TYPE and bool(rp.metadata.get("system_identifier"))


def copy_wal(account: Account, client: AccountClient, rp: RecoveryPoint, target_vault: str) -> dict[str, Any]:
    """Send the WAL of ``rp``'s cluster the destination vault lacks, then its continuous point's window.

    Returns the job result's ``wal`` statistics (files sent, files the destination held, bytes, and the
    destination's continuous point)."""
    system = str(rp.metadata["system_identifier"])
    record = account.catalog.get_vault(rp.vault_name)
    archive = WalArchive(open_store(record.store_url), WalKeys.derive(account.vault(rp.vault_name).keys, system))
    ours = archive.names()
    stats: dict[str, Any] = {"system_identifier": system, "files_sent": 0, "files_held": 0, "bytes_sent": 0}
    if not ours:
        return stats
    held = set(client.wal_names(target_vault, system, record.arn))
    compressor = zstandard.ZstdCompressor(level=COMPRESSION_LEVEL)
    for name in ours:  # oldest first: a copy cut short leaves the destination a prefix, never a gap before its end
        if name in held:
            stats["files_held"] += 1
            continue
        header, data = archive.read(name)
        query = {"source_vault_arn": record.arn, "size": len(data), "modified": header.modified}
        client.put_wal(target_vault, system, name, query, compressor.compress(data))
        stats["files_sent"] += 1
        stats["bytes_sent"] += len(data)
    from strongroom.services.pitr import continuous_points  # PostgreSQL's tools: only when WAL is copied

    continuous = continuous_points(account, rp.resource_id, rp.vault_name)
    if continuous:
        request = {
            "source_vault_arn": record.arn,
            "source_recovery_point_arn": continuous[0].arn,
            "resource_id": rp.resource_id,
            "window_days": int(continuous[0].metadata.get("window_days") or 35),
        }
        stats["destination_continuous_recovery_point_arn"] = client.put_continuous(target_vault, system, request)[
            "recovery_point_arn"
        ]
    return stats


def pull_wal(account: Account, client: AccountClient, remote_rp_arn: str, vault_name: str) -> dict[str, Any]:
    """Copy back the WAL of a point's cluster from another account into ``vault_name`` (the files it lacks),
    checked as a destination checks WAL it receives and sealed under this vault's keys, put-if-absent."""
    from strongroom.services import object_lock, wal_receive

    record = account.catalog.get_vault(vault_name)
    answer = client.wal_out_names(Arn.parse(remote_rp_arn).name, record.arn)
    system = str(answer.get("system_identifier") or "")
    if not SYSTEM_IDENTIFIER.fullmatch(system):
        raise RemoteError("the other account named no cluster for the point's WAL")
    archive = wal_receive.archive_of(account, vault_name, system)
    held = set(archive.names())
    retention = object_lock.wal_retention(account, vault_name)
    stats: dict[str, Any] = {"system_identifier": system, "files_received": 0, "files_held": 0, "bytes_received": 0}
    for name in answer["names"]:
        if name in held:
            stats["files_held"] += 1
            continue
        check_name(name)
        body, size, modified = client.wal_out_file(Arn.parse(remote_rp_arn).name, name, record.arn)
        data = wal_receive.wal_bytes(body, wal_receive.wal_size(size))
        wal_receive.check_content(name, data, system)
        archive.push(name, data, wal_receive.wal_modified(modified), retention=retention)
        stats["files_received"] += 1
        stats["bytes_received"] += len(data)
    return stats
