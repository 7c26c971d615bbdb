"""What a restored cluster may not bring along: configuration that runs commands or loads code.

A recovery point can come from a compromised source (a copy in the destination account is exactly
what is restored after such a compromise), so a restored data directory is untrusted input. Before
its server first starts, and unless the operator trusts the point (``trust_restored_config``):

- :func:`neutralise` comments out, in ``postgresql.conf`` and ``postgresql.auto.conf``, every setting
  that runs a command (any name ending in ``_command``), loads a library (``*_preload_libraries``,
  ``dynamic_library_path``, ``jit_provider``, ``archive_library``), archives (``archive_mode``), reads
  configuration from elsewhere (``include``, ``include_if_exists``, ``include_dir``, ``config_file``,
  ``hba_file``, ``ident_file``, ``data_directory``) or writes elsewhere (``external_pid_file``), and
  every file setting (``ssl_*_file``, ``log_directory`` ...) that points outside the data directory;
  ``include*`` lines of ``pg_hba.conf`` and ``pg_ident.conf`` too. A disabled line keeps its text
  after ``# strongroom: disabled on restore:``. The decision needs only each line's first word
  (PostgreSQL takes one setting per line and the setting's name first, case-insensitively), so
  quoting tricks in values cannot hide a setting; values are parsed only to keep in-directory files.
- :func:`server_overrides` gives ``-c`` settings for the server's command line, which win over every
  configuration file: whatever the rewrite might have missed is still overridden.
- :func:`programs` finds executables (ELF files) in the data directory: a data directory never holds
  one, and a library shipped inside the backup could be loaded through settings kept in the
  catalog itself (``ALTER ROLE ... SET session_preload_libraries``), which no file rewrite reaches.
- :func:`hba_warnings` says when ``pg_hba.conf`` lets TCP connections in without a password.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from strongroom.errors import IntegrityError

CONFIG_FILES = ("postgresql.conf", "postgresql.auto.conf")
AUTH_FILES = ("pg_hba.conf", "pg_ident.conf")
MARKER = "# strongroom: disabled on restore: "
# A line's first word as PostgreSQL's configuration lexer reads it (ID or ID.ID; bytes >= 0x80 are letters).
_ID = rb"[A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*"
FIRST_WORD = re.compile(rb"[ \t\r]*(" + _ID + rb"(?:\." + _ID + rb")?)")
VALUE = re.compile(rb"[ \t\r]*=?[ \t\r]*(?:'((?:[^'\\\n]|''|\\.)*)'|([^\s#']*))[ \t\r]*(?:#.*)?$")
INCLUDES = frozenset({"include", "include_if_exists", "include_dir"})
ALWAYS_DISABLED = INCLUDES | frozenset({
    "archive_mode", "archive_library", "shared_preload_libraries", "session_preload_libraries",
    "local_preload_libraries", "dynamic_library_path", "jit_provider", "data_directory", "config_file",
    "hba_file", "ident_file", "external_pid_file",
})  # fmt: skip
# File settings kept only when they name a file inside the data directory.
PATH_SETTINGS = frozenset({
    "ssl_cert_file", "ssl_key_file", "ssl_ca_file", "ssl_crl_file", "ssl_crl_dir", "ssl_dh_params_file",
    "krb_server_keyfile", "log_directory", "log_filename",
})  # fmt: skip
ELF_MAGIC = b"\x7fELF"
HBA_HOST_TYPES = ("host", "hostssl", "hostnossl", "hostgssenc", "hostnogssenc")
CONFIG_SIZE_LIMIT = 16 << 20  # bytes: a configuration file read whole (a forged one must not exhaust memory)


def dangerous(name: str, line: bytes, data_dir: Path) -> bool:
    """Whether the setting ``name`` on ``line`` may run a command, load code or reach outside ``data_dir``."""
    if name.endswith("_command") or name in ALWAYS_DISABLED:
        return True
    if name in PATH_SETTINGS:
        return not _inside(_value(line), data_dir)
    return False


def _value(line: bytes) -> str | None:
    """The setting's value (None when it cannot be read simply: then it is treated as dangerous)."""
    word = FIRST_WORD.match(line)
    found = VALUE.match(line, word.end()) if word else None
    if not found:
        return None
    quoted, bare = found.group(1), found.group(2)
    text = quoted.replace(b"''", b"'") if quoted is not None else bare or b""
    if b"\\" in text:
        return None
    return text.decode("utf-8", "replace")


