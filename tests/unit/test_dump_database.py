"""The database's own entries of a pg_dump archive, read and composed again for a new name (never run as text)."""

from __future__ import annotations

import pytest

from strongroom.adapters.postgres.dump_database import (
    acl_statements,
    database_properties,
    owner_statement,
    property_statements,
)
from strongroom.adapters.postgres.dump_format import TocEntry
from strongroom.adapters.postgres.dump_roles import ownership_options, parse_role_map
from strongroom.adapters.postgres.roles import RoleDefinition, create_role_statement
from strongroom.errors import ConfigError


def entry(desc: str, tag: str, defn: str, owner: str = "Odd Owner") -> TocEntry:
    return TocEntry(1, desc, tag, defn, "", owner, 0, 1)


def text(statement: object) -> str:
    return statement.as_string(None)  # type: ignore[attr-defined]


ODD = 'we"ird db'
ENTRIES = [
    entry(
        "DATABASE",
        ODD,
        'CREATE DATABASE "we""ird db" WITH TEMPLATE = template0 ENCODING = \'UTF8\' '
        "LOCALE_PROVIDER = icu LOCALE = 'C' ICU_LOCALE = 'en-GB';\n",
    ),
    entry("COMMENT", 'DATABASE "we""ird db"', "COMMENT ON DATABASE \"we\"\"ird db\" IS 'it''s; DROP TABLE x';\n"),
    entry(
        "DATABASE PROPERTIES",
        ODD,
        'ALTER DATABASE "we""ird db" CONNECTION LIMIT = 7;\n'
        'ALTER DATABASE "we""ird db" SET "TimeZone" TO \'Europe/London\';\n'
        "ALTER DATABASE \"we\"\"ird db\" SET search_path TO 'a', 'public';\n"
        'ALTER DATABASE "we""ird db" SET session_preload_libraries TO \'evil\';\n'
        'ALTER DATABASE "we""ird db" IS_TEMPLATE = true;\n'
        'ALTER ROLE r1 IN DATABASE "we""ird db" SET work_mem TO \'8MB\';\n',
    ),
    entry(
        "ACL",
        'DATABASE "we""ird db"',
        'REVOKE CONNECT,TEMPORARY ON DATABASE "we""ird db" FROM PUBLIC;\n'
        'GRANT CONNECT ON DATABASE "we""ird db" TO r1;\n',
    ),
]


def test_the_properties_come_back_on_the_new_name_with_roles_mapped() -> None:
    properties = database_properties(ENTRIES)
    assert properties.create == {"ENCODING": "UTF8", "LOCALE_PROVIDER": "icu", "LOCALE": "C", "ICU_LOCALE": "en-GB"}
    new = 'new "db"; DROP DATABASE postgres'
    role_map = {"r1": "App Role"}
    statements = [text(s) for s in property_statements(properties, new, role_map)]
    assert statements == [
        'ALTER DATABASE "new ""db""; DROP DATABASE postgres" CONNECTION LIMIT 7',
        'ALTER DATABASE "new ""db""; DROP DATABASE postgres" SET "TimeZone" TO \'Europe/London\'',
        'ALTER DATABASE "new ""db""; DROP DATABASE postgres" SET "search_path" TO \'a\', \'public\'',
        'ALTER ROLE "App Role" IN DATABASE "new ""db""; DROP DATABASE postgres" SET "work_mem" TO \'8MB\'',
        'COMMENT ON DATABASE "new ""db""; DROP DATABASE postgres" IS \'it\'\'s; DROP TABLE x\'',
    ]
    assert [text(s) for s in acl_statements(properties, "n", role_map)] == [
        'REVOKE CONNECT, TEMPORARY ON DATABASE "n" FROM PUBLIC',
        'GRANT CONNECT ON DATABASE "n" TO "App Role"',
    ]
    assert text(owner_statement(properties, "n", {"Odd Owner": "o"})) == 'ALTER DATABASE "n" OWNER TO "o"'
    assert properties.skipped == [
        "setting session_preload_libraries (it loads code)",
        "IS_TEMPLATE (the copy is not made a template)",
    ]


def test_a_grant_it_cannot_read_fails_closed() -> None:
    """A forged or future ACL statement is not run; in its place PUBLIC loses everything on the database."""
    forged = entry(
        "ACL",
        "DATABASE d",
        "GRANT CONNECT ON DATABASE d TO r1; SELECT pg_sleep(1); GRANT ALL ON DATABASE d TO PUBLIC WITH ADMIN OPTION;\n",
    )
    properties = database_properties([forged])
    assert [text(s) for s in acl_statements(properties, "n", {})] == [
        'GRANT CONNECT ON DATABASE "n" TO "r1"',
        'REVOKE ALL ON DATABASE "n" FROM PUBLIC',
    ]
    assert len(properties.skipped) == 1


def test_a_created_role_never_gets_server_wide_powers_and_logs_in_only_with_its_password() -> None:
    powerful = RoleDefinition(
        "boss", login=True, superuser=True, createdb=True, createrole=True, replication=True, bypassrls=True
    )
    statement = text(create_role_statement(powerful))
    assert statement == 'CREATE ROLE "boss" NOLOGIN INHERIT'
    assert powerful.dropped_powers() == ["SUPERUSER", "CREATEDB", "CREATEROLE", "REPLICATION", "BYPASSRLS"]
    with_hash = RoleDefinition("app", login=True, password="SCRAM-SHA-256$4096:x", connection_limit=5)
    assert text(create_role_statement(with_hash)) == (
        "CREATE ROLE \"app\" LOGIN INHERIT CONNECTION LIMIT 5 PASSWORD 'SCRAM-SHA-256$4096:x'"
    )


def test_role_maps_are_checked_before_anything_runs() -> None:
    assert parse_role_map(["a=b", "Odd One=c=d"]) == {"a": "b", "Odd One": "c=d"}
    for bad, message in (
        (["a"], "--role-map takes OLD=NEW, not 'a'"),
        (["a=b", "a=c"], "--role-map maps role a twice"),
        (["a=pg_read_all_data"], "role_map cannot name role 'pg_read_all_data'"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_role_map(bad)
    assert ownership_options(create_roles=True, role_map={"a": "b"}, locale="C") == {
        "create_roles": True,
        "role_map": {"a": "b"},
        "locale": "C",
    }
