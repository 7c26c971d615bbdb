"""Validating a restore test's scratch copy: SQL checks, the point's recorded table and row counts, and a hook
that reports a result the way AWS's PutRestoreValidationResult does (docs/restore-testing.md).

Every check reports SUCCESSFUL, FAILED, SKIPPED or TIMED_OUT with a message; the test's validation status is
the worst of them (TIMED_OUT, then FAILED, then SUCCESSFUL; SKIPPED only when every check skipped). All of it
must end within the selection's validation window: SQL runs under a ``statement_timeout`` of what is left, a
hook is killed (its whole process group) when the window closes.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg

from strongroom.adapters.base import get_adapter
from strongroom.config.restore_testing import HookValidation, ValidationConfig
from strongroom.services.dr import hookproc
from strongroom.services.dr.verify_sql import rows_match, shown
from strongroom.services.restore_testing_records import ValidationStatus

HOOK_OUTPUT_LIMIT = 64 * 1024
MESSAGE_LIMIT = 500
ENV_PREFIX = "STRONGROOM_RESTORE_TEST_"
USER_TABLES = """
SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
"""
SEVERITY = (ValidationStatus.TIMED_OUT, ValidationStatus.FAILED, ValidationStatus.SUCCESSFUL, ValidationStatus.SKIPPED)


@dataclass(frozen=True)
class CheckResult:
    kind: str  # sql, row_counts, hook
    status: ValidationStatus
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "status": self.status.value, "message": self.message}


@dataclass(frozen=True)
class Restored:
    """What a validation reaches: the restored resource and what the point says about itself."""

    job_id: str
    plan_name: str
    resource_id: str
    resource_type: str
    recovery_point_arn: str
    result: dict[str, Any]  # the restore job's result
    metadata: dict[str, Any]  # the point's metadata (its recorded table and row counts, if any)

    def dsn(self, database: str | None) -> str | None:
        if self.resource_type not in ("postgres", "postgres-cluster"):
            return None
        dsn = get_adapter(self.resource_type).restored_endpoint(self.result).dsn
        if database and self.resource_type == "postgres-cluster":  # a logical point is its one database
            return psycopg.conninfo.make_conninfo(dsn, dbname=database)
        return dsn

    def environment(self) -> dict[str, str]:
        """What a hook learns about the scratch copy (never a secret: restored DSNs hold no password)."""
        values = {
            "JOB_ID": self.job_id,
            "PLAN": self.plan_name,
            "RESOURCE_ID": self.resource_id,
            "RESOURCE_TYPE": self.resource_type,
            "RECOVERY_POINT_ARN": self.recovery_point_arn,
            "TARGET": str(self.result.get("target") or ""),
        }
        if self.resource_type in ("postgres", "postgres-cluster"):
            endpoint = get_adapter(self.resource_type).restored_endpoint(self.result)
            values.update(HOST=endpoint.host, PORT=str(endpoint.port), DSN=endpoint.dsn, DBNAME=endpoint.dbname or "")
        return {ENV_PREFIX + key: value for key, value in values.items()}


def validate(restored: Restored, config: ValidationConfig, deadline: float) -> list[CheckResult]:
    """Run every configured check against the restored copy, before ``deadline`` (time.monotonic())."""
    results: list[CheckResult] = []
    if config.sql:
        results.append(_sql_checks(restored, config, deadline))
    if config.row_counts:
        results.append(_recorded_counts(restored, config, deadline))
    if config.hook is not None:
        results.append(_hook(restored, config.hook, deadline))
    return results


def overall(results: list[CheckResult]) -> tuple[ValidationStatus, str]:
    """The worst status and the messages of the checks that have it."""
    if not results:
        return ValidationStatus.SKIPPED, "no validation configured"
    for status in SEVERITY:
        chosen = [r for r in results if r.status == status]
        if chosen:
            return status, _clip("; ".join(f"{r.kind}: {r.message}" for r in chosen))
    raise AssertionError("unreachable")


# SQL -------------------------------------------------------------------------------------------
def _connect(restored: Restored, database: str | None, deadline: float) -> psycopg.Connection[Any]:
    dsn = restored.dsn(database)
    if dsn is None:
        raise _Skip(f"{restored.resource_type} resources have no SQL to check")
    left = _left(deadline)
    timeout_ms = max(1, int(left * 1000))
    return psycopg.connect(
        dsn, connect_timeout=max(1, min(30, int(left))), autocommit=True, options=f"-c statement_timeout={timeout_ms}"
    )


class _Skip(Exception):
    """A check that does not apply to what was restored (e.g. SQL on a directory): SKIPPED."""


class _TimedOut(Exception):
    """The validation window ended before the check: TIMED_OUT."""


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _TimedOut("the validation window closed")
    return left


def _guarded(kind: str, work: Any) -> CheckResult:
    try:
        status, message = work()
    except _Skip as exc:
        return CheckResult(kind, ValidationStatus.SKIPPED, str(exc))
    except _TimedOut as exc:
        return CheckResult(kind, ValidationStatus.TIMED_OUT, str(exc))
    except psycopg.errors.QueryCanceled:
        return CheckResult(kind, ValidationStatus.TIMED_OUT, "a query ran past the validation window")
    except psycopg.Error as exc:
        return CheckResult(kind, ValidationStatus.FAILED, _clip(_first_line(exc)))
    return CheckResult(kind, status, _clip(message))


def _sql_checks(restored: Restored, config: ValidationConfig, deadline: float) -> CheckResult:
    def work() -> tuple[ValidationStatus, str]:
        with _connect(restored, config.database, deadline) as conn:
            for check in config.sql:
                rows = [list(row) for row in conn.execute(check.sql.encode()).fetchall()]
                if not rows_match(rows, check.expect):
                    return ValidationStatus.FAILED, (
                        f"query {check.sql!r} returned {shown(rows)}, expected {shown(check.expect)}"
                    )
        return ValidationStatus.SUCCESSFUL, f"{len(config.sql)} quer{'y' if len(config.sql) == 1 else 'ies'} matched"

    return _guarded("sql", work)


def _recorded_counts(restored: Restored, config: ValidationConfig, deadline: float) -> CheckResult:
    """The number of tables a logical point recorded, and its row counts when it recorded them."""
    tables = restored.metadata.get("tables")
    counts = restored.metadata.get("row_counts")
    if restored.resource_type != "postgres" or (tables is None and not counts):
        return CheckResult("row_counts", ValidationStatus.SKIPPED, "the recovery point records no table counts")

    def work() -> tuple[ValidationStatus, str]:
        with _connect(restored, None, deadline) as conn:
            found = conn.execute(USER_TABLES).fetchall()
            if tables is not None and len(found) != int(tables):
                return ValidationStatus.FAILED, f"{len(found)} tables restored, the point recorded {tables}"
            for name, expected in sorted((counts or {}).items()):
                schema, _, table = name.partition(".")
                query = psycopg.sql.SQL("SELECT count(*) FROM {}.{}").format(
                    psycopg.sql.Identifier(schema), psycopg.sql.Identifier(table)
                )
                row = conn.execute(query).fetchone()
                if row is None or int(row[0]) != int(expected):
                    return ValidationStatus.FAILED, (
                        f"table {name} has {row[0] if row else 'no'} rows, the point recorded {expected}"
                    )
        checked = f"{len(found)} tables" + (f", rows of {len(counts)} tables" if counts else "")
        return ValidationStatus.SUCCESSFUL, f"{checked} as the point recorded"

    return _guarded("row_counts", work)


# Hooks -----------------------------------------------------------------------------------------
def _hook(restored: Restored, hook: HookValidation, deadline: float) -> CheckResult:
    try:
        left = _left(deadline)
    except _TimedOut as exc:
        return CheckResult("hook", ValidationStatus.TIMED_OUT, str(exc))
    if hook.command is not None:
        return _command_hook(restored, hook.command, left)
    return _http_hook(restored, hook, left)


def _command_hook(restored: Restored, command: list[str], timeout: float) -> CheckResult:
    """Run the command; it reports with a JSON line ``{"status": ..., "message": ...}`` on stdout, or by its exit
    status alone (0: SUCCESSFUL)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    environment.update(restored.environment())
    with tempfile.TemporaryFile() as out:
        try:
            proc = hookproc.start(command, environment, None, out)
        except OSError as exc:
            return CheckResult("hook", ValidationStatus.FAILED, f"cannot run {command[0]}: {exc.strerror or exc}")
        code = hookproc.wait(proc, timeout, lambda: None)
        out.seek(0)
        text = out.read(HOOK_OUTPUT_LIMIT).decode(errors="replace")
    if code is None:
        return CheckResult(
            "hook", ValidationStatus.TIMED_OUT, f"{Path(command[0]).name} ran past the validation window"
        )
    reported = _reported(text)
    if reported is not None:
        return reported
    if code == 0:
        return CheckResult("hook", ValidationStatus.SUCCESSFUL, f"{Path(command[0]).name} exited 0")
    tail = text.strip().splitlines()[-1:] or [""]
    return CheckResult("hook", ValidationStatus.FAILED, _clip(f"{Path(command[0]).name} exited {code}: {tail[0]}"))


