//! The schema and its migrations, tracked by `PRAGMA user_version`.
//!
//! `MIGRATIONS[i]` takes the database from version `i` to `i + 1`. Each is applied with the
//! version bump in one transaction, so a crash leaves the database at a whole version.
//! Migrations are only ever appended; a released one is never edited.

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// Schema version 1: every table of the controller.
const V1: &str = r#"
CREATE TABLE nodes (
    id            TEXT PRIMARY KEY NOT NULL,
    wg_public_key TEXT NOT NULL UNIQUE,   -- base64
    identity_key  TEXT NOT NULL,          -- base64 Ed25519 public key
    addresses     TEXT NOT NULL,          -- JSON array of CIDRs
    endpoint      TEXT,
    pin           TEXT CHECK (pin IN ('allow', 'deny')),
    enrolled_ms   INTEGER NOT NULL
) STRICT;

CREATE TABLE invites (
    token_hash TEXT PRIMARY KEY NOT NULL, -- hex SHA-256 of the token
    node_id    TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    used_ms    INTEGER,
    addresses  TEXT,                      -- JSON array assigned by the admin, or NULL
    endpoint   TEXT
) STRICT;
CREATE INDEX invites_by_node ON invites (node_id);

CREATE TABLE benchmarks (
    node_id          TEXT NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    seq              INTEGER NOT NULL,
    suite_version    TEXT NOT NULL,
    scores           TEXT NOT NULL,       -- JSON
    measured_at_ms   INTEGER NOT NULL,
    received_ms      INTEGER NOT NULL,
    raw_body         BLOB NOT NULL,
    method           TEXT NOT NULL,
    path             TEXT NOT NULL,
    sig_timestamp_ms INTEGER NOT NULL,
    sig_nonce        TEXT NOT NULL,       -- hex
    signature        TEXT NOT NULL,       -- base64
    PRIMARY KEY (node_id, seq)
) STRICT;

CREATE TABLE epochs (
    id            INTEGER PRIMARY KEY NOT NULL,
    secret        TEXT NOT NULL,          -- hex; never copied anywhere else
    activation_ms INTEGER NOT NULL,
    not_after_ms  INTEGER NOT NULL,
    created_ms    INTEGER NOT NULL,
    cause         TEXT NOT NULL
) STRICT;

CREATE TABLE decisions (
    epoch_id        INTEGER NOT NULL REFERENCES epochs (id) ON DELETE CASCADE,
    node_id         TEXT NOT NULL,
    allowed         INTEGER NOT NULL,
    reason          TEXT NOT NULL,
    passing         INTEGER NOT NULL,
    history_allowed INTEGER NOT NULL,
    streak          INTEGER NOT NULL,
    benchmarked     INTEGER NOT NULL,     -- any evaluation so far had a benchmark
    evidence        TEXT NOT NULL,        -- JSON
    PRIMARY KEY (epoch_id, node_id)
) STRICT;

CREATE TABLE audit (
    seq       INTEGER PRIMARY KEY NOT NULL,
    at_ms     INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    entry     TEXT NOT NULL,              -- JSON, hashed as stored
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
) STRICT;
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"#;

/// Schema version 2: one row per node address, so that no two nodes can hold one address
/// (the primary key), whatever the code above the database does. `address` is the IP
/// without its prefix length, in canonical text. An existing database gets its nodes'
/// addresses in enrollment order; where two nodes already shared one, the first enrolled
/// keeps the row, and nodes refuse an address two peers claim.
const V2: &str = r#"
CREATE TABLE node_addresses (
    address TEXT PRIMARY KEY NOT NULL,
    node_id TEXT NOT NULL REFERENCES nodes (id) ON DELETE CASCADE
) STRICT;
CREATE INDEX node_addresses_by_node ON node_addresses (node_id);
INSERT OR IGNORE INTO node_addresses (address, node_id)
    SELECT substr(j.value, 1, instr(j.value, '/') - 1), n.id
    FROM nodes AS n, json_each(n.addresses) AS j
    ORDER BY n.enrolled_ms, n.id;
"#;

/// Schema version 3: retention. The audit log may lose its oldest entries, but only behind
/// a checkpoint: a row of `audit_checkpoints`, signed by the controller key, that holds the
/// hash of the last entry removed and the verifier's state at that point, so the rest of the
/// chain still verifies. An entry after the newest checkpoint can still be neither changed
/// nor deleted, and the newest checkpoint cannot be deleted or changed at all.
const V3: &str = r#"
CREATE TABLE audit_checkpoints (
    seq       INTEGER PRIMARY KEY NOT NULL,   -- the last entry it covers
    body      TEXT NOT NULL,                  -- JSON, as signed
    signature TEXT NOT NULL                   -- base64 Ed25519 by the controller key
) STRICT;
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
    BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
CREATE TRIGGER audit_checkpoints_keep_newest BEFORE DELETE ON audit_checkpoints
    WHEN OLD.seq >= (SELECT MAX(seq) FROM audit_checkpoints)
    BEGIN SELECT RAISE(ABORT, 'the newest audit checkpoint cannot be deleted'); END;
DROP TRIGGER audit_no_delete;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    WHEN OLD.seq > (SELECT IFNULL(MAX(seq), 0) FROM audit_checkpoints)
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE INDEX benchmarks_by_received ON benchmarks (received_ms);
"#;

