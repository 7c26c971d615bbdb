"""The rewrite of a restored cluster's configuration files (``adapters/postgres/restored_conf.py``) on real files:
every spelling PostgreSQL's parser accepts for a setting that runs or loads code is caught; settings
that do neither, and files inside the data directory, are kept byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from strongroom.adapters.postgres import restored_conf

KEPT = """\
# a comment mentioning ssl_passphrase_command = 'x'
shared_buffers = '128MB'		# include 'not-an-include'
port 5432
work_mem='4MB'
ssl_cert_file = 'server.crt'
ssl_key_file = '{data}/private/server.key'
log_directory = 'pg_log'
primary_conninfo = 'host=elsewhere password=not-reported'
"""


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.mark.parametrize("line", [
    "ssl_passphrase_command = 'touch /tmp/x; echo pw'",
    "SSL_Passphrase_Command='x'",
    "   archive_command 'x'",
    "\trestore_command = x",
    "recovery_end_command = 'x' # trailing comment",
    "archive_cleanup_command = ''",
    "some_future_command = 'x'",
    "shared_preload_libraries = 'auto_explain'",
    "session_preload_libraries='./base/evil'",
    "local_preload_libraries = 'x'",
    "dynamic_library_path = '/tmp'",
    "jit_provider = '../../../../tmp/evil'",
    "archive_library = 'x'",
    "archive_mode = on",
    "include '/etc/evil.conf'",
    "INCLUDE_IF_EXISTS = 'evil.conf'",
    "include_dir 'conf.d'",
    "data_directory = '/var/lib/other'",
    "hba_file = '/tmp/hba'",
    "ident_file = '/tmp/ident'",
    "config_file = '/tmp/c'",
    "external_pid_file = '/root/.bashrc'",
    "ssl_key_file = '/etc/ssl/private/other.key'",
    "ssl_ca_file = '../outside.crt'",
    "log_directory = '/var/lib/postgresql/.ssh'",
    "log_filename = '../../escape.log'",
    "ssl_cert_file = 'a\\\\b'",  # a backslash escape: not read simply, so not trusted
])  # fmt: skip
def test_a_setting_that_runs_loads_or_reaches_outside_is_commented_out(data_dir: Path, line: str) -> None:
    kept = KEPT.format(data=data_dir)
    (data_dir / "postgresql.auto.conf").write_text(kept + line + "\n")
    disabled = restored_conf.neutralise(data_dir)
    name = restored_conf.FIRST_WORD.match(line.encode()).group(1).decode().lower()  # type: ignore[union-attr]
    assert disabled == [f"postgresql.auto.conf:{kept.count(chr(10)) + 1}: {name}"]
    assert (data_dir / "postgresql.auto.conf").read_text() == kept + restored_conf.MARKER + line + "\n"


def test_harmless_settings_and_files_inside_the_data_directory_are_kept(data_dir: Path) -> None:
    kept = KEPT.format(data=data_dir)
    for name in ("postgresql.conf", "postgresql.auto.conf"):
        (data_dir / name).write_text(kept)
    before = {path.name: path.stat().st_mtime_ns for path in data_dir.iterdir()}
    assert restored_conf.neutralise(data_dir) == []
    assert (data_dir / "postgresql.conf").read_text() == kept
    assert {path.name: path.stat().st_mtime_ns for path in data_dir.iterdir()} == before


def test_includes_in_the_authentication_files_are_commented_out(data_dir: Path) -> None:
    (data_dir / "pg_hba.conf").write_text("local all all peer\ninclude_dir /etc/evil-hba.d\n")
    (data_dir / "pg_ident.conf").write_text("include '/tmp/ident'\nmap os db\n")
    assert restored_conf.neutralise(data_dir) == ["pg_hba.conf:2: include_dir", "pg_ident.conf:1: include"]
    assert (data_dir / "pg_hba.conf").read_text().splitlines()[1].startswith(restored_conf.MARKER)


def test_overrides_turn_ssl_off_only_when_an_ssl_setting_was_disabled(data_dir: Path) -> None:
    plain = restored_conf.server_overrides(data_dir, 15, ["postgresql.conf:3: archive_command"])
    assert "ssl" not in plain and plain["ssl_passphrase_command"] == "" and plain["archive_library"] == ""
    assert plain["shared_preload_libraries"] == "" and plain["config_file"] == str(data_dir / "postgresql.conf")
    assert "archive_library" not in restored_conf.server_overrides(data_dir, 14, [])
    assert restored_conf.server_overrides(data_dir, 15, ["x.conf:1: ssl_passphrase_command"])["ssl"] == "off"


def test_programs_and_trusting_pg_hba_lines_are_found(data_dir: Path) -> None:
    (data_dir / "base" / "1").mkdir(parents=True)
    (data_dir / "base" / "1" / "1259").write_bytes(b"\0" * 8192)
    assert restored_conf.programs(data_dir) == []
    (data_dir / "base" / "1" / "16384").write_bytes(Path("/bin/true").read_bytes())
    assert restored_conf.programs(data_dir) == ["base/1/16384"]

    (data_dir / "pg_hba.conf").write_text(
        "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
        "host all all 127.0.0.1 255.255.255.255 trust  # old style\n"
    )
    (warning,) = restored_conf.hba_warnings(data_dir)
    assert "(line 3)" in warning and "any user of this machine" in warning
