"""PostgreSQL through the real command line: round trips, and every error a user meets, as one line."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.cli import Cli, assert_one_line_error
from tests.support.pgcluster import Janitor, PgCluster, sample_database, schema_fingerprint, table_checksums

pytestmark = pytest.mark.postgres


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    cli = Cli(tmp_path / "home")
    cli.run("init")
    return cli


def test_logical_round_trip_through_the_cli(cli: Cli, pg_cluster: PgCluster, pg_databases: Callable[..., str]) -> None:
    source = sample_database(pg_cluster, pg_databases("src", create=False), create=True)
    cli.run("resources", "add", "shop", "--type", "postgres", "--dsn", pg_cluster.dsn(source), "--tag", "backup=True")
    job = cli.backup("shop")
    assert job["state"] == "COMPLETED"
    arn = job["recovery_point_arn"]
    point = cli.json("recovery-points", "describe", "--recovery-point", arn)
    assert point["status"] == "COMPLETED"
    assert point["source_bytes"] > 0 and point["stored_bytes"] > 0
    assert cli.json("verify", "--recovery-point", arn, "--read-data")["ok"]

    target = pg_databases("restored", create=False)
    restore = cli.json("restore", "start", "--recovery-point", arn, "--target", pg_cluster.dsn(target), "--wait")
    assert restore["state"] == "COMPLETED"
    assert table_checksums(pg_cluster, target) == table_checksums(pg_cluster, source)
    assert schema_fingerprint(pg_cluster, target) == schema_fingerprint(pg_cluster, source)

    again = cli.run("restore", "start", "--recovery-point", arn, "--target", pg_cluster.dsn(target), "--wait", ok=False)
    assert_one_line_error(again, 5, "not empty", "--allow-non-empty")


def test_physical_round_trip_through_the_cli(
    pg_workdir: Path, pg_cluster: PgCluster, pg_databases: Callable[..., str], pg_janitor: Janitor
) -> None:
    cli = Cli(pg_workdir / "home")  # the postgres OS user must reach home/clusters/
    cli.run("init")
    source = sample_database(pg_cluster, pg_databases("phys", create=False), create=True)
    cli.run("resources", "add", "cluster", "--type", "postgres-cluster", "--dsn", pg_cluster.dsn("postgres"))
    arn = cli.backup("cluster")["recovery_point_arn"]
    job = cli.json("restore", "start", "--recovery-point", arn, "--target-identifier", "shop-restored", "--wait")
    assert job["state"] == "COMPLETED", job
    details = job["result"]
    restored = pg_janitor.adopt(details["data_directory"], details["port"])
    assert details["port"] != pg_cluster.port
    assert table_checksums(restored, source) == table_checksums(pg_cluster, source)
    again = cli.run(
        "restore", "start", "--recovery-point", arn, "--target-identifier", "shop-restored", "--wait", ok=False
    )
    assert_one_line_error(again, 5, "shop-restored", "already in use")


def test_unreachable_database_is_one_line(cli: Cli) -> None:
    from tests.support.ports import free_port

    cli.run(
        "resources", "add", "gone", "--type", "postgres", "--dsn", f"postgresql://postgres@127.0.0.1:{free_port()}/x"
    )
    result = cli.run("backup", "start", "--resource", "gone", "--wait", ok=False)
    assert_one_line_error(result, 4, "127.0.0.1")
    points = cli.json("recovery-points", "list", "--all")["recovery_points"]
    assert [p["status"] for p in points] == ["PARTIAL"]
    assert [j["state"] for j in cli.json("jobs", "list")["jobs"]] == ["FAILED"]


def test_missing_pg_dump_is_one_line(cli: Cli, pg_cluster: PgCluster, tmp_path: Path) -> None:
    cli.run("resources", "add", "db", "--type", "postgres", "--dsn", pg_cluster.dsn("postgres"))
    empty = tmp_path / "no-tools"
    empty.mkdir()
    env = {"PATH": str(Path(os.__file__).parent), "STRONGROOM_PG_BINDIR": str(empty)}
    result = cli.run("backup", "start", "--resource", "db", "--wait", ok=False, env=env)
    assert_one_line_error(result, 4, "pg_dump", "apt-get install")


def test_password_in_dsn_is_refused(cli: Cli) -> None:
    result = cli.run(
        "resources", "add", "db", "--type", "postgres", "--dsn", "postgresql://app:s3cret@127.0.0.1:5432/app", ok=False
    )
    assert_one_line_error(result, 2, "PGPASSWORD")
    assert "s3cret" not in result.stderr
    assert cli.json("resources", "list")["resources"] == []
