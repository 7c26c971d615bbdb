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
from dataclasses import dataclass
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

OWNERSHIP_OPTIONS = ("no_owners", "no_privileges")


@dataclass(frozen=True)
class Ownership:
    """Whether a restore replays the dump's owners and its GRANTs/REVOKEs: both unless dropped explicitly.

    ``restore start --no-owners/--no-privileges`` and a runbook's restore step both reach it through
    :func:`ownership_options`, so the two give the same result.
    """

    owners: bool = True
    privileges: bool = True

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Ownership:
        for name in OWNERSHIP_OPTIONS:
            if not isinstance(options.get(name, False), bool):
                raise ConfigError(f"option '{name}' must be true or false, not {options[name]!r}")
        return cls(owners=not options.get("no_owners"), privileges=not options.get("no_privileges"))

    def pg_restore_flags(self) -> list[str]:
        return [flag for flag, kept in (("--no-owner", self.owners), ("--no-privileges", self.privileges)) if not kept]

    def cli_flags(self) -> list[str]:
        """The ``restore start`` options that chose this."""
        return [flag for flag, kept in (("--no-owners", self.owners), ("--no-privileges", self.privileges)) if not kept]


def ownership_options(*, no_owners: bool = False, no_privileges: bool = False) -> dict[str, bool]:
    """The restore options of ``restore start --no-owners/--no-privileges`` and of a runbook's restore step."""
    chosen = {"no_owners": no_owners, "no_privileges": no_privileges}
    return {name: True for name, dropped in chosen.items() if dropped}


@dataclass(frozen=True)
class Token:
    kind: str  # quoted, escaped, string, dollar, word, other
    text: str

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

    def needed(self, *, owners: bool, privileges: bool) -> frozenset[str]:
        """The roles a restore keeping (or not) owners and privileges needs on its target."""
        needed = set(self.policies)
        if owners:
            needed |= self.owners
        if privileges:
            needed |= self.privileges
        return frozenset(needed)


def role_needs(entries: Iterable[TocEntry]) -> RoleNeeds:
    owners: set[str] = set()
    privileges: set[str] = set()
    policies: set[str] = set()
    for entry in entries:
        if not restored_into_existing_database(entry):
            continue
        if entry.owner and entry.drop_stmt:  # pg_restore's rule for issuing ALTER … OWNER TO (_printTocEntry)
            owners.add(entry.owner)
        if entry.desc in ACL_ENTRIES:
            privileges |= statement_roles(entry.defn)
        elif entry.desc == "POLICY":
            policies |= statement_roles(entry.defn)
    return RoleNeeds(frozenset(owners), frozenset(privileges), frozenset(policies))


def restored_into_existing_database(entry: TocEntry) -> bool:
    """Whether ``pg_restore`` without ``--create`` restores this entry."""
    if entry.desc in DATABASE_ENTRIES:
        return False
    return not (entry.desc in ABOUT_THE_DATABASE and entry.tag.startswith("DATABASE "))


def statement_roles(sql: str) -> set[str]:
    """Roles named by pg_dump's GRANT, REVOKE, ALTER DEFAULT PRIVILEGES, CREATE POLICY and SET SESSION
    AUTHORIZATION statements in ``sql``."""
    roles: set[str] = set()
    for statement in _statements(tokenize(sql)):
        roles |= _roles_of(statement)
    return roles


def tokenize(sql: str) -> list[Token]:
    tokens = []
    for found in _TOKEN.finditer(sql):
        kind = next(name for name in ("quoted", "escaped", "string", "dollar", "word", "other") if found.group(name))
        tokens.append(Token(kind, found.group(0)))
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


def _roles_of(statement: list[Token]) -> set[str]:
    first = statement[0]
    if first.is_word("set") and len(statement) >= 4 and statement[1].is_word("session"):
        return _names(statement, 3)  # SET SESSION AUTHORIZATION name
    if first.is_word("grant", "revoke"):
        return _grant_roles(statement, 0)
    if first.is_word("alter") and len(statement) > 2 and statement[1].is_word("default"):
        roles = set()
        for index, token in enumerate(statement[:-1]):
            if token.is_word("for") and statement[index + 1].is_word("role", "user"):
                roles |= _names(statement, index + 2)
            if token.is_word("grant", "revoke"):
                return roles | _grant_roles(statement, index)
        return roles
    if first.is_word("create") and len(statement) > 1 and statement[1].is_word("policy"):
        return _after_keyword(statement, 2, "to", stop=("using", "with"))  # not in its expressions
    return set()


def _grant_roles(statement: list[Token], start: int) -> set[str]:
    """Grantees (after TO / FROM) and a GRANTED BY grantor of the GRANT or REVOKE at ``start``."""
    keyword = "to" if statement[start].is_word("grant") else "from"
    roles = _after_keyword(statement, start + 1, keyword)
    for index, token in enumerate(statement[start:-2], start):
        if token.is_word("granted") and statement[index + 1].is_word("by"):
            roles |= _names(statement, index + 2)
    return roles


def _after_keyword(statement: list[Token], start: int, keyword: str, stop: tuple[str, ...] = ()) -> set[str]:
    for index in range(start, len(statement)):
        if statement[index].is_word(*stop):
            break
        if statement[index].is_word(keyword):
            return _names(statement, index + 1)
    return set()


def _names(statement: list[Token], start: int) -> set[str]:
    """The comma-separated role names from ``start`` (``GROUP`` and ``PUBLIC`` are not roles)."""
    roles: set[str] = set()
    index = start
    while index < len(statement):
        token = statement[index]
        if token.is_word("group") and index + 1 < len(statement):
            index += 1
            token = statement[index]
        name = token.role_name()
        if name is not None:
            roles.add(name)
        elif not token.is_word("public"):
            break
        if index + 1 < len(statement) and statement[index + 1].text == ",":
            index += 2
            continue
        break
    return roles
