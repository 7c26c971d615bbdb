"""WAL copied to the destination account with a cluster's base backups, and point-in-time recovery there after
the source account is gone (docs/pitr.md, "Both accounts").

One module: a source account whose cluster archives WAL through PostgreSQL's own archive_command, and a
destination account serving its API on loopback, with a vault the restored server's OS user can read. Tests
run in file order (the last one deletes the source).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import zstandard

from strongroom.errors import IntegrityError, RemoteError, UsageError, WalConflictError
from strongroom.policy.document import default_destination_policy
from strongroom.policy.principals import root_arn
from strongroom.services.account import open_account
from strongroom.services.remote import client_for
from tests.support.accounts import Server, account_id, issue_credential, register, serving, vault_arn
from tests.support.cli import Cli
from tests.support.pgcluster import PgCluster, traversable_tempdir
from tests.support.s3server import S3_TEST_ENV, S3Server
from tests.support.walarchive import ArchivingCluster, archived_object, commit_events, ids, launcher, vault_directory

pytestmark = [pytest.mark.postgres, pytest.mark.xdist_group("walcopy")]

RESOURCE = "db"
VAULT = "pitr"
DR_VAULT = "dr"
BACK_VAULT = "back"  # where a runbook in the source account copies the destination's points back


@dataclass
class World:
    base: Path
    archiving: ArchivingCluster
    destination: Cli
    server: Server
    system_identifier: str
    dest_vault_dir: Path
    continuous_arn: str  # the source's continuous point
    first_copy: dict[str, Any] = field(default_factory=dict)
    commits: list[tuple[int, datetime]] = field(default_factory=list)
    restored: list[PgCluster] = field(default_factory=list)

    @property
    def source(self) -> Cli:
        return self.archiving.cli

    @property
    def cluster(self) -> PgCluster:
        return self.archiving.cluster

    def commit_rows(self, count: int) -> None:
        self.commits = commit_events(self.cluster, count)

    def copy(self, arn: str) -> dict[str, Any]:
        job = self.source.json("copy", "start", "--recovery-point", arn, "--destination-vault",
                               vault_arn(self.destination, DR_VAULT), "--wait")  # fmt: skip
        assert job["state"] == "COMPLETED", job
        return dict(job)

    def adopt(self, restored: dict[str, Any]) -> PgCluster:
        cluster = PgCluster.adopt(Path(restored["data_directory"]), restored["port"])
        self.restored.append(cluster)
        return cluster


@pytest.fixture(scope="module")
def world(s3_server: S3Server) -> Iterator[World]:
    base = traversable_tempdir("sr-walcopy-")
    cluster = PgCluster.create(
        base / "pg", settings={"archive_mode": "on", "archive_command": "", "track_commit_timestamp": "on"}
    )
    cluster.start()
    source, destination = Cli(base / "source"), Cli(base / "destination")
    destination.env.update(S3_TEST_ENV)  # its serve writes the locked S3 vault (test_copied_wal_in_a_locked...)
    for cli in (source, destination):
        cli.env["STRONGROOM_WAL_COMMAND"] = str(launcher(base))
        cli.run("init")
    restored: list[PgCluster] = []
    try:
        source.run("vaults", "create", VAULT, "--store", vault_directory(base / "vault").as_uri())
        dest_vault_dir = vault_directory(base / "dest-vault")
        destination.run("vaults", "create", DR_VAULT, "--store", dest_vault_dir.as_uri())
        source.run("vaults", "create", BACK_VAULT, "--store", vault_directory(base / "back").as_uri())
        policy = default_destination_policy(
            source_account_ids=[account_id(source)],
            source_vault_arns=[vault_arn(source, VAULT), vault_arn(source, BACK_VAULT)],
            admin_principal_arns=[root_arn(account_id(destination))],
        )
        (base / "policy.json").write_text(json.dumps(policy))
        destination.run("vaults", "put-access-policy", DR_VAULT, "--file", str(base / "policy.json"))
        source.run("resources", "add", RESOURCE, "--type", "postgres-cluster", "--dsn", cluster.dsn())
        setup = source.json("wal", "setup", "--resource", RESOURCE, "--vault", VAULT)
        archiving = ArchivingCluster(cluster, source, RESOURCE, VAULT, setup["settings"]["archive_command"])
        archiving.set_archive_command(archiving.archive_command)
        cluster.execute("CREATE TABLE events (id serial PRIMARY KEY, note text NOT NULL)")
        backup = source.json("backup", "start", "--resource", RESOURCE, "--vault", VAULT, "--wait")
        assert backup["state"] == "COMPLETED", backup
        continuous = source_continuous_point(source)
        with serving(destination) as server:
            credential = issue_credential(destination, "copier", "--account-id", account_id(source))
            register(source, "destination", server, credential)
            world = World(base, archiving, destination, server, setup["system_identifier"], dest_vault_dir,
                          continuous, restored=restored)  # fmt: skip
            world.commit_rows(5)
            archiving.switch_and_wait()
            world.first_copy = world.copy(backup["recovery_point_arn"])
            yield world
    finally:
        for each in restored:
            each.destroy()
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)


def source_continuous_point(source: Cli) -> str:
    """The source's continuous point of the resource (what a rule with enable_continuous_backup keeps)."""
    from strongroom.services.pitr import ensure_continuous_point

    account = open_account(source.home, lambda: source.env["STRONGROOM_PASSPHRASE"])
    try:
        point = ensure_continuous_point(account, RESOURCE, VAULT, 35)
        assert point is not None
        return point.arn
    finally:
        account.close()


