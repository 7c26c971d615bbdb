"""A logical restore never widens access: owners, grants and REVOKEs come back as they were.

The attacker is an outsider role on the server a `postgres` recovery point is restored onto: it may
connect, and the original database gave it nothing. A restore that dropped owners and privileges
(pg_restore --no-owner --no-privileges) made a restricted SECURITY DEFINER function owned by the
restoring superuser and executable by PUBLIC: the outsider ran code as the superuser.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.support.cli import Cli, assert_one_line_error
from tests.support.pgcluster import PgCluster, table_checksums, traversable_tempdir

pytestmark = pytest.mark.postgres

# Who owns what and who may do what: every user object's owner and ACL, by kind and name.
ACCESS = """
SELECT 'relation', n.nspname || '.' || c.relname, c.relowner::regrole::text, c.relacl::text
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
UNION ALL
SELECT 'column', n.nspname || '.' || c.relname || '.' || a.attname, '', a.attacl::text
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE a.attacl IS NOT NULL AND n.nspname NOT IN ('pg_catalog', 'information_schema')
UNION ALL
SELECT 'function', p.oid::regprocedure::text, p.proowner::regrole::text, p.proacl::text
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
UNION ALL
SELECT 'schema', n.nspname, n.nspowner::regrole::text, n.nspacl::text
  FROM pg_namespace n WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'
UNION ALL
SELECT 'default acl', d.defaclrole::regrole::text || ' ' || d.defaclobjtype::text, '', d.defaclacl::text
  FROM pg_default_acl d
ORDER BY 1, 2
"""


SECURED_SCHEMA = """
CREATE SCHEMA clinic AUTHORIZATION {owner};
GRANT USAGE ON SCHEMA clinic TO {app};
CREATE TABLE clinic.patients (id int PRIMARY KEY, name text, nhs_number text);
INSERT INTO clinic.patients SELECT i, 'patient ' || i, md5(i::text) FROM generate_series(1, 50) i;
ALTER TABLE clinic.patients OWNER TO {owner};
GRANT SELECT (id, name) ON clinic.patients TO {app};
CREATE TABLE public.appointments (id int PRIMARY KEY, at timestamptz);
INSERT INTO public.appointments SELECT i, '2026-01-01'::timestamptz + i * interval '1 day'
  FROM generate_series(1, 20) i;
ALTER TABLE public.appointments OWNER TO {owner};
REVOKE ALL ON public.appointments FROM PUBLIC;
GRANT SELECT, INSERT ON public.appointments TO {app};
CREATE FUNCTION public.purge_patient(victim int) RETURNS text LANGUAGE sql SECURITY DEFINER
  SET search_path = pg_catalog AS $$ SELECT current_user::text $$;
