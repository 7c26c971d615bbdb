from __future__ import annotations

import json
import os

import pytest

from strongroom.errors import ConfigError, FormatError, IntegrityError, WrongPassphraseError
from strongroom.vault import envelope
from strongroom.vault.envelope import HEADER_SIZE, Kind
from strongroom.vault.keys import (
    ENV_KDF_PROFILE,
    INSECURE_FAST_PROFILE,
    KDF_PROFILES,
    KeySet,
    unwrap_keyset,
    wrap_keyset,
)

FAST = {"n": 2**12, "r": 8, "p": 1}
KEY = os.urandom(32)


def test_seal_open_round_trip_compresses_and_hides_plaintext() -> None:
    plaintext = b"patient record " * 1000
    sealed = envelope.seal(KEY, Kind.CHUNK, b"name", plaintext)
    assert b"patient" not in sealed
    assert len(sealed) < len(plaintext) // 10
    assert envelope.open_sealed(KEY, b"name", sealed, what="x").plaintext == plaintext


def test_sealing_twice_never_repeats_salt_or_nonce() -> None:
    seen = set()
    for _ in range(200):
        sealed = envelope.seal(KEY, Kind.CHUNK, b"n", b"same")
        seen.add(sealed[8:HEADER_SIZE])
    assert len(seen) == 200


@pytest.mark.parametrize("position", [0, 4, 5, 6, 8, 24, HEADER_SIZE, -1])
def test_every_flipped_byte_is_detected(position: int) -> None:
    sealed = bytearray(envelope.seal(KEY, Kind.CHUNK, b"name", os.urandom(5000)))
    sealed[position] ^= 0x01
    with pytest.raises((IntegrityError, FormatError)):
        envelope.open_sealed(KEY, b"name", bytes(sealed), what="object")


def test_object_moved_to_another_name_fails() -> None:
    sealed = envelope.seal(KEY, Kind.CHUNK, b"name-a", b"data")
    with pytest.raises(IntegrityError, match="authentication"):
        envelope.open_sealed(KEY, b"name-b", sealed, what="object")


def test_unknown_format_version_is_refused() -> None:
    sealed = bytearray(envelope.seal(KEY, Kind.CHUNK, b"n", b"data"))
    sealed[4] = 9
    with pytest.raises(FormatError, match="format version 9"):
        envelope.open_sealed(KEY, b"n", bytes(sealed), what="object")


def test_keyset_wrapping_needs_the_passphrase() -> None:
    keys = KeySet.generate()
    document = wrap_keyset(keys, "correct horse", FAST)
    assert keys.encryption_key.hex() not in document.decode()
    assert unwrap_keyset(document, "correct horse") == keys
    with pytest.raises(WrongPassphraseError):
        unwrap_keyset(document, "wrong horse")


def _kdf(document: bytes) -> dict[str, int]:
    kdf = json.loads(document)["kdf"]
    return {name: kdf[name] for name in ("n", "r", "p")}


def test_new_key_files_use_the_default_cost_unless_the_test_profile_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_KDF_PROFILE, raising=False)
    assert _kdf(wrap_keyset(KeySet.generate(), "pw")) == {"n": 2**15, "r": 8, "p": 1}
    monkeypatch.setenv(ENV_KDF_PROFILE, "default")
    assert _kdf(wrap_keyset(KeySet.generate(), "pw")) == {"n": 2**15, "r": 8, "p": 1}
    monkeypatch.setenv(ENV_KDF_PROFILE, INSECURE_FAST_PROFILE)
    assert _kdf(wrap_keyset(KeySet.generate(), "pw")) == KDF_PROFILES[INSECURE_FAST_PROFILE]


def test_unlocking_uses_the_parameters_in_the_file_whatever_the_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = KeySet.generate()
    monkeypatch.delenv(ENV_KDF_PROFILE, raising=False)
    strong = wrap_keyset(keys, "pw")
    monkeypatch.setenv(ENV_KDF_PROFILE, INSECURE_FAST_PROFILE)
    assert unwrap_keyset(strong, "pw") == keys  # the profile does not weaken a file that exists
    cheap = wrap_keyset(keys, "pw")
    monkeypatch.delenv(ENV_KDF_PROFILE)
    assert unwrap_keyset(cheap, "pw") == keys
    lowered = json.loads(strong)
    lowered["kdf"]["n"] = 2**10  # an attacker lowering the cost in the file only breaks it
    with pytest.raises(WrongPassphraseError):
        unwrap_keyset(json.dumps(lowered).encode(), "pw")


def test_an_unknown_profile_is_refused_before_any_key_file_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_KDF_PROFILE, "fast")
    with pytest.raises(ConfigError, match="unknown STRONGROOM_KDF_PROFILE 'fast'"):
        wrap_keyset(KeySet.generate(), "pw")
