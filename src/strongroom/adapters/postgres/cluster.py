"""``postgres-cluster``: a whole PostgreSQL cluster (the "DB cluster"), physical.

Setting ``method``: ``auto`` (default) reads the data directory's files directly when the cluster
runs on this machine and the role may (``strongroom.adapters.postgres.direct``: the same tar stream, a
fraction of the CPU), else uses ``pg_basebackup``; ``direct`` refuses to fall back; ``pg_basebackup``
never reads files. The recovery point records the ``method`` used and why direct was not possible.

With pg_basebackup, backup streams
``pg_basebackup --pgdata=- --format=tar --wal-method=fetch --checkpoint=fast`` into the ``base.tar``
stream. Writing to stdout, PostgreSQL 15 puts the WAL needed for consistency (fetch
mode; streaming WAL is not possible to stdout) and the ``backup_manifest`` inside that one tar; the
adapter watches the tar go by and refuses a backup without ``backup_label``, ``backup_manifest``
or WAL. A cluster with extra tablespaces cannot be written to stdout and is refused by pg_basebackup.

Restore creates a *new* cluster named ``request.target_identifier`` (``[a-z0-9_-]``) in
``request.target`` or ``<home>/clusters/<NAME>``, which must not exist or be empty (unless
``allow_non_empty``). The tar is extracted as it streams (no member may leave the directory, no
links or devices), owned by the ``postgres`` OS user when running as root (option ``os_user``), and
configured in ``postgresql.auto.conf``: ``port`` (``request.port`` or a free one),
``listen_addresses = '127.0.0.1'``, a private ``unix_socket_directories`` and ``archive_mode = off``
(a copy must never archive into its source's WAL archive). The cluster keeps the source's
``pg_hba.conf`` and roles (like an Aurora restore keeps its master user); when the source kept its
configuration outside the data directory (Debian), minimal files are written (``pg_hba.conf``:
local ``peer``, 127.0.0.1 ``scram-sha-256``).

A restore never runs what the backup carries (``strongroom.adapters.postgres.restored_conf``): unless the
request's option ``trust_restored_config`` is set, settings that run commands or load code are
commented out of the configuration files, the same settings are overridden on the server's command
line, and a data directory holding a program (an ELF file) is refused. The job result lists what was
disabled (``disabled_on_restore``). The server gets a minimal environment (``server_environment``:
no Strongroom secret, no ``PGPASSWORD``). It is then started with
``pg_ctl -D DIR -l DIR/../NAME.log -o "-c ..." -w start`` (crash recovery replays the fetched WAL) and
checked with ``SELECT 1`` as the source's backup user. A failed restore stops what it started and
removes the directory it created; the log stays.

The restored cluster keeps running. Stop it with ``pg_ctl -D DIR stop`` run as the ``postgres`` OS
user (as root: ``runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D DIR stop``); the
result's ``details["stop_command"]`` is that command.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

import psycopg

from strongroom.adapters.base import (
    BackupContext,
    Endpoint,
    ResourceAdapter,
    ResourceSpec,
    RestoreContext,
    RestoreForecast,
    RestoreRequest,
    RestoreResult,
    RunbookRestore,
    register_adapter,
)
from strongroom.adapters.postgres import direct, restored_conf, tar
from strongroom.adapters.postgres.recovery import (
    RecoveryRequest,
    recovery_overrides,
    stop_prefetch,
    wait_for_promotion,
)
from strongroom.adapters.postgres.tools import (
    OsUser,
    PgDsn,
    ToolProcess,
    chown_tree,
    connect,
    describe_failure,
    dsn_settings,
    find_tool,
    free_port,
    parse_dsn,
    port_is_free,
    run_tool,
    server_environment,
    server_user,
    tool_environment,
    tool_version,
)
from strongroom.errors import ConfigError, IntegrityError, SourceError, TargetError, TargetNotEmptyError
from strongroom.vault.reader import RecoveryPointReader

METHODS = ("auto", "direct", "pg_basebackup")
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
STREAM = "base.tar"
BLOCK = 512
CAPTURED_FILES = {"backup_label": 4096, "PG_VERSION": 64}
START_TIMEOUT = "300"  # seconds pg_ctl waits for crash recovery to finish
START_ATTEMPTS = 3
FATAL = re.compile(r"\b(?:FATAL|PANIC):\s*(.*)")
LOG_TAIL_LIMIT = 1 << 20  # bytes of server log read to explain a failed start
SOCKET_PATH_LIMIT = 90  # unix socket paths are limited to ~107 bytes including ".s.PGSQL.NNNNN"
MINIMAL_HBA = """\
# Written by Strongroom: the source cluster kept its pg_hba.conf outside its data directory.
local   all          all                     peer
local   replication  all                     peer
host    all          all   127.0.0.1/32      scram-sha-256
host    replication  all   127.0.0.1/32      scram-sha-256
"""
SERVER_INFO = """
SELECT current_setting('server_version'), current_setting('server_version_num')::int, current_user,
       (SELECT system_identifier FROM pg_control_system())::text,
       (SELECT count(*) FROM pg_database WHERE datallowconn)