ALTER FUNCTION public.purge_patient(int) OWNER TO {owner};
REVOKE EXECUTE ON FUNCTION public.purge_patient(int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.purge_patient(int) TO {app};
ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA clinic GRANT SELECT ON TABLES TO {app};
"""


@dataclass
class Secured:
    """A database whose access is narrow: who owns it, who may use it, who may not."""

    cluster: PgCluster
    database: str
    owner: str  # NOLOGIN; owns everything
    app: str  # LOGIN; granted what the app needs
    outsider: str  # LOGIN; granted nothing
    databases: list[str] = field(default_factory=list)

    def new_database_name(self, prefix: str) -> str:
        self.databases.append(f"{prefix}_{secrets.token_hex(4)}")
        return self.databases[-1]

    def access(self, database: str, cluster: PgCluster | None = None) -> list[tuple[str, ...]]:
        return [tuple(row) for row in (cluster or self.cluster).query(ACCESS, dbname=database)]

    def as_role(self, role: str, database: str, statement: str) -> list[tuple[object, ...]]:
        with self.cluster.connect(database, user=role) as conn:
            return conn.execute(statement).fetchall()  # type: ignore[arg-type]


@pytest.fixture
def secured(pg_cluster: PgCluster) -> Iterator[Secured]:
    suffix = secrets.token_hex(3)
    world = Secured(pg_cluster, "", f"owner_{suffix}", f"app_{suffix}", f"outsider_{suffix}")
    world.database = pg_cluster.create_database(world.new_database_name("secured"))
    pg_cluster.execute(
        f"CREATE ROLE {world.owner} NOLOGIN; CREATE ROLE {world.app} LOGIN; CREATE ROLE {world.outsider} LOGIN"
    )
    try:
        pg_cluster.execute(SECURED_SCHEMA.format(owner=world.owner, app=world.app), dbname=world.database)
        yield world
    finally:
        for name in world.databases:  # the roles own objects in these: they go first
            pg_cluster.drop_database(name)
        for role in (world.owner, world.app, world.outsider):
            pg_cluster.drop_role(role)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    cli = Cli(tmp_path / "home")
    cli.run("init")
    return cli


@pytest.fixture
def bare_cluster() -> Iterator[PgCluster]:
    """Another server, without any of the source's roles (a restore somewhere else)."""
    cluster = PgCluster.create(traversable_tempdir("strongroom-pg-bare-"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


def backed_up(cli: Cli, secured: Secured) -> str:
    cli.run("resources", "add", "clinic", "--type", "postgres", "--dsn", secured.cluster.dsn(secured.database))
    job = cli.backup("clinic")
    assert job["state"] == "COMPLETED", job
    return str(job["recovery_point_arn"])


def refused(statement: Callable[[], object]) -> bool:
    try:
        statement()
    except psycopg.errors.InsufficientPrivilege:
        return True
    return False


def test_a_default_restore_keeps_owners_grants_and_revokes_so_an_outsider_gains_nothing(
    cli: Cli, secured: Secured
) -> None:
    arn = backed_up(cli, secured)
    target = secured.new_database_name("restored")
    job = cli.json("restore", "start", "--recovery-point", arn, "--target", secured.cluster.dsn(target), "--wait")
    assert job["state"] == "COMPLETED", job

    outsider, app = secured.outsider, secured.app
    assert refused(lambda: secured.as_role(outsider, target, "SELECT public.purge_patient(1)"))
    assert secured.access(target) == secured.access(secured.database)  # owners and ACLs, exactly
    assert table_checksums(secured.cluster, target) == table_checksums(secured.cluster, secured.database)
    assert refused(lambda: secured.as_role(outsider, target, "SELECT * FROM public.appointments"))
    assert refused(lambda: secured.as_role(outsider, target, "SELECT * FROM clinic.patients"))
    assert refused(lambda: secured.as_role(app, target, "SELECT nhs_number FROM clinic.patients"))
    # The app keeps exactly what it had: the function still runs as its owner, not as the restorer.
    assert secured.as_role(app, target, "SELECT public.purge_patient(1)") == [(secured.owner,)]
    assert secured.as_role(app, target, "SELECT count(name) FROM clinic.patients") == [(50,)]
    assert (job["result"]["owners"], job["result"]["privileges"], job["result"]["roles_checked"]) == (
        "kept",
        "kept",
        True,
    )


def test_dropping_owners_and_privileges_is_explicit_and_its_help_says_what_it_opens(cli: Cli, secured: Secured) -> None:
    help_text = " ".join(cli.run("restore", "start", "--help", env={"COLUMNS": "400"}).stdout.split())
    for fragment in (
        "--no-owners",
        "owned by the restoring role",
        "SECURITY DEFINER functions then run with its rights",
        "--no-privileges",
        "every REVOKE from PUBLIC is lost",
        "PostgreSQL's defaults apply",
        "may EXECUTE every function",
    ):
        assert fragment in help_text, fragment

    arn = backed_up(cli, secured)
    target = secured.new_database_name("opened")
    job = cli.json(
        "restore",
        "start",
        "--recovery-point",
        arn,
        "--target",
        secured.cluster.dsn(target),
        "--no-owners",
        "--no-privileges",
        "--wait",
    )
    assert job["state"] == "COMPLETED", job
    assert (job["result"]["owners"], job["result"]["privileges"]) == ("restoring user", "not restored")
    assert job["parameters"]["options"] == {"no_owners": True, "no_privileges": True}
    assert table_checksums(secured.cluster, target) == table_checksums(secured.cluster, secured.database)
    # Exactly what the help warns of: the restorer owns everything, and PUBLIC may run its definer function.
    owners = {row[2] for row in secured.access(target) if row[0] in ("relation", "function")}
    assert owners == {"postgres"}
    assert secured.as_role(secured.outsider, target, "SELECT public.purge_patient(1)") == [("postgres",)]


def test_a_server_without_the_roles_is_refused_before_anything_is_created(
    cli: Cli, secured: Secured, bare_cluster: PgCluster
) -> None:
    arn = backed_up(cli, secured)
    where = f"127.0.0.1:{bare_cluster.port}"

    result = cli.run(
        "restore", "start", "--recovery-point", arn, "--target", bare_cluster.dsn("clinic_copy"), "--wait", ok=False
    )
    assert_one_line_error(
        result,
        5,
        f"{where} lacks the roles the dump names: ",
        f"{secured.app} (grants)",
        f"{secured.owner} (owner, grants)",
        "CREATE ROLE",
        "--no-owners --no-privileges",
    )
    assert secured.outsider not in result.stderr
    assert bare_cluster.query("SELECT count(*) FROM pg_database WHERE datname = 'clinic_copy'") == [(0,)]
    jobs = cli.json("jobs", "list", "--type", "RESTORE")["jobs"]
    assert [job["state"] for job in jobs] == ["FAILED"]

    # Dropping owners alone still leaves the grants' roles missing: only those are named now.
    result = cli.run(
        "restore",
        "start",
        "--recovery-point",
        arn,
        "--target",
        bare_cluster.dsn("clinic_copy"),
        "--no-owners",
        "--wait",
        ok=False,
    )
    assert_one_line_error(result, 5, f"{where} lacks the roles the dump names: ", "restore with --no-privileges")
    assert bare_cluster.query("SELECT count(*) FROM pg_database WHERE datname = 'clinic_copy'") == [(0,)]

    # Creating the roles, as the hint says, is enough.
    for role in (secured.owner, secured.app):
        bare_cluster.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    job = cli.json("restore", "start", "--recovery-point", arn, "--target", bare_cluster.dsn("clinic_copy"), "--wait")
    assert job["state"] == "COMPLETED", job
    assert secured.access("clinic_copy", bare_cluster) == secured.access(secured.database)


RUNBOOK = """
runbook: clinic-recovery
variables:
  SERVER: {{type: string}}
steps:
  - name: select
    type: select_recovery_point
    resource: clinic
  - name: restore
    type: restore
    target_identifier: {identifier}
    target: ${{var.SERVER}}{options}
"""


def runbook(tmp_path: Path, identifier: str, options: str = "") -> str:
    path = tmp_path / f"{identifier}.yaml"
    path.write_text(RUNBOOK.format(identifier=identifier, options=options))
    return str(path)


def test_a_runbook_restore_gives_what_restore_start_gives(
    cli: Cli, secured: Secured, bare_cluster: PgCluster, tmp_path: Path
) -> None:
    """One code path: the same owners and ACLs, the same refusal, the same explicit way out."""
    backed_up(cli, secured)
    identifier = secured.new_database_name("dr")
    report = cli.json("dr", "run", runbook(tmp_path, identifier), "--var", f"SERVER={secured.cluster.dsn()}")
    assert report["state"] == "COMPLETED", report
    assert secured.access(identifier) == secured.access(secured.database)
    assert refused(lambda: secured.as_role(secured.outsider, identifier, "SELECT public.purge_patient(1)"))

    elsewhere = cli.run("dr", "run", runbook(tmp_path, "clinic_dr"), "--var", f"SERVER={bare_cluster.dsn()}", ok=False)
    assert_one_line_error(
        elsewhere,
        5,
        f"127.0.0.1:{bare_cluster.port} lacks the roles the dump names: ",
        f"{secured.owner} (owner, grants)",
        "no_owners: true, no_privileges: true",
    )
    assert bare_cluster.query("SELECT count(*) FROM pg_database WHERE datname = 'clinic_dr'") == [(0,)]

    opened = runbook(tmp_path, "clinic_dr_opened", "\n    no_owners: true\n    no_privileges: true")
    report = cli.json("dr", "run", opened, "--var", f"SERVER={bare_cluster.dsn()}")
    assert report["state"] == "COMPLETED", report
    owners = {row[2] for row in secured.access("clinic_dr_opened", bare_cluster) if row[0] in ("relation", "function")}
    assert owners == {"postgres"}
