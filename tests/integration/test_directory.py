"""The directory adapter against real trees and a real vault on disk."""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from strongroom.adapters.base import ResourceSpec, RestoreRequest, get_adapter
from strongroom.adapters.directory import RACY_WINDOW_NS
from strongroom.errors import ConfigError, IntegrityError, TargetError, TargetNotEmptyError
from strongroom.vault import Vault
from strongroom.vault.manifest import load_manifest
from strongroom.vault.reader import RecoveryPointReader
from strongroom.vault.vault import chunk_key
from strongroom.vault.writer import RecoveryPointWriter
from tests.support.trees import diff_snapshots, make_awkward_tree, snapshot_tree
from tests.support.vaults import backup, restore

AS_ROOT = os.geteuid() == 0


def spec_for(path: Path) -> ResourceSpec:
    return ResourceSpec(id="files", type="directory", settings={"path": str(path)})


def wait_past_racy_window() -> None:
    """Files changed within the racy window of a backup are re-read next time; let them settle."""
    time.sleep(RACY_WINDOW_NS / 1e9 + 0.05)


def restore_to(vault: Vault, rp_id: str, target: Path, tmp_path: Path, progress: Any = None, **request: Any) -> Any:
    request_ = RestoreRequest(target=str(target), **request)
    return restore(vault, rp_id, request_, tmp_path / "restore-tmp", tmp_path, progress=progress)


def tree_records(vault: Vault, rp_id: str) -> list[dict[str, Any]]:
    with RecoveryPointReader(vault, load_manifest(vault, rp_id)) as reader:
        return [json.loads(line) for line in reader.open_stream("tree")]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = make_awkward_tree(tmp_path / "source")
    if AS_ROOT:
        os.chown(root / "secret.key", 1234, 1234)
        os.chown(root / "link-to-readme", 1234, 4321, follow_symlinks=False)
        os.chmod(root / "secret.key", 0o600)
    return root


def test_round_trip_keeps_content_modes_times_links_and_owners(tmp_path: Path, vault: Vault, source: Path) -> None:
    expected = snapshot_tree(source)
    manifest, _ = backup(vault, spec_for(source), tmp_path / "tmp")
    meta = manifest.metadata
    assert (meta["hardlinks"], meta["fifos"], meta["symlinks"], meta["warnings"]) == (1, 1, 5, [])
    assert meta["files"] == meta["files_read"] == sum(1 for e in expected.values() if e.type == "file") - 1

    progress: list[int] = []
    target = tmp_path / "restored"
    result = restore_to(vault, manifest.recovery_point_id, target, tmp_path, progress=progress.append)

    assert diff_snapshots(expected, snapshot_tree(target)) == []
    assert os.stat(target / "hard-a.bin").st_ino == os.stat(target / "docs" / "hard-b.bin").st_ino
    assert result.target == str(target)
    assert result.details["bytes"] == meta["bytes"] == sum(progress)
    if AS_ROOT:
        assert (os.stat(target / "secret.key").st_uid, os.stat(target / "secret.key").st_gid) == (1234, 1234)
        assert os.lstat(target / "link-to-readme").st_gid == 4321
        assert os.stat(target / "setuid-tool").st_mode & 0o7777 == 0o4755


def test_unchanged_files_are_not_read_again_and_changes_are(tmp_path: Path, vault: Vault, source: Path) -> None:
    wait_past_racy_window()
    first, first_stats = backup(vault, spec_for(source), tmp_path / "tmp")
    second, second_stats = backup(vault, spec_for(source), tmp_path / "tmp", previous=first.recovery_point_id)
    files = second.metadata["files"]
    assert (second.metadata["files_reused"], second.metadata["files_read"]) == (files, 0)
    assert second_stats["new_bytes"] < first_stats["new_bytes"] / 100

    (source / "docs" / "readme.md").write_bytes(b"# Read me\n\nChanged after the second backup.\n")
    third, third_stats = backup(vault, spec_for(source), tmp_path / "tmp", previous=second.recovery_point_id)
    assert (third.metadata["files_reused"], third.metadata["files_read"]) == (files - 1, 1)
    assert third_stats["new_bytes"] < first_stats["new_bytes"] / 100

    target = tmp_path / "restored"
    restore_to(vault, third.recovery_point_id, target, tmp_path)
    assert diff_snapshots(snapshot_tree(source), snapshot_tree(target)) == []


