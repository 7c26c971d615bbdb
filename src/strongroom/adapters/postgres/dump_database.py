"""The database's own properties in a pg_dump archive, re-applied to a database of another name.

``pg_dump`` writes, besides the objects inside the database, entries about the database itself:
``DATABASE`` (its ``CREATE DATABASE``: encoding, locale provider, locale; its owner in the owner
field), ``DATABASE PROPERTIES`` (``ALTER DATABASE … CONNECTION LIMIT``, ``ALTER DATABASE … SET``,
``ALTER ROLE … IN DATABASE … SET``), ``COMMENT`` and ``ACL`` entries tagged ``DATABASE name``.
``pg_restore`` applies them only with ``--create``, which recreates the database under its
*original* name. A restore into a new name therefore reads them here and applies them itself.

Nothing of their text is run: each statement is parsed (the tokenizer of ``dump_roles``) into what
it says — a setting and its values, a comment, privileges and grantees — and composed again with
``psycopg.sql`` for the new name, roles mapped by ``--role-map``. A statement of another shape is
not run and is reported as skipped; settings that load code (``*_preload_libraries``,
``dynamic_library_path``, ``jit_provider``) are skipped and reported, as a restored cluster's are.
``IS_TEMPLATE`` is not applied (a copy is not a template unless someone says so).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from psycopg import sql

from strongroom.adapters.postgres.dump_format import TocEntry
from strongroom.adapters.postgres.dump_roles import Token, _statements, tokenize

LOADS_CODE = {"session_preload_libraries", "local_preload_libraries", "shared_preload_libraries"}
LOADS_CODE |= {"dynamic_library_path", "jit_provider"}
DATABASE_PRIVILEGES = {"CREATE", "CONNECT", "TEMPORARY", "TEMP", "ALL"}
LOCALE_KEYS = ("ENCODING", "LOCALE_PROVIDER", "LOCALE", "LC_COLLATE", "LC_CTYPE", "ICU_LOCALE", "ICU_RULES")


@dataclass(frozen=True)
class Setting:
    """``SET name TO values`` of a database, or of a role in a database (``role``)."""

    name: str
    values: tuple[str, ...]
    role: str | None = None


@dataclass(frozen=True)
class Grant:
    """One GRANT or REVOKE on the database; grantee None is PUBLIC."""

    grant: bool
    privileges: tuple[str, ...]
    grantees: tuple[str | None, ...]
    grant_option: bool = False  # WITH GRANT OPTION, or REVOKE GRANT OPTION FOR
    grantor: str | None = None  # the session authorization pg_dump set for it (a grantor not the owner)


@dataclass
class DatabaseProperties:
    """What the archive says about the database itself."""

    owner: str | None = None
    create: dict[str, str] = field(default_factory=dict)  # ENCODING, LOCALE_PROVIDER, LC_COLLATE ... as dumped
    comment: str | None = None
    connection_limit: int | None = None
    settings: list[Setting] = field(default_factory=list)
    grants: list[Grant] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # what was not applied, and why (never a value)

    def roles(self) -> set[str]:
        named = {setting.role for setting in self.settings if setting.role}
        for grant in self.grants:
            named |= {grantee for grantee in grant.grantees if grantee}
            named |= {grant.grantor} if grant.grantor else set()
        return named | ({self.owner} if self.owner else set())


def database_properties(entries: Iterable[TocEntry]) -> DatabaseProperties:
    properties = DatabaseProperties()
    for entry in entries:
        if entry.desc == "DATABASE":
            properties.owner = entry.owner or None
            properties.create = _create_options(tokenize(entry.defn))
        elif entry.desc == "DATABASE PROPERTIES":
            for statement in _statements(tokenize(entry.defn)):
                _read_property(statement, properties)
        elif entry.desc == "COMMENT" and entry.tag.startswith("DATABASE "):
            for statement in _statements(tokenize(entry.defn)):
                _read_comment(statement, properties)
        elif entry.desc == "ACL" and entry.tag.startswith("DATABASE "):
            _read_acl(tokenize(entry.defn), properties)
    return properties


def _text(token: Token) -> str | None:
    """The value of a string literal, number or bare word; None for anything else."""
    if token.kind == "string":
        return token.text[1:-1].replace("''", "'")
    if token.kind == "escaped":
        return None  # pg_dump writes E'' only without standard_conforming_strings: not ours to guess
    if token.kind == "word":
        return token.text
    if token.kind == "quoted":
        return token.text[1:-1].replace('""', '"')
    return None


def _create_options(tokens: list[Token]) -> dict[str, str]:
    """``KEY = 'value'`` pairs of pg_dump's ``CREATE DATABASE … WITH …``."""
    options: dict[str, str] = {}
    for index in range(len(tokens) - 2):
        key = tokens[index].text.upper()
        if tokens[index].kind == "word" and key in LOCALE_KEYS and tokens[index + 1].text == "=":
            value = _text(tokens[index + 2])
            if value is not None:
                options[key] = value
    return options


