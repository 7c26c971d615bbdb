"""Point-in-time recovery of a postgres-cluster through the real CLI (docs/pitr.md).

One cluster per module archives its WAL into a vault with ``archive_command = strongroom wal push``, run by
PostgreSQL's own archiver as the server's OS user. Rows are committed one transaction at a time with
``track_commit_timestamp`` on, so each restore is compared with exactly the rows committed before its target.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from strongroom.adapters.postgres.tools import find_tool, server_user
from tests.support.cli import Cli
from tests.support.pgcluster import PgCluster, traversable_tempdir
from tests.support.walarchive import ArchivingCluster, archived_object, commit_events, ids, launcher, vault_directory

pytestmark = [pytest.mark.postgres, pytest.mark.xdist_group("pitr")]

RESOURCE = "db"
VAULT = "pitr"


@dataclass
class World:
    base: Path
    archiving: ArchivingCluster
    vault_dir: Path
    system_identifier: str
    backup_arn: str
    first_backup_arn: str = ""
    commits: list[tuple[int, datetime]] = field(default_factory=list)  # (id, commit time), in commit order
    marks: dict[str, Any] = field(default_factory=dict)
    restored: list[PgCluster] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)  # the point-in-time restores made

    @property
    def cli(self) -> Cli:
        return self.archiving.cli

    @property
    def cluster(self) -> PgCluster:
        return self.archiving.cluster

    def commit_rows(self, count: int) -> None:
        self.commits = commit_events(self.cluster, count)

    def restore(self, name: str, *target: str, ok: bool = True) -> Any:
        result = self.cli.run(
            "restore", "start", "--recovery-point", self.backup_arn, "--target-identifier", name, *target,
            "--wait", "--json", ok=ok,
        )  # fmt: skip
        if not ok:
            return result
        job = result.json()
        self.jobs.append(job)
        restored = PgCluster.adopt(Path(job["result"]["data_directory"]), job["result"]["port"])
        self.restored.append(restored)
        return job, restored


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    base = traversable_tempdir("sr-pitr-")
    cluster = PgCluster.create(
        base / "pg", settings={"archive_mode": "on", "archive_command": "", "track_commit_timestamp": "on"}
    )
    cluster.start()
    cli = Cli(base / "home")
    cli.env["STRONGROOM_WAL_COMMAND"] = str(launcher(base))
    restored: list[PgCluster] = []
    try:
        cli.run("init")
        vault_dir = vault_directory(base / "vault")
        cli.run("vaults", "create", VAULT, "--store", vault_dir.as_uri())
        cli.run("resources", "add", RESOURCE, "--type", "postgres-cluster", "--dsn", cluster.dsn())
        setup = cli.json("wal", "setup", "--resource", RESOURCE, "--vault", VAULT)
        archiving = ArchivingCluster(cluster, cli, RESOURCE, VAULT, setup["settings"]["archive_command"])
        archiving.set_archive_command(archiving.archive_command)
        # What a forged backup could carry to move where recovery stops: restores must not take it (xid test).
        cluster.execute("ALTER SYSTEM SET recovery_target_inclusive = off")
        cluster.execute("CREATE TABLE events (id serial PRIMARY KEY, note text NOT NULL)")
        backup = cli.json("backup", "start", "--resource", RESOURCE, "--vault", VAULT, "--wait")
        assert backup["state"] == "COMPLETED", backup
        world = World(base, archiving, vault_dir, setup["system_identifier"], backup["recovery_point_arn"])
        world.restored = restored
        world.first_backup_arn = world.backup_arn
        world.commit_rows(5)
        archiving.switch_and_wait()
        world.commit_rows(5)
        with cluster.connect() as conn, conn.transaction():
            conn.execute("INSERT INTO events (note) VALUES ('xid mark')")
            world.marks["xid"] = conn.execute("SELECT txid_current()").fetchone()[0]  # type: ignore[index]
        world.commit_rows(3)
        cluster.execute("SELECT pg_create_restore_point('before-last-batch')")
        world.marks["name_rows"] = len(world.commits)
        world.commit_rows(4)
        world.marks["lsn"] = cluster.query("SELECT pg_current_wal_insert_lsn()::text")[0][0]
        world.marks["lsn_rows"] = len(world.commits)
        world.commit_rows(4)
        archiving.switch_and_wait()
        yield world
    finally:
        for each in restored:
            each.destroy()
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)


def midpoint(first: datetime, second: datetime) -> str:
    return (first + (second - first) / 2).isoformat()


def test_restore_to_times_between_commits_holds_exactly_the_rows_committed_before(world: World) -> None:
    commits = world.commits
    for number, index in enumerate((2, 7, len(commits) - 3)):
        target = midpoint(commits[index][1], commits[index + 1][1])
        job, restored = world.restore(f"at-time-{number}", "--restore-time", target)
        assert ids(restored) == [row_id for row_id, at in commits if at < datetime.fromisoformat(target)]
        assert len(ids(restored)) == index + 1
        recovery = job["result"]["recovery"]
        assert recovery["target"] == "time" and int(recovery["timeline"]) >= 2
        restored.stop()


def test_restore_to_an_lsn_a_transaction_id_and_a_named_restore_point(world: World) -> None:
    _job, at_lsn = world.restore("at-lsn", "--lsn", world.marks["lsn"])
    assert ids(at_lsn) == [row_id for row_id, _at in world.commits[: world.marks["lsn_rows"]]]
    at_lsn.stop()
    _job, at_name = world.restore("at-name", "--name", "before-last-batch")
    assert ids(at_name) == [row_id for row_id, _at in world.commits[: world.marks["name_rows"]]]
    at_name.stop()
    _job, at_xid = world.restore("at-xid", "--xid", str(world.marks["xid"]))
    notes = [row[0] for row in at_xid.query("SELECT note FROM events ORDER BY id")]
    # 10 rows before, then the xid's own: inclusive, though the backup's postgresql.auto.conf says otherwise
    assert notes[-1] == "xid mark" and len(notes) == 11
    at_xid.stop()


def test_a_target_outside_the_window_is_refused_up_front_with_the_window(world: World) -> None:
    before = (world.commits[0][1] - timedelta(days=1)).isoformat()
    after = (world.commits[-1][1] + timedelta(days=1)).isoformat()
    for target, why in ((before, "before the earliest base backup"), (after, "after the newest archived WAL")):
        result = world.restore("outside", "--restore-time", target, ok=False)
        assert result.returncode == 2, result.stderr
        assert why in result.stderr and "restorable window is" in result.stderr and " .. " in result.stderr
    if server_user() is not None:  # the restored server runs as postgres: a vault it cannot reach is refused
        default = world.cli.json("backup", "start", "--resource", RESOURCE, "--wait")  # into HOME/vaults (0700)
        result = world.cli.run("restore", "start", "--recovery-point", default["recovery_point_arn"],
                               "--target-identifier", "outside", "--latest", "--wait", ok=False)  # fmt: skip
        assert result.returncode == 5 and "cannot reach the vault's WAL" in result.stderr, result.stderr
    jobs = world.cli.json("jobs", "list")["jobs"]
    assert not [job for job in jobs if job.get("job_type") == "RESTORE" and job.get("state") == "FAILED"]
    assert not (world.cli.home / "clusters" / "outside").exists()


def test_the_same_segment_pushed_again_is_success_and_other_content_is_refused(world: World) -> None:
    name = world.archiving.switch_and_wait()
    credential = world.cli.home / "wal" / f"{RESOURCE}.json"
    copy = world.base / "copy" / name
    copy.parent.mkdir()
    world.cli.run("wal", "fetch", "--config", str(credential), name, str(copy))
    stored = archived_object(world.vault_dir, world.system_identifier, name)
    before = stored.read_bytes()
    world.cli.run("wal", "push", "--config", str(credential), str(copy))
    data = bytearray(copy.read_bytes())
    data[-100] ^= 0xFF
    copy.write_bytes(bytes(data))
    refused = world.cli.run("wal", "push", "--config", str(credential), str(copy), ok=False)
    assert refused.returncode == 7 and "already archived with different content" in refused.stderr
    assert stored.read_bytes() == before


def test_fetch_of_a_missing_file_exits_1_quietly_and_of_a_damaged_one_exits_126(world: World) -> None:
    credential = world.cli.home / "wal" / f"{RESOURCE}.json"
    missing = world.cli.run("wal", "fetch", "--config", str(credential), "00000009.history", "/tmp/x", ok=False)
    assert (missing.returncode, missing.stderr) == (1, "")
    name = world.archiving.switch_and_wait()
    stored = archived_object(world.vault_dir, world.system_identifier, name)
    original = stored.read_bytes()
    try:
        damaged = bytearray(original)
        damaged[len(damaged) // 2] ^= 0x01
        stored.write_bytes(bytes(damaged))
        broken = world.cli.run("wal", "fetch", "--config", str(credential), name, str(world.base / "x"), ok=False)
        assert broken.returncode == 126 and "failed authentication" in broken.stderr
    finally:
        stored.write_bytes(original)


@pytest.mark.parametrize("point", ["wal.push.before_put", "wal.push.after_put"])
def test_a_push_killed_at_any_point_leaves_no_gap_and_postgresql_retries(world: World, point: str) -> None:
    archiving = world.archiving
    offset = archiving.log_size()
    archiving.set_archive_command(f"STRONGROOM_FAULT_KILL_AT={point} {archiving.archive_command}")
    world.commit_rows(2)
    with world.cluster.connect() as conn:
        name = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]  # type: ignore[index]
    archiving.wait_logged(offset, "terminated by signal 9", "failed with exit code 137")  # SIGKILL, via sh or not
    stored = archived_object(world.vault_dir, world.system_identifier, name)
    assert stored.exists() == (point == "wal.push.after_put")  # whole or absent, never half
    archiving.set_archive_command(archiving.archive_command)
    archiving.wait_archived(name)
    status = world.cli.json("wal", "status", "--resource", RESOURCE)[0]
    assert all(not timeline["gaps"] for timeline in status["timelines"]), status
    assert status["last_archived"] >= name
    _job, latest = world.restore(f"latest-{point.rsplit('.', 1)[1].replace('_', '-')}", "--latest")
    assert ids(latest) == [row_id for row_id, _at in world.commits]
    latest.stop()


def test_a_restored_cluster_archives_on_its_own_timeline_and_a_second_pitr_follows_it(world: World) -> None:
    """Every promoted restore took a timeline of its own (its history file archived at once); a restored
    cluster adopted as a resource archives on it beside the original, and a restore follows it there."""
    timelines = [job["result"]["recovery"]["timeline"] for job in world.jobs]
    assert len(set(timelines)) == len(timelines) and all(timeline >= 2 for timeline in timelines)
    history_before = {name: path.read_bytes() for name, path in histories(world).items()}
    assert {f"{timeline:08X}.history" for timeline in timelines} <= set(history_before)
    fork = midpoint(world.commits[-2][1], world.commits[-1][1])
    job, adopted = world.restore("adopted", "--restore-time", fork)
    timeline = job["result"]["recovery"]["timeline"]
    # The original goes on past the fork on timeline 1: its later segments are not on the new timeline's way.
    commit_and_archive_segments(world, 2)
    world.cli.run("resources", "add", "adopted", "--type", "postgres-cluster", "--dsn", adopted.dsn())
    setup = world.cli.json("wal", "setup", "--resource", "adopted", "--vault", VAULT)
    assert setup["system_identifier"] == world.system_identifier  # one cluster's history, two timelines
    adopted.execute("ALTER SYSTEM SET archive_mode = 'on'")
    restarted = ArchivingCluster(adopted, world.cli, "adopted", VAULT, setup["settings"]["archive_command"])
    restarted.set_archive_command(restarted.archive_command)
    adopted.stop()
    adopted.start()
    rows_before_fork = ids(adopted)
    for _ in range(3):
        adopted.execute("INSERT INTO events (note) VALUES ('on the new timeline')")
    on_new = adopted.query("SELECT id, pg_xact_commit_timestamp(xmin) FROM events ORDER BY id")
    name = restarted.switch_and_wait()
    assert int(name[:8], 16) == timeline
    assert (world.vault_dir / "wal" / world.system_identifier / f"{timeline:08X}" / name).exists()
    history_after = {name: path.read_bytes() for name, path in histories(world).items()}
    assert {name: history_after[name] for name in history_before} == history_before  # nothing clobbered
    target = midpoint(on_new[-2][1], on_new[-1][1])
    _job, second = world.restore("on-new-timeline", "--restore-time", target, "--timeline", str(timeline))
    assert ids(second) == [row_id for row_id, _at in on_new[:-1]] and len(ids(second)) == len(rows_before_fork) + 2
    assert second.query("SELECT count(*) FROM events WHERE note = 'on the new timeline'")[0][0] == 2
    second.stop()
    adopted.stop()


def histories(world: World) -> dict[str, Path]:
    return {path.name: path for path in (world.vault_dir / "wal" / world.system_identifier).glob("*/*.history")}


def commit_and_archive_segments(world: World, count: int) -> list[str]:
    names = []
    for _ in range(count):
        world.commit_rows(1)
        names.append(world.archiving.switch_and_wait())
    return names


def prefetchers(world: World) -> list[str]:
    """Command lines of WAL prefetchers (services/wal_prefetch.py) working for this module's restores."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # it ended meanwhile
            continue
        if "wal_prefetch" in text and str(world.base) in text:
            found.append(text)
    return found


