"""Helpers shared by the PostgreSQL adapters: finding tools, running them, DSNs and their errors.

- :func:`find_tool` locates ``pg_dump``, ``pg_ctl`` ... : ``$STRONGROOM_PG_BINDIR`` (a list of
  directories, searched alone when set), else ``PATH``, then ``/usr/lib/postgresql/*/bin`` and
  ``/usr/pgsql-*/bin``, newest version first.
- :class:`ToolProcess` runs a tool with its stderr drained (and bounded) by a thread, optionally as
  another OS user (server tools refuse to run as root). No tool ever sees a ``STRONGROOM_*``
  variable (the passphrase travels in ``STRONGROOM_PASSPHRASE``): they are removed from every
  child's environment. A server (``pg_ctl start``) gets :func:`server_environment` only.
- :func:`parse_dsn` accepts ``postgresql://user@host:port/db`` or ``key=value`` DSNs and refuses a
  password in them: passwords travel in the environment (``PGPASSWORD``, ``PGPASSFILE``).
- :func:`describe_failure` turns libpq / tool messages into one line for a user.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import os
import pwd
import re
import socket
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from strongroom.errors import ConfigError, StrongroomError, ToolMissingError

BINDIR_ENV = "STRONGROOM_PG_BINDIR"
INSTALL_HINT = "install PostgreSQL client tools, e.g. apt-get install -y postgresql"
STRONGROOM_PREFIX = "STRONGROOM_"  # our variables (the passphrase among them): never handed to a tool
# What a restored server inherits from us (besides LC_*; HOME, USER and LOGNAME are set for its OS user).
SERVER_ENVIRONMENT = frozenset({"PATH", "LANG", "TZ", "TMPDIR", "LD_LIBRARY_PATH"})
PASSWORD_HINT = (
    "put the password in PGPASSWORD, a .pgpass file (PGPASSFILE) or the account's secrets — never in the DSN"
)
STDERR_LIMIT = 64 * 1024  # bytes of a tool's stderr kept for the error message
# Pipes between a tool and the engine: Linux's default 64 KiB buffer costs a context switch per 64 KiB
# and caps a pipe at ~700 MB/s here; 1 MiB (the default pipe-max-size) doubles that and leaves the
# CPU to pg_dump and the engine.
PIPE_BUFFER = 1 << 20
DEFAULT_CONNECT_TIMEOUT = "10"
# libpq environment variables that psycopg connections take from a context's environment.
LIBPQ_ENVIRONMENT = {
    "PGPASSWORD": "password",
    "PGPASSFILE": "passfile",
    "PGUSER": "user",
    "PGHOST": "host",
    "PGPORT": "port",
    "PGSSLMODE": "sslmode",
    "PGSSLROOTCERT": "sslrootcert",
    "PGSSLCERT": "sslcert",
    "PGSSLKEY": "sslkey",
    "PGCONNECT_TIMEOUT": "connect_timeout",
}


# Finding tools ---------------------------------------------------------------------------------


def _version_key(directory: Path) -> tuple[int, ...]:
    found = re.search(r"(\d+(?:\.\d+)*)", directory.parent.name)
    return tuple(int(part) for part in found.group(1).split(".")) if found else (0,)


def search_dirs(environment: Mapping[str, str] | None = None) -> list[Path]:
    """Directories searched for PostgreSQL tools, in order."""
    env = os.environ if environment is None else environment
    pinned = env.get(BINDIR_ENV)
    if pinned:
        return [Path(part) for part in pinned.split(os.pathsep) if part]
    dirs = [Path(part) for part in env.get("PATH", os.defpath).split(os.pathsep) if part]
    installed = [*Path("/usr/lib/postgresql").glob("*/bin"), *Path("/usr").glob("pgsql-*/bin")]
    return dirs + sorted(installed, key=_version_key, reverse=True)


def tool_version(tool: Path) -> str:
    """``15.13`` for ``pg_dump (PostgreSQL) 15.13 (Debian 15.13-1)``."""
    try:
        out = subprocess.run([str(tool), "--version"], capture_output=True, text=True, timeout=30, check=False)
    except OSError as exc:
        raise ToolMissingError(f"{tool} cannot be run: {exc.strerror}", hint=INSTALL_HINT) from None
    found = re.search(r"\)\s*(\d+(?:\.\d+)?)", out.stdout)
    if out.returncode != 0 or not found:
        raise ToolMissingError(f"{tool} --version did not report a PostgreSQL version", hint=INSTALL_HINT)
    return found.group(1)


def major_of(version: str) -> int:
    return int(version.split(".")[0])


def find_tool(name: str, environment: Mapping[str, str] | None = None, *, major: int | None = None) -> Path:
    """The first executable ``name`` in :func:`search_dirs` (of PostgreSQL ``major`` when given)."""
    seen: list[str] = []
    for directory in search_dirs(environment):
        candidate = directory / name
        if not (candidate.is_file() and os.access(candidate, os.X_OK)):
            continue
        if major is None:
            return candidate
        version = tool_version(candidate)
        if major_of(version) == major:
            return candidate
        seen.append(f"{version} at {candidate}")
    wanted = f"{name} of PostgreSQL {major}" if major else name
    found = f" (found {', '.join(seen)})" if seen else ""
    raise ToolMissingError(f"{wanted} not found{found}", hint=f"{INSTALL_HINT}, or set {BINDIR_ENV}")


def tool_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a PostgreSQL client tool: ours, plus ``extra`` (e.g. PGPASSWORD of the target),
    messages in English. ``STRONGROOM_*`` names stay here for :func:`find_tool` and are removed when a
    tool is started (:func:`child_environment`)."""
    env = {**os.environ, **(extra or {})}
    env.setdefault("PGCONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT)
    env["LC_MESSAGES"] = "C"
    env.pop("LC_ALL", None)
    return env


def server_environment() -> dict[str, str]:
    """The whole environment of a server a restore starts (``pg_ctl``, then ``postgres``): the search path,
    locale and time zone of ours and nothing else: no Strongroom secret, no ``PGPASSWORD``, no ``PG*``
    (the data directory, port and the rest are passed explicitly). Messages in English."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name in SERVER_ENVIRONMENT or (name.startswith("LC_") and name != "LC_ALL")
    }
    env.setdefault("PATH", os.defpath)
    env["LC_MESSAGES"] = "C"
    return env


def child_environment(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without any ``STRONGROOM_*`` variable: what a tool or server process may see."""
    return {name: value for name, value in env.items() if not name.startswith(STRONGROOM_PREFIX)}


# OS users ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OsUser:
    name: str
    uid: int
    gid: int
    home: str

    @classmethod
    def named(cls, name: str) -> OsUser:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise ConfigError(
                f"OS user '{name}' does not exist", hint="create it (e.g. install PostgreSQL) or pick another user"
            ) from None
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)

    def can_traverse(self, path: Path) -> bool:
        """Whether this user may reach ``path`` through every directory above it (mode bits only)."""
        for directory in [path, *path.parents]:
            if not directory.exists():
                continue
            info = directory.stat()
            if info.st_uid == self.uid:
                bit = 0o100
            elif info.st_gid == self.gid or self.name in _group_members(info.st_gid):
                bit = 0o010
            else:
                bit = 0o001
            if not info.st_mode & bit:
                return False
        return True


