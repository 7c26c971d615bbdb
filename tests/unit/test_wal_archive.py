"""The WAL archive in a vault (vault/wal.py, services/wal_archive.py) attacked as its neighbours would.

Whoever holds a cluster's WAL credential file (the server's OS user) holds keys derived for that cluster's WAL
alone; whoever can write the store can move and swap objects. Neither may read what else the vault holds,
nor make a restore replay other WAL than what was archived under that name.
"""

from __future__ import annotations

import io
import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest

from strongroom.errors import IntegrityError, NotFoundError, WalConflictError
from strongroom.services.wal_archive import WalCredential, check_segment, fetch_file, push_file
from strongroom.vault import Vault, envelope
from strongroom.vault.manifest import load_manifest
from strongroom.vault.vault import chunk_key, manifest_key
from strongroom.vault.wal import PushOutcome, WalArchive, WalKeys, wal_key
from strongroom.vault.writer import RecoveryPointWriter

SYSTEM = "7441234567890123456"
OTHER_SYSTEM = "7441234567890999999"
SEGMENT = "000000010000000000000003"


def segment(system: str = SYSTEM, fill: bytes = b"w") -> bytes:
    header = struct.pack("<HHIQI4xQ", 0xD110, 2, 1, 3 << 20, 0, int(system))
    return header + fill * ((1 << 20) - len(header))


def backup_bytes(vault: Vault, data: bytes) -> str:
    with RecoveryPointWriter(vault, "point1") as writer:
        writer.store_stream("data", io.BytesIO(data))
        writer.commit("files", "directory", {})
    return "point1"


def archive_of(vault: Vault, system: str = SYSTEM) -> WalArchive:
    return WalArchive(vault.store, WalKeys.derive(vault.keys, system))


def test_a_pushed_segment_comes_back_and_pushing_it_again_writes_nothing(vault: Vault) -> None:
    archive = archive_of(vault)
    data = segment()
    assert archive.push(SEGMENT, data, datetime.now(UTC)) == PushOutcome.STORED
    stored = vault.store.get(wal_key(SYSTEM, SEGMENT))
    assert archive.push(SEGMENT, data, datetime.now(UTC)) == PushOutcome.ALREADY_ARCHIVED
    assert vault.store.get(wal_key(SYSTEM, SEGMENT)) == stored and archive.fetch(SEGMENT) == data
    assert archive.names() == [SEGMENT]


def test_other_content_under_an_archived_name_is_refused_never_overwritten(vault: Vault) -> None:
    archive = archive_of(vault)
    archive.push(SEGMENT, segment(), datetime.now(UTC))
    with pytest.raises(WalConflictError, match="already archived with different content"):
        archive.push(SEGMENT, segment(fill=b"x"), datetime.now(UTC))
    assert archive.fetch(SEGMENT) == segment()


def test_the_wal_credential_opens_no_other_object_of_the_vault(vault: Vault, tmp_path: Path) -> None:
    """The server's OS user reads its credential file: it must not open the vault's recovery points."""
    point = backup_bytes(vault, b"patient records " * 5000)
    keys = WalKeys.derive(vault.keys, SYSTEM)
    assert keys.encryption_key != vault.keys.encryption_key and keys.id_key != vault.keys.id_key
    manifest = load_manifest(vault, point)
    chunk = next(iter(manifest.streams.values())).index[0]  # an index object: sealed like every chunk
    for key, name in ((manifest_key(point), manifest_key(point).encode()), (chunk_key(chunk), chunk)):
        with pytest.raises(IntegrityError):
            envelope.open_sealed(keys.encryption_key, name, vault.store.get(key), what=key)


def test_one_clusters_credential_cannot_read_or_write_another_clusters_wal(vault: Vault) -> None:
    archive_of(vault, OTHER_SYSTEM).push(SEGMENT, segment(OTHER_SYSTEM), datetime.now(UTC))
    stolen = WalArchive(vault.store, WalKeys.derive(vault.keys, SYSTEM))
    with pytest.raises(NotFoundError):
        stolen.fetch(SEGMENT)
    sealed = vault.store.get(wal_key(OTHER_SYSTEM, SEGMENT))
    vault.store.put(wal_key(SYSTEM, SEGMENT), sealed)  # moved under this cluster's name by a store writer
    with pytest.raises(IntegrityError, match="failed authentication"):
        stolen.fetch(SEGMENT)


