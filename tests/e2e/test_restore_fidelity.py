"""`restore start` and a runbook's `restore` step give the same faithful copy of a logical point on a fresh server.

The source is :func:`tests.support.pgfidelity.fidelity_database` on the session cluster; the target is a
new server without its roles. The refusal's hint is followed as written (``--create-roles``), and the
runbook step gets the same field (``create_roles: true``): both copies equal each other and the source
(schema dump with owners and ACLs, rows, large objects, the database's own properties).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support.cli import Cli, assert_one_line_error
from tests.support.pgcluster import PgCluster, traversable_tempdir
from tests.support.pgfidelity import FidelityRoles, fidelity_database, snapshot

pytestmark = pytest.mark.postgres

RUNBOOK = """
runbook: fidelity
variables:
  SERVER: {type: string}
steps:
  - name: select
    type: select_recovery_point
    resource: fid
  - name: restore
    type: restore
    target_identifier: fid_dr_copy
    target: ${var.SERVER}
    create_roles: true
"""


@pytest.fixture
def source(pg_cluster: PgCluster) -> Iterator[tuple[str, FidelityRoles]]:
    roles = FidelityRoles.new()
    name = f"fid e2e {secrets.token_hex(3)}"
    fidelity_database(pg_cluster, name, roles)
    try:
        yield name, roles
    finally:
        pg_cluster.drop_database(name)
        for role in reversed(roles.all()):
            pg_cluster.drop_role(role)


@pytest.fixture
def fresh() -> Iterator[PgCluster]:
    cluster = PgCluster.create(traversable_tempdir("strongroom-pg-fresh-"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


def dsn(cluster: PgCluster, dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(host="127.0.0.1", port=cluster.port, user="postgres", dbname=dbname)


def test_restore_start_and_the_runbook_step_give_the_same_faithful_copy_elsewhere(
    tmp_path: Path, pg_cluster: PgCluster, source: tuple[str, FidelityRoles], fresh: PgCluster
) -> None:
    name, roles = source
    cli = Cli(tmp_path / "home")
    cli.run("init")
    cli.run("resources", "add", "fid", "--type", "postgres", "--dsn", dsn(pg_cluster, name))
    job = cli.backup("fid")
    assert job["state"] == "COMPLETED", job
    arn = str(job["recovery_point_arn"])
    restore = ("restore", "start", "--recovery-point", arn, "--target", dsn(fresh, "fid cli copy"), "--wait")

    refused = cli.run(*restore, ok=False)
    assert_one_line_error(refused, 5, "lacks the roles the dump names", "--create-roles", "--role-map")
    assert roles.password not in refused.stderr

    restored = cli.json(*restore, "--create-roles")
    assert restored["state"] == "COMPLETED", restored
    assert restored["parameters"]["options"] == {"create_roles": True}
    (tmp_path / "fidelity.yaml").write_text(RUNBOOK)
    report = cli.json("dr", "run", str(tmp_path / "fidelity.yaml"), "--var", f"SERVER={dsn(fresh, 'postgres')}")
    assert report["state"] == "COMPLETED", report

    original = snapshot(pg_cluster, name)
    assert snapshot(fresh, "fid cli copy") == original
    assert snapshot(fresh, "fid_dr_copy") == original
    outsider = f"outsider_{secrets.token_hex(3)}"  # a role of the new server, granted nothing by the source
    fresh.execute(f"CREATE ROLE {outsider} LOGIN")
    for copy in ("fid cli copy", "fid_dr_copy"):
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            fresh.connect(copy, user=outsider).close()
        fresh.connect(copy, user=roles.app).close()


def test_a_role_map_without_new_name_is_one_line(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    cli.run("init")
    result = cli.run(
        "restore", "start", "--recovery-point", "arn:x", "--target", "postgresql://h/db", "--role-map", "app", ok=False
    )
    assert_one_line_error(result, 2, "--role-map takes OLD=NEW, not 'app'")
