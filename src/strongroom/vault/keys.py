"""Vault key material and its wrapping under a passphrase.

A vault has one :class:`KeySet` of random keys. It is stored in the vault as ``keys/<key-id>``,
encrypted with AES-256-GCM under a key-encryption key that scrypt derives from the passphrase;
without the passphrase nothing on disk reveals the keys.

The scrypt parameters are chosen when a key file is *created* and written into it; unlocking always uses
the parameters the file names. ``STRONGROOM_KDF_PROFILE=insecure-fast`` (tests only, docs/testing.md)
makes new key files cheap to unlock, and therefore cheap to brute-force: it weakens only the files made
while it is set, never the ones that exist.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from strongroom.errors import ConfigError, FormatError, WrongPassphraseError

KEY_FILE_FORMAT = "strongroom-keyfile/1"
# scrypt cost: 2**15 * 8 * 128 bytes = 32 MiB of memory and ~0.1 s per unlock on one core.
DEFAULT_SCRYPT = {"n": 2**15, "r": 8, "p": 1}
ENV_KDF_PROFILE = "STRONGROOM_KDF_PROFILE"
INSECURE_FAST_PROFILE = "insecure-fast"
# insecure-fast: 2**10 * 8 * 128 bytes = 1 MiB, ~3 ms: a stolen key file costs an attacker 32 times less
# per guess. For test suites that run the CLI hundreds of times; never for a vault that holds real data.
KDF_PROFILES = {"default": DEFAULT_SCRYPT, INSECURE_FAST_PROFILE: {"n": 2**10, "r": 8, "p": 1}}


@dataclass(frozen=True)
class KeySet:
    """The secret keys of one vault."""

    key_id: str
    encryption_key: bytes  # 32 bytes: per-object keys are derived from it (see envelope.py)
    id_key: bytes  # 32 bytes: the BLAKE3 key for chunk ids
    chunker_seed: int  # 64-bit seed of FastCDC's gear table, so cut points reveal nothing

    @classmethod
    def generate(cls) -> KeySet:
        return cls(
            key_id=secrets.token_hex(8),
            encryption_key=secrets.token_bytes(32),
            id_key=secrets.token_bytes(32),
            chunker_seed=secrets.randbits(63),
        )

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "key_id": self.key_id,
                "encryption_key": _b64(self.encryption_key),
                "id_key": _b64(self.id_key),
                "chunker_seed": self.chunker_seed,
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> KeySet:
        raw = json.loads(data)
        return cls(
            key_id=raw["key_id"],
            encryption_key=_unb64(raw["encryption_key"]),
            id_key=_unb64(raw["id_key"]),
            chunker_seed=int(raw["chunker_seed"]),
        )


def kdf_profile_for_new_keys() -> str:
    """The profile new key files are made with: ``STRONGROOM_KDF_PROFILE``, or ``default``."""
    name = os.environ.get(ENV_KDF_PROFILE) or "default"
    if name not in KDF_PROFILES:
        raise ConfigError(
            f"unknown {ENV_KDF_PROFILE} '{name}'", hint=f"Unset it (or use one of: {', '.join(KDF_PROFILES)})"
        )
    return name


def wrap_keyset(keyset: KeySet, passphrase: str, scrypt_params: dict[str, int] | None = None) -> bytes:
    """The key file of ``keyset``, with ``scrypt_params`` or else those of :func:`kdf_profile_for_new_keys`."""
    params = dict(scrypt_params or KDF_PROFILES[kdf_profile_for_new_keys()])
    salt = os.urandom(16)
    kek = _derive_kek(passphrase, salt, params)
    nonce = os.urandom(12)
    ciphertext = AESGCM(kek).encrypt(nonce, keyset.to_json(), keyset.key_id.encode())
    document = {
        "format": KEY_FILE_FORMAT,
        "key_id": keyset.key_id,
        "kdf": {"name": "scrypt", **params, "salt": _b64(salt)},
        "cipher": "AES-256-GCM",
        "nonce": _b64(nonce),
        "ciphertext": _b64(ciphertext),
    }
    return json.dumps(document, indent=2).encode()


def unwrap_keyset(document: bytes, passphrase: str) -> KeySet:
    raw = json.loads(document)
    if raw.get("format") != KEY_FILE_FORMAT:
        raise FormatError(f"unknown key file format {raw.get('format')!r}")
    kdf = raw["kdf"]
    params = {"n": int(kdf["n"]), "r": int(kdf["r"]), "p": int(kdf["p"])}
    kek = _derive_kek(passphrase, _unb64(kdf["salt"]), params)
    try:
        plaintext = AESGCM(kek).decrypt(_unb64(raw["nonce"]), _unb64(raw["ciphertext"]), raw["key_id"].encode())
    except InvalidTag:
        raise WrongPassphraseError("wrong passphrase: the vault keys cannot be unlocked") from None
    return KeySet.from_json(plaintext)


def _derive_kek(passphrase: str, salt: bytes, params: dict[str, int]) -> bytes:
    kdf = Scrypt(salt=salt, length=32, n=params["n"], r=params["r"], p=params["p"])
    return kdf.derive(passphrase.encode("utf-8"))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)