def _read_property(statement: list[Token], properties: DatabaseProperties) -> None:
    words = [token.text.upper() if token.kind == "word" else None for token in statement]
    role: str | None = None
    rest = statement
    if words[:2] == ["ALTER", "ROLE"] and len(statement) > 5 and words[3:5] == ["IN", "DATABASE"]:
        role = statement[2].role_name()
        rest = statement[6:]
    elif words[:2] == ["ALTER", "DATABASE"] and len(statement) > 3:
        rest = statement[3:]
    else:
        properties.skipped.append("a statement of the database's properties that Strongroom does not read")
        return
    head = [token.text.upper() for token in rest[:3]]
    if role is None and head[:2] == ["CONNECTION", "LIMIT"]:
        limit = _limit(rest[2:])
        if limit is not None:
            properties.connection_limit = limit
            return
    if role is None and head[:1] == ["IS_TEMPLATE"]:
        properties.skipped.append("IS_TEMPLATE (the copy is not made a template)")
        return
    if head[:1] == ["SET"] and len(rest) >= 4 and rest[2].text.upper() in ("TO", "="):
        name = _text(rest[1])
        values = [_text(token) for token in rest[3:] if token.text != ","]
        if name is not None and all(value is not None for value in values) and values:
            if name.lower() in LOADS_CODE:
                properties.skipped.append(f"setting {name.lower()} (it loads code)")
                return
            properties.settings.append(Setting(name, tuple(v for v in values if v is not None), role))
            return
    properties.skipped.append("a statement of the database's properties that Strongroom does not read")


def _limit(tokens: list[Token]) -> int | None:
    values = [token for token in tokens if token.text != "="]
    joined = "".join(token.text for token in values)
    return int(joined) if joined.lstrip("-").isdigit() else None


def _read_comment(statement: list[Token], properties: DatabaseProperties) -> None:
    if len(statement) >= 5 and statement[-2].is_word("is") and statement[0].is_word("comment"):
        properties.comment = _text(statement[-1]) if statement[-1].kind == "string" else None
        if statement[-1].kind != "string":
            properties.skipped.append("the database's comment (not a plain string)")


def _read_acl(tokens: list[Token], properties: DatabaseProperties) -> None:
    grantor: str | None = None
    for statement in _statements(tokens):
        first = statement[0]
        if first.is_word("set") and len(statement) >= 4 and statement[1].is_word("session"):
            grantor = statement[3].role_name()
        elif first.is_word("reset"):
            grantor = None
        elif first.is_word("grant", "revoke"):
            grant = _grant(statement, grantor)
            if grant is None:
                properties.skipped.append("a GRANT or REVOKE on the database that Strongroom does not read")
                properties.grants.append(Grant(False, ("ALL",), (None,)))  # fail closed: nobody gains access
            else:
                properties.grants.append(grant)


