"""Versioned schema of the catalog. Append new migrations; never edit an applied one."""

MIGRATIONS: list[str] = [
    # 1: the first schema
    """
    CREATE TABLE vaults (
        name TEXT PRIMARY KEY,
        arn TEXT NOT NULL UNIQUE,
        store_url TEXT NOT NULL,
        vault_id TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE resources (
        id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        settings TEXT NOT NULL,
        tags TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        job_type TEXT NOT NULL,
        state TEXT NOT NULL,
        resource_id TEXT,
        vault_name TEXT,
        recovery_point_arn TEXT,
        creation_date TEXT NOT NULL,
        start_date TEXT,
        completion_date TEXT,
        bytes_processed INTEGER NOT NULL DEFAULT 0,
        status_message TEXT,
        pid INTEGER,
        parameters TEXT NOT NULL DEFAULT '{}',
        result TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX jobs_state ON jobs(state);
    CREATE TABLE recovery_points (
        id TEXT PRIMARY KEY,
        arn TEXT NOT NULL UNIQUE,
        vault_name TEXT NOT NULL REFERENCES vaults(name),
        resource_id TEXT NOT NULL,
        resource_type TEXT NOT NULL,
        status TEXT NOT NULL,
        status_message TEXT,
        creation_date TEXT NOT NULL,
        completion_date TEXT,
        source_bytes INTEGER NOT NULL DEFAULT 0,
        stored_bytes INTEGER NOT NULL DEFAULT 0,
        new_bytes INTEGER NOT NULL DEFAULT 0,
        backup_job_id TEXT,
        metadata TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX recovery_points_resource ON recovery_points(resource_id, creation_date);
    """,
    # 2: accounts as trust domains: policies, locks, lifecycle, credentials, remote accounts, copies
    """
    ALTER TABLE vaults ADD COLUMN access_policy TEXT;
    ALTER TABLE vaults ADD COLUMN lock TEXT;
    ALTER TABLE vaults ADD COLUMN managed INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE resources ADD COLUMN managed INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE recovery_points ADD COLUMN delete_after_days INTEGER;
    ALTER TABLE recovery_points ADD COLUMN delete_at TEXT;
    ALTER TABLE recovery_points ADD COLUMN lock_applies INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE recovery_points ADD COLUMN source_recovery_point_arn TEXT;
    CREATE INDEX recovery_points_delete_at ON recovery_points(status, delete_at);
    CREATE TABLE credentials (
        key_id TEXT PRIMARY KEY,
        principal_arn TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT,
        revoked_at TEXT
    );
    CREATE TABLE remote_accounts (
        name TEXT PRIMARY KEY,
        account_id TEXT NOT NULL UNIQUE,
        endpoint TEXT NOT NULL,
        key_id TEXT NOT NULL,
        sealed_secret TEXT NOT NULL,
        ca_file TEXT,
        created_at TEXT NOT NULL
    );
    CREATE TABLE account_settings (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE outputs (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE chunk_map (
        vault_name TEXT NOT NULL,
        peer_vault_id TEXT NOT NULL,
        peer_chunk_id BLOB NOT NULL,
        chunk_id BLOB NOT NULL,
        PRIMARY KEY (vault_name, peer_vault_id, peer_chunk_id)
    ) WITHOUT ROWID;
    CREATE INDEX chunk_map_own ON chunk_map(vault_name, chunk_id);
    """,
    # 3: backup plans run by the scheduler, and notifications
    """
    ALTER TABLE vaults ADD COLUMN notifications TEXT;
    CREATE TABLE schedule_runs (
        plan_name TEXT NOT NULL,
        rule_name TEXT NOT NULL,
        occurrence TEXT NOT NULL,
        resource_id TEXT NOT NULL,
        state TEXT NOT NULL,
        job_id TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT,
        start_window_ends TEXT NOT NULL,
        completion_window_ends TEXT NOT NULL,
        details TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL,
        PRIMARY KEY (plan_name, rule_name, occurrence, resource_id)
    );
    CREATE INDEX schedule_runs_state ON schedule_runs(state);
    CREATE TABLE scheduler_cursor (
        plan_name TEXT NOT NULL,
        rule_name TEXT NOT NULL,
        last_occurrence TEXT NOT NULL,
        PRIMARY KEY (plan_name, rule_name)
    );
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_at TEXT NOT NULL
    );
    CREATE TABLE notifications (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        vault_name TEXT NOT NULL,
        event TEXT NOT NULL,
        payload TEXT NOT NULL,
        sink TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        delivered_at TEXT,
        last_error TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX notifications_pending ON notifications(delivered_at, next_attempt_at);
    """,
    # 4: the account's secret store (values sealed with the account key; the previous version is kept)
    """
    CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        sealed_value TEXT NOT NULL,
        version INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        previous_sealed_value TEXT,
        previous_version INTEGER
    );
    """,
    # 5: disaster-recovery runs and the state of each of their steps (services/dr)
    """
    CREATE TABLE dr_runs (
        id TEXT PRIMARY KEY,
        runbook_name TEXT NOT NULL,
        runbook TEXT NOT NULL,
        rehearsal INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL,
        incident_time TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        completed_at TEXT,
        error TEXT,
        report TEXT
    );
    CREATE TABLE dr_steps (
        run_id TEXT NOT NULL REFERENCES dr_runs(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        name TEXT NOT NULL,
        type TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        started_at TEXT,
        completed_at TEXT,
        duration_seconds REAL,
        outputs TEXT,
        checkpoint TEXT,
        changes TEXT,
        error TEXT,
        PRIMARY KEY (run_id, position)
    );
    """,
    # 6: chunk-id keys of source vaults, pinned on first copy; chunk mappings record the key that checked them
    #    (NULL: a mapping made before copies were checked, or by a pull: checked again before it is reused)
    """
    CREATE TABLE source_id_keys (
        source_account_id TEXT NOT NULL,
        source_vault_id TEXT NOT NULL,
        sealed_key TEXT NOT NULL,
        fingerprint BLOB NOT NULL,
        pinned_at TEXT NOT NULL,
        PRIMARY KEY (source_account_id, source_vault_id)
    );
    ALTER TABLE chunk_map ADD COLUMN checked_under BLOB;
    """,
    # 7: request nonces the account API has accepted, kept until no clock would accept them again (replay
    #    refusal that survives a restart and is shared by every server of the home; services/credentials.py)
    """
    CREATE TABLE seen_nonces (
        nonce TEXT PRIMARY KEY,
        expires_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX seen_nonces_expiry ON seen_nonces(expires_at);
    """,
    # 8: arrival_date of recovery points: this account's clock when a point began to arrive here (a backup's
    # creation, a copy's start); retention counts from it. Older rows take the earlier of creation and completion.
    """
    ALTER TABLE recovery_points ADD COLUMN arrival_date TEXT;
    UPDATE recovery_points SET arrival_date = CASE
        WHEN completion_date IS NOT NULL AND completion_date < creation_date THEN completion_date
        ELSE creation_date END;
    """,
    # 9: MACs of the security-relevant rows (catalog/integrity.py) and each vault's change sequence
    """
    ALTER TABLE vaults ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE vaults ADD COLUMN mac TEXT;
    ALTER TABLE recovery_points ADD COLUMN mac TEXT;
    ALTER TABLE credentials ADD COLUMN mac TEXT;
    """,
    # 10: recovery point tags (a plan rule's recovery_point_tags, carried by copies); informational, not MAC'd
    """
    ALTER TABLE recovery_points ADD COLUMN tags TEXT NOT NULL DEFAULT '{}';
    """,
    # 11: framework evaluations (the last verdict per framework, control and resource) and report jobs
    """
    CREATE TABLE compliance_evaluations (
        framework TEXT NOT NULL,
        control TEXT NOT NULL,
        resource_id TEXT NOT NULL,
        resource_type TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT NOT NULL,
        evaluated_at TEXT NOT NULL,
        changed_at TEXT NOT NULL,
        PRIMARY KEY (framework, control, resource_id)
    );
    CREATE TABLE report_jobs (
        id TEXT PRIMARY KEY,
        report_plan_name TEXT NOT NULL,
        report_template TEXT NOT NULL,
        state TEXT NOT NULL,
        creation_time TEXT NOT NULL,
        period_start TEXT NOT NULL,
        period_end TEXT NOT NULL,
        trigger TEXT NOT NULL,
        destination TEXT NOT NULL,
        completion_time TEXT,
        status_message TEXT,
        keys TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX report_jobs_plan ON report_jobs(report_plan_name, creation_time);
    """,
    # 12: chunk_map.size and .proof: a pushed copy's proof of a mapping (its plaintext size and the receiving
    #     vault's MAC over the mapping), so a later copy reuses it without reading it back (services/copy_receive.py)
    """
    ALTER TABLE chunk_map ADD COLUMN size INTEGER;
    ALTER TABLE chunk_map ADD COLUMN proof BLOB;
    """,
]
