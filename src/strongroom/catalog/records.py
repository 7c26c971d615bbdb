"""The catalog's own rows as typed records, and the one mapper from a row to a record.

:func:`record` builds a frozen dataclass from a ``sqlite3.Row`` (or a mapping) by the dataclass's field
names: JSON columns are decoded, and a field typed ``bool``, a ``StrEnum`` or another record is converted
from what SQLite or JSON holds. Columns the record does not name (``mac``, ``seq``) are left out, so the
MAC check (catalog/integrity.py) runs on the row before it is mapped.

Sealed values stay sealed: :class:`RemoteAccount` and :class:`SealedSecret` carry the ciphertext the account
key sealed (services/credentials.py opens it), never a plaintext, and keep it out of their ``repr``.
"""

from __future__ import annotations

import json
import sqlite3
import types
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from enum import Enum
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")


def record(cls: type[T], row: Mapping[str, Any] | sqlite3.Row, json_columns: Collection[str] = ()) -> T:
    """``cls`` from the row's columns of the same names (JSON columns decoded; NULL or empty is None)."""
    names = set(row.keys())
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for item in fields(cls):  # type: ignore[arg-type]
        if item.name not in names:
            continue
        value = row[item.name]
        if item.name in json_columns:
            value = json.loads(value) if value else None
        values[item.name] = _converted(hints[item.name], value)
    return cls(**values)


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = get_type_hints(cls)
    return _HINTS[cls]


_HINTS: dict[type, dict[str, Any]] = {}


def _converted(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    if get_origin(hint) in (Union, types.UnionType):
        options = [option for option in get_args(hint) if option is not type(None)]
        if len(options) != 1:
            return value
        hint = options[0]
    if hint is bool:
        return bool(value)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return hint(value)
    if isinstance(hint, type) and is_dataclass(hint) and isinstance(value, Mapping):
        return record(hint, value)
    return value


@dataclass(frozen=True)
class Credential:
    """An access key this account issued (table ``credentials``, MAC-checked); never its secret."""

    key_id: str
    principal_arn: str
    created_at: str
    expires_at: str | None = None
    revoked_at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RemoteAccount:
    """Another account this one talks to, with the credential it issued to us (its secret sealed)."""

    name: str
    account_id: str
    endpoint: str
    key_id: str
    sealed_secret: str = field(repr=False)
    ca_file: str | None
    created_at: str

    def describe(self, principal_arn: str | None = None) -> dict[str, Any]:
        """What ``accounts list``/``add`` show: everything but the sealed secret."""
        shown = {k: v for k, v in asdict(self).items() if k != "sealed_secret"}
        if principal_arn:
            shown["principal_arn"] = principal_arn
        return shown


@dataclass(frozen=True)
class ChunkMapping:
    """A peer vault's chunk mapped to this vault's (table ``chunk_map``, services/copy_receive.py).

    ``checked_under``: fingerprint of the peer's chunk-id key its content was checked under (None: never);
    ``size`` and ``proof``: its plaintext size and the receiving vault's MAC over the whole mapping, recorded
    when a pushed copy proved it (None: not proved, so it is read and checked before reuse).
    """

    chunk_id: bytes
    checked_under: bytes | None = None
    size: int | None = None
    proof: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class PinnedSourceKey:
    """A source vault's chunk-id key pinned on its first copy (table ``source_id_keys``); never the key."""

    source_account_id: str
    source_vault_id: str
    fingerprint: bytes
    pinned_at: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "source_account_id": self.source_account_id,
            "source_vault_id": self.source_vault_id,
            "fingerprint": self.fingerprint.hex(),
            "pinned_at": self.pinned_at,
        }


@dataclass(frozen=True)
class SecretInfo:
    """A secret's name, versions and dates (what listings read: no value, sealed or not)."""

    name: str
    version: int
    previous_version: int | None
    created_at: str
    updated_at: str

    def as_dict(self) -> dict[str, Any]:
        """Only these fields, also for a :class:`SealedSecret`: a description never holds a value."""
        return {item.name: getattr(self, item.name) for item in fields(SecretInfo)}


@dataclass(frozen=True)
class SealedSecret(SecretInfo):
    """A row of ``secrets``: the current and previous values as sealed by services/secrets.py."""

    sealed_value: str = field(repr=False)
    previous_sealed_value: str | None = field(repr=False)


@dataclass(frozen=True)
class Output:
    """One output of the last ``apply`` (table ``outputs``, stored as this record's JSON)."""

    value: Any
    description: str = ""
    sensitive: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Output:
        return record(cls, data)