"""


@register_adapter
class PostgresClusterAdapter(ResourceAdapter):
    type_name = "postgres-cluster"
    description = "A whole PostgreSQL cluster, physical (pg_basebackup; restore = a new cluster, new identifier)"
    supports_runbooks = True

    def validate_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        normalised = dsn_settings(self.type_name, settings, also=("method",))
        method = settings.get("method", "auto")
        if method not in METHODS:
            raise ConfigError(
                f"unknown method '{method}' for {self.type_name}", hint=f"choose one of {', '.join(METHODS)}"
            )
        return normalised if method == "auto" else {**normalised, "method": method}

    # Backup -------------------------------------------------------------------------------------
    def backup(self, resource: ResourceSpec, ctx: BackupContext) -> dict[str, Any]:
        settings = self.validate_settings(resource.settings)
        dsn, method = parse_dsn(settings["dsn"]), settings.get("method", "auto")
        with connect(dsn, ctx.environment, SourceError) as conn:
            info = cluster_info(conn, dsn, ctx.environment)
            local = direct.eligibility(conn) if method != "pg_basebackup" else "method: pg_basebackup"
            if isinstance(local, direct.LocalCluster):
                return self._direct_backup(conn, local, resource, ctx, info)
        if method == "direct":
            raise SourceError(
                f"cannot back up {resource.id} directly: {local}", hint="fix that, or set method: auto or pg_basebackup"
            )
        return {**self._basebackup(dsn, resource, ctx, info), "method": "pg_basebackup", "direct_unavailable": local}

    def _direct_backup(
        self,
        conn: Any,
        local: direct.LocalCluster,
        resource: ResourceSpec,
        ctx: BackupContext,
        info: dict[str, Any],
    ) -> dict[str, Any]:
        watchers: list[TarWatcher] = []

        def consume(stream: io.RawIOBase) -> None:
            watchers.append(TarWatcher(stream))  # type: ignore[arg-type]
            ctx.writer.store_stream(STREAM, watchers[0])

        try:
            done = direct.run_direct_backup(conn, local, f"strongroom {resource.id}", consume)
        except psycopg.Error as exc:
            raise describe_failure(str(exc), info["server"], SourceError, action="direct backup") from None
        extra = {"vanished_during_backup": done.skipped[:100]} if done.skipped else {}
        return {**info, **watchers[0].summary(), **extra, "method": "direct", "data_directory": str(local.data_dir),
                "format": "tar"}  # fmt: skip

    def _basebackup(
        self, dsn: PgDsn, resource: ResourceSpec, ctx: BackupContext, info: dict[str, Any]
    ) -> dict[str, Any]:
        env = tool_environment(ctx.environment)
        pg_basebackup = find_tool("pg_basebackup", env)
        argv: list[str | Path] = [
            pg_basebackup, "--pgdata=-", "--format=tar", "--wal-method=fetch", "--checkpoint=fast",
            "--no-password", f"--label=strongroom {resource.id}", f"--dbname={dsn.text}",
        ]  # fmt: skip
        with ToolProcess(argv, env=env, stdout=subprocess.PIPE) as tool:
            watcher = TarWatcher(tool.stdout)
            ctx.writer.store_stream(STREAM, watcher)
            code = tool.wait()
        if code != 0:
            raise describe_failure(tool.stderr, info["server"], SourceError, action="pg_basebackup")
        return {**info, **watcher.summary(), "pg_basebackup_version": tool_version(pg_basebackup), "format": "tar"}

    # Restore ------------------------------------------------------------------------------------
    def restore(self, metadata: dict[str, Any], ctx: RestoreContext, request: RestoreRequest) -> RestoreResult:
        plan = plan_restore(metadata, ctx, request)
        plan.check_free()
        created = not plan.data_dir.exists()
        try:
            plan.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            extract_base_tar(ctx, plan.data_dir)
            if not plan.trusted:
                refuse_untrusted_content(plan.data_dir)
            configure(plan)
            if plan.recovery is not None:
                configure_recovery(plan, metadata)
            start(plan)
            if plan.recovery is not None:
                finish_recovery(plan, ctx)
            check_answers(plan, ctx)
        except BaseException:
            abandon(plan, remove=created or plan.was_empty)
            raise
        return RestoreResult(target=plan.name, details=plan.details())

    def restore_target_in_use(self, request: RestoreRequest, home: Path) -> str | None:
        name = request.target_identifier or ""
        data_dir = data_directory(request, home)
        if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
            return f"cluster identifier {name} is already in use at {data_dir}"
        if request.port and not port_is_free(request.port):
            return f"port {request.port} on 127.0.0.1 is already in use"
        return None

    def forecast_restore(
        self, request: RestoreRequest, reader: RecoveryPointReader | None, metadata: dict[str, Any]
    ) -> RestoreForecast:
        from strongroom.adapters.postgres.forecast import cluster_forecast  # it builds on this module

        return cluster_forecast(request, metadata)

    def runbook_restore_request(
        self, step: RunbookRestore, identifier: str, original: ResourceSpec | None
    ) -> RestoreRequest:
        options: dict[str, Any] = {"jobs": step.jobs} if step.jobs else {}
        if step.trust_restored_config:
            options["trust_restored_config"] = True
        return RestoreRequest(step.target, identifier, step.port, False, options)

    def restored_endpoint(self, result: dict[str, Any]) -> Endpoint:
        return Endpoint(
            host="127.0.0.1",
            port=result["port"],
            dsn=result["dsn"],
            dbname="postgres",
            login=parse_dsn(result["dsn"]).user,
            extra={
                "data_directory": result["data_directory"],
                "stop_command": result["stop_command"],
                "log": result["log"],
                "disabled_on_restore": result.get("disabled_on_restore") or [],
            },
        )

    def restore_location(self, request: RestoreRequest, home: Path) -> dict[str, Any]:
        return {"data_directory": str(data_directory(request, home))}

    def restore_caveat(self, request: RestoreRequest) -> str:
        if request.options.get("trust_restored_config"):
            return ", trusting its configuration (its commands and libraries run here)"
        return ""

    def discard_restore(self, request: RestoreRequest, home: Path, details: dict[str, Any]) -> list[str]:
        """Stop the restored cluster if it runs; remove its data directory, log and socket directory."""
        name, data_dir = request.target_identifier or "", data_directory(request, home)
        removed = []
        if (data_dir / "postmaster.pid").exists():
            major = details.get("server_major")
            pg_ctl = find_tool("pg_ctl", tool_environment(), major=int(major) if major else None)
            user = server_user(request.options.get("os_user"))
            argv: list[str | Path] = [pg_ctl, "-D", data_dir, "-m", "fast", "-w", "stop"]
            run_tool(argv, env=server_environment(), user=user, cwd=Path("/"))
            removed.append(f"stopped cluster {name}")
        if data_dir.exists():
            shutil.rmtree(data_dir, ignore_errors=True)
            removed.append(f"removed {data_dir}")
        (data_dir.parent / f"{name}.log").unlink(missing_ok=True)
        sockets = socket_directory(data_dir, name)
        if sockets != Path("/tmp"):
            shutil.rmtree(sockets, ignore_errors=True)
        return removed


# Backup helpers ---------------------------------------------------------------------------------


def cluster_info(conn: psycopg.Connection[Any], dsn: PgDsn, environment: Any) -> dict[str, Any]:
    row = conn.execute(SERVER_INFO).fetchone()
    assert row is not None
    version, version_num, user, system_identifier, databases = row
    return {
        "server_version": version,
        "server_version_num": version_num,
        "server_major": version_num // 10000,
        "system_identifier": system_identifier,
        "user": user,
        "databases": databases,
        "server": dsn.where(environment),
    }


class TarWatcher(io.RawIOBase):
    """Passes a tar stream through unchanged while noting its member names and a few small files."""

    def __init__(self, source: IO[bytes]) -> None:
        self._source = source
        self._header = bytearray()
        self._remaining = 0  # bytes of member data (with padding) still to pass
        self._capture: tuple[str, int] | None = None
        self.members: list[str] = []
        self.files: dict[str, bytearray] = {}
        self.total = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self._source.readinto(buffer)  # type: ignore[attr-defined]
        if count:
            self._feed(memoryview(buffer)[:count])
            self.total += count
        return count or 0

    def _feed(self, data: memoryview) -> None:
        while data:
            if self._remaining:
                step = min(self._remaining, len(data))
                self._keep(data[:step])
                self._remaining -= step
                data = data[step:]
                continue
            step = min(BLOCK - len(self._header), len(data))
            self._header += data[:step]
            data = data[step:]
            if len(self._header) == BLOCK:
                self._parse_header(bytes(self._header))
                self._header.clear()

    def _keep(self, piece: memoryview) -> None:
        if self._capture is None:
            return
        name, size = self._capture
        held = self.files[name]
        held += piece[: max(0, size - len(held))]

    def _parse_header(self, header: bytes) -> None:
        self._capture = None
        if not header.strip(b"\0"):
            return  # end-of-archive blocks
        name = header[0:100].split(b"\0", 1)[0].decode("utf-8", "replace")
        prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "replace") if header[257:262] == b"ustar" else ""
        name = normalise_member(f"{prefix}/{name}" if prefix else name)
        size = tar_number(header[124:136])
        self._remaining = -(-size // BLOCK) * BLOCK
        self.members.append(name)
        if name in CAPTURED_FILES and size <= CAPTURED_FILES[name]:
            self.files[name] = bytearray()
            self._capture = (name, size)

    def summary(self) -> dict[str, Any]:
        """What the manifest records; raises SourceError when the tar is not a complete base backup."""
        wal = [name for name in self.members if re.fullmatch(r"pg_wal/[0-9A-F]{24}", name)]
        for needed in ("backup_label", "backup_manifest", "PG_VERSION", "global/pg_control"):
            if needed not in self.members:
                raise SourceError(
                    f"pg_basebackup's tar has no {needed}", hint="use pg_basebackup of PostgreSQL 13 or newer"
                )
        if not wal:
            raise SourceError("pg_basebackup's tar holds no WAL", hint="the backup needs --wal-method=fetch")
        label = parse_backup_label(self.files.get("backup_label", b"").decode("utf-8", "replace"))
        return {
            "pg_version": self.files.get("PG_VERSION", b"").decode().strip(),
            "wal_segments": len(wal),
            "files": len(self.members),
            "tar_bytes": self.total,
            "backup_label": label,
        }


def tar_number(field_bytes: bytes) -> int:
    if field_bytes[0] & 0x80:  # GNU base-256 for big sizes
        return int.from_bytes(field_bytes[1:], "big")
    digits = field_bytes.split(b"\0", 1)[0].strip()
    return int(digits, 8) if digits else 0


def normalise_member(name: str) -> str:
    parts = [part for part in PurePosixPath(name).parts if part not in (".", "")]
    return "/".join(parts)


def parse_backup_label(text: str) -> dict[str, str]:
    keys = {"START WAL LOCATION": "start_wal_location", "CHECKPOINT LOCATION": "checkpoint_location",
            "START TIME": "start_time", "LABEL": "label", "START TIMELINE": "start_timeline"}  # fmt: skip
    label = {}
    for line in text.splitlines():
        key, _, value = line.partition(": ")
        if key in keys:
            label[keys[key]] = value.strip()
    return label


# Restore helpers --------------------------------------------------------------------------------


@dataclass
class RestorePlan:
    name: str
    data_dir: Path
    port: int
    socket_dir: Path
    log_file: Path
    user: OsUser | None
    pg_ctl: Path
    env: dict[str, str]
    login: str
    major: int | None = None
    trusted: bool = False  # trust_restored_config: start with the backup's configuration as it is
    was_empty: bool = False
    port_picked: bool = False  # chosen here (not requested): may be re-picked if taken before the start
    started: bool = False
    made_socket_dir: bool = False
    notes: list[str] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)  # file:line: setting commented out before the start
    overrides: dict[str, str] = field(default_factory=dict)  # -c settings on the server's command line
    recovery: RecoveryRequest | None = None  # a point-in-time restore (adapters/postgres/recovery.py)
    recovered: dict[str, Any] = field(default_factory=dict)  # where recovery stopped, the new timeline
    log_start: int = 0

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.login}@127.0.0.1:{self.port}/postgres"

    def check_free(self) -> None:
        """Refuse a requested port in use (a port picked here is re-picked if taken before the start)."""
        if not self.port_picked and not port_is_free(self.port):
            raise TargetError(
                f"port {self.port} on 127.0.0.1 is already in use", hint="pass another port, or none to pick a free one"
            )

    def stop_command(self) -> str:
        command = [str(self.pg_ctl), "-D", str(self.data_dir), "stop"]
        if self.user is not None:
            command = ["runuser", "-u", self.user.name, "--", *command]
        return shlex.join(command)

    def details(self) -> dict[str, Any]:
        return {
            "data_directory": str(self.data_dir),
            "port": self.port,
            "dsn": self.dsn,
            "log": str(self.log_file),
            "socket_directory": str(self.socket_dir),
            "os_user": self.user.name if self.user else None,
            "stop_command": self.stop_command(),
            "notes": self.notes,
            "trusted_restored_config": self.trusted,
            "disabled_on_restore": self.disabled,
            **({"recovery": self.recovered} if self.recovery is not None else {}),
        }


def plan_restore(metadata: dict[str, Any], ctx: RestoreContext, request: RestoreRequest) -> RestorePlan:
    name = request.target_identifier
    if not name or not NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            f"a new cluster identifier is required (got {name!r})" if name else "a new cluster identifier is required",
            hint="give a name of lowercase letters, digits, '-' and '_', e.g. --target-identifier mavis-restored",
        )
    data_dir = data_directory(request, ctx.home)
    was_empty = check_directory(name, data_dir, request.allow_non_empty)
    user = server_user(request.options.get("os_user"))
    if user is not None and not user.can_traverse(data_dir.parent):
        raise TargetError(
            f"the {user.name} OS user cannot reach {data_dir} (a directory above it is not searchable)",
            hint="choose a data directory the postgres user can reach, e.g. under /var/lib/strongroom",
        )
    major = int(metadata["server_major"]) if metadata.get("server_major") else None
    pg_ctl = find_tool("pg_ctl", tool_environment(ctx.environment), major=major)
    port = request.port or free_port()
    trusted = bool(request.options.get("trust_restored_config"))
    return RestorePlan(
        name, data_dir, port, socket_directory(data_dir, name), data_dir.parent / f"{name}.log",
        user, pg_ctl, server_environment(), str(metadata.get("user") or "postgres"), major, trusted, was_empty,
        port_picked=not request.port, recovery=RecoveryRequest.from_options(request.options),
    )  # fmt: skip


def data_directory(request: RestoreRequest, home: Path) -> Path:
    if request.target:
        return Path(request.target).expanduser().absolute()
    return home / "clusters" / (request.target_identifier or "")


def check_directory(name: str, data_dir: Path, allow_non_empty: bool) -> bool:
    """Refuse a used data directory; True when it exists and is empty."""
    if not data_dir.exists():
        return False
    if not data_dir.is_dir():
        raise TargetError(f"{data_dir} exists and is not a directory", hint="choose another target directory")
    empty = not any(data_dir.iterdir())
    if not empty and not allow_non_empty:
        raise TargetNotEmptyError(
            f"cluster identifier {name} is already in use at {data_dir}",
            hint="choose a new identifier (or target directory), or pass --allow-non-empty",
        )
    if (data_dir / "postmaster.pid").exists():
        raise TargetError(f"a PostgreSQL server is using {data_dir}", hint="stop it, or choose a new identifier")
    return empty


def socket_directory(data_dir: Path, name: str) -> Path:
    near = data_dir.parent / f"{name}.sockets"
    return near if len(str(near)) <= SOCKET_PATH_LIMIT else Path("/tmp")


def extract_base_tar(ctx: RestoreContext, data_dir: Path) -> None:
    """Unpack the base tar as it streams (``tar``: nothing may land outside ``data_dir``)."""

    def chunks() -> Iterator[bytes]:
        for chunk in ctx.reader.iter_stream(STREAM):
            if ctx.progress:
                ctx.progress(len(chunk))
            yield chunk

    members = set(tar.extract(chunks(), data_dir, what=f"the recovery point's {STREAM}"))
    missing = [name for name in ("PG_VERSION", "global/pg_control", "backup_label") if name not in members]
    if missing:
        raise IntegrityError(f"the recovery point's {STREAM} has no {', '.join(missing)}", hint="")


def refuse_untrusted_content(data_dir: Path) -> None:
    """Refuse what a base backup of ours never holds and what would act outside the data directory: a
    program (one in a backup is there to be loaded, ``restored_conf``) or a non-empty ``tablespace_map`` (recovery
    would turn its lines into links to any directory and write there; clusters with tablespaces are
    refused at backup)."""
    trust = "restore it only if you trust its source, with --trust-restored-config"
    found = restored_conf.programs(data_dir)
    if found:
        raise IntegrityError(
            f"the recovery point's {STREAM} holds a program (an ELF file): {', '.join(found)}",
            hint=f"a PostgreSQL data directory holds none; {trust}",
        )
    tablespace_map = data_dir / "tablespace_map"
    if tablespace_map.exists() and tablespace_map.stat().st_size:  # pg_basebackup writes an empty one
        raise IntegrityError(
            f"the recovery point's {STREAM} holds a tablespace_map (tablespaces outside the data directory)",
            hint=f"Strongroom's backups never do; {trust}",
        )


def configure(plan: RestorePlan) -> None:
    data_dir = plan.data_dir
    for stale in ("postmaster.pid", "postmaster.opts", "standby.signal", "recovery.signal"):
        (data_dir / stale).unlink(missing_ok=True)
    for name, content in (
        ("postgresql.conf", "# Written by Strongroom\n"),
        ("pg_hba.conf", MINIMAL_HBA),
        ("pg_ident.conf", ""),
    ):
        if not (data_dir / name).exists():
            (data_dir / name).write_text(content)
            plan.notes.append(f"{name} was not in the backup; a minimal one was written")
    settings = {
        "port": str(plan.port),
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": str(plan.socket_dir),
        "archive_mode": "off",
    }
    if not plan.trusted:
        plan.disabled = restored_conf.neutralise(data_dir)
        plan.overrides = restored_conf.server_overrides(data_dir, plan.major, plan.disabled)
        if "ssl" in plan.overrides:
            settings["ssl"] = plan.overrides["ssl"]
    plan.notes += restored_conf.hba_warnings(data_dir)
    append_settings(data_dir, settings)
    data_dir.chmod(0o700)
    if not plan.socket_dir.exists():
        plan.socket_dir.mkdir(mode=0o700)
        plan.made_socket_dir = True
    plan.log_file.touch()
    chown_tree(data_dir, plan.user)
    for path in (plan.socket_dir, plan.log_file):
        if plan.user is not None and path != Path("/tmp"):
            os.chown(path, plan.user.uid, plan.user.gid)


def configure_recovery(plan: RestorePlan, metadata: dict[str, Any]) -> None:
    """recovery.signal and the settings that replay archived WAL to the target, then promote."""
    assert plan.recovery is not None
    label = metadata.get("backup_label") or {}
    settings = plan.recovery.settings(int(label.get("start_timeline") or 1))
    append_settings(plan.data_dir, settings)
    if plan.overrides:  # ours win over the restored files too (restored_conf: the backup may be forged)
        plan.overrides.update(recovery_overrides(settings))
    signal = plan.data_dir / "recovery.signal"
    signal.touch()
    credential = plan.recovery.credential_file
    spool = [plan.recovery.spool] if plan.recovery.spool is not None else []
    for path in (signal, credential, *spool):
        if plan.user is not None:  # never through a link someone put in its place
            os.chown(path, plan.user.uid, plan.user.gid, follow_symlinks=False)
    plan.log_start = plan.log_file.stat().st_size
    plan.recovered = {"target": plan.recovery.target, "value": plan.recovery.value,
                      "timeline_requested": settings["recovery_target_timeline"]}  # fmt: skip


def finish_recovery(plan: RestorePlan, ctx: RestoreContext) -> None:
    """Wait for the promotion; then archive the new timeline's history file (docs/pitr.md, timelines)."""
    assert plan.recovery is not None
    dsn = parse_dsn(plan.dsn)
    reached = wait_for_promotion(
        lambda: connect(dsn, ctx.environment, TargetError), plan.data_dir / "postmaster.pid", plan.log_file,
        plan.log_start,
    )  # fmt: skip
    plan.recovered.update(reached)
    if plan.recovery.spool is not None:  # recovery is over: nothing more to prefetch
        plan.recovered["wal_prefetched"] = stop_prefetch(plan.recovery.spool)
    history = f"pg_wal/{int(reached['timeline']):08X}.history"
    if (plan.data_dir / history).exists():
        argv: list[str | Path] = [*shlex.split(plan.recovery.wal_command), "wal", "push", "--config",
                                  plan.recovery.credential_file, history]  # fmt: skip
        code, stderr = run_tool(argv, env=plan.env, user=plan.user, cwd=plan.data_dir)
        plan.recovered["history_archived"] = code == 0
        if code != 0:
            plan.notes.append(f"the new timeline's history file was not archived: {stderr.strip()[:300]}")