def _group_members(gid: int) -> list[str]:
    try:
        return list(grp.getgrgid(gid).gr_mem)
    except KeyError:
        return []


def server_user(name: str | None = None) -> OsUser | None:
    """Who runs server-side tools: ``name`` (default ``postgres``) when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    return OsUser.named(name or "postgres")


def chown_tree(root: Path, user: OsUser | None) -> None:
    if user is None:
        return
    os.chown(root, user.uid, user.gid)
    for parent, dirs, files in os.walk(root):
        for entry in [*dirs, *files]:
            os.lchown(os.path.join(parent, entry), user.uid, user.gid)


def user_arguments(user: OsUser | None, env: dict[str, str]) -> dict[str, Any]:
    """``subprocess.Popen`` keyword arguments that run the child as ``user``."""
    if user is None:
        return {}
    env.update(HOME=user.home, USER=user.name, LOGNAME=user.name)
    return {"user": user.uid, "group": user.gid, "extra_groups": []}


# Running tools ----------------------------------------------------------------------------------


def widen_pipe(fd: int) -> None:
    """Grow a pipe's kernel buffer to :data:`PIPE_BUFFER` where the system allows (Linux only)."""
    with contextlib.suppress(AttributeError, OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BUFFER)


class ToolProcess:
    """A running tool whose stderr is collected (first :data:`STDERR_LIMIT` bytes) by a thread.

    Use as a context manager: leaving it early (an exception) kills the tool; leaving it always
    waits for it and closes every pipe.
    """

    def __init__(
        self,
        argv: Sequence[str | Path],
        *,
        env: Mapping[str, str],
        user: OsUser | None = None,
        cwd: Path | None = None,
        stdin: int | IO[bytes] | None = subprocess.DEVNULL,
        stdout: int | IO[bytes] | None = subprocess.DEVNULL,
    ) -> None:
        self.name = Path(argv[0]).name
        child_env = child_environment(env)
        extra = user_arguments(user, child_env)
        try:
            self.process = subprocess.Popen(
                [str(arg) for arg in argv],
                stdin=stdin,
                stdout=stdout,
                stderr=subprocess.PIPE,
                env=child_env,
                cwd=cwd,
                **extra,
            )
        except OSError as exc:
            raise ToolMissingError(f"{argv[0]} cannot be run: {exc.strerror}", hint=INSTALL_HINT) from None
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                widen_pipe(pipe.fileno())
        self._stderr = bytearray()
        self._reader = threading.Thread(target=self._drain_stderr, name=f"{self.name}-stderr", daemon=True)
        self._reader.start()

    @property
    def stdout(self) -> IO[bytes]:
        assert self.process.stdout is not None
        return self.process.stdout

    @property
    def stdin(self) -> IO[bytes]:
        assert self.process.stdin is not None
        return self.process.stdin

    @property
    def stderr(self) -> str:
        return self._stderr.decode("utf-8", "replace")

    def _drain_stderr(self) -> None:
        assert self.process.stderr is not None
        while piece := self.process.stderr.read1(65536):  # type: ignore[attr-defined]  # a BufferedReader
            room = STDERR_LIMIT - len(self._stderr)
            if room > 0:
                self._stderr += piece[:room]

    def wait(self) -> int:
        """Close our end of stdin, wait for the tool and its stderr; the exit status."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()
        code = self.process.wait()
        self._reader.join()
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()

    def __enter__(self) -> ToolProcess:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None:
            self.kill()
        try:
            self.wait()
        finally:
            for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
                if pipe is not None:
                    with contextlib.suppress(BrokenPipeError):
                        pipe.close()


def run_tool(
    argv: Sequence[str | Path], *, env: Mapping[str, str], user: OsUser | None = None, cwd: Path | None = None
) -> tuple[int, str]:
    """Run a tool to completion; its exit status and stderr (stdout is discarded)."""
    with ToolProcess(argv, env=env, user=user, cwd=cwd) as tool:
        code = tool.wait()
    return code, tool.stderr


# DSNs -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PgDsn:
    """A parsed DSN without a password; ``text`` is safe to log and to pass in argv."""

    text: str
    params: Mapping[str, str]

    @property
    def dbname(self) -> str | None:
        return self.params.get("dbname") or None

    @property
    def user(self) -> str | None:
        return self.params.get("user") or None

    def where(self, environment: Mapping[str, str] | None = None) -> str:
        """``host:port`` for messages, filling in what libpq would take from the environment."""
        env = {**os.environ, **(environment or {})}
        host = self.params.get("host") or self.params.get("hostaddr") or env.get("PGHOST") or "local socket"
        port = self.params.get("port") or env.get("PGPORT") or "5432"
        return f"{host}:{port}"


def parse_dsn(dsn: str | None, *, field: str = "dsn") -> PgDsn:
    """Check a DSN (URI or ``key=value``); refuse a password in it. Raises ConfigError."""
    if not dsn or not dsn.strip():
        raise ConfigError(f"'{field}' is required", hint="e.g. postgresql://user@host:5432/dbname")
    try:
        params = conninfo_to_dict(dsn.strip())
    except psycopg.ProgrammingError as exc:
        reason = (
            re.sub(r'after "[^"]*"', "after a word", str(exc).splitlines()[0])
            if str(exc)
            else "not a valid connection string"
        )
        raise ConfigError(
            f"'{field}' is not a valid PostgreSQL DSN: {reason}", hint="e.g. postgresql://user@host:5432/dbname"
        ) from None
    if "password" in params:
        raise ConfigError(f"'{field}' contains a password", hint=PASSWORD_HINT)
    if not re.fullmatch(r"(\d+)?(,\d*)*", str(params.get("port", ""))):
        raise ConfigError(f"'{field}' has a port that is not a number", hint="e.g. postgresql://user@host:5432/dbname")
    return PgDsn(dsn.strip(), {key: str(value) for key, value in params.items()})


def connect(
    dsn: PgDsn,
    environment: Mapping[str, str] | None,
    error: type[StrongroomError],
    *,
    dbname: str | None = None,
) -> psycopg.Connection[Any]:
    """An autocommit psycopg connection; secrets come from ``environment`` (never from the DSN)."""
    extra: dict[str, Any] = {
        LIBPQ_ENVIRONMENT[key]: value for key, value in (environment or {}).items() if key in LIBPQ_ENVIRONMENT
    }
    extra = {key: value for key, value in extra.items() if key not in dsn.params or key == "password"}
    if "connect_timeout" not in dsn.params:
        extra.setdefault("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
    if dbname:
        extra["dbname"] = dbname
    where = dsn.where(environment)
    try:
        return psycopg.connect(dsn.text, autocommit=True, application_name="strongroom", **extra)
    except psycopg.Error as exc:
        raise describe_failure(str(exc), where, error, statement=False) from None


# Errors -----------------------------------------------------------------------------------------

Pattern = tuple[str, str, str]  # regular expression, message, hint; {0}... are its groups

CONNECTION_PATTERNS: list[Pattern] = [
    (
        r"connection refused",
        "cannot connect to PostgreSQL at {where}: connection refused",
        "check that the server is running and accepts TCP/IP connections on that address",
    ),
    (
        r"could not translate host name \"([^\"]+)\"|failed to resolve host '([^']+)'",
        "cannot connect to PostgreSQL at {where}: unknown host",
        "check the host name in the DSN",
    ),
    (
        r"timeout expired",
        "cannot connect to PostgreSQL at {where}: timed out",
        "check the address and any firewall between here and the server",
    ),
    (
        r"no such file or directory\s+is the server running locally",
        "cannot connect to PostgreSQL at {where}: no server socket there",
        "check the host and port in the DSN",
    ),
    (
        r"password authentication failed for user \"([^\"]+)\"",
        "PostgreSQL at {where} refused the password of user {0}",
        "check the password given in PGPASSWORD, the .pgpass file (PGPASSFILE) or the account's secrets",
    ),
    (r"no password supplied", "PostgreSQL at {where} asks for a password and none was given", PASSWORD_HINT),
    (
        r"no pg_hba\.conf entry for (?:replication connection from )?host \"[^\"]*\", user \"([^\"]+)\"",
        "PostgreSQL at {where} does not accept connections of user {0} from this host (pg_hba.conf)",
        "add a pg_hba.conf entry for this user and host (a 'replication' entry for postgres-cluster)",
    ),
    (r"role \"([^\"]+)\" does not exist", "PostgreSQL at {where} has no role {0}", "check the user in the DSN"),
    (
        r"database \"([^\"]+)\" does not exist",
        "database {0} does not exist on {where}",
        "check the database name in the DSN",
    ),
    (
        r"must be superuser or replication role|permission denied to (?:start WAL sender|use replication)"
        r"|must have replication",
        "PostgreSQL at {where} refuses replication for this user",
        "connect as a role with the REPLICATION attribute and a 'replication' line in pg_hba.conf",
    ),
    (
        r"server version mismatch.*server version: ([\d.]+).*version: ([\d.]+)",
        "the server at {where} runs PostgreSQL {0}, newer than these tools ({1})",
        f"install client tools at least as new as the server, or set {BINDIR_ENV}",
    ),
    (
        r"incompatible server version ([\d.]+)",
        "the server at {where} runs PostgreSQL {0}, newer than these tools",
        f"install client tools at least as new as the server, or set {BINDIR_ENV}",
    ),
]

STATEMENT_HINTS: list[tuple[str, str]] = [
    (
        r"role \"([^\"]+)\" does not exist",
        "restore with --create-roles or --role-map {0}=EXISTING_ROLE, or create role {0} on the target first, or "
        "restore with --no-owners/--no-privileges if it only owns or is granted objects (see 'strongroom restore "
        "start --help' for what they open)",
    ),
    (
        r"must be (?:a )?member of role \"([^\"]+)\"",
        "restore as a superuser or a member of role {0}, or with --no-owners",
    ),
    (r"must be able to SET ROLE \"([^\"]+)\"", "restore as a superuser or a member of role {0}, or with --no-owners"),
    (r"already exists", "restore into a new, empty database"),
    (r"permission denied to create database", "grant the role CREATEDB, or create the empty database first"),
    (r"must be (?:the )?owner of", "restore as the database owner or a superuser"),
    (r"no space left on device|could not extend file", "free space on the server's disk, then try again"),
    (r"permission denied for (?:table|sequence|schema)", "grant the role read access (e.g. pg_read_all_data)"),
    (
        r"single tablespace to stdout",
        "postgres-cluster cannot stream a cluster with extra tablespaces; back up its databases as 'postgres'",
    ),
]

_STATEMENT = re.compile(
    r"could not execute query|query failed|command was:|could not initiate base backup", re.IGNORECASE
)
_NOISE = re.compile(
    r"^(?:(?:pg_\w+|psql|initdb|psycopg[\w.]*)\s*:\s*)?(?:error|fatal|connection failed|warning)?:?\s*"
    r"(?:could not execute query:\s*|query failed:\s*)?(?:ERROR|FATAL)?:?\s*",
    re.IGNORECASE,
)
_SKIP = re.compile(r"^\s*(?:detail|hint|command was|query was|context|line \d+)\b|^\s*$|^\s*\^", re.IGNORECASE)


def first_meaningful_line(text: str) -> str:
    """The first line of a tool's message that says what went wrong, without prefixes."""
    lines = [line for line in text.splitlines() if not _SKIP.match(line)]
    preferred = [line for line in lines if re.search(r"error|fatal|failed|could not", line, re.IGNORECASE)]
    for line in preferred or lines:
        cleaned = _NOISE.sub("", line.strip()).strip()
        if cleaned:
            return cleaned.rstrip(".")
    return "no error message"