def test_wal_is_prefetched_ahead_and_neither_prefetcher_nor_spool_outlives_the_restore(world: World) -> None:
    commit_and_archive_segments(world, 4)
    commits = world.commits
    target = midpoint(commits[-2][1], commits[-1][1])
    job, restored = world.restore("prefetched", "--restore-time", target)
    assert ids(restored) == [row_id for row_id, _at in commits[:-1]]  # exact, with segments from the spool

    assert job["result"]["recovery"]["wal_prefetched"] >= 1
    assert prefetchers(world) == []
    assert not (Path(job["result"]["data_directory"]).parent / ".prefetched.wal-spool").exists()
    restored.stop()


def test_a_damaged_segment_ahead_is_never_spooled_and_stops_recovery_with_126(world: World) -> None:
    damaged = commit_and_archive_segments(world, 3)[1]
    stored = archived_object(world.vault_dir, world.system_identifier, damaged)
    original = stored.read_bytes()
    try:
        changed = bytearray(original)
        changed[len(changed) // 2] ^= 0x01
        stored.write_bytes(bytes(changed))
        result = world.restore("damaged-ahead", "--latest", ok=False)
    finally:
        stored.write_bytes(original)
    assert result.returncode == 5, result.stderr
    # restore_command exited 126 for it (PostgreSQL: "command not executable") instead of taking it or ending early
    assert f'could not restore file "{damaged}"' in result.stderr and "not executable" in result.stderr, result.stderr
    assert prefetchers(world) == []
    assert not (world.cli.home / "clusters" / ".damaged-ahead.wal-spool").exists()


def test_under_pgbench_each_restore_holds_exactly_the_transactions_committed_before_its_time(world: World) -> None:
    """pgbench writes continuously (two clients) while PostgreSQL archives; each restore to a time between two
    of its transactions' commits holds exactly the pgbench_history rows of the transactions committed before."""
    pgbench = str(find_tool("pgbench"))
    subprocess.run([pgbench, "-i", "-s", "1", "-q", world.cluster.dsn()], check=True, capture_output=True)
    subprocess.run([pgbench, "-c", "2", "-T", "3", "-n", world.cluster.dsn()], check=True, capture_output=True)
    world.archiving.switch_and_wait()
    history = world.cluster.query(
        "SELECT tid, bid, aid, delta, mtime, pg_xact_commit_timestamp(xmin) AS at FROM pgbench_history ORDER BY at"
    )
    assert len(history) > 100, len(history)  # a continuous stream of transactions, not a handful
    for fraction in (0.3, 0.7):
        index = int(len(history) * fraction)
        while history[index][5] == history[index + 1][5]:  # a time strictly between two commits
            index += 1
        target = midpoint(history[index][5], history[index + 1][5])
        _job, restored = world.restore(f"pgbench-{int(fraction * 10)}", "--restore-time", target)
        rows = restored.query("SELECT tid, bid, aid, delta, mtime FROM pgbench_history ORDER BY tid, aid, mtime")
        expected = sorted(row[:5] for row in history if row[5] < datetime.fromisoformat(target))
        assert sorted(rows) == expected and len(expected) == index + 1
        restored.stop()


# Continuous recovery points and lifecycle (these run last: they remove WAL the tests above replay) ------


def segment_of(lsn: str, timeline: int = 1, size: int = 1 << 20) -> str:
    high, low = (int(part, 16) for part in lsn.split("/"))
    number = ((high << 32) | low) // size
    return f"{timeline:08X}{number // (0x100000000 // size):08X}{number % (0x100000000 // size):08X}"


def archived(world: World) -> list[str]:
    return sorted(path.name for path in (world.vault_dir / "wal" / world.system_identifier).glob("*/*"))


def continuous_point(world: World) -> Any:
    """The resource's continuous recovery point in the vault, made the first time (a 60-day rule)."""
    from strongroom.services.account import open_account
    from strongroom.services.pitr import ensure_continuous_point

    account = open_account(world.cli.home, lambda: world.cli.env["STRONGROOM_PASSPHRASE"])
    try:
        return ensure_continuous_point(account, RESOURCE, VAULT, 60)
    finally:
        account.close()


def test_one_continuous_point_per_resource_and_vault_restores_to_a_time(world: World) -> None:
    first, again = continuous_point(world), continuous_point(world)
    assert first is not None and again is not None and first.arn == again.arn
    assert first.metadata["continuous"] and first.metadata["window_days"] == 35  # a longer delete_after: 35
    refused = world.cli.run("restore", "start", "--recovery-point", first.arn, "--target-identifier", "plain",
                            "--wait", ok=False)  # fmt: skip
    assert refused.returncode == 2 and "continuous recovery point" in refused.stderr
    world.backup_arn = first.arn
    commits = world.commits
    target = midpoint(commits[4][1], commits[5][1])
    _job, restored = world.restore("from-continuous", "--restore-time", target)
    assert ids(restored) == [row_id for row_id, _at in commits[:5]]
    restored.stop()


def test_a_runbook_at_or_before_an_incident_restores_to_that_second_from_the_continuous_point(world: World) -> None:
    continuous_point(world)
    commits = world.commits
    moment = commits[6][1] + (commits[7][1] - commits[6][1]) / 2
    incident = (moment + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    steps = [
        {"name": "select", "type": "select_recovery_point", "resource": RESOURCE, "vault": VAULT,
         "at_or_before": moment.isoformat()},
        {"name": "restore", "type": "restore", "target_identifier": "dr-to-the-second"},
    ]  # fmt: skip
    runbook = world.base / "to-the-second.json"
    runbook.write_text(json.dumps({"runbook": "to-the-second", "steps": steps}))
    report = world.cli.json("dr", "run", str(runbook), "--incident-time", incident)
    assert report["state"] == "COMPLETED", report
    assert 299 <= report["rpo_seconds"] <= 301  # the second asked for, not the base backup's time
    assert report["recovery_point"]["restore_time"] == moment.isoformat().replace("+00:00", "Z")
    restored = report["restored"]
    cluster = PgCluster.adopt(Path(restored["data_directory"]), restored["port"])
    world.restored.append(cluster)
    assert ids(cluster) == [row_id for row_id, _at in commits[:7]]
    cluster.stop()


def test_lifecycle_keeps_the_wal_of_the_continuous_window_and_removes_older_wal_at_its_boundary(world: World) -> None:
    world.backup_arn = continuous_point(world).arn
    second = world.cli.json("backup", "start", "--resource", RESOURCE, "--vault", VAULT, "--wait")
    point = world.cli.json("recovery-points", "describe", "--recovery-point", second["recovery_point_arn"])
    start = segment_of(point["metadata"]["backup_label"]["start_wal_location"].split(" ")[0])
    world.commit_rows(3)
    world.archiving.switch_and_wait()
    before = archived(world)
    assert any(name < start for name in before if not name.endswith(".history"))
    first = world.cli.json("recovery-points", "describe", "--recovery-point", world.first_backup_arn)
    first_start = segment_of(first["metadata"]["backup_label"]["start_wal_location"].split(" ")[0])
    world.cli.json("lifecycle", "run")  # the window (35 days) still reaches back to the first backup
    kept = archived(world)
    assert first_start in kept and set(before) - set(kept) == {n for n in before if n[:24] < first_start}
    before = kept
    later = (datetime.fromisoformat(point["completion_date"]) + timedelta(days=35, hours=1)).isoformat()
    pruned = world.cli.json("lifecycle", "run", "--now", later)
    report = pruned["wal"][VAULT][0]
    assert report["kept_from"] == start and report["deleted"] > 0
    after = archived(world)

    def needed(name: str) -> bool:  # every timeline's segments from the kept backup's start segment on
        return name.endswith(".history") or name[8:24] >= start[8:24]

    assert start in after and [name for name in after if not needed(name)] == []
    assert [name for name in before if needed(name)] == after  # history files stay; nothing needed went
    commits = world.commits
    target = midpoint(commits[-2][1], commits[-1][1])
    _job, restored = world.restore("after-pruning", "--restore-time", target)
    assert ids(restored) == [row_id for row_id, _at in commits[:-1]]
    restored.stop()