def _grant(statement: list[Token], grantor: str | None) -> Grant | None:
    is_grant = statement[0].is_word("grant")
    index, option = 1, False
    if not is_grant and len(statement) > 3 and statement[1].is_word("grant") and statement[2].is_word("option"):
        index, option = 4, True  # REVOKE GRANT OPTION FOR
    privileges: list[str] = []
    while index < len(statement) and not statement[index].is_word("on"):
        if statement[index].text != ",":
            privileges.append(statement[index].text.upper())
        index += 1
    if not privileges or not set(privileges) <= DATABASE_PRIVILEGES or index + 2 >= len(statement):
        return None
    if not statement[index + 1].is_word("database"):
        return None
    index += 3  # ON DATABASE name
    if index >= len(statement) or not statement[index].is_word("to" if is_grant else "from"):
        return None
    grantees: list[str | None] = []
    index += 1
    while index < len(statement):
        token = statement[index]
        if token.is_word("public"):
            grantees.append(None)
        elif token.role_name() is not None and not token.is_word("with"):
            grantees.append(token.role_name())
        else:
            break
        index += 1
        if index < len(statement) and statement[index].text == ",":
            index += 1
    remaining = [token.text.upper() for token in statement[index:]]
    if remaining == ["WITH", "GRANT", "OPTION"] and is_grant:
        option = True
    elif remaining:
        return None
    return Grant(is_grant, tuple(privileges), tuple(grantees), option, grantor) if grantees else None


# Composing them again for the new name -------------------------------------------------------------


def property_statements(
    properties: DatabaseProperties, database: str, role_map: Mapping[str, str]
) -> list[sql.Composed]:
    """Owner, connection limit, settings and comment of the new ``database`` (before its content)."""
    name = sql.Identifier(database)
    statements: list[sql.Composed] = []
    if properties.connection_limit is not None:
        statements.append(
            sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(name, sql.Literal(properties.connection_limit))
        )
    for setting in properties.settings:
        values = sql.SQL(", ").join(sql.Literal(value) for value in setting.values)
        if setting.role is None:
            statements.append(
                sql.SQL("ALTER DATABASE {} SET {} TO {}").format(name, sql.Identifier(setting.name), values)
            )
        else:
            role = sql.Identifier(role_map.get(setting.role, setting.role))
            statements.append(
                sql.SQL("ALTER ROLE {} IN DATABASE {} SET {} TO {}").format(
                    role, name, sql.Identifier(setting.name), values
                )
            )
    if properties.comment is not None:
        statements.append(sql.SQL("COMMENT ON DATABASE {} IS {}").format(name, sql.Literal(properties.comment)))
    return statements


def owner_statement(properties: DatabaseProperties, database: str, role_map: Mapping[str, str]) -> sql.Composed | None:
    if not properties.owner:
        return None
    owner = role_map.get(properties.owner, properties.owner)
    return sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(database), sql.Identifier(owner))


def acl_statements(properties: DatabaseProperties, database: str, role_map: Mapping[str, str]) -> list[sql.Composed]:
    """The database's GRANTs and REVOKEs (``REVOKE CONNECT … FROM PUBLIC`` among them) for ``database``."""
    statements: list[sql.Composed] = []
    for grant in properties.grants:
        grantees = sql.SQL(", ").join(
            sql.SQL("PUBLIC") if grantee is None else sql.Identifier(role_map.get(grantee, grantee))
            for grantee in grant.grantees
        )
        privileges = sql.SQL(", ").join(sql.SQL(privilege) for privilege in grant.privileges)  # from a fixed set
        if grant.grant:
            template = "GRANT {} ON DATABASE {} TO {}" + (" WITH GRANT OPTION" if grant.grant_option else "")
        else:
            template = "REVOKE " + ("GRANT OPTION FOR " if grant.grant_option else "") + "{} ON DATABASE {} FROM {}"
        statement = sql.SQL(template).format(privileges, sql.Identifier(database), grantees)
        if grant.grantor:
            grantor = sql.Identifier(role_map.get(grant.grantor, grant.grantor))
            statement = sql.SQL("SET SESSION AUTHORIZATION {}; {}; RESET SESSION AUTHORIZATION").format(
                grantor, statement
            )
        statements.append(statement)
    return statements
