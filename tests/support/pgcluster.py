"""Throwaway PostgreSQL clusters for tests: a helper class, fixtures and content checks.

Fixtures (registered as a pytest plugin by ``tests/conftest.py``):

- ``pg_bindir`` (session): the server binaries' directory (skips when PostgreSQL is absent).
- ``pg_cluster`` (session): one running cluster on 127.0.0.1, ``wal_level=replica``, replication
  allowed; trust auth except for roles made by :meth:`PgCluster.create_role` with a password.
- ``pg_database``: a new empty database on ``pg_cluster`` (its name), dropped afterwards.
- ``pg_databases``: a factory ``(prefix, create=True) -> name`` of such databases, all dropped afterwards.
- ``pg_workdir``: a scratch directory the ``postgres`` OS user can reach (for restored clusters).
- ``pg_janitor``: ``adopt(data_dir)`` a cluster a test started some other way; stopped afterwards.

Helpers: :func:`sample_database`, :func:`table_checksums`, :func:`schema_fingerprint`,
:func:`backup_with_environment`.
Everything skips (``pytest.skip``) only when the PostgreSQL server binaries are absent.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from strongroom.adapters import BackupContext, ResourceSpec, get_adapter
from strongroom.adapters.postgres.tools import OsUser, find_tool, run_tool, server_user, tool_environment
from strongroom.errors import ToolMissingError
from strongroom.vault import Vault
from strongroom.vault.manifest import Manifest
from strongroom.vault.writer import RecoveryPointWriter
from tests.support.ports import free_port

SUPERUSER = "postgres"
PASSWORD_GROUP = "strongroom_password_login"  # members must log in over TCP with a password

TEST_SETTINGS = {
    "wal_level": "replica",
    "max_wal_senders": "6",
    "wal_keep_size": "64MB",
    "shared_buffers": "16MB",
    "max_connections": "40",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "timezone": "UTC",
}

HBA = f"""\
local all all trust
local replication all trust
host all +{PASSWORD_GROUP} 127.0.0.1/32 scram-sha-256
host replication +{PASSWORD_GROUP} 127.0.0.1/32 scram-sha-256
host all all 127.0.0.1/32 trust
host replication all 127.0.0.1/32 trust
"""


def postgres_bindir() -> Path:
    """The directory of ``initdb``/``pg_ctl``; skips the test when PostgreSQL is not installed."""
    try:
        return find_tool("initdb").parent
    except ToolMissingError as exc:
        pytest.skip(f"PostgreSQL server binaries are not installed: {exc.one_line()}")


def traversable_tempdir(prefix: str) -> Path:
    """A new temporary directory the postgres OS user can pass through (mode 0711)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o711)
    return path