def test_recently_changed_files_are_read_again_next_time(tmp_path: Path, vault: Vault) -> None:
    root = tmp_path / "fresh"
    root.mkdir()
    (root / "just-written.txt").write_bytes(b"written a moment before the backup\n")
    first, _ = backup(vault, spec_for(root), tmp_path / "tmp")
    assert tree_records(vault, first.recovery_point_id)[1]["unsettled"] is True
    second, _ = backup(vault, spec_for(root), tmp_path / "tmp", previous=first.recovery_point_id)
    assert (second.metadata["files_read"], second.metadata["files_reused"]) == (1, 0)


def test_file_whose_chunk_left_the_vault_is_read_again(tmp_path: Path, vault: Vault, source: Path) -> None:
    wait_past_racy_window()
    first, _ = backup(vault, spec_for(source), tmp_path / "tmp")
    record = next(r for r in tree_records(vault, first.recovery_point_id) if r["path"] == "docs/readme.md")
    vault.store.delete(chunk_key(bytes.fromhex(record["chunks"][0][0])))

    second, _ = backup(vault, spec_for(source), tmp_path / "tmp", previous=first.recovery_point_id)
    assert second.metadata["files_read"] == 1
    target = tmp_path / "restored"
    restore_to(vault, second.recovery_point_id, target, tmp_path)
    assert diff_snapshots(snapshot_tree(source), snapshot_tree(target)) == []


def test_damaged_previous_recovery_point_means_reading_everything(tmp_path: Path, vault: Vault) -> None:
    root = tmp_path / "small"
    root.mkdir()
    (root / "a.txt").write_bytes(b"a\n")
    first, _ = backup(vault, spec_for(root), tmp_path / "tmp")
    with RecoveryPointReader(vault, first) as reader:
        tree_chunks = list(reader.iter_refs(reader.stream_ref("tree")))
    vault.store.delete(chunk_key(tree_chunks[0].id))

    second, _ = backup(vault, spec_for(root), tmp_path / "tmp", previous=first.recovery_point_id)
    assert second.metadata["files_read"] == 1
    assert second.metadata["warnings"] == ["the previous recovery point is damaged; every file was read again"]


def test_sockets_are_skipped_with_a_warning(tmp_path: Path, vault: Vault) -> None:
    root = tmp_path / "s"
    root.mkdir()
    (root / "kept.txt").write_bytes(b"kept\n")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(root / "app.sock"))
    manifest, _ = backup(vault, spec_for(root), tmp_path / "tmp")
    assert manifest.metadata["skipped"] == 1
    assert manifest.metadata["warnings"] == ["app.sock: is a socket, which is not backed up; skipped"]
    target = tmp_path / "restored"
    restore_to(vault, manifest.recovery_point_id, target, tmp_path)
    assert sorted(os.listdir(target)) == ["kept.txt"]


def test_restore_refuses_a_non_empty_target_unless_allowed(tmp_path: Path, vault: Vault, source: Path) -> None:
    manifest, _ = backup(vault, spec_for(source), tmp_path / "tmp")
    target = tmp_path / "busy"
    target.mkdir()
    (target / "keep-me.txt").write_bytes(b"mine\n")
    with pytest.raises(TargetNotEmptyError, match="is not empty") as caught:
        restore_to(vault, manifest.recovery_point_id, target, tmp_path)
    assert "--allow-non-empty" in caught.value.hint
    assert os.listdir(target) == ["keep-me.txt"]

    expected = snapshot_tree(source)
    for _ in range(2):  # the second pass replaces every entry, including hard links to themselves
        restore_to(vault, manifest.recovery_point_id, target, tmp_path, allow_non_empty=True)
    actual = snapshot_tree(target)
    assert actual.pop("keep-me.txt").type == "file"
    assert diff_snapshots(expected, actual) == []


