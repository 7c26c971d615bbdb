"""What every command needs: the account home, the passphrase, and how to render output."""

from __future__ import annotations

import getpass
import os
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from strongroom.errors import AccountError

if TYPE_CHECKING:
    from strongroom.services.account import Account

ENV_HOME = "STRONGROOM_HOME"
ENV_PASSPHRASE = "STRONGROOM_PASSPHRASE"  # services.account's, named here so start-up does not import it
DEFAULT_HOME = Path("~/.strongroom")


@dataclass
class CliState:
    home: Path = field(default_factory=lambda: DEFAULT_HOME.expanduser())
    _passphrase: str | None = None

    def passphrase(self) -> str:
        if self._passphrase is None:
            self._passphrase = read_passphrase(confirm=False)
        return self._passphrase

    def known_passphrase(self) -> str | None:
        """The passphrase if it is at hand without asking (given, or in the environment)."""
        return self._passphrase or os.environ.get(ENV_PASSPHRASE) or None


def read_passphrase(*, confirm: bool) -> str:
    value = os.environ.get(ENV_PASSPHRASE)
    if value:
        return value
    if not sys.stdin.isatty():
        raise AccountError(
            "no passphrase given", hint=f"Set {ENV_PASSPHRASE}, or run the command in a terminal to be asked"
        )
    value = getpass.getpass("Strongroom passphrase: ")
    if confirm and getpass.getpass("Repeat passphrase: ") != value:
        raise AccountError("the two passphrases differ")
    return value


def state(ctx: typer.Context) -> CliState:
    return ctx.ensure_object(CliState)


@contextmanager
def account(ctx: typer.Context, *, display: bool = False) -> Iterator[Account]:
    """The account, its catalog's security records checked with the account key on every read.

    ``display``: a command that only shows the catalog. Without the passphrase at hand it works as
    before row MACs existed, showing rows as stored (it decides nothing); with it, rows are checked.
    """
    from strongroom.services.account import open_account  # imported by the commands that open one
    from strongroom.services.jobs import recover_dead_jobs

    cli = state(ctx)
    known = cli.known_passphrase if display else None
    try:
        opened = open_account(cli.home, cli.passphrase, known_passphrase=known)
    except sqlite3.OperationalError as exc:  # SQLite writes beside its file even to read: a read-only home
        raise AccountError(
            f"cannot open the account's catalog in {cli.home}: {exc}",
            hint="the home must be writable by this user, even for listings; check its owner, mode and mount",
        ) from None
    try:
        if not display or cli.known_passphrase():  # recovering a job changes its point: needs the key
            recover_dead_jobs(opened)
        yield opened
    finally:
        opened.close()
