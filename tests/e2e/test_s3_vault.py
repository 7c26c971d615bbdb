"""Vaults in an S3 bucket (moto's server on loopback), through the real CLI: create, back up, restore,
verify; credentials only from the AWS chain; a locked vault needs a bucket with Object Lock."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.cli import Cli, assert_one_line_error
from tests.support.s3server import S3_TEST_ENV, S3Server
from tests.support.trees import diff_snapshots, make_awkward_tree, snapshot_tree

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


@pytest.fixture
def cli(tmp_path: Path, s3_server: S3Server) -> Cli:
    cli = Cli(tmp_path / "home")
    cli.env.update(S3_TEST_ENV)  # the AWS credential chain's environment variables
    cli.run("init")
    return cli


def _raw_keys(s3_server: S3Server, bucket: str) -> set[str]:
    listed = s3_server.client().list_objects_v2(Bucket=bucket)
    return {item["Key"] for item in listed.get("Contents", ())}


def test_a_directory_round_trips_through_an_s3_vault(cli: Cli, s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.new_bucket()
    url = s3_server.url(bucket, "team/vault")
    created = cli.json("vaults", "create", "Offsite", "--store", url)
    assert created["store_url"] == url.replace("team/vault?", "team/vault/?")
    source = make_awkward_tree(tmp_path / "source", big_size=3 * 1024 * 1024 + 17)
    expected = snapshot_tree(source)
    cli.run("resources", "add", "files", "--type", "directory", "--path", str(source))

    job = cli.json("backup", "start", "--resource", "files", "--vault", "Offsite", "--wait")
    assert job["state"] == "COMPLETED", job
    keys = _raw_keys(s3_server, bucket)
    assert any(key.startswith("team/vault/packs/") and key.endswith(".pack") for key in keys)  # format 2
    assert not any(key.startswith("team/vault/chunks/") for key in keys)
    assert any(key.startswith("team/vault/manifests/") for key in keys)
    assert not (cli.home / "vaults" / "Offsite").exists()  # nothing of it on the local disk

    target = tmp_path / "restored"
    cli.run(
        "restore", "start", "--recovery-point", job["recovery_point_arn"], "--target", str(target),
        "--preserve-special", "--wait",
    )  # fmt: skip
    assert diff_snapshots(expected, snapshot_tree(target)) == []
    assert cli.json("verify", "--read-data")["ok"]
    listed = {v["backup_vault_name"]: v["store_url"] for v in cli.json("vaults", "list")["backup_vaults"]}
    assert listed["Offsite"] == created["store_url"]


def test_missing_credentials_are_one_line_and_create_nothing(cli: Cli, s3_server: S3Server) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        cli.env.pop(name, None)
    result = cli.run("vaults", "create", "Offsite", "--store", s3_server.new_store_url(), ok=False)
    assert_one_line_error(result, 2, "no AWS credentials found", "AWS_ACCESS_KEY_ID")
    assert [v["backup_vault_name"] for v in cli.json("vaults", "list")["backup_vaults"]] == ["Default"]


def test_credentials_in_the_store_url_are_refused_and_never_recorded(cli: Cli, s3_server: S3Server) -> None:
    bucket = s3_server.new_bucket()
    for url in (
        f"s3://AKIAEXAMPLE:{SECRET}@{bucket}/v?endpoint={s3_server.endpoint}",
        s3_server.url(bucket, "v", secret_access_key=SECRET),
    ):
        result = cli.run("vaults", "create", "Offsite", "--store", url, ok=False)
        assert_one_line_error(result, 2, "must not hold credentials")
        assert SECRET not in result.stderr + result.stdout
    assert _raw_keys(s3_server, bucket) == set()
    assert all(SECRET.encode() not in path.read_bytes() for path in cli.home.rglob("*") if path.is_file())


def test_a_missing_bucket_is_one_line(cli: Cli, s3_server: S3Server) -> None:
    result = cli.run("vaults", "create", "Offsite", "--store", s3_server.url("no-such-bucket"), ok=False)
    assert_one_line_error(result, 6, "bucket no-such-bucket does not exist")


def test_a_vault_lock_needs_a_bucket_with_object_lock(cli: Cli, s3_server: S3Server) -> None:
    cli.run("vaults", "create", "Plain", "--store", s3_server.new_store_url())
    result = cli.run("vaults", "put-lock", "Plain", "--min-retention-days", "1", ok=False)
    assert_one_line_error(result, 2, "has no versioning and no Object Lock", "docs/storage.md")
    assert cli.json("vaults", "describe", "Plain")["locked"] is False

    cli.run("vaults", "create", "Locked", "--store", s3_server.new_store_url(object_lock=True))
    cli.run("vaults", "put-lock", "Locked", "--min-retention-days", "1")
    assert cli.json("vaults", "describe", "Locked")["locked"] is True


CONFIG = """\
vaults:
  Default: {{}}
  Offsite:
    store: "{store}"
{lock}"""


def test_the_account_file_places_a_vault_in_its_store_and_plan_shows_it(
    cli: Cli, s3_server: S3Server, tmp_path: Path
) -> None:
    config = tmp_path / "account.yaml"
    plain = s3_server.new_store_url()
    config.write_text(CONFIG.format(store=plain, lock="    lock: {min_retention_days: 1}\n"))
    planned = cli.run("plan", "-f", str(config)).stdout
    assert "Offsite" in planned and plain.split("?")[0] in planned
    refused = cli.run("apply", "-f", str(config), "--auto-approve", ok=False)
    assert_one_line_error(refused, 2, "has no versioning and no Object Lock")
    assert "Offsite" not in {v["backup_vault_name"] for v in cli.json("vaults", "list")["backup_vaults"]}

    locked = s3_server.new_store_url(object_lock=True)
    config.write_text(CONFIG.format(store=locked, lock="    lock: {min_retention_days: 1}\n"))
    cli.run("apply", "-f", str(config), "--auto-approve")
    described = cli.json("vaults", "describe", "Offsite")
    assert described["store_url"].split("?")[0] == locked.split("?")[0].rstrip("/") + "/"
    assert described["locked"] is True

    config.write_text(CONFIG.format(store=s3_server.new_store_url(), lock="    lock: {min_retention_days: 1}\n"))
    moved = cli.run("plan", "-f", str(config), "--json", ok=False)
    assert "a vault's store is set when it is created" in moved.stdout + moved.stderr


def test_no_aws_variable_reaches_the_catalog(cli: Cli, s3_server: S3Server) -> None:
    cli.run("vaults", "create", "Offsite", "--store", s3_server.new_store_url())
    catalog = (cli.home / "catalog.db").read_bytes()
    assert S3_TEST_ENV["AWS_SECRET_ACCESS_KEY"].encode() not in catalog
    assert os.environ.get("AWS_SECRET_ACCESS_KEY") == S3_TEST_ENV["AWS_SECRET_ACCESS_KEY"]


def test_garbage_collection_frees_what_no_point_on_s3_needs(cli: Cli, s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.new_bucket()
    # Packs of 64 KiB: each ~1 MiB chunk closes its own pack, so the first point's data is in packs no later
    # point shares (a partly live pack stays whole: tests/integration/test_packs.py).
    cli.run("vaults", "create", "Offsite", "--store", s3_server.url(bucket, pack_size="64KiB"))
    source = tmp_path / "source"
    source.mkdir()
    (source / "old.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    cli.run("resources", "add", "files", "--type", "directory", "--path", str(source))
    first = cli.json("backup", "start", "--resource", "files", "--vault", "Offsite", "--wait")
    (source / "old.bin").unlink()
    (source / "new.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    expected = snapshot_tree(source)
    second = cli.json("backup", "start", "--resource", "files", "--vault", "Offsite", "--wait")
    before = {key for key in _raw_keys(s3_server, bucket) if key.startswith("vault/packs/")}

    cli.run("recovery-points", "delete", first["recovery_point_arn"])
    runs = cli.json("lifecycle", "run", "--gc-wait", "0")["garbage_collection"]
    [collected] = [run for run in runs if run["backup_vault_name"] == "Offsite"]
    after = {key for key in _raw_keys(s3_server, bucket) if key.startswith("vault/packs/")}
    assert collected["status"] == "COMPLETED", collected
    assert after < before and collected["objects_deleted"] == len(before - after), collected

    target = tmp_path / "restored"
    cli.run("restore", "start", "--recovery-point", second["recovery_point_arn"], "--target", str(target), "--wait")
    assert diff_snapshots(expected, snapshot_tree(target)) == []
    assert cli.json("verify", "--read-data")["ok"]


def test_a_backup_killed_between_its_packs_and_its_manifest_leaves_a_consistent_vault(
    cli: Cli, s3_server: S3Server, tmp_path: Path
) -> None:
    """Killed after a pack is stored but before its index (then, on the re-run, before the manifest): the vault
    verifies, the point is not COMPLETED, a re-run succeeds and restores, and the collector removes the orphans."""
    bucket = s3_server.new_bucket()
    cli.run("vaults", "create", "Offsite", "--store", s3_server.url(bucket))
    source = tmp_path / "source"
    source.mkdir()
    (source / "data.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    cli.run("resources", "add", "files", "--type", "directory", "--path", str(source))
    for point in ("write:after-pack", "write:before-manifest"):
        killed = cli.run(
            "backup", "start", "--resource", "files", "--vault", "Offsite", "--wait", ok=False,
            env={"STRONGROOM_FAULT_KILL_AT": point},
        )  # fmt: skip
        assert killed.returncode < 0, point
        packs = {key for key in _raw_keys(s3_server, bucket) if key.startswith("vault/packs/")}
        assert any(key.endswith(".pack") for key in packs), point  # the pack reached the bucket
        assert not any(key.startswith("vault/manifests/") for key in _raw_keys(s3_server, bucket))
        assert cli.json("verify")["ok"]
    statuses = [p["status"] for p in cli.json("recovery-points", "list", "--all")["recovery_points"]]
    assert "COMPLETED" not in statuses

    done = cli.json("backup", "start", "--resource", "files", "--vault", "Offsite", "--wait")
    assert done["state"] == "COMPLETED", done
    target = tmp_path / "restored"
    cli.run("restore", "start", "--recovery-point", done["recovery_point_arn"], "--target", str(target), "--wait")
    assert diff_snapshots(snapshot_tree(source), snapshot_tree(target)) == []
    runs = cli.json("lifecycle", "run", "--gc-wait", "0")["garbage_collection"]
    [collected] = [run for run in runs if run["backup_vault_name"] == "Offsite"]
    # The pack whose index never came is deleted; the pack the second killed run indexed was reused by the re-run.
    assert collected["objects_deleted"] == 1, collected
    left = {key for key in _raw_keys(s3_server, bucket) if key.startswith("vault/packs/")}
    assert {key[: -len(".idx")] for key in left if key.endswith(".idx")} == {
        key[: -len(".pack")] for key in left if key.endswith(".pack")
    }
    assert cli.json("verify", "--read-data")["ok"]