def test_damaged_data_index_fails_the_restore_even_though_the_tree_names_every_chunk(
    tmp_path: Path, vault: Vault, source: Path
) -> None:
    manifest, _ = backup(vault, spec_for(source), tmp_path / "tmp")
    victim = chunk_key(manifest.streams["data"].index[0])
    sealed = bytearray(vault.store.get(victim))
    sealed[len(sealed) // 2] ^= 0x01
    vault.store.delete(victim)
    vault.store.put(victim, bytes(sealed))
    with pytest.raises(IntegrityError, match=victim.rsplit("/", 1)[1]):
        restore_to(vault, manifest.recovery_point_id, tmp_path / "restored", tmp_path)


def test_restore_refuses_a_target_that_is_a_file(tmp_path: Path, vault: Vault, source: Path) -> None:
    manifest, _ = backup(vault, spec_for(source), tmp_path / "tmp")
    target = tmp_path / "a-file"
    target.write_bytes(b"")
    with pytest.raises(TargetError, match="is not a directory"):
        restore_to(vault, manifest.recovery_point_id, target, tmp_path, allow_non_empty=True)


def forge_recovery_point(vault: Vault, records: list[dict[str, Any]]) -> str:
    """A recovery point whose tree stream says whatever ``records`` say (what an attacker could store)."""
    rp_id = secrets.token_hex(8)
    lines = b"".join(json.dumps(record).encode() + b"\n" for record in records)
    with RecoveryPointWriter(vault, rp_id) as writer:
        writer.store_stream("tree", io.BytesIO(lines))
        writer.add_stream("data", writer.stream())
        writer.commit("forged", "directory", {"tree_format": 1})
    return rp_id


EMPTY_FILE = {"type": "file", "mode": 0o100644, "size": 0, "chunks": []}


@pytest.mark.parametrize(
    ("records", "error"),
    [
        ([{"path": "../escape.txt", **EMPTY_FILE}], IntegrityError),
        ([{"path": "a/../../escape.txt", **EMPTY_FILE}], IntegrityError),
        ([{"path": "OUTSIDE/escape.txt", **EMPTY_FILE}], IntegrityError),
        ([{"path": "./escape.txt", **EMPTY_FILE}], IntegrityError),
        ([{"path": "link", "type": "symlink", "target": "OUTSIDE"}, {"path": "link/escape.txt", **EMPTY_FILE}],
         IntegrityError),
        ([{"path": "link", "type": "symlink", "target": "OUTSIDE"}, {"path": "link", "type": "dir"}], TargetError),
        ([{"path": "escape.txt", "type": "hardlink", "link": "../outside/secret.txt"}], IntegrityError),
        ([{"path": "escape.txt", "type": "hardlink", "link": "OUTSIDE/secret.txt"}], IntegrityError),
        ([{"path": "sub/escape.txt", **EMPTY_FILE}], IntegrityError),
        ([{"path": ".", **EMPTY_FILE}], IntegrityError),
        ([{"path": ".", "type": "symlink", "target": "OUTSIDE"}], IntegrityError),
    ],
)  # fmt: skip
def test_forged_tree_cannot_write_outside_the_target(
    tmp_path: Path, vault: Vault, records: list[dict[str, Any]], error: type[Exception]
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"do not touch\n")
    for record in records:
        for key in ("path", "target", "link"):
            if isinstance(record.get(key), str):
                record[key] = record[key].replace("OUTSIDE", str(outside))
    rp_id = forge_recovery_point(vault, records)
    target = tmp_path / "restore" / "target"

    with pytest.raises(error):
        restore_to(vault, rp_id, target, tmp_path)

    assert os.listdir(tmp_path / "restore") == ["target"]
    assert os.listdir(outside) == ["secret.txt"]
    assert os.stat(outside / "secret.txt").st_nlink == 1
    assert (outside / "secret.txt").read_bytes() == b"do not touch\n"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "needs a 'path'"),
        ({"path": "relative/dir"}, "is not absolute"),
        ({"path": "MISSING"}, "does not exist"),
        ({"path": "FILE"}, "is not a directory"),
        ({"path": "DIR", "exclude": ["*.tmp"]}, "unknown directory setting 'exclude'"),
    ],
)
def test_bad_settings_are_config_errors(tmp_path: Path, settings: dict[str, Any], message: str) -> None:
    (tmp_path / "file").write_bytes(b"")
    paths = {"MISSING": tmp_path / "missing", "FILE": tmp_path / "file", "DIR": tmp_path}
    settings = {key: str(paths.get(value, value)) if key == "path" else value for key, value in settings.items()}
    with pytest.raises(ConfigError, match=message):
        get_adapter("directory").validate_settings(settings)


