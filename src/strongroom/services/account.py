"""An account: its home directory, catalog, identity and vaults.

Home layout (docs/operations.md)::

    HOME/account.json     account id, region, format
    HOME/catalog.db       the catalog (SQLite, WAL)
    HOME/vaults/NAME/     a vault on local disk (default vault: Default)
    HOME/locks/           one lock file per running job
    HOME/tmp/             scratch space of running jobs
    HOME/clusters/        PostgreSQL clusters restored under a new identifier
    HOME/cache/           what only saves requests: vaults/VAULT-ID/ (key file, sealed pack indexes)

The home is 0711 (others may pass through to clusters/, never list it); vaults/, locks/ and tmp/ are 0700.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from strongroom.catalog import Catalog
from strongroom.errors import AccountError, AlreadyExistsError
from strongroom.fsutil import write_durably
from strongroom.model import DEFAULT_VAULT, Arn, VaultRecord, iso, now
from strongroom.services.homes import open_vault, use_home_caches, vault_cache
from strongroom.store.base import open_store
from strongroom.vault import Vault
from strongroom.vault.vault import ChunkerSettings

# Account settings in the catalog that apply writes and the scheduler reads.
SETTING_DESTINATION = "destination_vault_arn"
SETTING_DESTINATION_ACCOUNT = "destination_account"
SETTING_BACKUP_PLANS = "backup_plans"
SETTING_RESTORE_TESTING_PLANS = "restore_testing_plans"  # services/restore_testing.py
SETTING_FRAMEWORKS = "frameworks"  # name -> policy.controls.Framework.as_dict() (docs/compliance.md)
SETTING_REPORT_PLANS = "report_plans"  # name -> config.schema.ReportPlanConfig as JSON

ACCOUNT_FORMAT = 1
ENV_PASSPHRASE = "STRONGROOM_PASSPHRASE"  # how a passphrase reaches a process without a terminal
DEFAULT_REGION = "local"

PassphraseSource = Callable[[], str]


@dataclass
class Account:
    home: Path
    account_id: str
    region: str
    catalog: Catalog
    passphrase: PassphraseSource
    _open_vaults: dict[str, Vault] = field(default_factory=dict)

    def vault(self, name: str = DEFAULT_VAULT) -> Vault:
        record = self.catalog.get_vault(name)
        if record.name not in self._open_vaults:
            self._open_vaults[record.name] = open_vault(self.home, record, self.passphrase())
        return self._open_vaults[record.name]

    def forget_vault(self, name: str) -> None:
        """Drop the open vault ``name`` from this account's cache (the vault was deleted or never recorded)."""
        self._open_vaults.pop(name, None)

    def vault_arn(self, name: str) -> str:
        return str(Arn(self.region, self.account_id, "backup-vault", name))

    def recovery_point_arn(self, recovery_point_id: str) -> str:
        return str(Arn(self.region, self.account_id, "recovery-point", recovery_point_id))

    @property
    def tmp_dir(self) -> Path:
        return self.home / "tmp"

    @property
    def locks_dir(self) -> Path:
        return self.home / "locks"

    def close(self) -> None:
        self.catalog.close()


def init_account(
    home: Path,
    passphrase: str,
    *,
    region: str = DEFAULT_REGION,
    average_chunk_size: int | None = None,
    scrypt_params: dict[str, int] | None = None,
) -> Account:
    """Create the account's state store: catalog, identity, keys and the default vault."""
    home = home.expanduser().absolute()
    if (home / "account.json").exists():
        raise AlreadyExistsError(f"{home} already holds a Strongroom account", hint="Use another --home")
    if not passphrase:
        raise AccountError("the passphrase is empty", hint="Set STRONGROOM_PASSPHRASE or type a passphrase")
    for sub in ("vaults", "locks", "tmp"):
        (home / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(home / sub, 0o700)
    # Traversable but not listable: restored clusters under clusters/ run as the postgres OS user.
    os.chmod(home, 0o711)
    account_id = f"{secrets.randbelow(10**12):012d}"
    catalog = Catalog(home / "catalog.db")
    account = Account(home, account_id, region, catalog, lambda: passphrase)
    _guard_catalog(account, None)
    chunker = ChunkerSettings.for_average(average_chunk_size) if average_chunk_size else None
    create_vault(account, DEFAULT_VAULT, chunker=chunker, scrypt_params=scrypt_params)
    identity = {"format": ACCOUNT_FORMAT, "account_id": account_id, "region": region, "created_at": iso(now())}
    # account.json is written last: a home without it is an unfinished init and may be removed.
    write_durably(home / "account.json", json.dumps(identity, indent=2).encode(), mode=0o644)
    return account


def create_vault(
    account: Account,
    name: str,
    *,
    chunker: ChunkerSettings | None = None,
    scrypt_params: dict[str, int] | None = None,
    store_url: str | None = None,
) -> VaultRecord:
    """Create vault ``name`` in ``store_url`` (an empty store: docs/storage.md), by default HOME/vaults/NAME."""
    if store_url is None:
        root = account.home / "vaults" / name
        store = open_store(root.as_uri())
        if root.exists() and any(root.iterdir()):
            Vault.destroy_store(store)  # left by an unfinished init or create; never holds a catalogued vault
    else:
        store = open_store(store_url)
        if next(iter(store.list()), None) is not None:  # someone else's data, or another vault: never touched
            raise AlreadyExistsError(
                f"{store.url} already holds objects", hint="Give a store of its own to each vault (another prefix)"
            )
    vault = Vault.create(
        store,
        account.passphrase(),
        chunker=chunker,
        scrypt_params=scrypt_params,
        key_cache=lambda vault_id: vault_cache(account.home, vault_id) / "keys",
    )
    record = VaultRecord(name, account.vault_arn(name), store.url, vault.config.vault_id, iso(now()) or "")
    use_home_caches(account.home, vault)
    account._open_vaults[name] = vault  # before the catalog row: its first record goes into this vault
    try:
        account.catalog.add_vault(record)
    except BaseException:
        account.forget_vault(name)
        raise
    return record


def open_account(
    home: Path, passphrase: PassphraseSource, *, known_passphrase: Callable[[], str | None] | None = None
) -> Account:
    """Open the account at ``home``. With ``known_passphrase`` (listings) catalog rows are checked only
    when it returns a passphrase; otherwise every secured row read is checked, asking ``passphrase``."""
    home = home.expanduser().absolute()
    identity_path = home / "account.json"
    if not identity_path.exists():
        raise AccountError(
            f"no Strongroom account at {home}",
            hint=f"Create one with 'strongroom --home {home} init' or point --home / STRONGROOM_HOME at it",
        )
    identity = json.loads(identity_path.read_text())
    if identity.get("format") != ACCOUNT_FORMAT:
        raise AccountError(f"{identity_path} has an unknown format", hint="Upgrade Strongroom")
    catalog = Catalog(home / "catalog.db")
    account = Account(home, identity["account_id"], identity["region"], catalog, passphrase)
    _guard_catalog(account, known_passphrase)
    return account


def _guard_catalog(account: Account, known_passphrase: Callable[[], str | None] | None) -> None:
    from strongroom.services.catalog_integrity import attach  # it builds on this module

    attach(account, known_passphrase)