/// Schema version 4: where each node says it can be reached (NAT traversal).
const V4: &str = CANDIDATES;

/// The `node_candidates` table, the same on both backends: a node's latest report of its
/// candidate endpoints (JSON array of `ip:port`), the address the controller saw the report
/// come from, and when. Soft state: not audited, replaced by each report.
pub(crate) const CANDIDATES: &str = r#"
CREATE TABLE node_candidates (
    node_id     TEXT PRIMARY KEY NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    candidates  TEXT NOT NULL,
    observed    TEXT NOT NULL,
    reported_ms BIGINT NOT NULL
);
"#;

/// Schema version 5: evaluators and their signed statements ([`EVALUATORS`]).
const V5: &str = EVALUATORS;

/// The `evaluators`, `statements` and `counters` tables, the same on both backends.
/// An evaluator's row stays when it is removed (`removed_ms`), so its name is never reused
/// and its statements keep their key. A statement goes with its subject node. `counters`
/// hands out statement ids, never reused even when rows are pruned.
pub(crate) const EVALUATORS: &str = r#"
CREATE TABLE evaluators (
    name            TEXT PRIMARY KEY NOT NULL,
    public_key      TEXT NOT NULL,          -- base64 Ed25519
    dimensions      TEXT NOT NULL,          -- JSON array, sorted
    evaluator_group TEXT,
    added_ms        BIGINT NOT NULL,
    removed_ms      BIGINT
);
CREATE TABLE statements (
    id              BIGINT PRIMARY KEY NOT NULL,
    evaluator       TEXT NOT NULL REFERENCES evaluators (name),
    subject         TEXT NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    scores          TEXT NOT NULL,          -- JSON object, dimension -> score
    evaluated_at_ms BIGINT NOT NULL,
    received_ms     BIGINT NOT NULL,
    evidence        TEXT NOT NULL,          -- hex SHA-256
    signature       TEXT NOT NULL           -- base64 Ed25519 over the statement's bytes
);
CREATE INDEX statements_by_pair ON statements (evaluator, subject, id);
CREATE INDEX statements_by_subject ON statements (subject);
CREATE INDEX statements_by_received ON statements (received_ms);
CREATE INDEX statements_by_evaluated ON statements (evaluated_at_ms);
CREATE TABLE counters (
    name  TEXT PRIMARY KEY NOT NULL,
    value BIGINT NOT NULL
);
"#;

/// Schema version 6: the operator's membership signature of each node
/// ([`crate::store::schema::MEMBERSHIP_SIG`]).
const V6: &str = MEMBERSHIP_SIG;

/// The `nodes.membership_sig` column, the same on both backends: the base64 Ed25519
/// signature of the operator's membership key over the node's id and keys, or NULL for a
/// node enrolled without one.
pub(crate) const MEMBERSHIP_SIG: &str = "ALTER TABLE nodes ADD COLUMN membership_sig TEXT;";

/// Schema version 7: nodes' signed observations of their peers ([`OBSERVATIONS`]).
const V7: &str = OBSERVATIONS;

/// The `observations` table, the same on both backends: every accepted peer observation, a
/// statement a node (the observer) signed about another (the subject), with its signature.
/// It goes with either node. Its ids come from the statements' counter, so that an id names
/// one statement or observation, never both.
pub(crate) const OBSERVATIONS: &str = r#"
CREATE TABLE observations (
    id              BIGINT PRIMARY KEY NOT NULL,
    observer        TEXT NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    subject         TEXT NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    scores          TEXT NOT NULL,          -- JSON object, dimension -> score
    evaluated_at_ms BIGINT NOT NULL,
    received_ms     BIGINT NOT NULL,
    evidence        TEXT NOT NULL,          -- hex SHA-256
    signature       TEXT NOT NULL,          -- base64 Ed25519 by the observer's identity key
    CHECK (observer <> subject)
);
CREATE INDEX observations_by_pair ON observations (observer, subject, id);
CREATE INDEX observations_by_subject ON observations (subject);
CREATE INDEX observations_by_received ON observations (received_ms);
CREATE INDEX observations_by_evaluated ON observations (evaluated_at_ms);
"#;

/// Every migration, oldest first.
pub(crate) const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6, V7];

/// Brings the database to the newest schema version, refusing one newer than this build.
pub(crate) fn migrate(conn: &mut Connection, location: &str) -> Result<(), StoreError> {
    let open_err = |source| StoreError::Open {
        location: location.to_owned(),
        source,
    };
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(open_err)?;
    let too_new = || StoreError::SchemaTooNew {
        location: location.to_owned(),
        found,
        supported: MIGRATIONS.len(),
    };
    // A negative version is none this build wrote either.
    let current = usize::try_from(found).map_err(|_| too_new())?;
    if current > MIGRATIONS.len() {
        return Err(too_new());
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let version = index + 1;
        let fail = |source| StoreError::Migrate {
            location: location.to_owned(),
            version,
            source,
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fail)?;
        tx.execute_batch(sql).map_err(fail)?;
        tx.pragma_update(None, "user_version", version as i64)
            .map_err(fail)?;
        tx.commit().map_err(fail)?;
    }
    Ok(())
}
