import pytest

from strongroom.adapters.postgres import DEFAULT_JOBS, restore_jobs
from strongroom.errors import ConfigError


def test_default_is_one_pg_restore_fed_by_the_stream() -> None:
    assert DEFAULT_JOBS == 1
    assert restore_jobs({}) == 1


def test_explicit_jobs_win_and_are_checked() -> None:
    assert restore_jobs({"jobs": 3}) == 3
    with pytest.raises(ConfigError):
        restore_jobs({"jobs": -1})