def test_a_segment_moved_to_another_name_fails_authentication(vault: Vault) -> None:
    """A store writer renaming segment 3 as segment 4 would make recovery replay the wrong WAL."""
    archive = archive_of(vault)
    archive.push(SEGMENT, segment(), datetime.now(UTC))
    later = "000000010000000000000004"
    vault.store.put(wal_key(SYSTEM, later), vault.store.get(wal_key(SYSTEM, SEGMENT)))
    with pytest.raises(IntegrityError, match="failed authentication"):
        archive.fetch(later)


def test_a_segment_of_another_cluster_is_refused_at_push(vault: Vault, tmp_path: Path) -> None:
    credential = WalCredential("db", "Default", vault.store.url, WalKeys.derive(vault.keys, SYSTEM))
    wal = tmp_path / "pg_wal"
    wal.mkdir()
    (wal / SEGMENT).write_bytes(segment(OTHER_SYSTEM))
    with pytest.raises(IntegrityError, match=f"belongs to cluster {OTHER_SYSTEM}"):
        push_file(credential, wal / SEGMENT)
    assert not vault.store.exists(wal_key(SYSTEM, SEGMENT))
    with pytest.raises(IntegrityError):
        check_segment(b"short", SEGMENT, SYSTEM)


def test_push_and_fetch_through_a_credential_file(vault: Vault, tmp_path: Path) -> None:
    credential = WalCredential("db", "Default", vault.store.url, WalKeys.derive(vault.keys, SYSTEM), "dsn")
    path = tmp_path / "db.json"
    path.write_bytes(credential.to_json())
    loaded = WalCredential.load(path)
    assert loaded == credential and vault.keys.encryption_key.hex() not in path.read_text()
    (tmp_path / SEGMENT).write_bytes(segment())
    assert push_file(loaded, tmp_path / SEGMENT) == PushOutcome.STORED
    fetch_file(loaded, SEGMENT, tmp_path / "RECOVERYXLOG")
    assert (tmp_path / "RECOVERYXLOG").read_bytes() == segment()
    with pytest.raises(NotFoundError):
        fetch_file(loaded, "00000002.history", tmp_path / "RECOVERYHISTORY")
    with pytest.raises(NotFoundError, match="not the name of a WAL file"):
        fetch_file(loaded, "../../keys/x", tmp_path / "x")


def test_the_server_user_re_pushes_into_a_vault_root_it_may_only_traverse() -> None:
    """docs/pitr.md lets the vault's root be a directory the server's OS user can only reach (0711, root's); a
    push PostgreSQL retries after a kill between the put and exit 0 must still succeed there, or archiving
    stalls: the object is made durable by itself, not by a syncfs of the root the user cannot open."""
    import shutil
    import subprocess
    import sysconfig

    from strongroom.adapters.postgres.tools import chown_tree, server_user
    from tests.support.pgcluster import traversable_tempdir

    user = server_user()
    python = shutil.which("python3.11", path="/usr/bin:/usr/local/bin")
    if user is None or python is None:
        pytest.skip("needs root and a system python3.11 the postgres user can run")
    base = traversable_tempdir("strongroom-walroot-")
    root = base / "vault"
    (root / "wal" / "x").mkdir(parents=True)
    (root / "tmp").mkdir()
    chown_tree(root / "wal", user)
    chown_tree(root / "tmp", user)
    root.chmod(0o711)
    script = (
        "import sys\nfrom strongroom.store.local import LocalStore\n"
        "store = LocalStore(sys.argv[1])\nstore.put('wal/x/seg', b'w', if_absent=True)\n"
        "store.make_durable('wal/x/seg')\n"
        "try:\n    store.flush()\nexcept PermissionError:\n    print('flush refused')\n"
    )
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {"PYTHONPATH": f"{src}:{sysconfig.get_paths()['purelib']}", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [shutil.which("runuser") or "runuser", "-u", user.name, "--", python, "-c", script, str(root)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "flush refused"  # the control: what the re-push used to call
    assert (root / "wal" / "x" / "seg").read_bytes() == b"w"
    shutil.rmtree(base)
