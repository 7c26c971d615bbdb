"""A database nobody in the project shaped, and a comparison of two databases that misses nothing a DBA checks.

:func:`fidelity_database` builds, on a cluster, a database whose name needs quoting, with roles (one
with a password and powers beyond the database), schemas, grants and revokes, default privileges,
row-level security, partitions, a materialized view, a domain and an enum, a trigger, large objects,
an extension from the contrib package when it is installed, and database-level settings: ``ALTER
DATABASE … SET timezone``, a role-in-database setting, a comment, ``REVOKE CONNECT … FROM PUBLIC``
and ``GRANT CONNECT`` to one role.

:func:`snapshot` is what two restores of it must agree on: ``pg_dump --schema-only`` (owners and ACLs
included), row checksums of every table, matview and large object, and the database's own properties
(owner, encoding and locale, connection limit, settings, role settings, comment, ACL). Role names can
be translated (``role_map``) to compare a restore made with ``--role-map``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from strongroom.adapters.postgres.tools import child_environment, find_tool, tool_environment
from tests.support.pgcluster import ROW_DIGEST, USER_SCHEMAS, PgCluster


@dataclass(frozen=True)
class FidelityRoles:
    owner: str  # NOLOGIN, CREATEDB and BYPASSRLS: owns the database and everything in it
    app: str  # LOGIN with a password; CONNECT, grants, an RLS policy, a role-in-database setting
    reader: str  # NOLOGIN group the app is a member of; default privileges give it SELECT
    outsider: str  # LOGIN; referenced by nothing: the attacker
    password: str

    @classmethod
    def new(cls) -> FidelityRoles:
        suffix = secrets.token_hex(3)
        return cls(
            f"Fid Owner {suffix}",
            f"fid_app_{suffix}",
            f"fid_reader_{suffix}",
            f"fid_out_{suffix}",
            secrets.token_hex(12),
        )

    def all(self) -> list[str]:
        return [self.owner, self.app, self.reader, self.outsider]


ROLES_SQL = """
CREATE ROLE {owner} NOLOGIN CREATEDB BYPASSRLS;
CREATE ROLE {reader} NOLOGIN;
CREATE ROLE {app} LOGIN CONNECTION LIMIT 20 PASSWORD {password} IN ROLE {reader};
CREATE ROLE {outsider} LOGIN;
"""

DATABASE_SQL = """
ALTER DATABASE {db} OWNER TO {owner};
ALTER DATABASE {db} SET timezone TO 'Pacific/Auckland';
ALTER DATABASE {db} SET search_path TO clinic, public;
ALTER ROLE {app} IN DATABASE {db} SET work_mem TO '7MB';
COMMENT ON DATABASE {db} IS 'fidelity: it''s a test';
REVOKE CONNECT, TEMPORARY ON DATABASE {db} FROM PUBLIC;
GRANT CONNECT ON DATABASE {db} TO {app};
"""

CONTENT_SQL = """
CREATE SCHEMA clinic AUTHORIZATION {owner};
CREATE SCHEMA audit AUTHORIZATION {owner};
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA clinic TO {reader};
SET ROLE {owner};
ALTER DEFAULT PRIVILEGES IN SCHEMA clinic GRANT SELECT ON TABLES TO {reader};
CREATE TYPE clinic.status AS ENUM ('booked', 'seen', 'cancelled');
CREATE DOMAIN clinic.nhs_number AS text CHECK (VALUE ~ '^[0-9]{{10}}$');
CREATE TABLE clinic.patients (id int PRIMARY KEY, name text NOT NULL, nhs clinic.nhs_number, clinic text NOT NULL);
CREATE TABLE clinic.visits (id int, at date NOT NULL, patient int REFERENCES clinic.patients, status clinic.status,
                            PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE clinic.visits_2025 PARTITION OF clinic.visits FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE clinic.visits_2026 PARTITION OF clinic.visits FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE audit.log (at timestamptz DEFAULT now(), what text);
CREATE FUNCTION audit.note() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS
$$ BEGIN INSERT INTO audit.log (at, what) VALUES ('2026-01-01', TG_OP || ' ' || NEW.id); RETURN NEW; END $$;
REVOKE EXECUTE ON FUNCTION audit.note() FROM PUBLIC;
CREATE TRIGGER patients_audit AFTER INSERT ON clinic.patients FOR EACH ROW EXECUTE FUNCTION audit.note();
INSERT INTO clinic.patients SELECT i, 'patient ' || i, lpad(i::text, 10, '0'), CASE WHEN i % 2 = 0 THEN 'north' ELSE
  'south' END FROM generate_series(1, 200) i;
INSERT INTO clinic.visits SELECT i, date '2025-06-01' + i, 1 + i % 200,
  (ARRAY['booked', 'seen', 'cancelled'])[1 + i % 3]::clinic.status FROM generate_series(1, 400) i;
ALTER TABLE clinic.patients ENABLE ROW LEVEL SECURITY;
CREATE POLICY north_only ON clinic.patients FOR SELECT TO {app} USING (clinic = 'north');
GRANT SELECT ON clinic.patients TO {app};
GRANT SELECT, INSERT ON clinic.visits TO {app};
CREATE MATERIALIZED VIEW clinic.visit_counts AS SELECT status, count(*) AS n FROM clinic.visits GROUP BY status;
SELECT lo_from_bytea(424242, convert_to('a large object ' || repeat('x', 5000), 'UTF8'));
GRANT SELECT ON LARGE OBJECT 424242 TO {app};
RESET ROLE;
"""

EXTENSION_SQL = "CREATE EXTENSION IF NOT EXISTS citext; CREATE TABLE clinic.emails (address citext PRIMARY KEY);"
EXTENSION_DATA = "INSERT INTO clinic.emails VALUES ('A@Example.org'), ('b@example.org')"


def fidelity_database(cluster: PgCluster, name: str, roles: FidelityRoles) -> None:
    """Create database ``name`` with ``roles`` (created here) on ``cluster``."""
    names = {
        "owner": sql.Identifier(roles.owner),
        "app": sql.Identifier(roles.app),
        "reader": sql.Identifier(roles.reader),
        "outsider": sql.Identifier(roles.outsider),
        "password": sql.Literal(roles.password),
        "db": sql.Identifier(name),
    }
    cluster.execute(sql.SQL(ROLES_SQL).format(**names))
    cluster.execute(
        sql.SQL("CREATE DATABASE {} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-GB' LOCALE 'C.utf8'").format(
            sql.Identifier(name)
        )
    )
    for statement in DATABASE_SQL.strip().splitlines():
        cluster.execute(sql.SQL(statement).format(**names))
    cluster.execute(sql.SQL(CONTENT_SQL).format(**names), dbname=name)
    if cluster.query("SELECT count(*) FROM pg_available_extensions WHERE name = 'citext'")[0][0]:
        cluster.execute(EXTENSION_SQL, dbname=name)
        cluster.execute(sql.SQL("ALTER TABLE clinic.emails OWNER TO {}").format(names["owner"]), dbname=name)
        cluster.execute(EXTENSION_DATA, dbname=name)
    cluster.execute("ANALYZE", dbname=name)


DATABASE_PROPERTIES = """
SELECT d.datdba::regrole::text, pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, d.datlocprovider::text,
       d.daticulocale, d.datconnlimit, d.datacl::text, shobj_description(d.oid, 'pg_database'),
       (SELECT array_agg(c ORDER BY c) FROM pg_db_role_setting s, unnest(s.setconfig) c
         WHERE s.setdatabase = d.oid AND s.setrole = 0)::text,
       (SELECT array_agg(r.rolname || ': ' || c ORDER BY r.rolname, c) FROM pg_db_role_setting s
         JOIN pg_roles r ON r.oid = s.setrole, unnest(s.setconfig) c WHERE s.setdatabase = d.oid)::text
  FROM pg_database d WHERE d.datname = %s
"""
LARGE_OBJECTS = """
SELECT oid, lomowner::regrole::text, lomacl::text, md5(lo_get(oid)) FROM pg_largeobject_metadata ORDER BY oid
"""


def schema_dump(cluster: PgCluster, dbname: str) -> str:
    """``pg_dump --schema-only`` of ``dbname``, without the lines that differ between any two runs."""
    dsn = psycopg.conninfo.make_conninfo(host="127.0.0.1", port=cluster.port, user="postgres", dbname=dbname)
    done = subprocess.run(
        [str(find_tool("pg_dump")), "--schema-only", f"--dbname={dsn}"],
        capture_output=True,
        text=True,
        env=child_environment(tool_environment()),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    text = done.stdout
    return "\n".join(line for line in text.splitlines() if not re.match(r"\\(un)?restrict ", line))


def row_checksums(cluster: PgCluster, dbname: str) -> dict[str, str]:
    """Order-independent checksums of every user table and materialized view, and each sequence's state
    (``pg_cluster.table_checksums`` without its schema fingerprint, which cannot describe an extension's
    aggregates; the schema is compared by :func:`schema_dump`)."""
    result: dict[str, str] = {}
    with cluster.connect(dbname) as conn:
        conn.execute("SET TIME ZONE 'UTC'; SET extra_float_digits = 3; SET DateStyle = 'ISO'")
        relations = conn.execute(
            "SELECT c.oid::regclass::text, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            f"WHERE c.relkind IN ('r', 'm', 'S') AND {USER_SCHEMAS}"
        ).fetchall()
        for name, kind in relations:
            if kind == "S":
                row = conn.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(sql.SQL(name))).fetchone()
                result[f"sequence {name}"] = str(row)
                continue
            count, rows = conn.execute(sql.SQL(ROW_DIGEST).format(sql.SQL(name))).fetchone() or (0, "")
            result[name] = f"{count} rows {rows}"
    return result


def snapshot(cluster: PgCluster, dbname: str, role_map: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What a faithful copy of ``dbname`` has in common with it (role names translated by ``role_map``)."""
    properties = cluster.query(DATABASE_PROPERTIES, (dbname,))[0]
    with cluster.connect(dbname) as conn:
        large_objects = [tuple(row) for row in conn.execute(LARGE_OBJECTS).fetchall()]
    shot: dict[str, Any] = {
        "schema": schema_dump(cluster, dbname),
        "rows": row_checksums(cluster, dbname),
        "database": tuple(properties),
        "large_objects": large_objects,
    }
    return _translated(shot, role_map or {})


def _translated(value: Any, role_map: Mapping[str, str]) -> Any:
    """Every role name of ``role_map`` in ``value`` replaced by its new name (the test maps names that need
    quoting to names that need quoting, and plain ones to plain ones, so quotes stay right)."""
    if isinstance(value, str):
        for old, new in role_map.items():
            value = re.sub(rf"(?<!\w){re.escape(old)}(?!\w)", new, value)
        return value
    if isinstance(value, dict):
        return {key: _translated(item, role_map) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_translated(item, role_map) for item in value)
    return value


def digest(shot: Mapping[str, Any]) -> str:
    return hashlib.sha256(repr(sorted(shot.items())).encode()).hexdigest()
