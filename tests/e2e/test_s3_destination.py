"""Copies into a destination account whose vault lives in its own S3 bucket under Object Lock (issue 11, item 5).

The seed's layout: the source account backs up locally and talks only to the destination's ``strongroom serve``;
only the destination host holds the bucket's credentials (the standard AWS chain, here its environment). The
source never sees a bucket, a key or an S3 endpoint. Copies in (push), an incremental second copy, a copy back
(pull), ``verify --read-data`` and a DR run from the S3 vault after the source's home is gone; and the
destination host's root, holding the bucket's own keys, deleting objects: locked data survives, copy back and DR
still work.

Runs on moto's server by default and on Ceph RGW with scripts/s3-check.sh (STRONGROOM_TEST_S3_ENDPOINT).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from botocore.exceptions import ClientError

from strongroom.store.s3 import PROBE_KEY
from tests.e2e.dr_world import (
    EXAMPLES,
    RUNBOOK,
    App,
    app_cluster,
    apply_source,
    checksum,
    environ_of,
    put_app_secret,
    runbook_vars,
    secret,
    stop_restored,
)
from tests.e2e.test_copy import make_files
from tests.support.accounts import Server, account_id, issue_credential, register, serving, vault_arn
from tests.support.cli import Cli
from tests.support.pgcluster import PgCluster, traversable_tempdir
from tests.support.s3server import S3_TEST_ENV, S3Server
from tests.support.trees import snapshot_tree

PREFIX = "vault/"
PROBE = f"{PREFIX}{PROBE_KEY}"
HOME_MARKER = f"{PREFIX}catalog/home"  # rewritten every few minutes, never retained (docs/storage.md)
KEY_ID, SECRET_KEY = S3_TEST_ENV["AWS_ACCESS_KEY_ID"], S3_TEST_ENV["AWS_SECRET_ACCESS_KEY"]


def source_cli(home: Path) -> Cli:
    """An account with nothing of AWS in its environment: it could not open a bucket if it tried."""
    cli = Cli(home)
    cli.env = {name: value for name, value in cli.env.items() if not name.startswith("AWS_")}
    return cli


def destination_cli(home: Path) -> Cli:
    cli = Cli(home)
    cli.env.update(S3_TEST_ENV)  # the destination host's AWS credential chain: the bucket's keys
    return cli


def assert_holds_no_bucket_credentials(source: Cli) -> None:
    """Neither the source's environment nor anything under its home (config, catalog, keys, logs) names the
    bucket's credentials or an S3 store."""
    assert not [name for name in source.env if name.startswith("AWS_")]
    for path in source.home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert KEY_ID.encode() not in data and SECRET_KEY.encode() not in data, path
            assert b"s3://" not in data, path


def assert_serve_holds_them(server: Server) -> None:
    """The destination's ``serve`` has the bucket's keys, from the standard AWS environment variables."""
    environment = environ_of(server.process.pid)
    assert (environment.get("AWS_ACCESS_KEY_ID"), environment.get("AWS_SECRET_ACCESS_KEY")) == (KEY_ID, SECRET_KEY)


class Bucket:
    """The destination host's root, holding the bucket's own keys, talking to S3 directly."""

    def __init__(self, s3_server: S3Server, name: str) -> None:
        self.client = s3_server.client()
        self.name = name

    def listing(self) -> list[str]:
        listed = self.client.list_objects_v2(Bucket=self.name, Prefix=PREFIX)
        return sorted(item["Key"] for item in listed.get("Contents", ()) if item["Key"] != PROBE)

    def latest_versions(self) -> list[tuple[str, str]]:
        listed = self.client.list_object_versions(Bucket=self.name, Prefix=PREFIX)
        return sorted(
            (v["Key"], v["VersionId"]) for v in listed.get("Versions", []) if v["IsLatest"] and v["Key"] != PROBE
        )

    def destroy_what_it_can(self) -> list[tuple[str, str]]:
        """Delete every version by id (refused under retention), then plainly delete every key (delete markers).
        Returns the versions that were locked: all the vault wrote but the home marker."""
        locked = [(key, version) for key, version in self.latest_versions() if key != HOME_MARKER]
        assert locked and all(
            self.client.head_object(Bucket=self.name, Key=key).get("ObjectLockMode") for key, _ in locked
        )
        for key, version in locked:
            with pytest.raises(ClientError) as refused:
                self.client.delete_object(Bucket=self.name, Key=key, VersionId=version)
            assert refused.value.response["Error"]["Code"] == "AccessDenied", key
        for key in self.listing():
            self.client.delete_object(Bucket=self.name, Key=key)
        assert self.listing() == []
        listed = self.client.list_object_versions(Bucket=self.name, Prefix=PREFIX)
        assert set(locked) <= {(v["Key"], v["VersionId"]) for v in listed.get("Versions", [])}
        return locked


