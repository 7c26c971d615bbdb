"""The suite's own machinery: tests sharing state by ``xdist_group`` really run in one worker (docs/testing.md).

pytest 9.2 made node ids structured and pytest-xdist 3.8 then tagged no test with its group: ``--dist
loadgroup`` silently spread every group over the workers, and tests sharing a module's cluster ran apart,
each worker building its own (the PITR tests failed depending on which worker got which test).
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.xdist_group("suite-grouping")


def test_a_grouped_test_carries_its_group_under_loadgroup(request: pytest.FixtureRequest) -> None:
    if not getattr(request.config.option, "loadgroup", False):  # set in xdist workers under --dist loadgroup
        pytest.skip("not run with --dist loadgroup (scripts/test.sh runs the suite so)")
    assert request.node.nodeid.endswith("@suite-grouping"), request.node.nodeid
