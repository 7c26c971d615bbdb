"""Point-in-time recovery of a restored cluster: recovery settings, waiting for promotion (docs/pitr.md).

A point-in-time restore extracts the base backup as any cluster restore does, then, before the first
start: ``recovery.signal``, ``restore_command`` (``strongroom wal fetch`` with a WAL credential file the
restore job wrote for this cluster alone), the ``recovery_target_*`` setting of the request,
``recovery_target_timeline`` and ``recovery_target_action = 'promote'``. The server replays the archived WAL
to the target and promotes itself onto a new timeline; :func:`wait_for_promotion` waits for that (or for the
server to stop: recovery ended before the target, a WAL file that cannot be read) and says where it
stopped. The new timeline's history file is then archived at once (as the server's OS user, as its
archiver would), so that a later restore of the same cluster picks a timeline of its own and no two
clusters ever write one timeline's files.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from strongroom.errors import TargetError

TARGET_SETTINGS = {
    "time": "recovery_target_time",
    "lsn": "recovery_target_lsn",
    "xid": "recovery_target_xid",
    "name": "recovery_target_name",
}
PROMOTION_LIMIT_SECONDS = 24 * 3600  # replaying a day of WAL is slow, not stuck; a dead server ends it at once
POLL_SECONDS = 0.2
FATAL = re.compile(r"\b(?:FATAL|PANIC):\s*(.*)")
# What our own polling connections are told while the server recovers: not why recovery failed.
REFUSED_CONNECTION = re.compile(r"the database system is (?:starting up|not yet accepting connections|shutting down)")


@dataclass(frozen=True)
class RecoveryRequest:
    """What a point-in-time restore asks of the restored cluster (the request's option ``recovery``)."""

    target: str  # time | lsn | xid | name | latest
    value: str | None
    timeline: str | None
    credential_file: Path
    wal_command: str
    spool: Path | None = None  # the restore's WAL prefetch spool (services/wal_prefetch.py)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> RecoveryRequest | None:
        recovery = options.get("recovery")
        if not recovery:
            return None
        if not recovery.get("credential_file"):
            raise TargetError("a point-in-time restore needs its WAL credential file", hint="restore through a job")
        spool = Path(recovery["wal_spool"]) if recovery.get("wal_spool") else None
        return cls(recovery["target"], recovery.get("value"), recovery.get("timeline"),
                   Path(recovery["credential_file"]), recovery["wal_command"], spool)  # fmt: skip

    def restore_command(self) -> str:
        """``wal fetch``; with a spool, first a plain shell move of a prefetched file (no Python start-up).

        Paths are shell-quoted and their ``%`` doubled (PostgreSQL's own escape); ``%f`` is a WAL file name
        PostgreSQL made (hex digits and ``.history``), ``%p`` its ``pg_wal/RECOVERYXLOG``."""
        fetch = f"{percent(self.wal_command)} wal fetch --config {quoted(self.credential_file)}"
        if self.spool is None:
            return f"{fetch} %f %p"
        spool = quoted(self.spool)
        return f"test -f {spool}/%f && mv -f {spool}/%f %p && exit 0; exec {fetch} --spool {spool} %f %p"

    def settings(self, base_timeline: int) -> dict[str, str]:
        settings = {
            "restore_command": self.restore_command(),
            "recovery_target_action": "promote",
            "recovery_target_timeline": self.timeline or str(base_timeline),
        }
        if self.target in TARGET_SETTINGS:
            settings[TARGET_SETTINGS[self.target]] = self.value or ""
        return settings


def percent(text: str) -> str:
    return text.replace("%", "%%")


def quoted(path: Path) -> str:
    return percent(shlex.quote(str(path)))


PREFETCH_PID = ".prefetch.pid"  # services/wal_prefetch.py writes them
PREFETCH_COUNT = ".prefetched"
STOP_POLLS = 500  # of 0.01 s: a prefetcher dies at SIGTERM at once; bounded all the same


def stop_prefetch(spool: Path) -> int:
    """Stop the restore's WAL prefetcher, if one runs; how many segments it prefetched. The spool's owner
    removes the spool next (a prefetcher that starts meanwhile finds it gone and exits)."""
    try:
        pid = int((spool / PREFETCH_PID).read_text())
    except (OSError, ValueError):
        pid = 0
    if pid > 0 and str(spool) in process_command_line(pid):  # never another process that reused the id
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
        for _ in range(STOP_POLLS):
            if not process_alive(pid):
                break
            time.sleep(0.01)
    try:
        return int((spool / PREFETCH_COUNT).read_text())
    except (OSError, ValueError):
        return 0


def process_command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def process_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


# Settings a forged backup could set to change where recovery stops or how: fixed on the server's command line.
# The other recovery_target_* are not blanked there: PostgreSQL resets the target when one is assigned empty
# after another was set; a forged one left in a file makes the start fail ("multiple recovery targets").
FIXED_RECOVERY_SETTINGS = {"recovery_target_inclusive": "on", "recovery_min_apply_delay": "0"}


def recovery_overrides(settings: dict[str, str]) -> dict[str, str]:
    """``-c`` settings for a point-in-time restore of an untrusted backup: ours, and the fixed ones."""
    return {**settings, **FIXED_RECOVERY_SETTINGS}


def wait_for_promotion(connect: Any, postmaster_pid: Path, log_file: Path, log_start: int) -> dict[str, Any]:
    """Wait until the server has promoted (recovery reached its target); where it stopped, and its timeline.

    ``connect()`` opens a connection to the server. A server that stops meanwhile failed its recovery: its
    log's FATAL line is the error."""
    deadline = time.monotonic() + PROMOTION_LIMIT_SECONDS
    while time.monotonic() < deadline:
        if not postmaster_pid.exists():
            raise recovery_failure(log_file, log_start)
        try:
            with connect() as conn:
                row = conn.execute(PROMOTED).fetchone()
        except psycopg.OperationalError:  # not accepting connections yet (hot_standby off): keep waiting
            row = None
        if row is not None and not row[0]:
            return {"timeline": row[1], "last_replayed_commit": row[2].isoformat() if row[2] else None,
                    "lsn": row[3]}  # fmt: skip
        time.sleep(POLL_SECONDS)
    raise TargetError(
        f"recovery did not finish in {PROMOTION_LIMIT_SECONDS // 3600} hours", hint=f"see {log_file}; stop the server"
    )


PROMOTED = """
SELECT pg_is_in_recovery(), ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int,
       pg_last_xact_replay_timestamp(), pg_current_wal_lsn()::text
WHERE NOT pg_is_in_recovery()
UNION ALL SELECT true, NULL, NULL, NULL WHERE pg_is_in_recovery()
"""


def recovery_failure(log_file: Path, log_start: int) -> TargetError:
    try:
        with log_file.open("rb") as log:
            log.seek(log_start)
            logged = log.read(1 << 20).decode("utf-8", "replace")
    except OSError:
        logged = ""
    reasons = [found.group(1).strip() for line in logged.splitlines() if (found := FATAL.search(line))]
    reasons = [reason for reason in reasons if not REFUSED_CONNECTION.search(reason)] or reasons
    reason = reasons[0] if reasons else "the server stopped during recovery"
    hint = f"see {log_file}"
    if "before configured recovery target" in reason or "before consistent recovery point" in reason:
        hint = "the archive does not reach that target from this base backup ('strongroom wal status'); " + hint
    return TargetError(f"point-in-time recovery failed: {reason}", hint=hint)
