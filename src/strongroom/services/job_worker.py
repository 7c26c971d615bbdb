"""The detached process a spawned job runs in: ``python -m strongroom.services.job_worker HOME JOB_ID``.

Started by ``job_runner.spawn_job`` with the job's lock inherited (``STRONGROOM_JOB_LOCK_FD``) and the
passphrase in ``STRONGROOM_PASSPHRASE``. Its output goes to the job's log file; the job records its own
outcome in the catalog, and the exit code is the error's (docs/cli-json.md), 0 when it completed.
SIGTERM (``kill``, ``systemctl stop``) and SIGINT end the job as they end a ``--wait`` command: ABORTED,
half-made things removed, exit 143/130 (strongroom/signals.py) — not a job left RUNNING by a dead process.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from strongroom import signals
from strongroom.errors import AccountError, StorageError, StrongroomError, UsageError
from strongroom.services.account import ENV_PASSPHRASE, open_account
from strongroom.services.job_runner import execute_job
from strongroom.services.joblock import JobLock
from strongroom.services.jobs import recover_dead_jobs


def run(home: Path, job_id: str) -> None:
    """Run a CREATED job of the account at ``home``, holding the lock the spawning process handed down."""
    lock = JobLock.inherited()
    account = open_account(home, _passphrase)
    try:
        recover_dead_jobs(account)
        execute_job(account, account.catalog.get_job(job_id), lock)
    finally:
        account.close()


def _passphrase() -> str:
    value = os.environ.get(ENV_PASSPHRASE)
    if not value:
        raise AccountError("no passphrase given", hint=f"Set {ENV_PASSPHRASE}")
    return value


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(
            f"error: {UsageError('usage: python -m strongroom.services.job_worker HOME JOB_ID').one_line()}",
            file=sys.stderr,
        )
        return UsageError.exit_code
    signals.install()
    try:
        run(Path(argv[0]), argv[1])
    except signals.Interrupted as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except StrongroomError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # an I/O failure no layer expected (a failing disk): one line, not a traceback
        print(f"error: {exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}", file=sys.stderr)
        return StorageError.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
