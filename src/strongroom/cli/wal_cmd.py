"""``strongroom wal``: continuous WAL archiving for point-in-time recovery (docs/pitr.md).

``push`` and ``fetch`` are PostgreSQL's archive_command and restore_command, run once per WAL file: this
module imports nothing heavy at load time, and they read a WAL credential file instead of opening the
account (no catalog, no passphrase, no key derivation).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import typer

wal_app = typer.Typer(
    help="Continuous WAL archiving (point-in-time recovery of postgres-cluster).", no_args_is_help=True
)

CONFIG_HELP = "WAL credential file written by 'wal setup' (default: $STRONGROOM_WAL_CONFIG)."
# restore_command: PostgreSQL stops recovery (instead of taking the file as missing) when the command
# exits above 125; a damaged or unreadable archive must never end recovery early as if the WAL ended there.
FETCH_FAILED_EXIT = 126


def register(app: typer.Typer) -> None:
    app.add_typer(wal_app, name="wal")


@wal_app.command("push")
def push(
    path: Path = typer.Argument(..., help="The WAL file (archive_command's %p)."),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_HELP),
) -> None:
    """Archive one WAL file into the vault (archive_command). Exit 0 only once it is durable; the same
    file pushed again is success, other content under an archived name is an error (exit 7)."""
    from strongroom.services.wal_archive import WalCredential, credential_path, push_file

    push_file(WalCredential.load(credential_path(config)), path)


@wal_app.command("fetch")
def fetch(
    name: str = typer.Argument(..., help="The WAL file's name (restore_command's %f)."),
    destination: Path = typer.Argument(..., help="Where to write it (restore_command's %p)."),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_HELP),
    spool: Path | None = typer.Option(
        None, "--spool", help="A restore's prefetch spool: take the file from it, or fetch it and prefetch the next."
    ),
) -> None:
    """Write one archived WAL file (restore_command). A file never archived: exit 1, silently (PostgreSQL
    asks for files that do not exist). A damaged file or an unreadable archive: exit 126, which stops recovery."""
    from strongroom.errors import StrongroomError, WalFileMissingError
    from strongroom.services.wal_archive import WalCredential, credential_path, fetch_file, take_spooled

    # Only a file never archived may exit 1: PostgreSQL reads any other exit below 126 as "no such file" too,
    # and would end recovery early, or take a timeline whose history it could not read as unused.
    try:
        if spool is not None and take_spooled(spool, name, destination):
            return
        path = credential_path(config)
        data = fetch_file(WalCredential.load(path), name, destination)
        if spool is not None:
            start_prefetch(spool, path, name, data)
    except WalFileMissingError:
        raise typer.Exit(1) from None
    except StrongroomError as exc:
        fetch_failed(exc.one_line())
    except OSError as exc:
        fetch_failed(f"cannot write {destination}: {exc.strerror or exc}")
    except Exception as exc:  # an internal error is a failed fetch, never a missing file
        fetch_failed(f"internal error: {type(exc).__name__}: {exc}")


def fetch_failed(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(FETCH_FAILED_EXIT)


def start_prefetch(spool: Path, config: Path, name: str, data: bytes) -> None:
    """Prefetch the segments after ``name``; a failure here only costs speed, never the fetch that succeeded."""
    from strongroom.services.wal_prefetch import request

    try:
        request(spool, config, name, data)
    except OSError as exc:
        print(f"warning: WAL prefetch not started: {exc.strerror or exc}", file=sys.stderr)


@wal_app.command("setup")
def setup(
    ctx: typer.Context,
    resource: str = typer.Option(..., "--resource", help="The postgres-cluster resource to archive."),
    vault: str = typer.Option("Default", "--vault", help="The vault its WAL goes to."),
    os_user: str | None = typer.Option(None, "--os-user", help="The server's OS user (as root; default postgres)."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Write the WAL credential file of a cluster (HOME/wal/RESOURCE.json, 0600, for the server's OS user)
    and print the postgresql.conf lines that archive into the vault. The command strongroom is run by is
    $STRONGROOM_WAL_COMMAND, else this executable."""
    from strongroom.cli import context, output
    from strongroom.services.pitr import setup_wal

    with context.account(ctx) as account:
        done = setup_wal(account, resource, vault, os_user)
    if json_output:
        output.emit_json(
            {
                "resource_id": done.resource_id,
                "vault": done.vault_name,
                "system_identifier": done.system_identifier,
                "credential_file": str(done.credential_file),
                "settings": done.settings,
                "notes": done.notes,
            }
        )
        return
    print(f"# strongroom wal setup: {done.resource_id} (system {done.system_identifier}) -> vault {done.vault_name}")
    print("# postgresql.conf (or ALTER SYSTEM SET ...); archive_mode needs a restart, the others a reload")
    print(done.conf_lines(), end="")
    for note in done.notes:
        print(f"note: {note}", file=sys.stderr)


@wal_app.command("status")
def status(
    ctx: typer.Context,
    resource: list[str] = typer.Option([], "--resource", help="Resource(s); default: every one set up."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """The WAL archive of each cluster: last archived file, its end LSN and time, lag, gaps per timeline."""
    from strongroom.cli import context, output
    from strongroom.services.pitr import credential_file, wal_status

    home = context.state(ctx).home.expanduser().absolute()
    names = resource or sorted(path.stem for path in (home / "wal").glob("*.json"))
    if resource:
        for name in resource:
            if not credential_file(home, name).exists():
                from strongroom.errors import NotFoundError

                raise NotFoundError(
                    f"resource {name} has no WAL archiving set up", hint=f"run 'strongroom wal setup --resource {name}'"
                )
    found = [wal_status(home, name) for name in names]
    if json_output:
        output.emit_json([entry.as_dict() for entry in found])
        return
    rows = []
    for entry in found:
        gaps = sum(len(timeline.gaps) for timeline in entry.timelines)
        server = entry.server or {}
        rows.append(
            [
                entry.resource_id,
                entry.vault_name,
                entry.last_archived or "-",
                entry.last_archived_lsn or "-",
                entry.last_archived_modified or "-",
                "-" if entry.lag_segments is None else f"{entry.lag_segments} segments",
                str(gaps),
                str(server.get("failed_count", "-")),
            ]
        )
    output.table("WAL archive", ["resource", "vault", "last archived", "LSN", "time", "lag", "gaps", "failed"], rows)
