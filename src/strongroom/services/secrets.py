"""The account's secret store: named values sealed with the account key (docs/secrets.md).

A value is a JSON object (e.g. the AWS Secrets Manager RDS shape) or a string. It is stored as JSON text,
sealed with AES-256-GCM under the account key with the label ``secret NAME version N``: a sealed value
moved to another name or version in the catalog no longer opens (IntegrityError). Putting a secret again
makes a new version; the one before is kept (like AWSPREVIOUS). Nothing here logs, and no error message
carries a value: only names, versions and field names.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from strongroom.catalog.records import SealedSecret
from strongroom.errors import AlreadyExistsError, ConfigError, IntegrityError, NotFoundError, UsageError
from strongroom.fsutil import write_durably
from strongroom.model import iso, now
from strongroom.services.account import Account
from strongroom.services.credentials import account_keys, open_secret, seal_secret

NAME_PATTERN = re.compile(r"[A-Za-z0-9/_+=.@-]{1,512}")
NAME_RULE = "secret names are 1 to 512 letters, digits and /_+=.@- (like AWS Secrets Manager names)"
RDS_FIELDS: dict[str, type] = {
    "engine": str,
    "host": str,
    "port": int,
    "username": str,
    "password": str,
    "dbname": str,
}
RDS_ENGINES = ("postgres",)
MAX_WRITE_ATTEMPTS = 5

SecretValue = str | dict[str, Any]


# Names and values -----------------------------------------------------------------------------------
def check_name(name: str) -> str:
    """The name unchanged, or a UsageError that does not echo it (it may be a value pasted by mistake)."""
    if not NAME_PATTERN.fullmatch(name):
        raise UsageError("invalid secret name", hint=NAME_RULE)
    return name


def parse_value(text: str, *, rds: bool = False) -> SecretValue:
    """A JSON object when ``text`` is one, else the string itself; with ``rds`` an RDS-shaped object."""
    if not text:
        raise UsageError("the secret value is empty")
    parsed = _json_object(text, required=rds)
    if rds:
        return check_rds(parsed or {})
    return parsed if parsed is not None else text


def _json_object(text: str, *, required: bool) -> dict[str, Any] | None:
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        if required:
            raise ConfigError(f"the secret value is not valid JSON (line {exc.lineno}, column {exc.colno})") from None
        return None
    if isinstance(parsed, dict):
        return parsed
    if required:
        raise ConfigError("the secret value must be a JSON object")
    return None


def check_rds(value: dict[str, Any]) -> dict[str, Any]:
    """The AWS Secrets Manager RDS shape: engine, host, port, username, password, dbname (extra keys kept)."""
    shape = ", ".join(RDS_FIELDS)
    for field, kind in RDS_FIELDS.items():
        if field not in value:
            raise ConfigError(f"RDS secret: field '{field}' is missing", hint=f"An RDS secret has {shape}")
        item = value[field]
        if not isinstance(item, kind) or isinstance(item, bool):
            raise ConfigError(f"RDS secret: field '{field}' must be {'an integer' if kind is int else 'a string'}")
        if kind is str and not item:
            raise ConfigError(f"RDS secret: field '{field}' is empty")
    if not 1 <= value["port"] <= 65535:
        raise ConfigError("RDS secret: field 'port' must be between 1 and 65535")
    if value["engine"] not in RDS_ENGINES:
        raise ConfigError(f"RDS secret: field 'engine' must be {' or '.join(RDS_ENGINES)}")
    return value


def field_of(value: SecretValue, field: str) -> str:
    """One field of an object secret as text (a string as is, anything else as JSON), for scripts."""
    if not isinstance(value, dict):
        raise UsageError("--field needs a secret whose value is a JSON object; this one is a string")
    if field not in value:
        raise UsageError(f"the secret has no field '{field}'", hint=f"Its fields: {', '.join(sorted(value))}")
    item = value[field]
    return item if isinstance(item, str) else json.dumps(item)


def as_json(value: SecretValue) -> str:
    return json.dumps(value, indent=2, sort_keys=True) + "\n"


# The store ------------------------------------------------------------------------------------------
def put_secret(account: Account, name: str, value: SecretValue) -> dict[str, Any]:
    """Store ``value`` as the next version of ``name``; returns the secret's description (no value)."""
    check_name(name)
    keys_checked(account)
    plaintext = json.dumps(value)
    for _ in range(MAX_WRITE_ATTEMPTS):
        row = account.catalog.get_secret_row(name)
        version = (row.version if row else 0) + 1
        sealed = seal_secret(account, plaintext, _label(name, version))
        if account.catalog.write_secret(name, sealed, version, iso(now()) or ""):
            return describe_secret(account, name)
    raise UsageError(f"secret '{name}' kept changing while it was written", hint="Run the command again")


def get_secret(account: Account, name: str, *, previous: bool = False) -> SecretValue:
    row = _row(account, check_name(name))
    if previous:
        if row.previous_sealed_value is None or row.previous_version is None:
            raise NotFoundError(f"secret '{name}' has no previous version", hint="Only a secret put twice has one")
        sealed, version = row.previous_sealed_value, row.previous_version
    else:
        sealed, version = row.sealed_value, row.version
    keys_checked(account)
    try:
        value: SecretValue = json.loads(open_secret(account, sealed, _label(name, version)))
    except IntegrityError:
        raise IntegrityError(
            f"secret '{name}' version {version} cannot be opened: damaged, or moved from another secret",
            hint=f"Put it again with 'strongroom secrets put {name}'",
        ) from None
    return value


def list_secrets(account: Account) -> list[dict[str, Any]]:
    """Every secret's name, versions and dates; never a value."""
    return [row.as_dict() for row in account.catalog.list_secret_rows()]


def describe_secret(account: Account, name: str) -> dict[str, Any]:
    return _row(account, name).as_dict()


def delete_secret(account: Account, name: str) -> None:
    """Forget the secret, its previous version included."""
    if not account.catalog.delete_secret(check_name(name)):
        raise _not_found(name)


def export_secret(account: Account, name: str, path: Path, *, force: bool = False) -> dict[str, Any]:
    """Write the value's JSON to ``path`` (mode 0600) atomically; an existing file only with ``force``."""
    path = path.expanduser().absolute()
    if path.exists() and not force:
        raise AlreadyExistsError(f"{path} already exists", hint="Pass --force to replace it")
    if not path.parent.is_dir():
        raise UsageError(f"the directory {path.parent} does not exist")
    _write_private(path, as_json(get_secret(account, name)).encode(), replace=force)
    return {**describe_secret(account, name), "file": str(path)}


def keys_checked(account: Account) -> None:
    """Make sure the passphrase is right before the account key is used (or created: a first use with a
    wrong passphrase must not wrap a new account key under it). A vault's keys check it."""
    if not (account.home / "keys" / "account.key").exists():
        vaults = account.catalog.list_vaults()
        if vaults:
            account.vault(vaults[0].name)
    account_keys(account)


def _label(name: str, version: int) -> str:
    return f"secret {name} version {version}"


def _row(account: Account, name: str) -> SealedSecret:
    row = account.catalog.get_secret_row(name)
    if row is None:
        raise _not_found(name)
    return row


def _not_found(name: str) -> NotFoundError:
    return NotFoundError(f"no secret named '{name}'", hint="List them with 'strongroom secrets list'")


def _write_private(path: Path, data: bytes, *, replace: bool) -> None:
    try:
        write_durably(path, data, mode=0o600, replace=replace)
    except FileExistsError:
        raise AlreadyExistsError(f"{path} already exists", hint="Pass --force to replace it") from None
