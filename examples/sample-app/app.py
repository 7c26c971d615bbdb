#!/usr/bin/env python3
"""A tiny sample web application for Strongroom's disaster-recovery tests and docs. A demo, not production code.

At start it reads its PostgreSQL credentials (an RDS-shaped secret: engine, host, port, username, password,
dbname) from Strongroom's secret store, a file ``strongroom secrets export`` wrote, or an environment variable
(a runbook step's ``env: {VAR: ${secret.NAME}}``), checks the database
accepts them, and serves one table as JSON:

    GET /health    200 {"status": "ok", "database": "host:port/dbname"} after a SELECT 1; 503 with a reason
    GET /rows      the table's rows ordered by id (a JSON list)
    GET /checksum  {"rows": N, "md5": "..."}: md5 of the rows' text ordered by id, computed in SQL

Each request opens its own connection, so the app survives a database restart or a restore. Sessions run
with TimeZone UTC and DateStyle ISO, so the checksum does not depend on the server's settings.

Usage:
    python app.py --secret NAME (--home DIR | --secret-file FILE | --secret-env VAR) [--host 127.0.0.1] --port N
                  [--table patients]

Exit codes: 0 stopped by SIGTERM/SIGINT, 2 usage, 3 the secret cannot be read, 4 the database refuses the
connection at start, 5 the address cannot be bound. A failure at start is one line on stderr.
Dependencies: the standard library and psycopg 3. The password is never logged nor put on a command line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

SECRET_FIELDS = ("host", "port", "username", "password", "dbname")
EXIT_SECRET, EXIT_DATABASE, EXIT_LISTEN = 3, 4, 5
SESSION_SETUP = "SET TIME ZONE 'UTC'; SET DateStyle = 'ISO, MDY'; SET default_transaction_read_only = on"
ROWS_SQL = "SELECT coalesce(json_agg(t ORDER BY id), '[]'::json)::text FROM {} t"
CHECKSUM_SQL = "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY id), '')) FROM {} t"
CONTROL_CHARACTERS = {code: f"\\x{code:02x}" for code in (*range(32), 127)}


class StartupError(Exception):
    """A failure at start: one line for stderr, and the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def one_line(text: str) -> str:
    return " ".join(str(text).split())


# The secret ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Database:
    host: str
    port: int
    username: str
    password: str
    dbname: str

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}/{self.dbname}"

    def redact(self, text: str) -> str:
        """``text`` on one line, without the password (error messages should not hold it; make sure)."""
        text = one_line(text)
        return text.replace(self.password, "***") if self.password else text

    def connect(self) -> psycopg.Connection[Any]:
        # The password goes as a keyword, never inside a DSN string that could be logged.
        conn = psycopg.connect(
            host=self.host, port=self.port, dbname=self.dbname, user=self.username, password=self.password,
            connect_timeout=5, autocommit=True, application_name="strongroom-sample-app",
        )
        try:
            conn.execute(SESSION_SETUP)
        except BaseException:
            conn.close()
            raise
        return conn


def read_secret_from_store(name: str, home: str) -> str:
    """The secret's JSON as ``strongroom secrets get NAME --json`` prints it; the passphrase comes from the
    environment (STRONGROOM_PASSPHRASE), never from an argument."""
    command = [sys.executable, "-m", "strongroom.cli.main", "--home", home, "secrets", "get", name, "--json"]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        reason = one_line(exc)
        raise StartupError(f"cannot read secret '{name}': strongroom did not run: {reason}", EXIT_SECRET) from None
    if proc.returncode != 0:
        lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        if any(line.startswith("Traceback") for line in lines):
            lines = lines[-1:]
        reason = one_line(" ".join(lines)).removeprefix("error: ") or f"exit code {proc.returncode}"
        raise StartupError(f"cannot read secret '{name}' from {home}: {reason}", EXIT_SECRET)
    return proc.stdout


