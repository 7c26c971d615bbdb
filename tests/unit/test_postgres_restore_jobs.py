import os

import pytest

from strongroom.adapters.postgres.logical import default_jobs, restore_jobs
from strongroom.errors import ConfigError


def test_one_dominant_table_streams_into_a_single_pg_restore() -> None:
    assert default_jobs({"largest_table_bytes": 90, "table_bytes": 100}) == 1


def test_spread_data_restores_in_parallel() -> None:
    assert default_jobs({"largest_table_bytes": 60, "table_bytes": 100}) == min(4, os.cpu_count() or 1)


def test_recovery_points_without_sizes_stream() -> None:
    assert default_jobs({}) == 1


def test_explicit_jobs_win_and_are_checked() -> None:
    assert restore_jobs({"jobs": 3}, {"largest_table_bytes": 90, "table_bytes": 100}) == 3
    with pytest.raises(ConfigError):
        restore_jobs({"jobs": -1}, {})