def describe_failure(
    text: str,
    where: str,
    error: type[StrongroomError],
    *,
    action: str | None = None,
    statement: bool | None = None,
    hint: str = "see the PostgreSQL server log for details",
) -> StrongroomError:
    """One clear line (class ``error``) for a libpq or tool message about the server at ``where``.

    Connection failures get a fixed wording; a failed statement (``statement``, by default detected
    from the tool's "could not execute query") is quoted after ``action``, with a hint when known.
    """
    flat = " ".join(text.split())
    if statement is None:
        statement = bool(_STATEMENT.search(flat))
    if not statement:
        for pattern, message, connection_hint in CONNECTION_PATTERNS:
            found = re.search(pattern, flat, re.IGNORECASE)
            if found:
                return error(message.format(*found.groups(), where=where), hint=connection_hint)
    for pattern, statement_hint in STATEMENT_HINTS:
        found = re.search(pattern, flat, re.IGNORECASE)
        if found:
            hint = statement_hint.format(*found.groups())
            break
    prefix = f"{action} failed" if action else f"PostgreSQL at {where}"
    return error(f"{prefix}: {first_meaningful_line(text)}", hint=hint)


# Ports ------------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def dsn_settings(type_name: str, settings: Mapping[str, Any], also: Sequence[str] = ()) -> dict[str, Any]:
    """The settings of the postgres resource types: exactly one ``dsn``, without a password (the
    type's own settings ``also`` are allowed here and checked by the type)."""
    unknown = sorted(set(settings) - {"dsn", *also})
    if unknown:
        takes = " and ".join(f"'{name}'" for name in ("dsn", *also))
        raise ConfigError(
            f"unknown setting(s) for {type_name}: {', '.join(unknown)}", hint=f"{type_name} takes only {takes}"
        )
    return {"dsn": parse_dsn(settings.get("dsn")).text}