def read_secret_from_file(name: str, path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise StartupError(f"cannot read secret '{name}' from file {path}: {reason}", EXIT_SECRET) from None


def read_secret_from_environment(name: str, variable: str) -> str:
    """The secret's JSON from ``variable`` (set by whoever starts the app, e.g. a runbook step's ``env``);
    removed from this process's environment once read."""
    text = os.environ.pop(variable, None)
    if not text:
        raise StartupError(f"cannot read secret '{name}': environment variable {variable} is not set", EXIT_SECRET)
    return text


def parse_secret(name: str, text: str) -> Database:
    """Check the RDS shape, naming a bad field but never echoing a value."""
    try:
        value = json.loads(text)
    except ValueError:
        raise StartupError(f"secret '{name}' is not valid JSON", EXIT_SECRET) from None
    if not isinstance(value, dict):
        raise StartupError(f"secret '{name}' is not a JSON object with database credentials", EXIT_SECRET)
    for field in SECRET_FIELDS:
        if field not in value:
            raise StartupError(f"secret '{name}': field '{field}' is missing", EXIT_SECRET)
    engine = value.get("engine", "postgres")
    if engine not in ("postgres", "postgresql"):
        raise StartupError(f"secret '{name}': field 'engine' must be 'postgres'", EXIT_SECRET)
    port = value["port"]
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise StartupError(f"secret '{name}': field 'port' must be an integer from 1 to 65535", EXIT_SECRET)
    for field in ("host", "username", "password", "dbname"):
        if not isinstance(value[field], str) or not value[field]:
            raise StartupError(f"secret '{name}': field '{field}' must be a non-empty string", EXIT_SECRET)
    return Database(value["host"], port, value["username"], value["password"], value["dbname"])


def table_identifier(table: str) -> sql.Identifier:
    """``name`` or ``schema.name``, quoted safely."""
    parts = table.split(".")
    if len(parts) > 2 or not all(parts):
        raise StartupError(f"--table must be NAME or SCHEMA.NAME, not {table!r}", 2)
    return sql.Identifier(*parts)


# The web application ------------------------------------------------------------------------------

class SampleServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], database: Database, table: str) -> None:
        self.database = database
        self.table = table
        self.rows_query = sql.SQL(ROWS_SQL).format(table_identifier(table))
        self.checksum_query = sql.SQL(CHECKSUM_SQL).format(table_identifier(table))
        super().__init__(address, Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """An unexpected failure in a request (e.g. the client went away): one log line, not a traceback."""
        error = sys.exc_info()[1]
        log(f"{client_address[0]} request failed: {type(error).__name__}: {self.database.redact(str(error))}")


class Handler(BaseHTTPRequestHandler):
    server: SampleServer
    server_version = "strongroom-sample-app/1"
    reason = ""

    def do_GET(self) -> None:
        routes = {"/health": self.health, "/rows": self.rows, "/checksum": self.checksum}
        route = routes.get(self.path.split("?", 1)[0])
        if route is None:
            self.send_json(HTTPStatus.NOT_FOUND, {"error": "not found", "paths": sorted(routes)})
            return
        database = self.server.database
        try:
            route(database)
        except psycopg.OperationalError as exc:  # cannot connect: the database is down, moved or refuses us
            self.reason = database.redact(exc)
            self.send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "database unavailable", "reason": self.reason})
        except psycopg.Error as exc:  # e.g. the table does not exist
            self.reason = database.redact(exc)
            self.send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "query failed", "reason": self.reason})

    def health(self, database: Database) -> None:
        try:
            with database.connect() as conn:
                conn.execute("SELECT 1").fetchone()
        except psycopg.Error as exc:
            self.reason = database.redact(exc)
            body = {"status": "unavailable", "database": database.label, "reason": self.reason}
            self.send_json(HTTPStatus.SERVICE_UNAVAILABLE, body)
            return
        self.send_json(HTTPStatus.OK, {"status": "ok", "database": database.label})

    def rows(self, database: Database) -> None:
        with database.connect() as conn:
            row = conn.execute(self.server.rows_query).fetchone()
        self.send_body(HTTPStatus.OK, (row[0] if row else "[]").encode())

    def checksum(self, database: Database) -> None:
        with database.connect() as conn:
            count, digest = conn.execute(self.server.checksum_query).fetchone() or (0, "")
        self.send_json(HTTPStatus.OK, {"rows": count, "md5": digest})

    def send_json(self, status: HTTPStatus, body: Any) -> None:
        self.send_body(status, json.dumps(body).encode())

    def send_body(self, status: HTTPStatus, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        status = code.value if isinstance(code, HTTPStatus) else code
        suffix = f" ({self.reason})" if self.reason else ""
        self.log_message('"%s" %s%s', self.requestline, status, suffix)

    def log_message(self, format: str, *args: Any) -> None:
        log(f"{self.client_address[0]} {format % args}")


def log(message: str) -> None:
    """One line on stderr: a timestamp and the message, control characters escaped."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    sys.stderr.write(f"{stamp} {message.translate(CONTROL_CHARACTERS)}\n")
    sys.stderr.flush()


# Start and stop -----------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve a table as JSON, with credentials from Strongroom's secrets.")
    parser.add_argument("--secret", required=True, metavar="NAME", help="the RDS-shaped secret's name")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--home", metavar="DIR", help="ask the secret store of this account home (passphrase from "
                        "STRONGROOM_PASSPHRASE)")
    source.add_argument("--secret-file", metavar="FILE", help="read a file written by `strongroom secrets export`")
    source.add_argument("--secret-env", metavar="VAR", help="read the secret's JSON from environment variable VAR "
                        "(a runbook step's env: VAR: ${secret.NAME})")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="port to listen on")
    parser.add_argument("--table", default="patients", help="table to serve, NAME or SCHEMA.NAME (default patients)")
    return parser.parse_args(argv)


def prepare(args: argparse.Namespace) -> SampleServer:
    if args.home:
        text = read_secret_from_store(args.secret, args.home)
    elif args.secret_env:
        text = read_secret_from_environment(args.secret, args.secret_env)
    else:
        text = read_secret_from_file(args.secret, args.secret_file)
    database = parse_secret(args.secret, text)
    table_identifier(args.table)
    try:
        with database.connect() as conn:
            conn.execute("SELECT 1").fetchone()
    except psycopg.Error as exc:
        raise StartupError(f"database {database.label} refused the connection as '{database.username}': "
                           f"{database.redact(exc)}", EXIT_DATABASE) from None
    try:
        return SampleServer((args.host, args.port), database, args.table)
    except OSError as exc:
        raise StartupError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", EXIT_LISTEN) from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        server = prepare(args)
    except StartupError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.code
    except KeyboardInterrupt:
        return 130

    stopping: list[str] = []

    def stop(signum: int, _frame: object) -> None:
        if not stopping:
            stopping.append(signal.Signals(signum).name)
            # shutdown() waits for serve_forever() to return: call it from another thread than the loop's.
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host, port = server.server_address[:2]
    log(f"serving table {args.table} of {server.database.label} as '{server.database.username}' "
        f"on http://{host}:{port} (secret '{args.secret}', pid {os.getpid()})")
    started = time.monotonic()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    log(f"stopped ({stopping[0] if stopping else 'shutdown'}) after {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
