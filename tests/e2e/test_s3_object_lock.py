"""Proof that the storage, not Strongroom, holds the line: after a backup into a locked S3 vault, the destination
host's root, holding the vault's own S3 credentials, talks to S3 directly (boto3 against moto on loopback) and
tries to destroy it. Locked versions survive every attempt; what the attacker can still do (hide them under a
delete marker or a newer version) is reported by ``verify``, read past by ``restore`` and undone by
``verify --repair``. The same root on a local vault deletes everything: the contrast the lock on S3 removes.

moto deviations (docs/storage.md): it lets any retention be shortened without a bypass, and lets versioning be
suspended on an Object Lock bucket; real S3 refuses both. The tests assert what holds on both.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from strongroom.store.s3 import PROBE_KEY
from tests.support.cli import Cli
from tests.support.s3server import S3_TEST_ENV, S3Server
from tests.support.trees import diff_snapshots, make_awkward_tree, snapshot_tree

PROBE = f"vault/{PROBE_KEY}"  # the store's conditional-write probe: no vault object, never locked


@pytest.fixture
def cli(tmp_path: Path, s3_server: S3Server) -> Cli:
    cli = Cli(tmp_path / "home")
    cli.env.update(S3_TEST_ENV)  # the vault's own credentials: the attacker below holds the same
    cli.run("init")
    return cli


class Bucket:
    """The attacker's (and the test's) direct view of the vault's bucket."""

    def __init__(self, s3_server: S3Server, name: str, prefix: str) -> None:
        self.client = s3_server.client()
        self.name = name
        self.prefix = prefix

    def listing(self) -> list[str]:
        listed = self.client.list_objects_v2(Bucket=self.name, Prefix=self.prefix)
        return sorted(item["Key"] for item in listed.get("Contents", ()) if item["Key"] != PROBE)

    def versions(self) -> list[dict[str, Any]]:
        listed = self.client.list_object_versions(Bucket=self.name, Prefix=self.prefix)
        return [v for v in listed.get("Versions", []) if v["Key"] != PROBE]

    def head(self, key: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.client.head_object(Bucket=self.name, Key=key)
        return answer


def _backup(cli: Cli, s3_server: S3Server, tmp_path: Path, *, lock: bool = True, keep: str | None = "7") -> Any:
    bucket = s3_server.new_bucket(object_lock=True)
    cli.run("vaults", "create", "Offsite", "--store", s3_server.url(bucket, "vault"))
    if lock:
        cli.run("vaults", "put-lock", "Offsite", "--min-retention-days", "1")
    source = make_awkward_tree(tmp_path / "source", big_size=2 * 1024 * 1024 + 5)
    cli.run("resources", "add", "files", "--type", "directory", "--path", str(source))
    days = ["--delete-after", keep] if keep else []
    job = cli.json("backup", "start", "--resource", "files", "--vault", "Offsite", *days, "--wait")
    assert job["state"] == "COMPLETED", job
    return Bucket(s3_server, bucket, "vault/"), job, snapshot_tree(source)


def _restore(cli: Cli, job: dict[str, Any], target: Path) -> dict[str, Any]:
    cli.run("restore", "start", "--recovery-point", job["recovery_point_arn"], "--target", str(target), "--wait")
    return snapshot_tree(target)


def _delete_at(cli: Cli, job: dict[str, Any]) -> datetime:
    described = cli.json("recovery-points", "describe", "--recovery-point", job["recovery_point_arn"])
    return datetime.fromisoformat(described["calculated_lifecycle"]["delete_at"])


def _refused(call: Any, **kwargs: Any) -> str:
    with pytest.raises(ClientError) as refused:
        call(**kwargs)
    return str(refused.value.response["Error"]["Code"])


HOME_MARKER = "vault/catalog/home"


def test_root_with_the_vaults_credentials_cannot_destroy_a_locked_s3_backup(
    cli: Cli, s3_server: S3Server, tmp_path: Path
) -> None:
    bucket, job, expected = _backup(cli, s3_server, tmp_path)
    s3 = bucket.client
    # The home marker (catalog/home, `vaults attach`'s fence against a second writer) is rewritten every few
    # minutes and holds no backup data: it is not retained (docs/storage.md).
    keys = [key for key in bucket.listing() if key != HOME_MARKER]
    manifest = next(key for key in keys if key.startswith("vault/manifests/"))
    chunk = next(key for key in keys if key.startswith("vault/packs/") and key.endswith(".pack"))
    # older versions: catalog records rewritten
    locked = [v for v in bucket.versions() if v["IsLatest"] and v["Key"] != HOME_MARKER]
    assert {v["Key"] for v in locked} == set(keys)
    assert [k for k in keys if not bucket.head(k).get("ObjectLockMode")] == []

    # 1. Delete every version by id: refused, for every object the vault wrote.
    for version in locked:
        code = _refused(s3.delete_object, Bucket=bucket.name, Key=version["Key"], VersionId=version["VersionId"])
        assert code == "AccessDenied"
    # 2. Shorten a retention without a bypass. AWS refuses; moto accepts (a known deviation), so what is asserted
    #    holds on both: the version still cannot be deleted, and the next lifecycle sweep puts the date back.
    soon = datetime.now(UTC) + timedelta(hours=1)
    manifest_version = next(v["VersionId"] for v in locked if v["Key"] == manifest)
    with contextlib.suppress(ClientError):  # real S3 refuses
        s3.put_object_retention(
            Bucket=bucket.name, Key=manifest, Retention={"Mode": "GOVERNANCE", "RetainUntilDate": soon}
        )
    assert _refused(s3.delete_object, Bucket=bucket.name, Key=manifest, VersionId=manifest_version) == "AccessDenied"
    swept = cli.json("lifecycle", "run", "--no-gc", "--json")["object_lock"]["Offsite"]
    assert swept["failed"] == {}
    assert bucket.head(manifest)["ObjectLockRetainUntilDate"] > datetime.now(UTC) + timedelta(days=6)
    # 3. Remove the bucket's Object Lock configuration: refused (S3: it cannot be turned off once enabled).
    _refused(
        s3.put_object_lock_configuration, Bucket=bucket.name, ObjectLockConfiguration={"ObjectLockEnabled": "Disabled"}
    )
    assert s3.get_object_lock_configuration(Bucket=bucket.name)["ObjectLockConfiguration"]["ObjectLockEnabled"] == (
        "Enabled"
    )
    # 4. Overwrite the manifest and a chunk with other bodies (new, unlocked versions on top)...
    for key in (manifest, chunk):
        s3.put_object(Bucket=bucket.name, Key=key, Body=b"forged by root " + os.urandom(64))
    # 5. ...and plainly delete everything else: delete markers hide the locked versions.
    for key in [*keys, HOME_MARKER]:
        if key not in (manifest, chunk):
            s3.delete_object(Bucket=bucket.name, Key=key)
    assert bucket.listing() == sorted([manifest, chunk])

    # Every locked version is still there, byte for byte.
    survived = {(v["Key"], v["VersionId"]) for v in bucket.versions()}
    assert {(v["Key"], v["VersionId"]) for v in locked} <= survived

    # verify names each hidden object, one finding per object; restore still reads the locked versions.
    found = cli.run("verify", "--json", ok=False)
    assert found.returncode != 0
    hidden = found.json()["hidden_objects"]
    hidden_keys = [*keys, HOME_MARKER]  # the marker is not locked, but its older version is still there
    expected_findings = {f"Offsite/{key[len('vault/') :]}": "hidden by a delete marker" for key in hidden_keys}
    expected_findings.update(
        {f"Offsite/{key[len('vault/') :]}": "newer unlocked version on top" for key in (manifest, chunk)}
    )
    assert hidden == expected_findings
    assert diff_snapshots(expected, _restore(cli, job, tmp_path / "restored")) == []

    # verify --repair puts the locked versions back on top; then everything checks out, data included.
    repaired = cli.json("verify", "--repair", "--read-data", "--json")
    assert sorted(repaired["repaired_objects"]) == sorted(expected_findings)
    assert repaired["ok"] and repaired["hidden_objects"] == {}
    assert [key for key in bucket.listing() if key != HOME_MARKER] == keys
    assert all(bucket.head(key).get("ObjectLockMode") for key in keys)
    assert cli.json("verify", "--read-data", "--json")["ok"]
    assert diff_snapshots(expected, _restore(cli, job, tmp_path / "again")) == []


def test_the_same_root_on_a_local_vault_deletes_everything(cli: Cli, tmp_path: Path) -> None:
    """The contrast: a local vault's lock is Strongroom's own promise, which root on the host does not keep."""
    source = make_awkward_tree(tmp_path / "source", big_size=1024 * 1024)
    cli.run("vaults", "put-lock", "Default", "--min-retention-days", "1")
    cli.run("resources", "add", "files", "--type", "directory", "--path", str(source))
    job = cli.json("backup", "start", "--resource", "files", "--delete-after", "7", "--wait")
    vault_dir = cli.home / "vaults" / "Default"
    assert any(vault_dir.rglob("*"))
    for child in vault_dir.iterdir():  # root: no lock, no version, no marker stops this
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    assert not any(vault_dir.rglob("*"))
    restore = cli.run(
        "restore", "start", "--recovery-point", job["recovery_point_arn"], "--target", str(tmp_path / "r"), "--wait",
        ok=False,
    )  # fmt: skip
    assert restore.returncode != 0
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_locking_an_s3_vault_retains_the_points_already_in_it(cli: Cli, s3_server: S3Server, tmp_path: Path) -> None:
    bucket, job, _ = _backup(cli, s3_server, tmp_path, lock=False, keep="5")
    keys = bucket.listing()
    assert not any(bucket.head(key).get("ObjectLockMode") for key in keys)
    cli.run("vaults", "put-lock", "Offsite", "--min-retention-days", "1")
    delete_at = _delete_at(cli, job)
    for key in keys:
        head = bucket.head(key)
        if key == HOME_MARKER:  # never retained: rewritten with every record write, no backup data in it
            assert "ObjectLockMode" not in head
            continue
        assert head["ObjectLockMode"] == "GOVERNANCE" and head["ObjectLockRetainUntilDate"] >= delete_at, key


def test_a_point_kept_forever_gets_a_rolling_horizon_the_sweep_extends(
    cli: Cli, s3_server: S3Server, tmp_path: Path
) -> None:
    bucket, _, _ = _backup(cli, s3_server, tmp_path, keep=None)
    manifest = next(key for key in bucket.listing() if key.startswith("vault/manifests/"))
    horizon = datetime.now(UTC) + timedelta(days=30)
    assert abs(bucket.head(manifest)["ObjectLockRetainUntilDate"] - horizon) < timedelta(hours=1)
    swept = cli.json("lifecycle", "run", "--no-gc", "--json")["object_lock"]["Offsite"]
    assert (swept["points_checked"], swept["points_extended"]) == (1, 0)  # more than half the horizon left

    # A principal allowed to bypass GOVERNANCE shortens it (legitimate on S3): the next sweep rolls it forward.
    bucket.client.put_object_retention(
        Bucket=bucket.name, Key=manifest, BypassGovernanceRetention=True,
        Retention={"Mode": "GOVERNANCE", "RetainUntilDate": datetime.now(UTC) + timedelta(days=2)},
    )  # fmt: skip
    swept = cli.json("lifecycle", "run", "--no-gc", "--json")["object_lock"]["Offsite"]
    assert (swept["points_checked"], swept["points_extended"]) == (1, 1)
    assert bucket.head(manifest)["ObjectLockRetainUntilDate"] > datetime.now(UTC) + timedelta(days=29)


def test_gc_reports_objects_still_retained_and_leaves_them(cli: Cli, s3_server: S3Server, tmp_path: Path) -> None:
    """A point stored before the lock is not governed by it (Strongroom lets it be deleted), but putting the lock
    retained its objects on S3: the collector leaves them and says until when."""
    bucket, job, _ = _backup(cli, s3_server, tmp_path, lock=False, keep="5")
    cli.run("vaults", "put-lock", "Offsite", "--min-retention-days", "1")
    packed = [key for key in bucket.listing() if key.startswith("vault/packs/")]
    cli.run("recovery-points", "delete", job["recovery_point_arn"])
    runs = cli.json("lifecycle", "run", "--gc-wait", "0", "--json")["garbage_collection"]
    [collected] = [run for run in runs if run["backup_vault_name"] == "Offsite"]
    # Each dead pack's index is tried first and found retained: the pack behind it is not tried either.
    packs = [key for key in packed if key.endswith(".pack")]
    assert (collected["objects_deleted"], collected["objects_retained"]) == (0, len(packs))
    delete_at = _delete_at(cli, job)
    assert datetime.fromisoformat(collected["retained_until"]) >= delete_at
    assert "kept by Object Lock retention" in collected["message"]
    assert [key for key in bucket.listing() if key.startswith("vault/packs/")] == packed


def test_wal_pushed_into_a_locked_s3_vault_is_retained_and_pruning_waits_for_its_retention(
    cli: Cli, s3_server: S3Server, tmp_path: Path
) -> None:
    """``wal push`` (archive_command) writes each WAL object under the lock's mode, retained for the longest
    continuous window plus the lock's minimum; lifecycle pruning never tries one still retained (it reports it)
    and deletes it, every version, once its retention ended."""
    import struct

    from strongroom.services.account import open_account
    from strongroom.services.object_lock import wal_lock_rule
    from strongroom.services.pitr import prune_system
    from strongroom.services.wal_archive import WalCredential
    from strongroom.vault.wal import WalKeys, wal_key

    system, size = "7000000000000000001", 1 << 20
    bucket_name = s3_server.new_bucket(object_lock=True)
    store_url = s3_server.url(bucket_name, "vault")
    cli.run("vaults", "create", "Offsite", "--store", store_url)
    cli.run("vaults", "put-lock", "Offsite", "--min-retention-days", "1")
    account = open_account(cli.home, lambda: cli.env["STRONGROOM_PASSPHRASE"])
    try:
        rule = wal_lock_rule(account, "Offsite")  # what 'wal setup' writes into the credential file
        keys = WalKeys.derive(account.vault("Offsite").keys, system)
    finally:
        account.close()
    assert rule is not None and (str(rule[0]), rule[1]) == ("GOVERNANCE", 36)
    credential = WalCredential("db", "Offsite", store_url, keys, None, str(rule[0]), rule[1])
    config = tmp_path / "wal.json"
    config.write_bytes(credential.to_json())
    pushed = datetime.now(UTC)
    names = ["000000010000000000000001", "000000010000000000000002"]
    for name in names:
        header = struct.pack("<HHIQI4xQ", 0xD110, 2, 1, int(name[16:], 16) * size, 0, int(system))
        (tmp_path / name).write_bytes(header + b"w" * (size - len(header)))
        cli.run("wal", "push", "--config", str(config), str(tmp_path / name))
    bucket = Bucket(s3_server, bucket_name, "vault/")
    keys_of = {name: f"vault/{wal_key(system, name)}" for name in names}
    for key in keys_of.values():
        head = bucket.head(key)
        assert head["ObjectLockMode"] == "GOVERNANCE"
        assert abs(head["ObjectLockRetainUntilDate"] - (pushed + timedelta(days=36))) < timedelta(hours=1)

    archive = WalCredential.load(config).archive()
    kept = prune_system(archive, [(1, 2 * size)])  # a base backup starting in segment 2: segment 1 is not needed
    assert (kept["deleted"], kept["retained"]) == (0, 1)
    assert datetime.fromisoformat(kept["retained_until"]) > pushed + timedelta(days=35)
    assert keys_of[names[0]] in bucket.listing()
    if not s3_server.is_moto:  # an ended retention is written as a past date, which only moto accepts
        return
    bucket.client.put_object_retention(
        Bucket=bucket.name, Key=keys_of[names[0]], BypassGovernanceRetention=True,
        Retention={"Mode": "GOVERNANCE", "RetainUntilDate": datetime.now(UTC) - timedelta(minutes=1)},
    )  # fmt: skip
    gone = prune_system(archive, [(1, 2 * size)])
    assert (gone["deleted"], gone.get("retained", 0)) == (1, 0)
    assert [v for v in bucket.versions() if v["Key"] == keys_of[names[0]]] == []  # every version, for good
    assert archive.fetch(names[1])[: len(header)] == struct.pack(  # the needed one stays, readable
        "<HHIQI4xQ", 0xD110, 2, 1, 2 * size, 0, int(system)
    )
