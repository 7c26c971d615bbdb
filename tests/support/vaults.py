"""Drive the vault engine and adapters directly, without catalog or CLI."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from strongroom.adapters.base import (
    BackupContext,
    ResourceSpec,
    RestoreContext,
    RestoreRequest,
    RestoreResult,
    get_adapter,
)
from strongroom.store.local import LocalStore
from strongroom.vault import Vault
from strongroom.vault.keys import INSECURE_FAST_PROFILE, KDF_PROFILES
from strongroom.vault.manifest import Manifest, load_manifest
from strongroom.vault.reader import RecoveryPointReader
from strongroom.vault.vault import ChunkerSettings
from strongroom.vault.writer import RecoveryPointWriter

FAST_SCRYPT = KDF_PROFILES[INSECURE_FAST_PROFILE]  # tests only: unlock in milliseconds (docs/testing.md)


def make_vault(root: Path, *, average_chunk: int | None = None) -> Vault:
    chunker = ChunkerSettings.for_average(average_chunk) if average_chunk else None
    return Vault.create(LocalStore(root), "test-passphrase", chunker=chunker, scrypt_params=FAST_SCRYPT)


def backup(
    vault: Vault, spec: ResourceSpec, temp_dir: Path, previous: str | None = None
) -> tuple[Manifest, dict[str, int]]:
    """Back up ``spec`` into a new recovery point; returns its manifest and the write stats."""
    adapter = get_adapter(spec.type)
    rp_id = secrets.token_hex(8)
    temp_dir.mkdir(parents=True, exist_ok=True)
    previous_reader = RecoveryPointReader(vault, load_manifest(vault, previous)) if previous else None
    base = previous_reader.manifest if previous_reader else None
    with RecoveryPointWriter(vault, rp_id, previous=base) as writer:
        metadata = adapter.backup(spec, BackupContext(writer=writer, temp_dir=temp_dir, previous=previous_reader))
        manifest = writer.commit(spec.id, spec.type, metadata)
    if previous_reader:
        previous_reader.close()
    return manifest, writer.stats.as_dict()


def restore(
    vault: Vault, rp_id: str, request: RestoreRequest, temp_dir: Path, home: Path, **extra: Any
) -> RestoreResult:
    manifest = load_manifest(vault, rp_id)
    adapter = get_adapter(manifest.resource_type)
    temp_dir.mkdir(parents=True, exist_ok=True)
    with RecoveryPointReader(vault, manifest) as reader:
        ctx = RestoreContext(reader=reader, temp_dir=temp_dir, home=home, **extra)
        return adapter.restore(manifest.metadata, ctx, request)
