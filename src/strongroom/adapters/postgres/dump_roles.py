"""Which roles restoring a pg_dump archive needs, read from its table of contents before anything moves.

A logical restore that keeps owners and privileges runs ``ALTER … OWNER TO`` with the owner field of
each entry that is a separately ownable object (one with a DROP statement: not an ACL or a comment,
whose owner field may name, say, the source's bootstrap superuser for an extension's function), and
replays the ``ACL`` / ``DEFAULT ACL`` entries' GRANT and REVOKE statements; row-level security
``POLICY`` entries name roles whatever the options. Each of those fails on a role the target server
does not have. Knowing them up front lets the restore refuse before creating a database.

Only entries pg_restore restores into an existing database count: without ``--create`` it skips the
``DATABASE`` entries and the comments, labels and ACLs of the database itself (``_tocEntryRequired``).

The statements are pg_dump's own output (``buildACLCommands``, ``dumpPolicy``): role names are
written with ``fmtId``, so a name that is not a plain lower-case identifier or that is a keyword is
double-quoted. A small tokenizer that knows quoted identifiers and string literals is therefore
enough to find the role lists after ``TO``, ``FROM``, ``FOR ROLE``, ``GRANTED BY`` and ``SET SESSION
AUTHORIZATION`` — an object named ``"to"`` or ``"a, TO b"`` cannot be mistaken for one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from strongroom.adapters.postgres.dump_format import TocEntry
from strongroom.errors import ConfigError

ACL_ENTRIES = {"ACL", "DEFAULT ACL", "ACL LANGUAGE"}
DATABASE_ENTRIES = {"DATABASE", "DATABASE PROPERTIES"}
ABOUT_THE_DATABASE = {"ACL", "COMMENT", "SECURITY LABEL"}  # with a tag "DATABASE name"
NOT_ROLES = {"public", "group"}  # PUBLIC is everyone; GROUP is old syntax before a role name

_TOKEN = re.compile(
    r"""(?P<quoted>"(?:[^"]|"")*")"""  # a quoted identifier
    r"""|(?P<escaped>[eE]'(?:[^'\\]|''|\\.)*')"""  # an E'' string literal (backslash escapes)
    r"""|(?P<string>'(?:[^']|'')*')"""  # a string literal (standard_conforming_strings, as pg_dump sets)
    r"""|(?P<dollar>\$(?P<dtag>[A-Za-z_][A-Za-z0-9_]*)?\$.*?\$(?P=dtag)?\$)"""  # a dollar-quoted body
    r"""|(?P<word>[A-Za-z_][A-Za-z0-9_$]*)"""
    r"""|(?P<other>\S)""",
    re.DOTALL,
)

OWNERSHIP_OPTIONS = ("no_owners", "no_privileges", "create_roles")


@dataclass(frozen=True)
class Ownership:
    """Whether a restore replays the dump's owners and its GRANTs/REVOKEs: both unless dropped explicitly.

    ``restore start --no-owners/--no-privileges`` and a runbook's restore step both reach it through
    :func:`ownership_options`, so the two give the same result.
    """

    owners: bool = True
    privileges: bool = True
    create_roles: bool = False  # create the needed roles the target lacks from the point's definitions
    role_map: Mapping[str, str] = field(default_factory=dict)  # role in the dump -> existing role on the target

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Ownership:
        for name in OWNERSHIP_OPTIONS:
            if not isinstance(options.get(name, False), bool):
                raise ConfigError(f"option '{name}' must be true or false, not {options[name]!r}")
        return cls(
            owners=not options.get("no_owners"),
            privileges=not options.get("no_privileges"),
            create_roles=bool(options.get("create_roles")),
            role_map=checked_role_map(options.get("role_map") or {}),
        )

    def mapped(self, name: str) -> str:
        return self.role_map.get(name, name)

    def pg_restore_flags(self) -> list[str]:
        return [flag for flag, kept in (("--no-owner", self.owners), ("--no-privileges", self.privileges)) if not kept]

    def cli_flags(self) -> list[str]:
        """The ``restore start`` options that chose this."""
        return [flag for flag, kept in (("--no-owners", self.owners), ("--no-privileges", self.privileges)) if not kept]


