from __future__ import annotations

from pathlib import Path

import pytest

from strongroom.vault import Vault
from tests.support.vaults import make_vault


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    return make_vault(tmp_path / "vault")

# Fixtures for throwaway PostgreSQL clusters live in tests/support/pgcluster.py.
pytest_plugins = ["tests.support.pgcluster"]
