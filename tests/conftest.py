from __future__ import annotations

import os
from pathlib import Path

import pytest

from strongroom.vault import Vault
from strongroom.vault.keys import ENV_KDF_PROFILE, INSECURE_FAST_PROFILE
from tests.support.vaults import make_vault

# Key files the suite creates in-process (account keys, vaults made by services) and in the processes it
# starts cost scrypt 2^10, not 2^15 (docs/testing.md). Tests of the default profile unset it themselves.
os.environ[ENV_KDF_PROFILE] = INSECURE_FAST_PROFILE


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    return make_vault(tmp_path / "vault")


# Fixtures for throwaway PostgreSQL clusters live in tests/support/pgcluster.py, the S3 server in s3server.py.
pytest_plugins = ["tests.support.pgcluster", "tests.support.s3server"]