def _inside(value: str | None, data_dir: Path) -> bool:
    if value is None:
        return False
    if value == "":
        return True
    path = Path(os.path.normpath(value if os.path.isabs(value) else data_dir / value))
    return ".." not in Path(value).parts and (path == data_dir or data_dir in path.parents)


def neutralise(data_dir: Path) -> list[str]:
    """Comment out what may run or load code in the configuration files; ``file:line: name`` of each."""
    disabled: list[str] = []
    for name in CONFIG_FILES:
        disabled += _rewrite(data_dir, name, lambda setting, line: dangerous(setting, line, data_dir))
    for name in AUTH_FILES:
        disabled += _rewrite(data_dir, name, lambda setting, _line: setting in INCLUDES)
    return disabled


def _rewrite(data_dir: Path, file_name: str, disable: Callable[[str, bytes], bool]) -> list[str]:
    path = data_dir / file_name
    if not path.is_file():
        return []
    if path.stat().st_size > CONFIG_SIZE_LIMIT:
        raise IntegrityError(
            f"the restored {file_name} is larger than {CONFIG_SIZE_LIMIT >> 20} MiB",
            hint="a configuration file never is; restore it only if you trust its source, with --trust-restored-config",
        )
    lines = path.read_bytes().split(b"\n")
    disabled = []
    for number, line in enumerate(lines, 1):
        word = FIRST_WORD.match(line)
        if not word:
            continue
        setting = word.group(1).decode("utf-8", "replace").lower()
        if disable(setting, line):
            lines[number - 1] = MARKER.encode() + line
            disabled.append(f"{file_name}:{number}: {setting}")
    if disabled:
        temporary = path.with_name(f".{file_name}.strongroom")
        temporary.write_bytes(b"\n".join(lines))
        os.replace(temporary, path)
    return disabled


def server_overrides(data_dir: Path, major: int | None, disabled: list[str]) -> dict[str, str]:
    """``-c`` settings for the server's command line: they win over every file, whatever it says."""
    overrides = {
        "data_directory": str(data_dir),
        "config_file": str(data_dir / "postgresql.conf"),
        "hba_file": str(data_dir / "pg_hba.conf"),
        "ident_file": str(data_dir / "pg_ident.conf"),
        "external_pid_file": "",
        "archive_mode": "off",
        "archive_command": "",
        "restore_command": "",
        "archive_cleanup_command": "",
        "recovery_end_command": "",
        "ssl_passphrase_command": "",
        "shared_preload_libraries": "",
        "session_preload_libraries": "",
        "local_preload_libraries": "",
        "dynamic_library_path": "$libdir",
        "jit_provider": "llvmjit",
        "log_directory": "log",
        "log_filename": "postgresql-%Y-%m-%d_%H%M%S.log",
        "unix_socket_group": "",
        "unix_socket_permissions": "0700",
    }
    if major is None or major >= 15:
        overrides["archive_library"] = ""
    if any(entry.split(": ", 1)[1].startswith(("ssl_", "krb_")) for entry in disabled):
        overrides["ssl"] = "off"  # its key or passphrase came from outside: without them it cannot start
    return overrides


def programs(data_dir: Path, limit: int = 5) -> list[str]:
    """Relative paths of ELF files (programs, shared libraries) under ``data_dir``, at most ``limit``."""
    found: list[str] = []
    for parent, _dirs, files in os.walk(data_dir):
        for name in files:
            path = os.path.join(parent, name)
            try:
                with open(path, "rb") as handle:
                    head = handle.read(len(ELF_MAGIC))
            except OSError:
                continue
            if head == ELF_MAGIC:
                found.append(os.path.relpath(path, data_dir))
                if len(found) >= limit:
                    return found
    return found


def hba_warnings(data_dir: Path) -> list[str]:
    """Notes about the restored ``pg_hba.conf`` that open the cluster to every local user."""
    path = data_dir / "pg_hba.conf"
    if not path.is_file() or path.stat().st_size > CONFIG_SIZE_LIMIT:
        return []
    trusted = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if words and words[0].lower() in HBA_HOST_TYPES and "trust" in words[4:]:
            trusted.append(str(number))
    if not trusted:
        return []
    return [
        f"pg_hba.conf (from the backup) trusts TCP connections without a password (line {', '.join(trusted)}):"
        " any user of this machine can connect to the restored cluster on 127.0.0.1 as those roles"
    ]