def ownership_options(
    *,
    no_owners: bool = False,
    no_privileges: bool = False,
    create_roles: bool = False,
    role_map: Mapping[str, str] | None = None,
    encoding: str | None = None,
    locale: str | None = None,
) -> dict[str, Any]:
    """The restore options of ``restore start --no-owners/--no-privileges/--create-roles/--role-map/--encoding/
    --locale`` and of a runbook's restore step (fields of the same names): one builder, so both give the same
    result."""
    chosen = {"no_owners": no_owners, "no_privileges": no_privileges, "create_roles": create_roles}
    options: dict[str, Any] = {name: True for name, wanted in chosen.items() if wanted}
    if role_map:
        options["role_map"] = dict(checked_role_map(role_map))
    options.update({name: value for name, value in (("encoding", encoding), ("locale", locale)) if value})
    return options


def parse_role_map(pairs: Iterable[str]) -> dict[str, str]:
    """``["old=new", ...]`` (``restore start --role-map``) as a mapping; names exactly as in the catalog."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        old, sep, new = pair.partition("=")
        if not sep or not old or not new:
            raise ConfigError(f"--role-map takes OLD=NEW, not {pair!r}", hint="e.g. --role-map clinic_owner=app_owner")
        if old in mapping and mapping[old] != new:
            raise ConfigError(f"--role-map maps role {old} twice", hint="give each role in the dump one new name")
        mapping[old] = new
    return checked_role_map(mapping)


def checked_role_map(value: object) -> dict[str, str]:
    """A role map as given (an option or a runbook field): role names to role names, none mapped to itself."""
    if not isinstance(value, Mapping) or not all(
        isinstance(key, str) and isinstance(item, str) and key and item for key, item in value.items()
    ):
        raise ConfigError(
            f"option 'role_map' must map role names to role names, not {value!r}", hint="e.g. {clinic_owner: app}"
        )
    for name in (*value.keys(), *value.values()):
        if name.startswith("pg_") or "\x00" in name or len(name.encode()) > 63:
            raise ConfigError(
                f"role_map cannot name role {name!r}",
                hint="map to and from ordinary roles (not pg_*, at most 63 bytes)",
            )
    return {key: item for key, item in value.items() if key != item}


@dataclass(frozen=True)
class Token:
    kind: str  # quoted, escaped, string, dollar, word, other
    text: str
    start: int = 0  # where it starts in the text it was read from

    def is_word(self, *words: str) -> bool:
        return self.kind == "word" and self.text.lower() in words

    def role_name(self) -> str | None:
        """The role a name token denotes; None for PUBLIC and for anything that is not a name."""
        if self.kind == "quoted":
            return self.text[1:-1].replace('""', '"')
        if self.kind == "word" and self.text.lower() not in NOT_ROLES:
            return self.text.lower()
        return None


@dataclass(frozen=True)
class RoleNeeds:
    """The roles an archive names, by what needs them."""

    owners: frozenset[str] = frozenset()  # owner fields: needed unless owners are dropped
    privileges: frozenset[str] = frozenset()  # grantees and grantors of ACL entries: unless privileges are dropped
    policies: frozenset[str] = frozenset()  # roles row-level security policies apply to: always
    settings: frozenset[str] = frozenset()  # roles of ALTER ROLE … IN DATABASE … SET: always

    def needed(self, *, owners: bool, privileges: bool) -> frozenset[str]:
        """The roles a restore keeping (or not) owners and privileges needs on its target."""
        needed = set(self.policies | self.settings)
        if owners:
            needed |= self.owners
        if privileges:
            needed |= self.privileges
        return frozenset(needed)


def role_needs(entries: Iterable[TocEntry], *, database_level: bool = False) -> RoleNeeds:
    """The roles restoring ``entries`` names; with ``database_level``, also those of the database's own
    entries (its owner, its ACL, role-in-database settings), which a restore applies to a database it creates."""
    owners: set[str] = set()
    privileges: set[str] = set()
    policies: set[str] = set()
    settings: set[str] = set()
    for entry in entries:
        if not restored_into_existing_database(entry):
            if database_level and entry.desc == "DATABASE" and entry.owner:
                owners.add(entry.owner)
            elif database_level and entry.desc == "ACL":
                privileges |= statement_roles(entry.defn)
            elif database_level and entry.desc == "DATABASE PROPERTIES":
                settings |= statement_roles(entry.defn)
            continue
        if entry.owner and entry.drop_stmt:  # pg_restore's rule for issuing ALTER … OWNER TO (_printTocEntry)
            owners.add(entry.owner)
        if entry.desc in ACL_ENTRIES:
            privileges |= statement_roles(entry.defn)
        elif entry.desc == "POLICY":
            policies |= statement_roles(entry.defn)
    return RoleNeeds(frozenset(owners), frozenset(privileges), frozenset(policies), frozenset(settings))


def restored_into_existing_database(entry: TocEntry) -> bool:
    """Whether ``pg_restore`` without ``--create`` restores this entry."""
    if entry.desc in DATABASE_ENTRIES:
        return False
    return not (entry.desc in ABOUT_THE_DATABASE and entry.tag.startswith("DATABASE "))


def statement_roles(sql: str) -> set[str]:
    """Roles named by pg_dump's GRANT, REVOKE, ALTER DEFAULT PRIVILEGES, CREATE POLICY and SET SESSION
    AUTHORIZATION statements in ``sql``."""
    return {name for token in role_tokens(sql) if (name := token.role_name()) is not None}


def role_tokens(sql: str) -> list[Token]:
    """The tokens of ``sql`` that name roles (see :func:`statement_roles`), in order."""
    found: list[Token] = []
    for statement in _statements(tokenize(sql)):
        found += _roles_of(statement)
    return found


def quote_role(name: str) -> str:
    """A role name as an SQL identifier (always double-quoted: valid for any name)."""
    return '"' + name.replace('"', '""') + '"'


def map_statement_roles(sql: str, role_map: Mapping[str, str]) -> str:
    """``sql`` with every role in ``role_map`` that it names (as a grantee, grantor, policy role ...)
    replaced by its new name; nothing else in the text changes."""
    pieces, position = [], 0
    for token in role_tokens(sql):
        name = token.role_name()
        if name is None or name not in role_map:
            continue
        pieces += [sql[position : token.start], quote_role(role_map[name])]
        position = token.start + len(token.text)
    return "".join(pieces) + sql[position:]


def tokenize(sql: str) -> list[Token]:
    tokens = []
    for found in _TOKEN.finditer(sql):
        kind = next(name for name in ("quoted", "escaped", "string", "dollar", "word", "other") if found.group(name))
        tokens.append(Token(kind, found.group(0), found.start()))
    return tokens


def _statements(tokens: list[Token]) -> Iterator[list[Token]]:
    statement: list[Token] = []
    for token in tokens:
        if token.kind == "other" and token.text == ";":
            if statement:
                yield statement
            statement = []
        else:
            statement.append(token)
    if statement:
        yield statement


def _roles_of(statement: list[Token]) -> list[Token]:
    first = statement[0]
    if first.is_word("set") and len(statement) >= 4 and statement[1].is_word("session"):
        return _names(statement, 3)  # SET SESSION AUTHORIZATION name
    if first.is_word("grant", "revoke"):
        return _grant_roles(statement, 0)
    if first.is_word("alter") and len(statement) > 2 and statement[1].is_word("default"):
        roles: list[Token] = []
        for index, token in enumerate(statement[:-1]):
            if token.is_word("for") and statement[index + 1].is_word("role", "user"):
                roles += _names(statement, index + 2)
            if token.is_word("grant", "revoke"):
                return roles + _grant_roles(statement, index)
        return roles
    if first.is_word("create") and len(statement) > 1 and statement[1].is_word("policy"):
        return _after_keyword(statement, 2, "to", stop=("using", "with"))  # not in its expressions
    if first.is_word("alter") and len(statement) > 3 and statement[1].is_word("role", "user"):
        return _names(statement, 2)  # ALTER ROLE name IN DATABASE ... SET (a database's properties)
    return []


def _grant_roles(statement: list[Token], start: int) -> list[Token]:
    """Grantees (after TO / FROM) and a GRANTED BY grantor of the GRANT or REVOKE at ``start``."""
    keyword = "to" if statement[start].is_word("grant") else "from"
    roles = _after_keyword(statement, start + 1, keyword)
    for index, token in enumerate(statement[start:-2], start):
        if token.is_word("granted") and statement[index + 1].is_word("by"):
            roles += _names(statement, index + 2)
    return roles


def _after_keyword(statement: list[Token], start: int, keyword: str, stop: tuple[str, ...] = ()) -> list[Token]:
    for index in range(start, len(statement)):
        if statement[index].is_word(*stop):
            break
        if statement[index].is_word(keyword):
            return _names(statement, index + 1)
    return []


def _names(statement: list[Token], start: int) -> list[Token]:
    """The comma-separated role names from ``start`` (``GROUP`` and ``PUBLIC`` are not roles)."""
    roles: list[Token] = []
    index = start
    while index < len(statement):
        token = statement[index]
        if token.is_word("group") and index + 1 < len(statement):
            index += 1
            token = statement[index]
        if token.role_name() is not None:
            roles.append(token)
        elif not token.is_word("public"):
            break
        if index + 1 < len(statement) and statement[index + 1].text == ",":
            index += 2
            continue
        break
    return roles
