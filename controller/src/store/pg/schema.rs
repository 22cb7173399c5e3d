//! The PostgreSQL schema and its migrations, tracked in the one-row table `meshtun_schema`.
//!
//! `MIGRATIONS[i]` takes the database from version `i` to `i + 1`, in one transaction with
//! the version bump, under an advisory lock so that instances starting together migrate
//! once. Version 1 is the SQLite schema's version 3 (every table, the append-only audit log
//! and its checkpoints), with the triggers written for PostgreSQL. Migrations are only ever
//! appended; a released one is never edited.

use postgres::Client;

use super::super::error::PgError;
use super::super::StoreError;

/// The advisory lock key migrations hold (any constant that no other tool uses: "mtsc").
const MIGRATION_LOCK: i64 = 0x6d74_7363;

/// Schema version 1: every table of the controller.
const V1: &str = r#"
CREATE TABLE writer_lock (
    id INTEGER PRIMARY KEY CHECK (id = 1)
);
INSERT INTO writer_lock (id) VALUES (1);

CREATE TABLE nodes (
    id            TEXT PRIMARY KEY,
    wg_public_key TEXT NOT NULL UNIQUE,
    identity_key  TEXT NOT NULL,
    addresses     TEXT NOT NULL,
    endpoint      TEXT,
    pin           TEXT CHECK (pin IN ('allow', 'deny')),
    enrolled_ms   BIGINT NOT NULL CHECK (enrolled_ms >= 0)
);

CREATE TABLE node_addresses (
    address TEXT PRIMARY KEY,
    node_id TEXT NOT NULL REFERENCES nodes (id) ON DELETE CASCADE
);
CREATE INDEX node_addresses_by_node ON node_addresses (node_id);

CREATE TABLE invites (
    token_hash TEXT PRIMARY KEY,
    node_id    TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    used_ms    BIGINT,
    addresses  TEXT,
    endpoint   TEXT
);
CREATE INDEX invites_by_node ON invites (node_id);

CREATE TABLE benchmarks (
    node_id          TEXT NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    seq              BIGINT NOT NULL CHECK (seq >= 0),
    suite_version    TEXT NOT NULL,
    scores           TEXT NOT NULL,
    measured_at_ms   BIGINT NOT NULL,
    received_ms      BIGINT NOT NULL,
    raw_body         BYTEA NOT NULL,
    method           TEXT NOT NULL,
    path             TEXT NOT NULL,
    sig_timestamp_ms BIGINT NOT NULL,
    sig_nonce        TEXT NOT NULL,
    signature        TEXT NOT NULL,
    PRIMARY KEY (node_id, seq)
);
CREATE INDEX benchmarks_by_received ON benchmarks (received_ms);

CREATE TABLE epochs (
    id            BIGINT PRIMARY KEY CHECK (id >= 0),
    secret        TEXT NOT NULL,
    activation_ms BIGINT NOT NULL,
    not_after_ms  BIGINT NOT NULL,
    created_ms    BIGINT NOT NULL,
    cause         TEXT NOT NULL
);

CREATE TABLE decisions (
    epoch_id        BIGINT NOT NULL REFERENCES epochs (id) ON DELETE CASCADE,
    node_id         TEXT NOT NULL,
    allowed         BOOLEAN NOT NULL,
    reason          TEXT NOT NULL,
    passing         BOOLEAN NOT NULL,
    history_allowed BOOLEAN NOT NULL,
    streak          BIGINT NOT NULL,
    benchmarked     BOOLEAN NOT NULL,
    evidence        TEXT NOT NULL,
    PRIMARY KEY (epoch_id, node_id)
);

CREATE TABLE audit (
    seq       BIGINT PRIMARY KEY CHECK (seq > 0),
    at_ms     BIGINT NOT NULL,
    kind      TEXT NOT NULL,
    entry     TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);

CREATE TABLE audit_checkpoints (
    seq       BIGINT PRIMARY KEY,
    body      TEXT NOT NULL,
    signature TEXT NOT NULL
);

-- The audit log is append-only: no entry is ever changed, and an entry is deleted only
-- behind the newest checkpoint (pruning), as in the SQLite schema.
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE'
       AND OLD.seq <= (SELECT COALESCE(MAX(seq), 0) FROM audit_checkpoints) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the audit log is append-only';