def append_settings(data_dir: Path, settings: dict[str, str]) -> None:
    """Add settings to ``postgresql.auto.conf``; later lines win over earlier ones and ``postgresql.conf``."""
    with (data_dir / "postgresql.auto.conf").open("a") as conf:
        conf.write("# Strongroom restore\n")
        conf.writelines(f"{key} = '{escape_setting(value)}'\n" for key, value in settings.items())


def escape_setting(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "''")


def start(plan: RestorePlan) -> None:
    """``pg_ctl start``; if a port picked here was taken meanwhile (another server started), pick another."""
    for attempt in range(START_ATTEMPTS):
        argv: list[str | Path] = [plan.pg_ctl, "-D", plan.data_dir, "-l", plan.log_file, "-w", "-t", START_TIMEOUT]
        if plan.overrides:  # pg_ctl hands -o to postgres through the shell: each word quoted
            words = [word for key, value in plan.overrides.items() for word in ("-c", f"{key}={value}")]
            argv += ["-o", shlex.join(words)]
        argv.append("start")
        log_start = plan.log_file.stat().st_size
        code, stderr = run_tool(argv, env=plan.env, user=plan.user, cwd=plan.data_dir)
        plan.started = (plan.data_dir / "postmaster.pid").exists()
        if code == 0:
            return
        logged = read_log(plan.log_file, log_start)
        if plan.port_picked and attempt + 1 < START_ATTEMPTS and "Address already in use" in logged:
            plan.port = free_port()
            append_settings(plan.data_dir, {"port": str(plan.port)})
            continue
        reasons = [found.group(1) for line in logged.splitlines() if (found := FATAL.search(line))]
        action, hint = f"starting cluster {plan.name}", f"see {plan.log_file}"
        raise describe_failure(
            "\n".join(reasons) or stderr, f"127.0.0.1:{plan.port}", TargetError, action=action, hint=hint
        )


