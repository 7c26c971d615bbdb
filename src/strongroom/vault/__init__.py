"""The vault engine: chunking, hashing, compression, encryption, manifests and verification.

It knows nothing of plans, accounts or jobs. :class:`Vault` is the only writer of a vault's
objects; the ordering rules it enforces are written down in ``docs/vault-format.md``.
"""

from strongroom.vault.keys import KeySet
from strongroom.vault.vault import Vault, VaultConfig

__all__ = ["KeySet", "Vault", "VaultConfig"]