END $$;
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();

-- Checkpoints are never changed, and the newest is never deleted.
CREATE FUNCTION audit_checkpoints_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'audit checkpoints are append-only';
    END IF;
    IF OLD.seq >= (SELECT MAX(seq) FROM audit_checkpoints) THEN
        RAISE EXCEPTION 'the newest audit checkpoint cannot be deleted';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_checkpoints_guard();
CREATE TRIGGER audit_checkpoints_keep_newest BEFORE DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_checkpoints_guard();

-- TRUNCATE skips row triggers: refuse it on both.
CREATE FUNCTION audit_no_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END $$;
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_no_truncate();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_no_truncate();
"#;

/// Version 2: the tables several instances share (leader lease, instances, replay nonces;
/// see [`crate::ha`]).
const V2: &str = crate::ha::SCHEMA;

/// Version 3: candidate endpoints ([`crate::store::schema::CANDIDATES`]).
const V3: &str = crate::store::schema::CANDIDATES;

/// Version 4: evaluators and their signed statements
/// ([`crate::store::schema::EVALUATORS`]).
const V4: &str = crate::store::schema::EVALUATORS;

/// Version 5: membership signatures ([`crate::store::schema::MEMBERSHIP_SIG`]).
const V5: &str = crate::store::schema::MEMBERSHIP_SIG;

/// Version 6: peer observations ([`crate::store::schema::OBSERVATIONS`]).
const V6: &str = crate::store::schema::OBSERVATIONS;

/// Every migration, oldest first.
pub(crate) const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6];

/// Brings the database to the newest schema version, refusing one newer than this build.
pub(crate) fn migrate(conn: &mut Client, location: &str) -> Result<(), StoreError> {
    loop {
        let version = current_version(conn, location)?;
        let too_new = || StoreError::SchemaTooNew {
            location: location.to_owned(),
            found: version,
            supported: MIGRATIONS.len(),
        };
        let current = usize::try_from(version).map_err(|_| too_new())?;
        if current > MIGRATIONS.len() {
            return Err(too_new());
        }
        if current == MIGRATIONS.len() {
            return Ok(());
        }
        apply(conn, location, current)?;
    }
}

fn fail(location: &str, version: usize) -> impl Fn(postgres::Error) -> StoreError + '_ {
    move |source| {
        PgError::Migrate {
            location: location.to_owned(),
            version,
            source,
        }
        .into()
    }
}

/// The schema version, 0 for an empty database.
fn current_version(conn: &mut Client, location: &str) -> Result<i64, StoreError> {
    let row = conn
        .query_one(
            "SELECT CASE WHEN to_regclass('meshtun_schema') IS NULL THEN NULL ELSE 1 END",
            &[],
        )
        .map_err(fail(location, 0))?;
    if row.get::<_, Option<i32>>(0).is_none() {
        return Ok(0);
    }
    let row = conn
        .query_opt("SELECT version FROM meshtun_schema", &[])
        .map_err(fail(location, 0))?;
    Ok(row.map_or(0, |r| r.get(0)))
}

/// Applies migration `from + 1` unless another instance did it meanwhile.
fn apply(conn: &mut Client, location: &str, from: usize) -> Result<(), StoreError> {
    let version = from + 1;
    let fail = fail(location, version);
    let mut tx = conn.transaction().map_err(&fail)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(&fail)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS meshtun_schema (\
         one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one), version BIGINT NOT NULL)",
    )
    .map_err(&fail)?;
    let found: Option<i64> = tx
        .query_opt("SELECT version FROM meshtun_schema", &[])
        .map_err(&fail)?
        .map(|r| r.get(0));
    if found.unwrap_or(0) != from as i64 {
        // Another instance migrated first; look again.
        return tx.commit().map_err(&fail);
    }
    tx.batch_execute(MIGRATIONS[from]).map_err(&fail)?;
    tx.execute(
        "INSERT INTO meshtun_schema (one, version) VALUES (TRUE, $1) \
         ON CONFLICT (one) DO UPDATE SET version = EXCLUDED.version",
        &[&(version as i64)],
    )
    .map_err(&fail)?;
    tx.commit().map_err(&fail)
}