def copy(cli: Cli, arn: str, vault: str) -> dict[str, Any]:
    job = cli.json("copy", "start", "--recovery-point", arn, "--destination-vault", vault, "--wait")
    assert job["state"] == "COMPLETED", job
    return dict(job["result"])


def restore(cli: Cli, arn: str, target: Path) -> dict[str, Any]:
    cli.run("restore", "start", "--recovery-point", arn, "--target", str(target), "--wait")
    return snapshot_tree(target)


def test_copies_into_a_locked_s3_destination_vault_back_out_and_past_root(tmp_path: Path, s3_server: S3Server) -> None:
    source, destination = source_cli(tmp_path / "source"), destination_cli(tmp_path / "destination")
    source.run("init")
    destination.run("init")
    bucket = Bucket(s3_server, s3_server.new_bucket(object_lock=True))
    destination.run("vaults", "create", "Offsite", "--store", s3_server.url(bucket.name, PREFIX.rstrip("/")))
    destination.run("vaults", "put-lock", "Offsite", "--min-retention-days", "1")
    destination.run(
        "vaults", "put-access-policy", "Offsite", "--default-destination",
        "--source-account-id", account_id(source), "--source-vault-arn", vault_arn(source),
        "--admin", f"arn:strongroom:iam::{account_id(destination)}:root",  # the destination's admin restores
    )  # fmt: skip
    offsite = vault_arn(destination, "Offsite")
    tree = tmp_path / "tree"
    make_files(tree)
    source.run("resources", "add", "files", "--type", "directory", "--path", str(tree))

    with serving(destination) as server:
        assert_serve_holds_them(server)
        register(
            source, "destination", server, issue_credential(destination, "copier", "--account-id", account_id(source))
        )
        backup = source.json("backup", "start", "--resource", "files", "--delete-after", "7", "--wait")
        first = copy(source, backup["recovery_point_arn"], offsite)
        assert first["chunks_sent"] >= 1
        assert any(key.startswith(f"{PREFIX}manifests/") for key in bucket.listing())

        (tree / "f00.bin").write_bytes(b"changed after the first copy " * 10_000)  # 1 of 12 files changes
        expected = snapshot_tree(tree)
        second_point = source.json("backup", "start", "--resource", "files", "--delete-after", "7", "--wait")
        second = copy(source, second_point["recovery_point_arn"], offsite)
        assert second["chunks_sent"] <= 3, second  # only what changed crossed
        assert second["bytes_on_wire"] < first["bytes_on_wire"] * 0.15, second
        copied = second["destination_recovery_point_arn"]
        assert destination.json("verify", "--read-data")["ok"]

        # Root on the destination host, with the bucket's keys: every delete by version refused, every key hidden.
        locked = bucket.destroy_what_it_can()
        found = destination.run("verify", "--json", ok=False)
        assert found.returncode != 0 and found.json()["hidden_objects"], found.stdout

        # The copy back (pull, through serve) still reads the locked versions, into the source's own vault.
        back = copy(source, copied, vault_arn(source))["destination_recovery_point_arn"]
        assert back.split(":")[4] == account_id(source)
        assert restore(source, back, tmp_path / "pulled") == expected

    assert restore(destination, copied, tmp_path / "at-destination") == expected
    repaired = destination.json("verify", "--repair", "--read-data")
    assert repaired["ok"] and repaired["hidden_objects"] == {}, repaired
    assert {key for key, _ in locked} <= set(bucket.listing())
    assert destination.json("verify", "--read-data")["ok"]
    assert_holds_no_bucket_credentials(source)


SECRET = "mavis/production/db"


@dataclass
class World:
    base: Path
    cluster: PgCluster
    source: Cli
    destination: Cli
    server: Server
    app: App
    bucket: Bucket
    destination_vault: str
    reports: list[dict[str, Any]]