def midpoint(first: datetime, second: datetime) -> datetime:
    return first + (second - first) / 2


def dest_wal(world: World) -> dict[str, bytes]:
    top = world.dest_vault_dir / "wal" / world.system_identifier
    return {path.name: path.read_bytes() for path in sorted(top.glob("*/*"))}


def test_the_base_backups_copy_carries_the_clusters_wal_and_the_continuous_point(world: World) -> None:
    wal = world.first_copy["result"]["wal"]
    assert wal["system_identifier"] == world.system_identifier
    assert wal["files_sent"] >= 2 and wal["files_held"] == 0
    held = dest_wal(world)
    assert len(held) == wal["files_sent"]
    source_names = sorted(p.name for p in (world.base / "vault" / "wal" / world.system_identifier).glob("*/*"))
    assert sorted(held) == source_names
    for name, sealed in held.items():  # re-sealed under the destination's keys: never the source's bytes
        assert sealed != archived_object(world.base / "vault", world.system_identifier, name).read_bytes()
    points = world.destination.json("recovery-points", "list", "--vault", DR_VAULT)["recovery_points"]
    continuous = [p for p in points if (p.get("metadata") or {}).get("continuous")]
    assert [p["recovery_point_arn"] for p in continuous] == [wal["destination_continuous_recovery_point_arn"]]
    assert continuous[0]["metadata"]["window_days"] == 35
    assert continuous[0]["source_recovery_point_arn"] == world.continuous_arn


def test_a_second_copy_sends_only_the_new_wal(world: World) -> None:
    before = dest_wal(world)
    world.commit_rows(5)
    world.archiving.switch_and_wait()
    job = world.copy(world.continuous_arn)  # the continuous point: its WAL only
    wal = job["result"]["wal"]
    assert wal["files_held"] == len(before) and 1 <= wal["files_sent"] <= 2, wal
    assert (
        job["result"]["destination_recovery_point_arn"]
        == world.first_copy["result"]["wal"]["destination_continuous_recovery_point_arn"]
    )
    after = dest_wal(world)
    assert {name: after[name] for name in before} == before  # nothing rewritten
    assert len(after) == len(before) + wal["files_sent"]


def stolen_client(world: World) -> Any:
    account = open_account(world.source.home, lambda: world.source.env["STRONGROOM_PASSPHRASE"])
    return account, client_for(account, "destination")


