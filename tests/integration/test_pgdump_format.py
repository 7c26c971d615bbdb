"""Data offsets written into a piped pg_dump archive equal the ones pg_dump writes to a seekable file."""

from __future__ import annotations

import io
import secrets
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from psycopg import sql

from strongroom.adapters.postgres.dump_format import add_data_offsets, data_offsets, read_toc, rewrite_toc
from strongroom.adapters.postgres.dump_roles import map_statement_roles, role_needs
from strongroom.adapters.postgres.tools import find_tool
from tests.support.pgcluster import PgCluster, sample_database

pytestmark = pytest.mark.postgres


def test_offsets_match_a_seekable_dump(pg_cluster: PgCluster, pg_databases: Callable[..., str], tmp_path: Path) -> None:
    name = sample_database(pg_cluster, pg_databases("fmt", create=False))
    pg_dump = find_tool("pg_dump")
    seekable = tmp_path / "seekable.dump"
    subprocess.run([pg_dump, "-Fc", "-Z0", "-f", seekable, f"--dbname={pg_cluster.dsn(name)}"], check=True)
    piped = tmp_path / "piped.dump"
    with subprocess.Popen([pg_dump, "-Fc", "-Z0", f"--dbname={pg_cluster.dsn(name)}"], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        with piped.open("wb") as out:
            shutil.copyfileobj(proc.stdout, out)
    assert proc.returncode == 0
    with piped.open("rb") as handle:
        before = data_offsets(handle)
    assert before and not any(before.values())  # written through a pipe: no offsets

    with piped.open("r+b") as handle:
        assert add_data_offsets(handle)
    with piped.open("rb") as patched, seekable.open("rb") as expected:
        assert data_offsets(patched) == data_offsets(expected)
    assert piped.stat().st_size == seekable.stat().st_size


def test_anything_else_is_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "not-a-dump"
    path.write_bytes(b"PGDMP\x01\x0e\x00\x04\x08\x01" + b"\x00" * 3)
    before = path.read_bytes()
    with path.open("r+b") as handle:
        assert not add_data_offsets(handle)
    assert path.read_bytes() == before


def test_the_roles_a_restore_needs_are_read_from_the_table_of_contents(
    pg_cluster: PgCluster, pg_databases: Callable[..., str]
) -> None:
    """Names that look like SQL ("to", a comma, quotes) are roles, not syntax; PUBLIC and the database's
    own ACL (not restored without --create) are not needed."""
    tag = secrets.token_hex(3)
    owner, app, grantor, admin = f"owner_{tag}", f'We ird, "TO" {tag}', f"TO_{tag}", f"admin_{tag}"
    policy_role, database_role = f"policy {tag}", f"connect_{tag}"
    roles = [owner, app, grantor, admin, policy_role, database_role]
    for role in roles:
        pg_cluster.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    name = pg_databases("roles")
    ident = {
        key: sql.Identifier(value)
        for key, value in {
            "owner": owner,
            "app": app,
            "grantor": grantor,
            "admin": admin,
            "policy": policy_role,
            "db_role": database_role,
            "db": name,
        }.items()
    }
    try:
        pg_cluster.execute(
            sql.SQL("""
            CREATE SCHEMA s AUTHORIZATION {owner};
            CREATE TABLE s."to" (a int, "from" int); ALTER TABLE s."to" OWNER TO {owner};
            REVOKE ALL ON s."to" FROM PUBLIC; GRANT SELECT ("from") ON s."to" TO {app};
            GRANT USAGE ON SCHEMA s TO {grantor}; GRANT ALL ON s."to" TO {grantor} WITH GRANT OPTION;
            ALTER TABLE s."to" ENABLE ROW LEVEL SECURITY;
            CREATE POLICY p ON s."to" FOR SELECT TO {policy}
              USING (a > 0 AND '1 year'::interval year to month > '0'::interval AND 'TO x' <> 'FROM y');
            ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA s GRANT SELECT ON TABLES TO {admin};
            GRANT CONNECT ON DATABASE {db} TO {db_role};
            GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text) TO {app};
        """).format(**ident),
            dbname=name,
        )
        pg_cluster.execute(
            sql.SQL('SET ROLE {grantor}; GRANT SELECT ON s."to" TO {admin}').format(**ident), dbname=name
        )
        with subprocess.Popen(
            [find_tool("pg_dump"), "-Fc", "-Z0", f"--dbname={pg_cluster.dsn(name)}"], stdout=subprocess.PIPE
        ) as proc:
            assert proc.stdout is not None
            entries = read_toc(proc.stdout)  # forward only, as from a recovery point's stream
            proc.stdout.read()
        assert entries is not None
        needs = role_needs(entries)
        assert needs.owners == {owner}  # not postgres, whose pg_ls_dir's ACL is in the dump: no ALTER OWNER there
        assert any(entry.tag == "FUNCTION pg_ls_dir(text)" and entry.owner == "postgres" for entry in entries)
        assert needs.privileges == {owner, app, grantor, admin}  # FOR ROLE, grantees, SET SESSION AUTHORIZATION
        assert needs.policies == {policy_role}
        assert needs.needed(owners=False, privileges=False) == {policy_role}
    finally:
        pg_cluster.drop_database(name)
        for role in roles:
            pg_cluster.drop_role(role)


def test_a_table_of_contents_that_cannot_be_read_gives_nothing(tmp_path: Path) -> None:
    forged = b"PGDMP\x01\x0e\x00\x04\x08\x01" + b"\x00" * 41 + b"\x00\xff\xff\xff\x7f"  # claims a 4 GiB string
    assert read_toc(io.BytesIO(forged)) is None
    assert read_toc(io.BytesIO(b"not a dump")) is None


def test_rewriting_the_table_of_contents_changes_only_the_roles_mapped(
    pg_cluster: PgCluster, pg_databases: Callable[..., str], tmp_path: Path
) -> None:
    """Identity rewriting gives the archive byte for byte; a mapping changes owners and grantees, nothing else."""
    name = sample_database(pg_cluster, pg_databases("toc", create=False), customers=50, orders=50, blobs=5)
    pg_cluster.execute("GRANT SELECT ON orders TO pg_monitor", dbname=name)
    pg_dump = find_tool("pg_dump")
    archive = subprocess.run(
        [pg_dump, "-Fc", "-Z0", f"--dbname={pg_cluster.dsn(name)}"], check=True, capture_output=True
    ).stdout

    same = rewrite_toc(io.BytesIO(archive), lambda owner: owner, lambda desc, text: text).read()
    assert same == archive

    mapped = rewrite_toc(
        io.BytesIO(archive),
        lambda owner: "New Owner" if owner == "postgres" else owner,
        lambda desc, text: map_statement_roles(text, {"pg_monitor": 'x"y'}) if desc == "ACL" else text,
    ).read()
    entries = read_toc(io.BytesIO(mapped))
    assert entries is not None
    assert {entry.owner for entry in entries if entry.owner} == {"New Owner"}
    grants = [entry.defn for entry in entries if entry.desc == "ACL" and "orders" in entry.tag]
    assert grants == ['GRANT SELECT ON TABLE public.orders TO "x""y";\n']
    assert mapped[-5000:] == archive[-5000:]  # the data that follows the table of contents is untouched
