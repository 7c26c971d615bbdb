"""``strongroom init``: a new account home."""

from __future__ import annotations

import typer

from strongroom.cli import context, output
from strongroom.errors import ConfigError
from strongroom.model import DEFAULT_VAULT
from strongroom.services.account import DEFAULT_REGION, init_account
from strongroom.vault.keys import ENV_KDF_PROFILE, INSECURE_FAST_PROFILE, kdf_profile_for_new_keys


def register(app: typer.Typer) -> None:
    app.command("init")(init)


def init(
    ctx: typer.Context,
    region: str = typer.Option(DEFAULT_REGION, help="Region name used in ARNs."),
    chunk_size: int | None = typer.Option(
        None, help="Average chunk size in bytes of the default vault (default 1.25 MiB; 64 KiB to 4 MiB)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Create an account home: catalog, account id, keys and the Default vault."""
    cli = context.state(ctx)
    passphrase = context.read_passphrase(confirm=True)
    account = init_account(cli.home, passphrase, region=region, average_chunk_size=_checked_chunk(chunk_size))
    if kdf_profile_for_new_keys() == INSECURE_FAST_PROFILE:  # tests only: say so where a person would see it
        output.error_console.print(
            f"warning: {ENV_KDF_PROFILE}={INSECURE_FAST_PROFILE}: this account's keys are cheap to brute-force; "
            "use it for tests only",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
    vault = account.catalog.get_vault(DEFAULT_VAULT)
    result = {
        "home": str(account.home),
        "account_id": account.account_id,
        "region": account.region,
        "backup_vault_arn": vault.arn,
    }
    account.close()
    if json_output:
        output.emit_json(result)
    else:
        output.console.print(f"Created account {result['account_id']} in {result['home']}")
        output.console.print(f"Default vault: {vault.arn}")


def _checked_chunk(size: int | None) -> int | None:
    if size is not None and not 64 * 1024 <= size <= 4 * 1024 * 1024:
        raise ConfigError(f"chunk size {size} is out of range", hint="Use 65536 to 4194304 bytes")
    return size