@dataclass
class PgCluster:
    """One PostgreSQL cluster on 127.0.0.1, run as the ``postgres`` OS user when we are root."""

    data_dir: Path
    port: int
    bindir: Path
    socket_dir: Path
    user: OsUser | None = field(default_factory=server_user)
    owns_files: bool = True  # destroy() removes what create() made

    # Life cycle ---------------------------------------------------------------------------------
    @classmethod
    def create(cls, base_dir: Path, *, settings: dict[str, str] | None = None, hba: str = HBA) -> PgCluster:
        """initdb a new cluster under ``base_dir`` (data/, sockets/, server.log); not started."""
        bindir = postgres_bindir()
        cluster = cls(base_dir / "data", free_port(), bindir, base_dir / "sockets")
        cluster.socket_dir.mkdir(parents=True, exist_ok=True)
        cluster._own(base_dir, cluster.socket_dir)
        cluster._run(
            "initdb",
            "-D",
            cluster.data_dir,
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
            "--wal-segsize=1",
        )
        conf = {**TEST_SETTINGS, **(settings or {})}
        conf.update(
            port=str(cluster.port), listen_addresses="127.0.0.1", unix_socket_directories=str(cluster.socket_dir)
        )
        with (cluster.data_dir / "postgresql.conf").open("a") as handle:
            handle.writelines(f"{key} = '{value}'\n" for key, value in conf.items())
        (cluster.data_dir / "pg_hba.conf").write_text(hba)
        return cluster

    @classmethod
    def adopt(cls, data_dir: Path, port: int) -> PgCluster:
        """A handle on a cluster made elsewhere (e.g. restored by an adapter), to query and stop it."""
        return cls(Path(data_dir), port, postgres_bindir(), Path(data_dir), owns_files=False)

    def _own(self, *paths: Path) -> None:
        if self.user is not None:
            for path in paths:
                os.chown(path, self.user.uid, self.user.gid)

    def _run(self, tool: str, *args: Any) -> str:
        code, stderr = run_tool(
            [self.bindir / tool, *map(str, args)], env=tool_environment(), user=self.user, cwd=Path("/")
        )
        if code != 0:
            raise RuntimeError(f"{tool} failed ({code}): {stderr.strip()}")
        return stderr

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / "server.log"

    def start(self) -> None:
        if not self.log_file.exists():
            self.log_file.touch()
            self._own(self.log_file)
        for attempt in range(3):  # another session may take our free port before the server binds it
            logged = self.log_file.stat().st_size
            try:
                self._run("pg_ctl", "-D", self.data_dir, "-l", self.log_file, "-w", "-t", "60", "start")
                return
            except RuntimeError:
                taken = "Address already in use" in self.log_file.read_text(errors="replace")[logged:]
                if not (taken and self.owns_files and attempt < 2):
                    raise
            self.port = free_port()
            with (self.data_dir / "postgresql.conf").open("a") as conf:
                conf.write(f"port = {self.port}\n")

    def is_running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists()

    def stop(self, mode: str = "fast") -> None:
        if self.is_running():
            self._run("pg_ctl", "-D", self.data_dir, "-m", mode, "-w", "-t", "60", "stop")

    def destroy(self) -> None:
        self.stop("immediate")
        if self.owns_files:
            shutil.rmtree(self.data_dir.parent, ignore_errors=True)
        else:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    # Connections --------------------------------------------------------------------------------
    def dsn(self, dbname: str = "postgres", user: str = SUPERUSER) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres", **params: Any) -> psycopg.Connection[Any]:
        params.setdefault("user", SUPERUSER)
        return psycopg.connect(host="127.0.0.1", port=self.port, dbname=dbname, autocommit=True, **params)

    def execute(self, statement: str | sql.Composable, params: Any = None, *, dbname: str = "postgres") -> None:
        with self.connect(dbname) as conn:
            conn.execute(statement, params)  # type: ignore[arg-type]

    def query(
        self, statement: str | sql.Composable, params: Any = None, *, dbname: str = "postgres"
    ) -> list[tuple[Any, ...]]:
        with self.connect(dbname) as conn:
            return conn.execute(statement, params).fetchall()  # type: ignore[arg-type]

    # Objects ------------------------------------------------------------------------------------
    def create_database(self, name: str, owner: str | None = None) -> str:
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if owner:
            statement = sql.SQL("{} OWNER {}").format(statement, sql.Identifier(owner))
        self.execute(statement)
        return name

    def drop_database(self, name: str) -> None:
        self.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def create_role(self, name: str, password: str, *, replication: bool = False, read_all: bool = False) -> None:
        """A login role that must authenticate with ``password`` over TCP (scram-sha-256)."""
        self.execute(
            f"DO $$ BEGIN CREATE ROLE {PASSWORD_GROUP} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        )
        attributes = sql.SQL("LOGIN REPLICATION" if replication else "LOGIN")
        self.execute(
            sql.SQL("CREATE ROLE {} {} PASSWORD {} IN ROLE {}").format(
                sql.Identifier(name), attributes, sql.Literal(password), sql.Identifier(PASSWORD_GROUP)
            )
        )
        if read_all:
            self.execute(sql.SQL("GRANT pg_read_all_data TO {}").format(sql.Identifier(name)))

    def drop_role(self, name: str) -> None:
        self.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


# Fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_bindir() -> Path:
    """The PostgreSQL server binaries' directory; skips every test that needs them when they are absent."""
    return postgres_bindir()


@pytest.fixture(scope="session")
def pg_cluster(pg_bindir: Path) -> Iterator[PgCluster]:
    cluster = PgCluster.create(traversable_tempdir("strongroom-pg-"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def pg_databases(pg_cluster: PgCluster) -> Iterator[Callable[..., str]]:
    """``make(prefix="db", create=True) -> name``: a unique database name (created unless ``create``
    is False, e.g. for a restore target); every name is dropped when the test ends."""
    names: list[str] = []

    def make(prefix: str = "db", create: bool = True) -> str:
        name = f"{prefix}_{secrets.token_hex(4)}"
        names.append(name)
        return pg_cluster.create_database(name) if create else name

    yield make
    for name in names:
        pg_cluster.drop_database(name)


@pytest.fixture
def pg_database(pg_databases: Callable[..., str]) -> str:
    return pg_databases("test")


@pytest.fixture
def pg_workdir() -> Iterator[Path]:
    path = traversable_tempdir("strongroom-pgwork-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Janitor:
    """Stops (and removes) clusters a test started through other code."""

    def __init__(self) -> None:
        self.clusters: list[PgCluster] = []

    def adopt(self, data_dir: Path | str, port: int) -> PgCluster:
        cluster = PgCluster.adopt(Path(data_dir), port)
        self.clusters.append(cluster)
        return cluster

    def cleanup(self) -> None:
        failures = []
        for cluster in self.clusters:
            try:
                cluster.destroy()
            except RuntimeError as exc:
                failures.append(str(exc))
        if failures:
            raise RuntimeError("; ".join(failures))


@pytest.fixture
def pg_janitor(pg_workdir: Path) -> Iterator[Janitor]:
    """Depends on ``pg_workdir`` so that clusters restored there are stopped before it is removed."""
    janitor = Janitor()
    yield janitor
    janitor.cleanup()


def backup_with_environment(vault: Vault, spec: ResourceSpec, temp_dir: Path, environment: dict[str, str]) -> Manifest:
    """Like ``tests.support.vaults.backup``, with ``BackupContext.environment`` (which that helper does not pass)."""
    temp_dir.mkdir(parents=True, exist_ok=True)
    with RecoveryPointWriter(vault, secrets.token_hex(8)) as writer:
        ctx = BackupContext(writer=writer, temp_dir=temp_dir, environment=environment)
        metadata = get_adapter(spec.type).backup(spec, ctx)
        return writer.commit(spec.id, spec.type, metadata)


# Content ----------------------------------------------------------------------------------------

SAMPLE_SCHEMA = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN positive_int AS integer CHECK (VALUE > 0);
CREATE SEQUENCE invoice_seq START 1000 INCREMENT 7;
CREATE TABLE customers (
    id bigserial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    name text NOT NULL,
    mood mood,
    created_at timestamptz NOT NULL,
    balance numeric(40, 12) NOT NULL DEFAULT 0 CHECK (balance > -1000000),
    huge numeric,
    tags text[],
    profile jsonb,
    CONSTRAINT email_has_at CHECK (position('@' in email) > 1)
);
CREATE INDEX customers_created_idx ON customers (created_at DESC);
CREATE INDEX customers_profile_idx ON customers USING gin (profile);
CREATE TABLE orders (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    invoice bigint NOT NULL DEFAULT nextval('invoice_seq'),
    quantity positive_int NOT NULL,
    amount numeric(12, 2) NOT NULL CHECK (amount >= 0),
    items integer[] NOT NULL,
    placed_at timestamptz NOT NULL,
    note text,
    updated_at timestamptz,
    UNIQUE (customer_id, invoice)
);
CREATE INDEX orders_placed_idx ON orders (placed_at) WHERE note IS NOT NULL;
CREATE TABLE blobs (
    id serial PRIMARY KEY,
    order_id integer REFERENCES orders (id),
    data bytea NOT NULL,
    digest text GENERATED ALWAYS AS (md5(data)) STORED
);
CREATE TABLE "Mixed ""Case"" Table" (
    "Key Column" text PRIMARY KEY,
    "value; DROP" double precision,
    flags boolean[],
    at_time time with time zone,
    span interval
);
COMMENT ON TABLE orders IS 'orders — with a comment, ünïcødé and ''quotes''';
CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN NEW.updated_at := '2001-02-03 04:05:06+00'; RETURN NEW; END $$;
CREATE TRIGGER orders_touch BEFORE UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
CREATE VIEW customer_totals AS
    SELECT c.id, c.email, count(o.id) AS orders, coalesce(sum(o.amount), 0) AS total
    FROM customers c LEFT JOIN orders o ON o.customer_id = c.id GROUP BY c.id, c.email;
"""

SAMPLE_DATA = """
INSERT INTO customers (email, name, mood, created_at, balance, huge, tags, profile)
SELECT
    'user' || i || '@example.org',
    CASE i % 4 WHEN 0 THEN 'Zoë Ødegård 名前 ' || i WHEN 1 THEN E'tab\\there\\nnew line ' || i
               WHEN 2 THEN 'emoji 🐘💾 ' || i ELSE 'plain ' || i END,
    (ARRAY['sad', 'ok', 'happy', NULL])[1 + i % 4]::mood,
    timestamptz '2020-01-01 00:00:00+00' + i * interval '37 minutes 13.123456 seconds',
    round((i * 1234.567891234)::numeric, 12) - 500000,
    CASE WHEN i % 3 = 0 THEN NULL ELSE (repeat('9', 300) || '.' || repeat(i::text, 40))::numeric * i END,
    CASE WHEN i % 5 = 0 THEN NULL ELSE ARRAY['a' || i, NULL, 'quote"s', E'back\\\\slash', ''] END,
    CASE WHEN i % 7 = 0 THEN NULL
         ELSE jsonb_build_object('i', i, 'nested', jsonb_build_object('list', jsonb_build_array(i, 'x', NULL, true)),
                                 'text', 'ünï ' || md5(i::text)) END
FROM generate_series(1, {customers}) AS i;

INSERT INTO orders (customer_id, quantity, amount, items, placed_at, note)
SELECT
    1 + (i * 7919) % {customers},
    1 + i % 9,
    (i % 100000) / 100.0,
    ARRAY[i, i + 1, i * 2, -i],
    timestamptz '2021-06-01 12:00:00+02' + i * interval '1 hour 1 second',
    CASE WHEN i % 3 = 0 THEN NULL ELSE 'note ' || md5(i::text) END
FROM generate_series(1, {orders}) AS i;

INSERT INTO blobs (order_id, data)
SELECT i, decode(repeat(md5(i::text), 1 + i % 20) || '00000102ff00', 'hex') || '\\x00'::bytea
FROM generate_series(1, {blobs}) AS i;

INSERT INTO "Mixed ""Case"" Table" VALUES
    ('a', 'NaN', '{{true,false,NULL}}', '12:34:56+05:30', '1 year 2 mons 3 days 04:05:06.789'),
    ('b', '-Infinity', NULL, NULL, NULL),
    ('', 1.5e-300, '{{}}', '00:00:00+00', '-1 day');

UPDATE orders SET quantity = quantity + 1 WHERE id % 50 = 0;
SELECT setval('customers_id_seq', {customers} + 100);
SELECT nextval('invoice_seq') FROM generate_series(1, 5);
CREATE SEQUENCE unused_seq;
CREATE MATERIALIZED VIEW order_stats AS
    SELECT customer_id, count(*) AS orders, max(placed_at) AS last_order FROM orders GROUP BY customer_id;
CREATE UNIQUE INDEX order_stats_customer_idx ON order_stats (customer_id);
ANALYZE;
"""


def sample_database(
    cluster: PgCluster, name: str, *, customers: int = 2000, orders: int = 5000, blobs: int = 200, create: bool = True
) -> str:
    """Create database ``name`` (unless ``create`` is False) full of awkward content; returns ``name``."""
    if create:
        cluster.create_database(name)
    with cluster.connect(name) as conn:
        conn.execute(SAMPLE_SCHEMA)
        conn.execute(SAMPLE_DATA.format(customers=customers, orders=orders, blobs=blobs))
    return name


def _connect(target: PgCluster | str, dbname: str) -> psycopg.Connection[Any]:
    if isinstance(target, PgCluster):
        return target.connect(dbname)
    return psycopg.connect(target, dbname=dbname, autocommit=True)


USER_SCHEMAS = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'"

FINGERPRINT_QUERIES = {
    "column": f"""
        SELECT format('%s.%s %s %s%s default %s', c.relnamespace::regnamespace, c.relname, a.attname,
                      format_type(a.atttypid, a.atttypmod), CASE WHEN a.attnotnull THEN ' not null' ELSE '' END,
                      pg_get_expr(d.adbin, d.adrelid))
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {USER_SCHEMAS}""",
    "index": "SELECT indexdef FROM pg_indexes WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
    "constraint": f"""
        SELECT format('%s %s %s', conrelid::regclass, conname, pg_get_constraintdef(co.oid))
        FROM pg_constraint co JOIN pg_namespace n ON n.oid = co.connamespace WHERE {USER_SCHEMAS}""",
    "view": f"""
        SELECT format('%s %s %s', c.relkind, c.oid::regclass, pg_get_viewdef(c.oid))
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('v', 'm') AND {USER_SCHEMAS}""",
    "sequence": """
        SELECT format('%s.%s %s %s %s %s %s %s', schemaname, sequencename, data_type, start_value, min_value,
                      max_value, increment_by, cycle) FROM pg_sequences""",
    "function": f"""
        SELECT pg_get_functiondef(p.oid) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE {USER_SCHEMAS}""",
    "trigger": "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal",
    "type": f"""
        SELECT format('%s %s %s', t.oid::regtype, t.typtype,
                      (SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder) FROM pg_enum WHERE enumtypid = t.oid))
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE t.typtype IN ('e', 'd') AND {USER_SCHEMAS}""",
    "comment": f"""
        SELECT format('%s %s', c.oid::regclass, d.description) FROM pg_description d
        JOIN pg_class c ON c.oid = d.objoid AND d.classoid = 'pg_class'::regclass
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {USER_SCHEMAS}""",
}


ROW_DIGEST = (
    "SELECT count(*), md5(coalesce(string_agg(h, '' ORDER BY h), '')) FROM (SELECT md5(t::text) AS h FROM {} t) s"
)


def schema_fingerprint(target: PgCluster | str, dbname: str) -> list[str]:
    """Sorted lines describing columns, indexes, constraints, views, sequences, functions, triggers, types."""
    lines: list[str] = []
    with _connect(target, dbname) as conn:
        for kind, query in FINGERPRINT_QUERIES.items():
            lines += [f"{kind}: {row[0]}" for row in conn.execute(query)]  # type: ignore[arg-type]
    return sorted(lines)


def table_checksums(target: PgCluster | str, dbname: str) -> dict[str, str]:
    """Order-independent checksums of every user table and materialized view (key: ``schema.table``),
    each sequence's state (key: ``sequence schema.name``) and the schema (key: ``schema``)."""
    result: dict[str, str] = {}
    with _connect(target, dbname) as conn:
        conn.execute(
            "SET TIME ZONE 'UTC'; SET extra_float_digits = 3; SET DateStyle = 'ISO'; SET IntervalStyle = 'postgres'"
        )
        relations = conn.execute(
            f"SELECT c.oid::regclass::text, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            f"WHERE c.relkind IN ('r', 'm', 'S') AND {USER_SCHEMAS}"
        ).fetchall()
        for name, kind in relations:
            if kind == "S":
                row = conn.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(sql.SQL(name))).fetchone()
                result[f"sequence {name}"] = f"{row[0]} {row[1]}" if row else ""
                continue
            query = sql.SQL(ROW_DIGEST).format(sql.SQL(name))
            count, digest = conn.execute(query).fetchone() or (0, "")
            result[name] = f"{count} rows {digest}"
    result["schema"] = hashlib.md5("\n".join(schema_fingerprint(target, dbname)).encode()).hexdigest()
    return result
