"""``verify_sql``: queries with expected results against the restored database, as the restore's login
or, with ``secret``, exactly as the app connects (which proves the new credentials work)."""

from __future__ import annotations

from typing import Any

import psycopg

from strongroom.config.runbook import VerifySqlStep
from strongroom.errors import IntegrityError, TargetError
from strongroom.services import secrets
from strongroom.services.dr.context import StepContext, first_line


class VerifySql:
    def run(self, ctx: StepContext[VerifySqlStep]) -> dict[str, Any]:
        results = []
        with _connect(ctx) as conn:
            for check in ctx.step.checks:
                rows = _query(conn, check.sql)
                if not rows_match(rows, check.expect):
                    raise IntegrityError(
                        f"query {check.sql!r} returned {shown(rows)}, expected {shown(check.expect)}",
                        hint="the restored data is not what the runbook expects; check the recovery point chosen",
                    )
                results.append({"sql": check.sql, "rows": len(rows)})
        ctx.changes.append(f"verified {len(results)} quer{'y' if len(results) == 1 else 'ies'}")
        return {"checks": results}

    def describe(self, ctx: StepContext[VerifySqlStep]) -> tuple[str, dict[str, Any], list[str]]:
        who = f"with secret {ctx.scratch_name(ctx.step.secret)}" if ctx.step.secret else "as the restore's login"
        queries = "; ".join(f"{c.sql} = {shown(c.expect)}" for c in ctx.step.checks)
        problems: list[str] = []
        if ctx.step.secret:
            name = ctx.scratch_name(ctx.step.secret)
            if not ctx.secret_known(name):
                problems.append(f"secret '{ctx.step.secret}' does not exist")
            held = ctx.expected_secret(name)
            problems += ctx.target_problems(held.get("username"), ctx.step.database or held.get("dbname"))
        else:
            restored = ctx.previous("restore") or {}
            problems += ctx.target_problems(None, ctx.step.database or restored.get("database"))
        return f"check on the restored database ({who}): {queries}", {}, problems

    def clean_up(self, ctx: StepContext[VerifySqlStep], outputs: dict[str, Any]) -> list[str]:
        return []


def _connect(ctx: StepContext[VerifySqlStep]) -> psycopg.Connection[Any]:
    restored = ctx.required("restore")
    try:
        if ctx.step.secret:
            value = secrets.get_secret(ctx.account, ctx.scratch_name(ctx.step.secret))
            if not isinstance(value, dict):
                raise TargetError(f"secret {ctx.step.secret} is not database credentials")
            return psycopg.connect(
                host=value["host"],
                port=value["port"],
                user=value["username"],
                password=value["password"],
                dbname=ctx.step.database or value["dbname"],
                connect_timeout=10,
                autocommit=True,
            )
        database = ctx.step.database
        extra: dict[str, Any] = {"dbname": database} if database else {}
        return psycopg.connect(restored["dsn"], connect_timeout=10, autocommit=True, **extra)
    except psycopg.Error as exc:
        raise TargetError(f"connecting to {restored['identifier']} failed: {first_line(exc)}") from None


def _query(conn: psycopg.Connection[Any], statement: str) -> list[list[Any]]:
    try:
        return [list(row) for row in conn.execute(statement.encode()).fetchall()]
    except psycopg.Error as exc:
        raise TargetError(f"query {statement!r} failed: {first_line(exc)}") from None


def rows_match(rows: list[list[Any]], expect: Any) -> bool:
    """A scalar expects one row of one value; a list expects those rows. Compared as text."""
    if not isinstance(expect, list):
        return len(rows) == 1 and len(rows[0]) == 1 and _text(rows[0][0]) == _text(expect)
    wanted = [row if isinstance(row, list) else [row] for row in expect]
    return [[_text(v) for v in row] for row in rows] == [[_text(v) for v in row] for row in wanted]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."
