"""The detached process a scheduled restore testing run goes in:
``python -m strongroom.services.restore_testing_worker HOME PLAN OCCURRENCE``.

Started by ``restore_testing.spawn_run`` (the scheduler daemon) with the passphrase in ``STRONGROOM_PASSPHRASE``;
its output goes to ``tmp/restore-testing-PLAN.log``, the tests record their own outcomes in the catalog.
"""

from __future__ import annotations

import sys
from pathlib import Path

from strongroom.errors import StrongroomError, UsageError
from strongroom.services.account import open_account
from strongroom.services.job_worker import _passphrase
from strongroom.services.restore_testing import start_run


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        usage = UsageError("usage: python -m strongroom.services.restore_testing_worker HOME PLAN OCCURRENCE")
        print(f"error: {usage.one_line()}", file=sys.stderr)
        return UsageError.exit_code
    try:
        account = open_account(Path(argv[0]), _passphrase)
        try:
            run = start_run(account, argv[1], scheduled_for=argv[2], progress=print)
            for test in run.tests:
                outcome = test.outcome
                print(f"{test.job.id} {test.job.resource_id}: {outcome.status if outcome else 'unfinished'}")
        finally:
            account.close()
    except StrongroomError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