def read_log(log_file: Path, offset: int) -> str:
    """What the server logged after ``offset`` (at most :data:`LOG_TAIL_LIMIT` bytes)."""
    try:
        with log_file.open("rb") as log:
            log.seek(offset)
            return log.read(LOG_TAIL_LIMIT).decode("utf-8", "replace")
    except OSError:
        return ""


def check_answers(plan: RestorePlan, ctx: RestoreContext) -> None:
    dsn = parse_dsn(plan.dsn)
    with connect(dsn, ctx.environment, TargetError) as conn:
        row = conn.execute("SELECT 1").fetchone()
    if not row or row[0] != 1:
        raise TargetError(f"cluster {plan.name} started but does not answer queries", hint=f"see {plan.log_file}")


def abandon(plan: RestorePlan, *, remove: bool) -> None:
    """Undo a failed restore: stop the server if it runs, remove the directory if this restore made it."""
    if plan.started or (plan.data_dir / "postmaster.pid").exists():
        argv: list[str | Path] = [plan.pg_ctl, "-D", plan.data_dir, "-m", "immediate", "-w", "stop"]
        run_tool(argv, env=plan.env, user=plan.user, cwd=Path("/"))
    if plan.made_socket_dir:
        shutil.rmtree(plan.socket_dir, ignore_errors=True)
    if remove:
        shutil.rmtree(plan.data_dir, ignore_errors=True)
        if plan.was_empty:
            plan.data_dir.mkdir(mode=0o700, exist_ok=True)  # it was there, empty, before this restore
