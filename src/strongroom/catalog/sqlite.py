"""The catalog in one SQLite file, in WAL mode so readers never wait for a running job."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from strongroom.catalog.migrations import MIGRATIONS
from strongroom.errors import AccountError, AlreadyExistsError, NotFoundError
from strongroom.model import (
    Job,
    JobState,
    JobType,
    RecoveryPoint,
    RecoveryPointStatus,
    Resource,
    VaultRecord,
    iso,
    now,
)

BUSY_TIMEOUT_MS = 30_000


class Catalog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _migrate(self) -> None:
        with self.transaction() as db:
            db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT)")
            current = db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]
            if current > len(MIGRATIONS):
                raise AccountError(
                    f"the catalog {self.path} has schema version {current}, newer than this Strongroom knows",
                    hint="Upgrade Strongroom",
                )
            for version in range(current + 1, len(MIGRATIONS) + 1):
                for statement in _statements(MIGRATIONS[version - 1]):
                    db.execute(statement)
                db.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, iso(now())))

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0])

    # Vaults ----------------------------------------------------------------------------------
    def add_vault(self, vault: VaultRecord) -> None:
        with self.transaction() as db:
            try:
                db.execute(
                    "INSERT INTO vaults VALUES (?, ?, ?, ?, ?)",
                    (vault.name, vault.arn, vault.store_url, vault.vault_id, vault.created_at),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExistsError(f"vault '{vault.name}' already exists") from None

    def get_vault(self, name: str) -> VaultRecord:
        row = self._db.execute("SELECT * FROM vaults WHERE name = ? OR arn = ?", (name, name)).fetchone()
        if row is None:
            raise NotFoundError(f"no backup vault named '{name}'", hint="List vaults with 'strongroom vaults list'")
        return VaultRecord(row["name"], row["arn"], row["store_url"], row["vault_id"], row["created_at"])

    def list_vaults(self) -> list[VaultRecord]:
        rows = self._db.execute("SELECT * FROM vaults ORDER BY name").fetchall()
        return [VaultRecord(r["name"], r["arn"], r["store_url"], r["vault_id"], r["created_at"]) for r in rows]

    # Resources -------------------------------------------------------------------------------
    def add_resource(self, resource: Resource) -> None:
        with self.transaction() as db:
            try:
                db.execute(
                    "INSERT INTO resources VALUES (?, ?, ?, ?, ?)",
                    (resource.id, resource.type, json.dumps(resource.settings), json.dumps(resource.tags),
                     resource.created_at),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExistsError(
                    f"resource '{resource.id}' already exists", hint="Pick another id or remove the old one first"
                ) from None

    def get_resource(self, resource_id: str) -> Resource:
        row = self._db.execute("SELECT * FROM resources WHERE id = ?", (resource_id,)).fetchone()
        if row is None:
            raise NotFoundError(
                f"unknown resource '{resource_id}'", hint="List resources with 'strongroom resources list'"
            )
        return _resource(row)

    def list_resources(self) -> list[Resource]:
        return [_resource(r) for r in self._db.execute("SELECT * FROM resources ORDER BY id")]

    def remove_resource(self, resource_id: str) -> None:
        self.get_resource(resource_id)
        with self.transaction() as db:
            db.execute("DELETE FROM resources WHERE id = ?", (resource_id,))

    # Jobs ------------------------------------------------------------------------------------
    def add_job(self, job: Job) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO jobs (id, job_type, state, resource_id, vault_name, recovery_point_arn, creation_date,"
                " parameters) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (job.id, job.job_type.value, job.state.value, job.resource_id, job.vault_name,
                 job.recovery_point_arn, job.creation_date, json.dumps(job.parameters)),
            )

    def update_job(self, job_id: str, **fields: Any) -> None:
        self._update("jobs", job_id, fields, json_columns=("parameters", "result"))

    def get_job(self, job_id: str) -> Job:
        row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"unknown job '{job_id}'", hint="List jobs with 'strongroom jobs list'")
        return _job(row)

    def list_jobs(self, *, states: list[JobState] | None = None, job_type: JobType | None = None) -> list[Job]:
        sql, args = "SELECT * FROM jobs WHERE 1=1", []
        if states:
            sql += f" AND state IN ({','.join('?' * len(states))})"
            args += [s.value for s in states]
        if job_type:
            sql += " AND job_type = ?"
            args.append(job_type.value)
        return [_job(r) for r in self._db.execute(sql + " ORDER BY creation_date", args)]

    # Recovery points -------------------------------------------------------------------------
    def add_recovery_point(self, rp: RecoveryPoint) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO recovery_points (id, arn, vault_name, resource_id, resource_type, status, creation_date,"
                " backup_job_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (rp.id, rp.arn, rp.vault_name, rp.resource_id, rp.resource_type, rp.status.value,
                 rp.creation_date, rp.backup_job_id),
            )

    def update_recovery_point(self, rp_id: str, **fields: Any) -> None:
        self._update("recovery_points", rp_id, fields, json_columns=("metadata",))

    def _update(self, table: str, row_id: str, fields: dict[str, Any], json_columns: tuple[str, ...]) -> None:
        """Set ``fields`` (column names from this module's callers, never from users) on one row."""
        encoded = {k: (json.dumps(v) if k in json_columns else _plain(v)) for k, v in fields.items()}
        assignments = ", ".join(f"{name} = ?" for name in encoded)
        with self.transaction() as db:
            db.execute(f"UPDATE {table} SET {assignments} WHERE id = ?", (*encoded.values(), row_id))

    def get_recovery_point(self, arn_or_id: str) -> RecoveryPoint:
        row = self._db.execute(
            "SELECT * FROM recovery_points WHERE arn = ? OR id = ?", (arn_or_id, arn_or_id)
        ).fetchone()
        if row is None:
            raise NotFoundError(
                f"unknown recovery point '{arn_or_id}'", hint="List them with 'strongroom recovery-points list'"
            )
        return _recovery_point(row)

    def list_recovery_points(
        self,
        *,
        resource_id: str | None = None,
        vault_name: str | None = None,
        status: RecoveryPointStatus | None = None,
    ) -> list[RecoveryPoint]:
        sql, args = "SELECT * FROM recovery_points WHERE 1=1", []
        for column, value in (("resource_id", resource_id), ("vault_name", vault_name)):
            if value is not None:
                sql += f" AND {column} = ?"
                args.append(value)
        if status is not None:
            sql += " AND status = ?"
            args.append(status.value)
        return [_recovery_point(r) for r in self._db.execute(sql + " ORDER BY creation_date", args)]


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def _plain(value: Any) -> Any:
    return value.value if hasattr(value, "value") else value


def _resource(row: sqlite3.Row) -> Resource:
    return Resource(row["id"], row["type"], json.loads(row["settings"]), json.loads(row["tags"]), row["created_at"])


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        job_type=JobType(row["job_type"]),
        state=JobState(row["state"]),
        resource_id=row["resource_id"],
        vault_name=row["vault_name"],
        recovery_point_arn=row["recovery_point_arn"],
        creation_date=row["creation_date"],
        start_date=row["start_date"],
        completion_date=row["completion_date"],
        bytes_processed=row["bytes_processed"],
        status_message=row["status_message"],
        parameters=json.loads(row["parameters"]),
        result=json.loads(row["result"]),
    )


def _recovery_point(row: sqlite3.Row) -> RecoveryPoint:
    return RecoveryPoint(
        id=row["id"],
        arn=row["arn"],
        vault_name=row["vault_name"],
        resource_id=row["resource_id"],
        resource_type=row["resource_type"],
        status=RecoveryPointStatus(row["status"]),
        creation_date=row["creation_date"],
        completion_date=row["completion_date"],
        source_bytes=row["source_bytes"],
        stored_bytes=row["stored_bytes"],
        new_bytes=row["new_bytes"],
        backup_job_id=row["backup_job_id"],
        status_message=row["status_message"],
        metadata=json.loads(row["metadata"]),
    )