def test_settings_are_normalised(tmp_path: Path) -> None:
    adapter = get_adapter("directory")
    assert adapter.validate_settings({"path": f"{tmp_path}/./"}) == {"path": str(tmp_path)}
    settings = adapter.validate_settings({"path": str(tmp_path), "one_file_system": True})
    assert settings == {"path": str(tmp_path), "one_file_system": True}
    with pytest.raises(ConfigError, match="true or false"):
        adapter.validate_settings({"path": str(tmp_path), "one_file_system": "yes"})


UNREADABLE_BACKUP = """
import sys
from pathlib import Path
from strongroom.adapters.base import ResourceSpec
from strongroom.errors import SourceError
from tests.support.vaults import backup, make_vault
root, work = Path(sys.argv[1]), Path(sys.argv[2])
try:
    backup(make_vault(work / "vault"), ResourceSpec("files", "directory", {"path": str(root)}), work / "tmp")
except SourceError as exc:
    print(exc.one_line())
"""


@pytest.mark.parametrize("unreadable", ["secret.key", "docs/reports"])
def test_unreadable_entries_fail_the_backup_naming_them(tmp_path: Path, source: Path, unreadable: str) -> None:
    os.chmod(source / "secret.key", 0o644)  # owned by someone else when root: only ``unreadable`` may be refused
    os.chmod(source / unreadable, 0)
    command = [sys.executable, "-c", UNREADABLE_BACKUP, str(source), str(tmp_path / "work")]
    if AS_ROOT:  # root reads everything: drop the capabilities that bypass file permissions
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("needs setpriv to drop root's file-permission capabilities")
        caps = "-dac_override,-dac_read_search"
        command = [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}", "--", *command]
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(command, cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)},
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"cannot read '{unreadable}': Permission denied. "
        "Give the backup user read access (or run it as root); Strongroom never skips data silently"
    )


@pytest.mark.parametrize("junk", [b"\xff\xfe not utf-8 \x80\n", b'{"path": "a"\n', b"[1, 2]\n"])
def test_a_tree_stream_of_junk_is_an_integrity_error_not_a_traceback(tmp_path: Path, vault: Vault, junk: bytes) -> None:
    """A forged point whose tree stream is not UTF-8 JSON objects fails with one IntegrityError, writing nothing."""
    rp_id = secrets.token_hex(8)
    with RecoveryPointWriter(vault, rp_id) as writer:
        writer.store_stream("tree", io.BytesIO(junk))
        writer.add_stream("data", writer.stream())
        writer.commit("forged", "directory", {"tree_format": 1})
    target = tmp_path / "restore" / "target"
    with pytest.raises(IntegrityError, match="tree record 1"):
        restore_to(vault, rp_id, target, tmp_path)
    assert not target.exists() or os.listdir(target) == []
