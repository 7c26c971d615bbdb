"""Credentials: the access keys this account issues to principals, and the secrets it holds for others.

A credential is an access key id (20 characters, like AWS's) and a secret. The secret is never stored:
it is ``HMAC(credential master key, key id)``, recomputed when a request arrives, so a copy of the
catalog alone cannot sign requests. The master key, and the key that seals the secrets this account
holds for *other* accounts, live in ``HOME/keys/account.key``, wrapped under the account passphrase
exactly like a vault's keys (docs/threat-model.md).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from strongroom.errors import (
    AuthenticationError,
    IntegrityError,
    NotFoundError,
    RequestUnrecordedError,
    StorageFullError,
    UsageError,
)
from strongroom.fsutil import write_durably
from strongroom.model import iso, now
from strongroom.policy.principals import account_of, user_arn
from strongroom.services.account import DEFAULT_VAULT, Account
from strongroom.transport import signing
from strongroom.vault.keys import KeySet, unwrap_keyset, wrap_keyset

KEY_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
NONCE_TTL_SECONDS = 2 * signing.MAX_SKEW_SECONDS


@dataclass(frozen=True)
class IssuedCredential:
    key_id: str
    secret: str
    principal_arn: str
    expires_at: str | None


def account_keys(account: Account) -> KeySet:
    """The account's own key set, created on first use (accounts made before it existed get one)."""
    path = account.home / "keys" / "account.key"
    if not path.exists():
        path.parent.mkdir(mode=0o700, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # another process created it first: use theirs
            write_durably(path, wrap_keyset(KeySet.generate(), account.passphrase()), replace=False)
    return _unwrap_cached(path, account.passphrase())


_UNWRAPPED: dict[tuple[Path, str], KeySet] = {}


def _unwrap_cached(path: Path, passphrase: str) -> KeySet:
    cache_key = (path, hashlib.sha256(passphrase.encode()).hexdigest())
    if cache_key not in _UNWRAPPED:
        _UNWRAPPED[cache_key] = unwrap_keyset(path.read_bytes(), passphrase)
    return _UNWRAPPED[cache_key]


def _secret_for(account: Account, key_id: str) -> str:
    digest = hmac.new(account_keys(account).id_key, b"credential\0" + key_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:30]).decode()


def create_credential(
    account: Account,
    principal_name: str,
    *,
    principal_account_id: str | None = None,
    expires_in_days: int | None = None,
) -> IssuedCredential:
    if expires_in_days is not None and expires_in_days < 1:
        raise UsageError("--expires-in-days must be at least 1")
    principal = user_arn(principal_account_id or account.account_id, principal_name)
    key_id = "SR" + "".join(secrets.choice(KEY_ID_ALPHABET) for _ in range(18))
    created = now()
    expires = iso(created + timedelta(days=expires_in_days)) if expires_in_days else None
    account.catalog.add_credential(key_id, principal, iso(created) or "", expires, counted_in=DEFAULT_VAULT)
    return IssuedCredential(key_id, _secret_for(account, key_id), principal, expires)


def revoke_credential(account: Account, key_id: str) -> None:
    if account.catalog.get_credential(key_id) is None:
        raise NotFoundError(
            f"no credential with access key id '{key_id}'", hint="List them with 'strongroom credentials list'"
        )
    account.catalog.revoke_credential(key_id, iso(now()) or "", counted_in=DEFAULT_VAULT)


class SeenNonces:
    """Nonces of the requests this account accepted, kept in the catalog until no clock within the allowed
    skew would accept their request again: a replay is refused after a restart too, and by every server
    of the home (the catalog's transaction decides which one accepts a request first)."""

    def __init__(self, account: Account) -> None:
        self._account = account

    def first_use(self, nonce: str, timestamp: str) -> bool:
        signed_at = signing.unix_time(timestamp)
        if signed_at is None:
            return False
        moment = int(time.time())
        return self._account.catalog.remember_nonce(nonce, signed_at + NONCE_TTL_SECONDS, moment)


def authenticate(
    account: Account, method: str, path: str, query: str, headers: dict[str, str], nonces: SeenNonces
) -> str:
    """The principal ARN a signed request acts as, or AuthenticationError saying what is wrong.

    Headers only: the body is not read here. The caller reads it afterwards, no larger than its route
    allows, and checks it against the signed ``body_sha256`` before acting (server/intake.py)."""
    parts = signing.parse_signed(headers)
    if parts is None:
        raise AuthenticationError(
            "the request is not signed",
            hint="Register this account's endpoint with 'strongroom accounts add' and a credential",
        )
    record = account.catalog.get_credential(parts.key_id)  # checked against its MAC
    if record is None:
        raise AuthenticationError(f"access key {parts.key_id} is unknown to account {account.account_id}")
    if record.revoked_at:
        raise AuthenticationError(
            f"access key {parts.key_id} was revoked at {record.revoked_at}",
            hint="Ask the account's administrator for a new credential ('strongroom credentials create')",
        )
    if record.expires_at and record.expires_at <= (iso(now()) or ""):
        raise AuthenticationError(
            f"access key {parts.key_id} expired at {record.expires_at}",
            hint="Ask the account's administrator for a new credential ('strongroom credentials create')",
        )
    _check_signature(account, parts, method, path, query)
    _check_catalog_fresh(account)  # after the signature: an unsigned caller costs no store read
    try:
        first_use = nonces.first_use(parts.nonce, parts.timestamp)
    except StorageFullError as exc:
        raise RequestUnrecordedError(
            f"the request cannot be recorded: {exc.message}", principal_arn=record.principal_arn
        ) from None
    if not first_use:
        raise AuthenticationError("the request was replayed (its nonce was seen before)")
    return record.principal_arn


def _check_catalog_fresh(account: Account) -> None:
    """Credentials count their changes in the Default vault: a catalog rolled back to before a
    revocation is refused there (services/catalog_integrity.py)."""
    from strongroom.services.catalog_integrity import check_fresh  # it builds on this module's account_keys

    check_fresh(account, DEFAULT_VAULT)


def _check_signature(account: Account, parts: signing.SignedParts, method: str, path: str, query: str) -> None:
    skew = signing.skew_seconds(parts.timestamp)
    if skew is None or skew > signing.MAX_SKEW_SECONDS:
        raise AuthenticationError(
            f"the request's time {parts.timestamp} is more than {signing.MAX_SKEW_SECONDS} s from the server's",
            hint="Synchronise the clocks of both machines (NTP)",
        )
    canonical = signing.canonical_request(method, path, query, parts.timestamp, parts.nonce, parts.body_sha256)
    expected = signing.signature(_secret_for(account, parts.key_id), canonical)
    if not hmac.compare_digest(expected, parts.signature):
        raise AuthenticationError(
            f"the signature of the request with access key {parts.key_id} is wrong",
            hint="Check the secret registered with 'strongroom accounts add'",
        )


# Secrets this account holds for other accounts -------------------------------------------------
def seal_secret(account: Account, secret: str, label: str) -> str:
    nonce = os.urandom(12)
    sealed = AESGCM(account_keys(account).encryption_key).encrypt(nonce, secret.encode(), label.encode())
    return base64.b64encode(nonce + sealed).decode()


def open_secret(account: Account, sealed: str, label: str) -> str:
    raw = base64.b64decode(sealed)
    try:
        return AESGCM(account_keys(account).encryption_key).decrypt(raw[:12], raw[12:], label.encode()).decode()
    except InvalidTag:
        raise IntegrityError(f"the stored secret for {label} cannot be opened (damaged or forged)") from None


def principal_account(principal_arn: str) -> str:
    return account_of(principal_arn)
