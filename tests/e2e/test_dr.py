"""Disaster recovery end to end, with examples/mavis/dr-runbook.yaml (the seed's seven steps): the sample
app serving from a real PostgreSQL cluster, backups copied to a destination account, a disaster, and
``strongroom dr run`` bringing up ``mavis-<env>-restored`` from the destination vault, repointing or
rotating the app's credentials, adopting the cluster, restarting the app; the app then serves the data
as of the recovery point."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.e2e.dr_world import (
    APP_PASSWORD,
    RUNBOOK,
    App,
    add_rows,
    app_cluster,
    apply_destination,
    apply_source,
    checksum,
    environ_of,
    postmaster_pid,
    put_app_secret,
    runbook_vars,
    scheduled_runs,
    secret,
    stop_restored,
)
from tests.support.accounts import Server, account_id, issue_credential, register, serving
from tests.support.cli import PASSPHRASE, Cli
from tests.support.pgcluster import PgCluster, traversable_tempdir

pytestmark = pytest.mark.postgres

SECRET = "mavis/production/db"


@dataclass
class World:
    base: Path
    cluster: PgCluster
    source: Cli
    destination: Cli
    server: Server
    app: App
    destination_vault: str


@pytest.fixture
def world(pg_bindir: Path) -> Iterator[World]:
    base = traversable_tempdir("strongroom-dr-")
    cluster = app_cluster(base)
    source, destination = Cli(base / "source"), Cli(base / "destination")
    source.run("init")
    destination.run("init")
    destination_vault = apply_destination(destination, account_id(source))
    app = App.at(base)
    reports: list[dict] = []
    try:
        with serving(destination) as server:
            register(
                source,
                "destination",
                server,
                issue_credential(destination, "source-copier", "--account-id", account_id(source)),
            )
            apply_source(source, base, cluster, destination_vault)
            put_app_secret(source, SECRET, cluster.port)
            app.start(source, SECRET)
            world = World(base, cluster, source, destination, server, app, destination_vault)
            world.reports = reports  # type: ignore[attr-defined]
            yield world
    finally:
        app.stop()
        for report in reports:
            stop_restored(report)
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)


def back_up_and_copy(world: World) -> tuple[str, str]:
    backup = world.source.json(
        "backup", "start", "--resource", "mavis-db", "--vault", "mavis-production", "--delete-after", "60", "--wait"
    )
    assert backup["state"] == "COMPLETED", backup
    copy = world.source.json("copy", "start", "--recovery-point", backup["recovery_point_arn"], "--wait")
    assert copy["state"] == "COMPLETED", copy
    return backup["recovery_point_arn"], copy["result"]["destination_recovery_point_arn"]


def destroy_cluster(cluster: PgCluster) -> None:
    """The disaster: the server stops and its data directory is gone."""
    cluster.stop(mode="immediate")
    shutil.rmtree(cluster.data_dir)


def test_dr_run_from_the_destination_vault_after_the_cluster_is_destroyed(world: World) -> None:
    served_at_backup = world.app.checksum()
    assert served_at_backup == checksum(world.cluster.port)
    _, copied = back_up_and_copy(world)
    add_rows(world.cluster.port, 25)  # written after the recovery point: lost in the disaster
    assert world.app.checksum() != served_at_backup

    destroy_cluster(world.cluster)
    assert not world.app.healthy()

    report = world.source.json(
        "dr",
        "run",
        str(RUNBOOK),
        *runbook_vars(
            FROM_ACCOUNT="destination",
            VAULT="mavis-destination",
            DEPLOY_COMMAND=world.app.restart_command(),
            HEALTH_URL=world.app.health_url,
        ),
    )
    world.reports.append(report)  # type: ignore[attr-defined]
    assert report["state"] == "COMPLETED", report
    assert report["recovery_point"]["recovery_point_arn"] == copied
    assert report["recovery_point"]["account"] == "destination"
    assert report["recovery_point"]["copied_back_as"].split(":")[4] == account_id(world.source)
    restored = report["restored"]
    assert restored["identifier"] == "mavis-production-restored"
    assert report["rpo_seconds"] >= 0 and report["rto_seconds"] > 0
    assert [s["state"] for s in report["steps"]].count("SKIPPED") == 1  # managed-credentials

    # The app, restarted by the runbook, serves the data as of the recovery point from the new cluster.
    assert world.app.checksum() == served_at_backup
    assert checksum(restored["port"]) == served_at_backup
    assert secret(world.source, SECRET) | {"port": 0} == {
        "engine": "postgres",
        "host": "127.0.0.1",
        "port": 0,
        "username": "mavis",
        "password": APP_PASSWORD,
        "dbname": "mavis",
    }
    assert secret(world.source, SECRET)["port"] == restored["port"] != world.cluster.port

    # Adopted: the original plan selects the restored cluster (not the dead one) and backed it up.
    plan = world.source.json("plans", "describe", "mavis-postgres")
    assert plan["selected_resources"] == ["mavis-production-restored"]
    points = world.source.json("recovery-points", "list", "--resource", "mavis-production-restored")
    assert [p["status"] for p in points["recovery_points"]] == ["COMPLETED"]
    adopted = world.source.json("resources", "describe", "mavis-production-restored")
    assert adopted["tags"] == {"BackupSource": "True", "environment": "production"}
    assert world.source.json("resources", "describe", "mavis-db")["tags"] == {
        "strongroom:replaced-by": "mavis-production-restored"
    }
    # ...and at the plan's next fire time its scheduler backs up the restored cluster (not the dead one) and
    # copies that backup to the destination: backups continue.
    runs = scheduled_runs(world.source)
    assert [(run.resource_id, run.state.value) for run in runs] == [("mavis-production-restored", "COMPLETED")]
    assert runs[0].as_dict()["copy_jobs"][0]["state"] == "COMPLETED", runs[0].details
    assert APP_PASSWORD not in (world.source.home / "logs" / "dr" / f"{report['run_id']}.log").read_text()
    # Neither the app the runbook restarted nor the restored server was handed the passphrase.
    for pid in (world.app.pid(), postmaster_pid(restored["data_directory"])):
        environment = environ_of(pid)
        assert "STRONGROOM_PASSPHRASE" not in environment and PASSPHRASE not in environment.values(), pid


def test_dr_run_with_managed_credentials_after_the_source_account_is_lost(world: World) -> None:
    served_at_backup = world.app.checksum()
    back_up_and_copy(world)
    world.app.stop()
    destroy_cluster(world.cluster)
    shutil.rmtree(world.source.home)  # the source account is gone too: catalog, keys, secrets, vaults

    # A new source account from the same configuration; the destination's admin lets it copy back.
    fresh = Cli(world.base / "new-source")
    fresh.run("init")
    apply_destination(world.destination, account_id(fresh))
    register(
        fresh,
        "destination",
        world.server,
        issue_credential(world.destination, "restorer", "--account-id", account_id(fresh)),
    )
    apply_source(fresh, world.base, world.cluster, world.destination_vault)
    deploy = " ".join(world.app.start_command(SECRET))

    report = fresh.json(
        "dr",
        "run",
        str(RUNBOOK),
        *runbook_vars(
            FROM_ACCOUNT="destination",
            VAULT="mavis-destination",
            CREDENTIALS="managed",
            DEPLOY_COMMAND=deploy,
            HEALTH_URL=world.app.health_url,
        ),
    )
    world.reports.append(report)  # type: ignore[attr-defined]
    assert report["state"] == "COMPLETED", report
    states = {s["name"]: s["state"] for s in report["steps"]}
    assert states["credentials"] == "SKIPPED" and states["managed-credentials"] == "COMPLETED"

    rotated = secret(fresh, SECRET)
    port = report["restored"]["port"]
    assert rotated["password"] != APP_PASSWORD and len(rotated["password"]) == 32
    assert (rotated["host"], rotated["port"], rotated["username"]) == ("127.0.0.1", port, "mavis")
    assert world.app.checksum() == served_at_backup
    assert checksum(port, rotated["password"]) == served_at_backup
    with pytest.raises(psycopg.OperationalError):
        checksum(port, APP_PASSWORD)  # the old credentials no longer open the restored cluster
    assert fresh.json("plans", "describe", "mavis-postgres")["selected_resources"] == ["mavis-production-restored"]
    text = "\n".join(p.read_text(errors="replace") for p in fresh.home.rglob("*.log"))
    assert rotated["password"] not in text


def test_dr_run_inside_the_destination_account_with_its_credentials(world: World) -> None:
    """The other path when the source account is unusable: restore directly from the destination vault,
    in the destination account (no copy back); it has no plan for the database, so none is required."""
    served_at_backup = world.app.checksum()
    _, copied = back_up_and_copy(world)
    world.app.stop()
    destroy_cluster(world.cluster)
    shutil.rmtree(world.source.home)
    deploy = " ".join(world.app.start_command(SECRET))

    report = world.destination.json(
        "dr",
        "run",
        str(RUNBOOK),
        *runbook_vars(
            VAULT="mavis-destination",
            CREDENTIALS="managed",
            REQUIRE_PLAN="false",
            BACKUP_NOW="false",
            DEPLOY_COMMAND=deploy,
            HEALTH_URL=world.app.health_url,
        ),
    )
    world.reports.append(report)  # type: ignore[attr-defined]
    assert report["state"] == "COMPLETED", report
    assert report["recovery_point"]["recovery_point_arn"] == copied
    assert "copied_back_as" not in report["recovery_point"]
    assert report["restored"]["data_directory"].startswith(str(world.destination.home))
    assert world.app.checksum() == served_at_backup
    assert checksum(report["restored"]["port"], secret(world.destination, SECRET)["password"]) == served_at_backup


@pytest.mark.parametrize("point", ["dr.copy_back:middle", "dr.copy_back:done"])
def test_run_killed_during_or_after_the_copy_back_resumes_without_a_second_copy(world: World, point: str) -> None:
    served_at_backup = world.app.checksum()
    _, copied = back_up_and_copy(world)
    destroy_cluster(world.cluster)
    variables = runbook_vars(
        FROM_ACCOUNT="destination",
        VAULT="mavis-destination",
        DEPLOY_COMMAND=world.app.restart_command(),
        HEALTH_URL=world.app.health_url,
    )
    killed = world.source.run("dr", "run", str(RUNBOOK), *variables, env={"STRONGROOM_FAULT_KILL_AT": point}, ok=False)
    assert killed.returncode == -9, killed.stderr
    run_id = world.source.json("dr", "list")["runs"][-1]["run_id"]

    report = world.source.json("dr", "resume", run_id)
    world.reports.append(report)  # type: ignore[attr-defined]
    assert report["state"] == "COMPLETED", report
    assert world.app.checksum() == served_at_backup
    copies = [
        p
        for p in world.source.json("recovery-points", "list", "--all", "--resource", "mavis-db")["recovery_points"]
        if p.get("source_recovery_point_arn") == copied
    ]
    expected = ["PARTIAL", "COMPLETED"] if point.endswith("middle") else ["COMPLETED"]
    assert [p["status"] for p in copies] == expected  # a finished copy is never made twice
    assert report["recovery_point"]["copied_back_as"] == next(
        p["recovery_point_arn"] for p in copies if p["status"] == "COMPLETED"
    )
    assert any(change.startswith(f"copied {copied} back") for change in report["changes"])