def test_a_compromised_source_cannot_replace_or_poison_the_destinations_wal(world: World) -> None:
    """The attacker holds the source's home, passphrase and destination credential (all its keys)."""
    account, client = stolen_client(world)
    source_vault = account.catalog.get_vault(VAULT).arn
    held = dest_wal(world)
    segment = next(name for name in held if len(name) == 24)
    mine = world.base / "source-copy" / segment
    mine.parent.mkdir(exist_ok=True)
    world.source.run("wal", "fetch", "--config", str(world.source.home / "wal" / f"{RESOURCE}.json"), segment,
                     str(mine))  # fmt: skip
    genuine = mine.read_bytes()
    forged = bytearray(genuine)
    forged[len(forged) // 2] ^= 0xFF  # the same name, other content
    zstd = zstandard.ZstdCompressor()
    now = datetime.now().astimezone().isoformat()

    def push(name: str, data: bytes, system: str | None = None, **query: Any) -> str:
        fields = {"source_vault_arn": source_vault, "size": len(data), "modified": now, **query}
        return client.put_wal(DR_VAULT, system or world.system_identifier, name, fields, zstd.compress(data))

    try:
        assert push(segment, genuine) == "already archived"  # a retry of the same file is success
        with pytest.raises(WalConflictError, match="already archived with different content"):
            push(segment, bytes(forged))
        with pytest.raises(UsageError, match="holds no base backup of cluster 12345"):
            push(segment, genuine, system="12345")  # a cluster the copied points do not belong to
        with pytest.raises(UsageError, match="holds no base backup"):
            client.wal_names(DR_VAULT, "12345", source_vault)
        future = "FFFFFFFF" + segment[8:]  # names never archived: nothing may stand in for them either
        with pytest.raises(IntegrityError, match="not a WAL segment's size"):
            push(future, os.urandom(1000))
        with pytest.raises(IntegrityError, match="belongs to cluster"):
            push(future, os.urandom(len(genuine)))
        with pytest.raises(IntegrityError, match="timeline"):
            push(future, genuine)  # another timeline's name on this segment's page header
        with pytest.raises(IntegrityError, match="not text"):
            push("0000000F.history", os.urandom(200))
        with pytest.raises(RemoteError, match="size must be"):
            push(future, genuine, size=1 << 30)
        with pytest.raises(RemoteError, match="announced"):
            push(future, genuine, size=len(genuine) - 1)
        with pytest.raises(RemoteError, match="in this account's future"):
            push(future[:8] + "0000000000000099", genuine, modified=(datetime.now().astimezone()
                                                                      + timedelta(days=1)).isoformat())  # fmt: skip
        shrink = {"source_vault_arn": source_vault, "source_recovery_point_arn": world.continuous_arn,
                  "resource_id": RESOURCE, "window_days": 1}  # fmt: skip
        client.put_continuous(DR_VAULT, world.system_identifier, shrink)  # would have lifecycle prune WAL here
        other_account_vault = vault_arn(world.destination, DR_VAULT)  # a vault ARN not the caller's own
        with pytest.raises(UsageError, match="does not belong to the calling account"):
            push(future, genuine, source_vault_arn=other_account_vault)
    finally:
        client.close()
        account.close()
    assert dest_wal(world) == held  # nothing was written or replaced
    points = world.destination.json("recovery-points", "list", "--vault", DR_VAULT)["recovery_points"]
    [continuous] = [p for p in points if (p.get("metadata") or {}).get("continuous")]
    assert continuous["metadata"]["window_days"] == 35  # a source never shortens the window


def test_a_runbook_selecting_in_the_destination_at_or_before_an_incident_restores_to_that_second(
    world: World,
) -> None:
    commits = world.commits
    moment = midpoint(commits[6][1], commits[7][1])  # in the WAL the destination got by the second copy
    incident = (moment + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    steps = [
        {"name": "select", "type": "select_recovery_point", "resource": RESOURCE, "vault": DR_VAULT,
         "account": "destination", "at_or_before": moment.isoformat()},
        {"name": "restore", "type": "restore", "target_identifier": "dr-from-destination",
         "copy_back_vault": BACK_VAULT},
    ]  # fmt: skip
    runbook = world.base / "from-destination.json"
    runbook.write_text(json.dumps({"runbook": "from-destination", "steps": steps}))
    report = world.source.json("dr", "run", str(runbook), "--incident-time", incident)
    assert report["state"] == "COMPLETED", report
    assert 299 <= report["rpo_seconds"] <= 301  # the second asked for, not a base backup's time
    selected = report["recovery_point"]
    assert selected["restore_time"] == moment.isoformat().replace("+00:00", "Z")
    assert selected["recovery_point_arn"].split(":")[4] == account_id(world.destination)
    restored = world.adopt(report["restored"])
    assert ids(restored) == [row_id for row_id, _at in commits[:7]]
    restored.stop()
    back = world.base / "back" / "wal" / world.system_identifier
    assert sorted(path.name for path in back.glob("*/*")) == sorted(dest_wal(world))  # the WAL came back


def test_copied_wal_in_a_locked_s3_vault_is_written_under_the_locks_retention(
    world: World, s3_server: S3Server
) -> None:
    bucket = s3_server.new_bucket(object_lock=True)
    world.destination.run("vaults", "create", "locked", "--store", s3_server.url(bucket, "vault"))
    world.destination.run("vaults", "put-access-policy", "locked", "--file", str(world.base / "policy.json"))
    world.destination.run("vaults", "put-lock", "locked", "--min-retention-days", "2")
    base_point = world.first_copy["result"]["source_recovery_point_arn"]
    copied = world.source.json("copy", "start", "--recovery-point", base_point, "--destination-vault",
                               vault_arn(world.destination, "locked"), "--wait")  # fmt: skip
    assert copied["state"] == "COMPLETED", copied
    assert copied["result"]["wal"]["files_sent"] >= 3
    client = s3_server.client()
    prefix = f"vault/wal/{world.system_identifier}/"
    keys = [item["Key"] for item in client.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
    assert len(keys) == copied["result"]["wal"]["files_sent"]
    horizon = datetime.now().astimezone() + timedelta(days=35 + 2)  # the longest window + the lock's minimum
    for key in keys:
        head = client.head_object(Bucket=bucket, Key=key)
        assert head["ObjectLockMode"] == "GOVERNANCE", key
        assert abs(head["ObjectLockRetainUntilDate"] - horizon) < timedelta(hours=1), key


def test_pitr_from_the_destination_after_the_source_account_is_gone(world: World) -> None:
    commits = world.commits
    target = midpoint(commits[7][1], commits[8][1])  # in the WAL only the second copy sent
    continuous = world.first_copy["result"]["wal"]["destination_continuous_recovery_point_arn"]
    world.cluster.stop()
    shutil.rmtree(world.source.home)  # the source account is gone: keys, catalog, vault config
    shutil.rmtree(world.base / "vault")
    job = world.destination.json(
        "restore", "start", "--recovery-point", continuous, "--target-identifier", "from-destination",
        "--restore-time", target.isoformat(), "--wait",
    )  # fmt: skip
    assert job["state"] == "COMPLETED", job
    restored = world.adopt(job["result"])
    assert ids(restored) == [row_id for row_id, at in commits if at < target]
    assert len(ids(restored)) == 8
    restored.stop()
