"""The catalog in one SQLite file, in WAL mode so readers never wait for a running job."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import fields as record_fields
from datetime import datetime
from pathlib import Path
from typing import Any

from strongroom.catalog import integrity
from strongroom.catalog.compliance_records import Evaluation, ReportJob
from strongroom.catalog.dr_records import DrRun, DrStep
from strongroom.catalog.migrations import MIGRATIONS
from strongroom.catalog.records import (
    ChunkMapping,
    Credential,
    Output,
    PinnedSourceKey,
    RemoteAccount,
    SealedSecret,
    SecretInfo,
    record,
)
from strongroom.errors import AccountError, AlreadyExistsError, IntegrityError, NotFoundError, StorageFullError
from strongroom.model import (
    Job,
    JobState,
    JobType,
    OutboxRow,
    RecoveryPoint,
    RecoveryPointStatus,
    Resource,
    VaultRecord,
    iso,
    now,
)
from strongroom.plans.records import Lease, RunKey, ScheduleRun

BUSY_TIMEOUT_MS = 30_000


class Catalog:
    """The account's catalog. With a :class:`~strongroom.catalog.integrity.Guard` attached (every account
    has one) the security-relevant rows are signed on write and checked on read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.guard: integrity.Guard | None = None
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
        self._key_before_writing()
        with self.transaction() as db:
            try:
                db.execute(
                    "INSERT INTO vaults (name, arn, store_url, vault_id, created_at, access_policy, lock, managed)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        vault.name,
                        vault.arn,
                        vault.store_url,
                        vault.vault_id,
                        vault.created_at,
                        _json_or_null(vault.access_policy),
                        _json_or_null(vault.lock),
                        int(vault.managed),
                    ),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExistsError(f"vault '{vault.name}' already exists") from None
            self._bump_and_sign_vault(db, vault.name, new=True)
        self._mirror(vault.name, None)

    def get_vault(self, name: str) -> VaultRecord:
        row = self._db.execute("SELECT * FROM vaults WHERE name = ? OR arn = ?", (name, name)).fetchone()
        if row is None:
            raise NotFoundError(f"no backup vault named '{name}'", hint="List vaults with 'strongroom vaults list'")
        return _vault(self._checked("vaults", row))

    def list_vaults(self) -> list[VaultRecord]:
        return [_vault(self._checked("vaults", r)) for r in self._db.execute("SELECT * FROM vaults ORDER BY name")]

    def vault_sequence(self, name: str) -> int:
        """How many security-relevant changes the vault has seen (checked against its store's record)."""
        row = self._db.execute("SELECT * FROM vaults WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFoundError(f"no backup vault named '{name}'")
        return int(self._checked("vaults", row)["seq"])

    def update_vault(self, name: str, **fields: Any) -> None:
        self._update("vaults", name, fields, json_columns=("access_policy", "lock", "notifications"), key="name")

    def remove_vault(self, name: str) -> None:
        """Forget a vault; the history of its DELETED recovery points goes with it (they refer to it)."""
        with self.transaction() as db:
            db.execute("DELETE FROM recovery_points WHERE vault_name = ? AND status = 'DELETED'", (name,))
            db.execute("DELETE FROM vaults WHERE name = ?", (name,))

    # Resources -------------------------------------------------------------------------------
    def add_resource(self, resource: Resource) -> None:
        with self.transaction() as db:
            try:
                db.execute(
                    "INSERT INTO resources (id, type, settings, tags, created_at, managed) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        resource.id,
                        resource.type,
                        json.dumps(resource.settings),
                        json.dumps(resource.tags),
                        resource.created_at,
                        int(resource.managed),
                    ),
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

    def update_resource(self, resource_id: str, **fields: Any) -> None:
        self._update("resources", resource_id, fields, json_columns=("settings", "tags"))

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
                (
                    job.id,
                    job.job_type.value,
                    job.state.value,
                    job.resource_id,
                    job.vault_name,
                    job.recovery_point_arn,
                    job.creation_date,
                    json.dumps(job.parameters),
                ),
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
    def add_recovery_point(self, rp: RecoveryPoint, job_fields: dict[str, Any] | None = None) -> None:
        """Record a new recovery point and, in the same transaction, set ``job_fields`` on the job that makes it
        (its ``recovery_point_arn``): a crash never leaves a point whose job does not name it, which the
        dead-job sweep could not then mark PARTIAL."""
        self._key_before_writing()
        with self.transaction() as db:
            db.execute(_POINT_SQL, _point_values(rp))
            self._sign(db, "recovery_points", rp.id)
            self._bump_and_sign_vault(db, rp.vault_name)
            if job_fields and rp.backup_job_id:
                self._update_in(db, "jobs", rp.backup_job_id, job_fields, ("parameters", "result"), "id", secured=False)
        self._mirror(rp.vault_name, rp.id)

    def add_attached_vault(self, vault: VaultRecord, sequence: int, points: list[RecoveryPoint]) -> None:
        """Record a vault a home attached (services/attach.py) and its recovery points as the vault's own
        objects describe them, in one transaction: a crash leaves all or nothing. Its change sequence starts
        at ``sequence`` (past the one the vault recorded); the caller then writes the vault's records."""
        self._key_before_writing()
        with self.transaction() as db:
            try:
                db.execute(
                    "INSERT INTO vaults (name, arn, store_url, vault_id, created_at, access_policy, lock, managed, seq)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?)",
                    (
                        vault.name,
                        vault.arn,
                        vault.store_url,
                        vault.vault_id,
                        vault.created_at,
                        _json_or_null(vault.access_policy),
                        _json_or_null(vault.lock),
                        sequence,
                    ),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExistsError(f"vault '{vault.name}' already exists") from None
            self._sign(db, "vaults", vault.name)
            for rp in points:
                try:
                    db.execute(_POINT_SQL, _point_values(rp))
                except sqlite3.IntegrityError:
                    raise AlreadyExistsError(
                        f"recovery point {rp.id} is already in this catalog (in another vault)",
                        hint="Attach each vault once, into one account",
                    ) from None
                self._sign(db, "recovery_points", rp.id)

    def update_recovery_point(self, rp_id: str, **fields: Any) -> None:
        self._update("recovery_points", rp_id, fields, json_columns=("metadata", "tags"))

    def _update(
        self, table: str, row_id: str, fields: dict[str, Any], json_columns: tuple[str, ...], key: str = "id"
    ) -> None:
        """Set ``fields`` (column names from this module's callers, never from users) on one row."""
        self._update_rows([(table, row_id, fields, json_columns, key)])

    def update_point_and_job(
        self, rp_id: str, point_fields: dict[str, Any], job_id: str, job_fields: dict[str, Any]
    ) -> None:
        """Change a recovery point and its job in one transaction: a crash never leaves one done without the other."""
        self._update_rows(
            [
                ("recovery_points", rp_id, point_fields, ("metadata",), "id"),
                ("jobs", job_id, job_fields, ("parameters", "result"), "id"),
            ]
        )

    def _update_rows(self, updates: list[tuple[str, str, dict[str, Any], tuple[str, ...], str]]) -> None:
        secured = [
            table in integrity.SECURED and bool(set(fields) & set(integrity.SECURED[table][1]))
            for table, _, fields, _, _ in updates
        ]
        if any(secured):
            self._key_before_writing()
        mirrors: list[tuple[str, str | None]] = []
        with self.transaction() as db:
            for (table, row_id, fields, json_columns, key), is_secured in zip(updates, secured, strict=True):
                vault_name = self._update_in(db, table, row_id, fields, json_columns, key, secured=is_secured)
                if vault_name is not None:
                    mirrors.append((vault_name, row_id if table == "recovery_points" else None))
        for vault_name, point_id in mirrors:
            self._mirror(vault_name, point_id)

    def _update_in(
        self,
        db: sqlite3.Connection,
        table: str,
        row_id: str,
        fields: dict[str, Any],
        json_columns: tuple[str, ...],
        key: str,
        *,
        secured: bool,
    ) -> str | None:
        """One row's update inside a transaction; the vault whose sealed record must follow (None: none)."""
        encoded = {k: (_json_or_null(v) if k in json_columns else _plain(v)) for k, v in fields.items()}
        assignments = ", ".join(f"{name} = ?" for name in encoded)
        vault_name = None
        if secured:
            # The row is checked before it changes: signing it again must never launder an edit.
            current = self._checked(table, self._row(db, table, row_id))
            vault_name = current["vault_name"] if table == "recovery_points" else current["name"]
        db.execute(f"UPDATE {table} SET {assignments} WHERE {key} = ?", (*encoded.values(), row_id))
        if secured and table == "recovery_points":
            self._sign(db, table, row_id)
        if vault_name is not None:  # a vault row was checked above, before it changed
            self._bump_and_sign_vault(db, vault_name, new=table == "vaults")
        return vault_name

    def get_recovery_point(self, arn_or_id: str) -> RecoveryPoint:
        row = self._db.execute(
            "SELECT * FROM recovery_points WHERE arn = ? OR id = ?", (arn_or_id, arn_or_id)
        ).fetchone()
        if row is None:
            raise NotFoundError(
                f"unknown recovery point '{arn_or_id}'", hint="List them with 'strongroom recovery-points list'"
            )
        return _recovery_point(self._checked("recovery_points", row))

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
        rows = self._db.execute(sql + " ORDER BY creation_date", args)
        return [_recovery_point(self._checked("recovery_points", r)) for r in rows]

    # Credentials this account issued ----------------------------------------------------------
    def add_credential(
        self, key_id: str, principal_arn: str, created_at: str, expires_at: str | None, *, counted_in: str
    ) -> None:
        """Record a credential; the change counts in vault ``counted_in``'s sequence (a rollback to before
        it, or to before a revocation, is then found like any other)."""
        self._key_before_writing()
        with self.transaction() as db:
            db.execute(
                "INSERT INTO credentials (key_id, principal_arn, created_at, expires_at) VALUES (?, ?, ?, ?)",
                (key_id, principal_arn, created_at, expires_at),
            )
            self._sign(db, "credentials", key_id)
            self._bump_and_sign_vault(db, counted_in)
        self._mirror(counted_in, None)

    def get_credential(self, key_id: str) -> Credential | None:
        """The credential row, checked against its MAC (who it acts as, expiry and revocation)."""
        row = self._db.execute("SELECT * FROM credentials WHERE key_id = ?", (key_id,)).fetchone()
        return record(Credential, self._checked("credentials", row)) if row else None

    def list_credentials(self) -> list[Credential]:
        rows = self._db.execute("SELECT * FROM credentials ORDER BY created_at")
        return [record(Credential, self._checked("credentials", r)) for r in rows]

    def revoke_credential(self, key_id: str, revoked_at: str, *, counted_in: str) -> bool:
        self._key_before_writing()
        with self.transaction() as db:
            self._checked("credentials", self._row(db, "credentials", key_id))
            cursor = db.execute(
                "UPDATE credentials SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL", (revoked_at, key_id)
            )
            self._sign(db, "credentials", key_id)
            self._bump_and_sign_vault(db, counted_in)
        self._mirror(counted_in, None)
        return cursor.rowcount == 1

    # Row MACs (catalog/integrity.py) ---------------------------------------------------------
    def _checked(self, table: str, row: sqlite3.Row | None) -> sqlite3.Row:
        if row is None:
            raise NotFoundError(f"the {integrity.WHAT[table]} disappeared from the catalog")
        key = self.guard.read_key() if self.guard else None
        if key is None:
            return row
        if row["mac"] is None:  # read before the first key fetch signed an older catalog: read it again
            row = self._row(self._db, table, row[integrity.SECURED[table][0]]) or row
        integrity.check_row(key, table, row)
        return row

    def _key_before_writing(self) -> None:
        """Fetch the key outside any transaction (the first fetch may sign an older catalog's rows)."""
        if self.guard is not None:
            self.guard.write_key()

    @staticmethod
    def _row(db: sqlite3.Connection, table: str, key_value: str) -> sqlite3.Row | None:
        key_column = integrity.SECURED[table][0]
        return db.execute(f"SELECT * FROM {table} WHERE {key_column} = ?", (key_value,)).fetchone()

    def _sign(self, db: sqlite3.Connection, table: str, key_value: str) -> None:
        if self.guard is None:
            return  # a catalog opened outside an account (tools, unit tests): nothing to sign with
        row = self._row(db, table, key_value)
        if row is not None:
            mac = integrity.row_mac(self.guard.write_key(), table, row)
            db.execute(f"UPDATE {table} SET mac = ? WHERE {integrity.SECURED[table][0]} = ?", (mac, key_value))

    def _bump_and_sign_vault(self, db: sqlite3.Connection, vault_name: str, *, new: bool = False) -> None:
        """Count a change of the vault; unless ``new`` (just written), its row is checked first: an edited
        vault row must fail here, not be signed again along with a point's change."""
        if not new:
            self._checked("vaults", self._row(db, "vaults", vault_name))
        db.execute("UPDATE vaults SET seq = seq + 1 WHERE name = ?", (vault_name,))
        self._sign(db, "vaults", vault_name)

    def _mirror(self, vault_name: str, point_id: str | None) -> None:
        if self.guard is not None:
            self.guard.mirror(vault_name, point_id)

    def sign_unsigned_rows(self, key: bytes) -> int:
        """Sign every secured row that has no MAC yet (the one-time upgrade of an older catalog); how many."""
        signed = 0
        with self.transaction() as db:
            for table, (key_column, _) in integrity.SECURED.items():
                for row in db.execute(f"SELECT * FROM {table} WHERE mac IS NULL").fetchall():
                    mac = integrity.row_mac(key, table, row)
                    db.execute(f"UPDATE {table} SET mac = ? WHERE {key_column} = ?", (mac, row[key_column]))
                    signed += 1
        return signed

    def resign_all_rows(self, key: bytes) -> None:
        """Sign every secured row as it is now: the account's owner vouches for the catalog (tests, repair)."""
        with self.transaction() as db:
            for table, (key_column, _) in integrity.SECURED.items():
                for row in db.execute(f"SELECT * FROM {table}").fetchall():
                    mac = integrity.row_mac(key, table, row)
                    db.execute(f"UPDATE {table} SET mac = ? WHERE {key_column} = ?", (mac, row[key_column]))

    def raise_vault_sequence(self, name: str, at_least: int) -> None:
        """Unsigned: only :meth:`resign_all_rows` follows it."""
        with self.transaction() as db:
            db.execute("UPDATE vaults SET seq = MAX(seq, ?) WHERE name = ?", (at_least, name))

    def unauthentic_rows(self, key: bytes) -> list[str]:
        """One line per secured row whose MAC fails (``verify``)."""
        found = []
        for table in integrity.SECURED:
            for row in self._db.execute(f"SELECT * FROM {table}"):
                if not integrity.row_is_authentic(key, table, row):
                    found.append(integrity.failure(table, row))
        return found

    def any_vault_store_url(self) -> str | None:
        """Unchecked: only to test a passphrase against a vault's keys."""
        row = self._db.execute("SELECT store_url FROM vaults ORDER BY name LIMIT 1").fetchone()
        return str(row[0]) if row else None

    def vault_names(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT name FROM vaults ORDER BY name")]

    def point_row(self, point_id: str) -> dict[str, Any]:
        return dict(self._checked("recovery_points", self._row(self._db, "recovery_points", point_id)))

    def raw_point_rows(self, vault_name: str) -> list[dict[str, Any]]:
        """As stored, unchecked: ``verify`` reports failing MACs by themselves."""
        rows = self._db.execute("SELECT * FROM recovery_points WHERE vault_name = ?", (vault_name,))
        return [dict(r) for r in rows]

    def point_rows(self, vault_name: str) -> list[dict[str, Any]]:
        """The recovery points of a vault as stored (for comparing with the vault's records), checked."""
        rows = self._db.execute("SELECT * FROM recovery_points WHERE vault_name = ?", (vault_name,))
        return [dict(self._checked("recovery_points", r)) for r in rows]

    # Other accounts this account talks to ---------------------------------------------------
    def put_remote_account(self, remote: RemoteAccount) -> None:
        columns = [item.name for item in record_fields(RemoteAccount)]
        with self.transaction() as db:
            db.execute("DELETE FROM remote_accounts WHERE name = ? OR account_id = ?", (remote.name, remote.account_id))
            db.execute(
                f"INSERT INTO remote_accounts ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                tuple(getattr(remote, c) for c in columns),
            )

    def get_remote_account(self, name_or_account_id: str) -> RemoteAccount:
        row = self._db.execute(
            "SELECT * FROM remote_accounts WHERE name = ? OR account_id = ?", (name_or_account_id, name_or_account_id)
        ).fetchone()
        if row is None:
            raise NotFoundError(
                f"no account '{name_or_account_id}' is registered here",
                hint="Register it with 'strongroom accounts add NAME --endpoint URL --account-id ID --key-id KEY'",
            )
        return record(RemoteAccount, row)

    def list_remote_accounts(self) -> list[RemoteAccount]:
        return [record(RemoteAccount, r) for r in self._db.execute("SELECT * FROM remote_accounts ORDER BY name")]

    def remove_remote_account(self, name: str) -> None:
        self.get_remote_account(name)
        with self.transaction() as db:
            db.execute("DELETE FROM remote_accounts WHERE name = ?", (name,))

    # Account-wide settings written by apply (e.g. destination_vault_arn) ----------------------
    def set_setting(self, name: str, value: Any) -> None:
        with self.transaction() as db:
            if value is None:
                db.execute("DELETE FROM account_settings WHERE name = ?", (name,))
            else:
                db.execute("INSERT OR REPLACE INTO account_settings VALUES (?, ?)", (name, json.dumps(value)))

    def get_setting(self, name: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM account_settings WHERE name = ?", (name,)).fetchone()
        return json.loads(row[0]) if row else default

    # Outputs of the last apply ---------------------------------------------------------------
    def set_outputs(self, outputs: dict[str, Output]) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM outputs")
            db.executemany(
                "INSERT INTO outputs VALUES (?, ?)", [(k, json.dumps(v.as_dict())) for k, v in outputs.items()]
            )

    def get_outputs(self) -> dict[str, Output]:
        rows = self._db.execute("SELECT * FROM outputs ORDER BY name")
        return {r["name"]: Output.of(json.loads(r["value"])) for r in rows}

    # Chunk ids of a peer vault mapped to this account's ids (incremental copies) --------------
    # ``checked_under`` is the fingerprint of the peer's chunk-id key under which the mapping's content
    # was checked (services/copy_receive.py); NULL: never checked, so it is checked before reuse. ``size`` and
    # ``proof`` (the receiving vault's MAC over the mapping, its key and size) are set when a pushed copy
    # proved the mapping; a row without them, or whose proof fails, is read and checked before reuse.
    def map_chunks(
        self,
        vault_name: str,
        peer_vault_id: str,
        pairs: list[tuple[bytes, bytes]],
        checked_under: bytes | None,
        proven: Mapping[bytes, tuple[int, bytes]] | None = None,
    ) -> int:
        """Record mappings; never replaces one by a different one it cannot prove better.

        A different mapping checked under another key, or never, is replaced by one checked under
        ``checked_under`` (returned: how many); the same peer id checked under the same key to two
        different chunks is an IntegrityError (a forged catalog); unchecked pairs never replace anything.
        ``proven``: peer id -> (plaintext size, proof), recorded with the mapping it proves.
        """
        proven = proven or {}
        replaced = 0
        with self.transaction() as db:
            existing = self._mappings(db, vault_name, peer_vault_id, [peer for peer, _ in pairs])
            for peer, own in pairs:
                found = existing.get(peer)
                size, proof = proven.get(peer, (None, None))
                if found is None:
                    db.execute(
                        "INSERT INTO chunk_map (vault_name, peer_vault_id, peer_chunk_id, chunk_id, checked_under,"
                        " size, proof) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (vault_name, peer_vault_id, peer, own, checked_under, size, proof),
                    )
                elif checked_under is None or (found.checked_under == checked_under and found.chunk_id == own):
                    if checked_under is not None and proof is not None and found.proof != proof:
                        self._set_mapping(db, vault_name, peer_vault_id, peer, own, checked_under, size, proof)
                elif found.checked_under == checked_under:
                    raise IntegrityError(
                        f"the catalog maps chunk {peer.hex()} of vault {peer_vault_id} to two different chunks,"
                        " both checked under the same key (the catalog was edited)"
                    )
                else:
                    replaced += found.chunk_id != own
                    self._set_mapping(db, vault_name, peer_vault_id, peer, own, checked_under, size, proof)
        return replaced

    @staticmethod
    def _set_mapping(
        db: sqlite3.Connection,
        vault_name: str,
        peer_vault_id: str,
        peer: bytes,
        own: bytes,
        checked_under: bytes,
        size: int | None,
        proof: bytes | None,
    ) -> None:
        db.execute(
            "UPDATE chunk_map SET chunk_id = ?, checked_under = ?, size = ?, proof = ? WHERE vault_name = ?"
            " AND peer_vault_id = ? AND peer_chunk_id = ?",
            (own, checked_under, size, proof, vault_name, peer_vault_id, peer),
        )

    def mapped_chunks(self, vault_name: str, peer_vault_id: str, peer_ids: list[bytes]) -> dict[bytes, ChunkMapping]:
        """peer id -> its mapping (own id, the key it was checked under, its proven size and proof)."""
        return self._mappings(self._db, vault_name, peer_vault_id, peer_ids)

    @staticmethod
    def _mappings(
        db: sqlite3.Connection, vault_name: str, peer_vault_id: str, peer_ids: list[bytes]
    ) -> dict[bytes, ChunkMapping]:
        found: dict[bytes, ChunkMapping] = {}
        for start in range(0, len(peer_ids), 500):
            batch = peer_ids[start : start + 500]
            rows = db.execute(
                "SELECT peer_chunk_id, chunk_id, checked_under, size, proof FROM chunk_map WHERE vault_name = ?"
                f" AND peer_vault_id = ? AND peer_chunk_id IN ({','.join('?' * len(batch))})",
                (vault_name, peer_vault_id, *batch),
            )
            for peer, own, checked, size, proof in rows:
                found[bytes(peer)] = ChunkMapping(
                    bytes(own),
                    None if checked is None else bytes(checked),
                    None if size is None else int(size),
                    None if proof is None else bytes(proof),
                )
        return found

    def set_mappings_checked(
        self,
        vault_name: str,
        peer_vault_id: str,
        pairs: list[tuple[bytes, bytes]],
        checked_under: bytes,
        proven: Mapping[bytes, tuple[int, bytes]] | None = None,
    ) -> None:
        """Record that these mappings' content was checked under the key ``checked_under`` names (``proven``:
        peer id -> their plaintext size and proof)."""
        proven = proven or {}
        with self.transaction() as db:
            db.executemany(
                "UPDATE chunk_map SET checked_under = ?, size = ?, proof = ? WHERE vault_name = ?"
                " AND peer_vault_id = ? AND peer_chunk_id = ? AND chunk_id = ?",
                [(checked_under, *proven.get(p, (None, None)), vault_name, peer_vault_id, p, o) for p, o in pairs],
            )

    def forget_mappings(self, vault_name: str, peer_vault_id: str, pairs: list[tuple[bytes, bytes]]) -> None:
        """Drop mappings whose content is not what the peer's id names."""
        with self.transaction() as db:
            db.executemany(
                "DELETE FROM chunk_map WHERE vault_name = ? AND peer_vault_id = ? AND peer_chunk_id = ?"
                " AND chunk_id = ?",
                [(vault_name, peer_vault_id, p, o) for p, o in pairs],
            )

    # Chunk-id keys of source vaults, pinned on first copy (services/source_keys.py) ------------
    def pin_source_key(self, account_id: str, vault_id: str, sealed_key: str, fingerprint: bytes) -> str:
        """Pin a source vault's sealed id key unless one is pinned; returns the pinned one."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO source_id_keys VALUES (?, ?, ?, ?, ?)",
                (account_id, vault_id, sealed_key, fingerprint, iso(now())),
            )
            row = db.execute(
                "SELECT sealed_key FROM source_id_keys WHERE source_account_id = ? AND source_vault_id = ?",
                (account_id, vault_id),
            ).fetchone()
        return str(row[0])

    def list_source_keys(self) -> list[PinnedSourceKey]:
        rows = self._db.execute(
            "SELECT source_account_id, source_vault_id, fingerprint, pinned_at FROM source_id_keys"
            " ORDER BY source_account_id, source_vault_id"
        )
        return [PinnedSourceKey(a, v, bytes(f), p) for a, v, f, p in rows]

    def unpin_source_key(self, account_id: str, vault_id: str) -> int:
        """Drop a pin and every chunk mapping from that source vault (checked under the pinned key);
        returns how many mappings went. Raises NotFoundError when nothing is pinned for it."""
        with self.transaction() as db:
            removed = db.execute(
                "DELETE FROM source_id_keys WHERE source_account_id = ? AND source_vault_id = ?", (account_id, vault_id)
            ).rowcount
            if not removed:
                raise NotFoundError(
                    f"no chunk-id key is pinned for source vault {vault_id} of account {account_id}",
                    hint="'strongroom accounts source-keys' lists the pinned ones",
                )
            return int(db.execute("DELETE FROM chunk_map WHERE peer_vault_id = ?", (vault_id,)).rowcount)

    def forget_chunks(self, vault_name: str, chunk_ids: list[bytes]) -> None:
        """Drop mappings to chunks the garbage collector removed."""
        with self.transaction() as db:
            db.executemany(
                "DELETE FROM chunk_map WHERE vault_name = ? AND chunk_id = ?", [(vault_name, c) for c in chunk_ids]
            )

    # Notification outbox (services/notifications/outbox.py) ----------------------------------
    # Times are UTC ISO strings of one fixed format, so they compare as text; ``sink`` holds the sealed URL.
    def add_notifications(self, rows: list[OutboxRow]) -> list[int]:
        columns = ("vault_name", "event", "payload", "sink", "next_attempt_at", "created_at")
        ids = []
        with self.transaction() as db:
            for row in rows:
                cursor = db.execute(
                    f"INSERT INTO notifications ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                    (row.vault_name, row.event, json.dumps(row.payload), row.sink, row.next_attempt_at, row.created_at),
                )
                ids.append(int(cursor.lastrowid or 0))
        return ids

    def due_notifications(
        self, moment: str, max_attempts: int, *, ids: list[int] | None = None, limit: int = 500
    ) -> list[OutboxRow]:
        sql = "SELECT * FROM notifications WHERE delivered_at IS NULL AND attempts < ? AND next_attempt_at <= ?"
        args: list[Any] = [max_attempts, moment]
        if ids is not None:
            sql += f" AND id IN ({','.join('?' * len(ids))})"
            args += ids
        return [_notification(r) for r in self._db.execute(sql + " ORDER BY id LIMIT ?", [*args, limit])]

    def claim_notification(self, row_id: int, seen_next_attempt_at: str, max_attempts: int, lease_until: str) -> bool:
        """Take a row read as due for one delivery attempt, unless another sender changed it since (compare and
        swap on ``next_attempt_at``, which moves to ``lease_until``): one sender per attempt."""
        with self.transaction() as db:
            cursor = db.execute(
                "UPDATE notifications SET next_attempt_at = ? WHERE id = ? AND delivered_at IS NULL"
                " AND attempts < ? AND next_attempt_at = ?",
                (lease_until, row_id, max_attempts, seen_next_attempt_at),
            )
        return cursor.rowcount == 1

    def finish_notification(
        self, row_id: int, *, attempts: int, next_attempt_at: str, delivered_at: str | None, last_error: str | None
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE notifications SET attempts = ?, next_attempt_at = ?, delivered_at = ?, last_error = ?"
                " WHERE id = ?",
                (attempts, next_attempt_at, delivered_at, last_error, row_id),
            )

    def list_notifications(self, *, pending_only: bool = False, max_attempts: int = 0) -> list[OutboxRow]:
        sql, args = "SELECT * FROM notifications", []
        if pending_only:
            sql += " WHERE delivered_at IS NULL AND attempts < ?"
            args.append(max_attempts)
        return [_notification(r) for r in self._db.execute(sql + " ORDER BY id", args)]

    # Request nonces the account API accepted (services/credentials.py) -------------------------
    def remember_nonce(self, nonce: str, expires_at: int, moment: int) -> bool:
        """Record ``nonce`` until ``expires_at`` (Unix seconds), forgetting those expired at ``moment``;
        False when it is already recorded: the request is a replay. One transaction, so two servers of
        one home never both accept it."""
        try:
            with self.transaction() as db:
                db.execute("DELETE FROM seen_nonces WHERE expires_at < ?", (moment,))
                inserted = db.execute(
                    "INSERT OR IGNORE INTO seen_nonces (nonce, expires_at) VALUES (?, ?)", (nonce, expires_at)
                )
        except sqlite3.OperationalError as exc:
            if "full" not in str(exc):
                raise
            raise StorageFullError(f"no space left on device for the catalog {self.path} ({exc})") from exc
        return inserted.rowcount == 1

    # Scheduler: its lease, rule cursors and schedule runs (services/scheduler/) -----------------
    # A run is keyed by (plan, rule, occurrence, resource); its ``details`` (a RunDetails) are stored as JSON.
    def acquire_lease(self, name: str, holder: str, moment: datetime, expires_at: datetime) -> Lease:
        """Take or renew lease ``name`` unless another holder's is still live; returns the lease as it now is."""
        with self.transaction() as db:
            row = db.execute("SELECT * FROM leases WHERE name = ?", (name,)).fetchone()
            if row is not None and row["holder"] != holder and datetime.fromisoformat(row["expires_at"]) > moment:
                return _lease(row)
            db.execute("INSERT OR REPLACE INTO leases VALUES (?, ?, ?)", (name, holder, expires_at.isoformat()))
        return Lease(name, holder, expires_at.isoformat())

    def release_lease(self, name: str, holder: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))

    def get_lease(self, name: str) -> Lease | None:
        row = self._db.execute("SELECT * FROM leases WHERE name = ?", (name,)).fetchone()
        return _lease(row) if row else None

    def scheduler_cursors(self, plan_name: str | None = None) -> dict[tuple[str, str], str]:
        """(plan, rule) -> the instant up to which the rule's occurrences have been handled."""
        sql, args = "SELECT * FROM scheduler_cursor", tuple[str, ...]()
        if plan_name is not None:
            sql, args = sql + " WHERE plan_name = ?", (plan_name,)
        return {(r["plan_name"], r["rule_name"]): r["last_occurrence"] for r in self._db.execute(sql, args)}

    def record_occurrences(
        self, plan_name: str, expected: dict[str, str | None], until: str, runs: list[ScheduleRun]
    ) -> bool:
        """Insert ``runs`` (existing keys are kept) and move the plan's rule cursors from ``expected`` to
        ``until``, atomically; False, changing nothing, when a cursor is no longer what the caller read."""
        with self.transaction() as db:
            rows = db.execute(
                "SELECT rule_name, last_occurrence FROM scheduler_cursor WHERE plan_name = ?", (plan_name,)
            )
            current = {r[0]: r[1] for r in rows}
            if any(current.get(rule) != value for rule, value in expected.items()):
                return False
            db.executemany(
                f"INSERT OR IGNORE INTO schedule_runs ({', '.join(RUN_COLUMNS)})"
                f" VALUES ({', '.join('?' * len(RUN_COLUMNS))})",
                [_run_values(run) for run in runs],
            )
            db.executemany(
                "INSERT OR REPLACE INTO scheduler_cursor VALUES (?, ?, ?)",
                [(plan_name, rule, until) for rule in expected],
            )
        return True

    def keep_scheduler_cursors(self, active: set[tuple[str, str]]) -> None:
        """Forget the cursors of rules that are gone or disabled: they start from now when they come back."""
        stale = [key for key in self.scheduler_cursors() if key not in active]
        with self.transaction() as db:
            db.executemany("DELETE FROM scheduler_cursor WHERE plan_name = ? AND rule_name = ?", stale)

    def list_schedule_runs(
        self,
        *,
        states: Sequence[str] | None = None,
        plan_name: str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[ScheduleRun]:
        sql, args = "SELECT * FROM schedule_runs WHERE 1=1", []
        if states:
            sql += f" AND state IN ({','.join('?' * len(states))})"
            args += [_plain(state) for state in states]
        if plan_name is not None:
            sql += " AND plan_name = ?"
            args.append(plan_name)
        order = " DESC" if newest_first else ""
        sql += f" ORDER BY occurrence{order}, plan_name, rule_name, resource_id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [_schedule_run(r) for r in self._db.execute(sql, args)]

    def get_schedule_run(self, key: RunKey) -> ScheduleRun:
        row = self._db.execute(f"SELECT * FROM schedule_runs WHERE {_RUN_WHERE}", key).fetchone()
        if row is None:
            raise NotFoundError(f"no schedule run {'/'.join(key)}")
        return _schedule_run(row)

    def update_schedule_run(
        self,
        key: RunKey,
        *,
        expected_state: str | None = None,
        expected_attempts: int | None = None,
        **fields: Any,
    ) -> bool:
        """Set ``fields`` on one run, only while it is in ``expected_state`` (and ``expected_attempts``)."""
        encoded = {k: (_json_or_null(v) if k == "details" else _plain(v)) for k, v in fields.items()}
        sql = f"UPDATE schedule_runs SET {', '.join(f'{name} = ?' for name in encoded)} WHERE {_RUN_WHERE}"
        args: list[Any] = [*encoded.values(), *key]
        for column, value in (("state", expected_state), ("attempts", expected_attempts)):
            if value is not None:
                sql += f" AND {column} = ?"
                args.append(_plain(value))
        with self.transaction() as db:
            return db.execute(sql, args).rowcount == 1

    # Secrets (services/secrets.py): values arrive sealed with the account key, never in plaintext ----
    def get_secret_row(self, name: str) -> SealedSecret | None:
        row = self._db.execute("SELECT * FROM secrets WHERE name = ?", (name,)).fetchone()
        return record(SealedSecret, row) if row else None

    def list_secret_rows(self) -> list[SecretInfo]:
        """Names, versions and dates; the sealed values are not even read."""
        sql = "SELECT name, version, previous_version, created_at, updated_at FROM secrets ORDER BY name"
        return [record(SecretInfo, r) for r in self._db.execute(sql)]

    def write_secret(self, name: str, sealed_value: str, version: int, moment: str) -> bool:
        """Store version ``version`` (1: a new secret), the current one becoming the previous; False, changing
        nothing, when the secret is no longer at ``version - 1`` (another writer came first)."""
        with self.transaction() as db:
            if version == 1:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO secrets (name, sealed_value, version, created_at, updated_at)"
                    " VALUES (?, ?, 1, ?, ?)",
                    (name, sealed_value, moment, moment),
                )
            else:
                cursor = db.execute(
                    "UPDATE secrets SET previous_sealed_value = sealed_value, previous_version = version,"
                    " sealed_value = ?, version = ?, updated_at = ? WHERE name = ? AND version = ?",
                    (sealed_value, version, moment, name, version - 1),
                )
        return cursor.rowcount == 1

    def delete_secret(self, name: str) -> bool:
        with self.transaction() as db:
            return db.execute("DELETE FROM secrets WHERE name = ?", (name,)).rowcount == 1

    # Disaster-recovery runs (services/dr) ------------------------------------------------------
    def add_dr_run(self, run: DrRun, steps: list[DrStep]) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO dr_runs (id, runbook_name, runbook, rehearsal, state, incident_time, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run.id,
                    run.runbook_name,
                    json.dumps(run.runbook),
                    int(run.rehearsal),
                    run.state.value,
                    run.incident_time,
                    run.created_at,
                    run.updated_at,
                ),
            )
            db.executemany(
                "INSERT INTO dr_steps (run_id, position, name, type, state) VALUES (?, ?, ?, ?, ?)",
                [(run.id, step.position, step.name, step.type, step.state.value) for step in steps],
            )

    def get_dr_run(self, run_id: str) -> DrRun:
        row = self._db.execute("SELECT * FROM dr_runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise NotFoundError(
                f"unknown disaster-recovery run '{run_id}'", hint="List the runs with 'strongroom dr list'"
            )
        return record(DrRun, row, _DR_RUN_JSON)

    def list_dr_runs(self) -> list[DrRun]:
        rows = self._db.execute("SELECT * FROM dr_runs ORDER BY created_at")
        return [record(DrRun, row, _DR_RUN_JSON) for row in rows]

    def update_dr_run(self, run_id: str, **fields: Any) -> None:
        self._update("dr_runs", run_id, fields, json_columns=_DR_RUN_JSON)

    def list_dr_steps(self, run_id: str) -> list[DrStep]:
        rows = self._db.execute("SELECT * FROM dr_steps WHERE run_id = ? ORDER BY position", (run_id,))
        return [record(DrStep, row, _DR_STEP_JSON) for row in rows]

    def get_dr_step(self, run_id: str, position: int) -> DrStep:
        row = self._db.execute(
            "SELECT * FROM dr_steps WHERE run_id = ? AND position = ?", (run_id, position)
        ).fetchone()
        if row is None:
            raise NotFoundError(f"disaster-recovery run '{run_id}' has no step {position + 1}")
        return record(DrStep, row, _DR_STEP_JSON)

    def update_dr_step(self, run_id: str, position: int, **fields: Any) -> None:
        encoded = {k: (_json_or_null(v) if k in _DR_STEP_JSON else _plain(v)) for k, v in fields.items()}
        assignments = ", ".join(f"{name} = ?" for name in encoded)
        with self.transaction() as db:
            db.execute(
                f"UPDATE dr_steps SET {assignments} WHERE run_id = ? AND position = ?",
                (*encoded.values(), run_id, position),
            )

    # Framework evaluations and report jobs (services/compliance, services/reports) ------------------
    def list_evaluations(self, framework: str | None = None) -> list[Evaluation]:
        sql, args = "SELECT * FROM compliance_evaluations", tuple[str, ...]()
        if framework is not None:
            sql, args = sql + " WHERE framework = ?", (framework,)
        rows = self._db.execute(sql + " ORDER BY framework, control, resource_id", args)
        return [record(Evaluation, row) for row in rows]

    def store_evaluations(self, frameworks: Sequence[str], evaluations: Sequence[Evaluation]) -> None:
        """Replace, in one transaction, every evaluation of ``frameworks`` (and drop frameworks no longer listed)."""
        with self.transaction() as db:
            marks = ", ".join("?" for _ in frameworks)
            db.execute(f"DELETE FROM compliance_evaluations WHERE framework NOT IN ({marks})", tuple(frameworks))
            db.execute(f"DELETE FROM compliance_evaluations WHERE framework IN ({marks})", tuple(frameworks))
            db.executemany(
                "INSERT INTO compliance_evaluations VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        e.framework,
                        e.control,
                        e.resource_id,
                        e.resource_type,
                        e.status.value,
                        e.reason,
                        e.evaluated_at,
                        e.changed_at,
                    )
                    for e in evaluations
                ],
            )

    def add_report_job(self, job: ReportJob) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO report_jobs (id, report_plan_name, report_template, state, creation_time, period_start,"
                " period_end, trigger, destination, keys) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job.id,
                    job.report_plan_name,
                    job.report_template,
                    job.state.value,
                    job.creation_time,
                    job.period_start,
                    job.period_end,
                    job.trigger,
                    job.destination,
                    json.dumps(job.keys),
                ),
            )

    def update_report_job(self, job_id: str, **fields: Any) -> None:
        self._update("report_jobs", job_id, fields, json_columns=("keys",))

    def get_report_job(self, job_id: str) -> ReportJob:
        row = self._db.execute("SELECT * FROM report_jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"unknown report job '{job_id}'", hint="List them with 'strongroom reports list-jobs'")
        return record(ReportJob, row, ("keys",))

    def list_report_jobs(self, plan_name: str | None = None) -> list[ReportJob]:
        sql, args = "SELECT * FROM report_jobs", tuple[str, ...]()
        if plan_name is not None:
            sql, args = sql + " WHERE report_plan_name = ?", (plan_name,)
        rows = self._db.execute(sql + " ORDER BY creation_time, id", args)
        return [record(ReportJob, row, ("keys",)) for row in rows]


_DR_RUN_JSON = ("runbook", "report")
_DR_STEP_JSON = ("outputs", "checkpoint", "changes")


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def _plain(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    return value.value if hasattr(value, "value") else value


def _json_or_null(value: Any) -> str | None:
    """A JSON column's text; a typed record is stored as its ``as_dict()``."""
    if value is None:
        return None
    return json.dumps(value.as_dict() if hasattr(value, "as_dict") else value)


def _vault(row: sqlite3.Row) -> VaultRecord:
    return record(VaultRecord, row, ("access_policy", "lock", "notifications"))


def _resource(row: sqlite3.Row) -> Resource:
    return record(Resource, row, ("settings", "tags"))


def _job(row: sqlite3.Row) -> Job:
    return record(Job, row, ("parameters", "result"))


def _notification(row: sqlite3.Row) -> OutboxRow:
    return record(OutboxRow, row, ("payload",))


RUN_COLUMNS = (
    "plan_name",
    "rule_name",
    "occurrence",
    "resource_id",
    "state",
    "job_id",
    "attempts",
    "next_attempt_at",
    "start_window_ends",
    "completion_window_ends",
    "details",
    "created_at",
)
_RUN_WHERE = "plan_name = ? AND rule_name = ? AND occurrence = ? AND resource_id = ?"


def _schedule_run(row: sqlite3.Row) -> ScheduleRun:
    return ScheduleRun.of({**dict(row), "details": json.loads(row["details"])})


def _run_values(run: ScheduleRun) -> tuple[Any, ...]:
    columns = run.columns()
    return tuple(_json_or_null(columns[c]) if c == "details" else _plain(columns[c]) for c in RUN_COLUMNS)


def _lease(row: sqlite3.Row) -> Lease:
    return record(Lease, row)


def _recovery_point(row: sqlite3.Row) -> RecoveryPoint:
    return record(RecoveryPoint, row, ("metadata", "tags"))


_POINT_SQL = (
    "INSERT INTO recovery_points (id, arn, vault_name, resource_id, resource_type, status, status_message,"
    " creation_date, completion_date, source_bytes, stored_bytes, new_bytes, backup_job_id, metadata,"
    " delete_after_days, delete_at, lock_applies, source_recovery_point_arn, arrival_date, tags)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _point_values(rp: RecoveryPoint) -> tuple[Any, ...]:
    """A recovery point as it is inserted: by a backup or copy (CREATING), or by ``vaults attach`` (as it was)."""
    return (
        rp.id,
        rp.arn,
        rp.vault_name,
        rp.resource_id,
        rp.resource_type,
        rp.status.value,
        rp.status_message,
        rp.creation_date,
        rp.completion_date,
        rp.source_bytes,
        rp.stored_bytes,
        rp.new_bytes,
        rp.backup_job_id,
        json.dumps(rp.metadata),
        rp.delete_after_days,
        rp.delete_at,
        int(rp.lock_applies),
        rp.source_recovery_point_arn,
        rp.arrival_date or rp.creation_date,
        json.dumps(rp.tags),
    )