def apply_s3_destination(cli: Cli, base: Path, source_account_id: str, store_url: str) -> str:
    """examples/mavis/destination with the vault's store in the bucket (the one line an operator adds)."""
    config = yaml.safe_load((EXAMPLES / "destination" / "destination.yaml").read_text())
    config["vaults"]["mavis-destination"]["store"] = store_url
    path = base / f"destination-{cli.home.name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    cli.run(
        "apply", "-f", str(path), "--var-file", str(EXAMPLES / "destination" / "env" / "production.yaml"),
        "--var", f"source_account_id={source_account_id}", "--auto-approve",
    )  # fmt: skip
    return vault_arn(cli, "mavis-destination")


@pytest.fixture
def world(pg_bindir: Path, s3_server: S3Server) -> Iterator[World]:
    base = traversable_tempdir("strongroom-s3dr-")
    cluster = app_cluster(base)
    source, destination = source_cli(base / "source"), destination_cli(base / "destination")
    source.run("init")
    destination.run("init")
    bucket = Bucket(s3_server, s3_server.new_bucket(object_lock=True))
    store_url = s3_server.url(bucket.name, PREFIX.rstrip("/"))
    destination_vault = apply_s3_destination(destination, base, account_id(source), store_url)
    app = App.at(base)
    reports: list[dict[str, Any]] = []
    try:
        with serving(destination) as server:
            register(
                source,
                "destination",
                server,
                issue_credential(destination, "copier", "--account-id", account_id(source)),
            )
            apply_source(source, base, cluster, destination_vault)
            put_app_secret(source, SECRET, cluster.port)
            app.start(source, SECRET)
            yield World(base, cluster, source, destination, server, app, bucket, destination_vault, reports)
    finally:
        app.stop()
        for report in reports:
            stop_restored(report)
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.postgres
def test_dr_from_the_s3_destination_vault_after_the_source_home_and_the_buckets_objects_are_deleted(
    world: World,
) -> None:
    served_at_backup = world.app.checksum()
    backup = world.source.json(
        "backup", "start", "--resource", "mavis-db", "--vault", "mavis-production", "--delete-after", "60", "--wait"
    )
    copied = world.source.json("copy", "start", "--recovery-point", backup["recovery_point_arn"], "--wait")
    assert copied["state"] == "COMPLETED", copied
    assert world.destination.json("recovery-points", "list", "--vault", "mavis-destination")["recovery_points"]
    assert_serve_holds_them(world.server)
    assert_holds_no_bucket_credentials(world.source)

    # The disaster: the database and the source account's whole home; then root on the destination host deletes
    # what it can of the bucket with its own keys.
    world.app.stop()
    world.cluster.stop(mode="immediate")
    shutil.rmtree(world.cluster.data_dir)
    shutil.rmtree(world.source.home)
    world.bucket.destroy_what_it_can()

    # A new source account from the same configuration copies the point back from the S3 vault and runs the DR.
    fresh = source_cli(world.base / "new-source")
    fresh.run("init")
    world.destination.run(
        "vaults", "put-access-policy", "mavis-destination", "--default-destination",
        "--source-account-id", account_id(fresh),
        "--source-vault-arn", f"arn:strongroom:backup:local:{account_id(fresh)}:backup-vault:mavis-production",
        "--admin", f"arn:strongroom:iam::{account_id(world.destination)}:root",
    )  # fmt: skip
    register(
        fresh,
        "destination",
        world.server,
        issue_credential(world.destination, "restorer", "--account-id", account_id(fresh)),
    )
    apply_source(fresh, world.base, world.cluster, world.destination_vault)
    report = fresh.json(
        "dr", "run", str(RUNBOOK),
        *runbook_vars(
            FROM_ACCOUNT="destination", VAULT="mavis-destination", CREDENTIALS="managed",
            DEPLOY_COMMAND=" ".join(world.app.start_command(SECRET)), HEALTH_URL=world.app.health_url,
        ),
    )  # fmt: skip
    world.reports.append(report)
    assert report["state"] == "COMPLETED", report
    assert report["recovery_point"]["recovery_point_arn"] == copied["result"]["destination_recovery_point_arn"]
    assert report["recovery_point"]["copied_back_as"].split(":")[4] == account_id(fresh)
    assert world.app.checksum() == served_at_backup
    port = report["restored"]["port"]
    assert checksum(port, secret(fresh, SECRET)["password"]) == served_at_backup
    assert_holds_no_bucket_credentials(fresh)