def _http_hook(restored: Restored, hook: HookValidation, timeout: float) -> CheckResult:
    """POST what was restored; the answer's JSON body reports the result (a non-2xx answer is FAILED)."""
    body = {key.removeprefix(ENV_PREFIX).lower(): value for key, value in restored.environment().items()}
    try:
        answer = httpx.post(str(hook.url), json=body, headers=dict(hook.headers), timeout=timeout)
    except httpx.TimeoutException:
        return CheckResult("hook", ValidationStatus.TIMED_OUT, "the validation URL did not answer within the window")
    except httpx.HTTPError as exc:
        return CheckResult("hook", ValidationStatus.FAILED, _clip(f"calling the validation URL failed: {exc}"))
    reported = _reported(answer.text[:HOOK_OUTPUT_LIMIT]) if answer.is_success else None
    if reported is not None:
        return reported
    status = ValidationStatus.SUCCESSFUL if answer.is_success else ValidationStatus.FAILED
    return CheckResult("hook", status, f"the validation URL answered {answer.status_code}")


def _reported(text: str) -> CheckResult | None:
    """The last JSON object line of ``text`` with a valid ``status``, as PutRestoreValidationResult takes it."""
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(value, dict):
            continue
        status = str(value.get("status") or value.get("ValidationStatus") or "").upper()
        message = str(value.get("message") or value.get("ValidationStatusMessage") or "")
        if status in ValidationStatus.__members__:
            return CheckResult("hook", ValidationStatus(status), _clip(message or f"reported {status}"))
        return CheckResult("hook", ValidationStatus.FAILED, _clip(f"the hook reported an unknown status {status!r}"))
    return None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _clip(text: str) -> str:
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."
