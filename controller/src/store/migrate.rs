//! `meshtun-controller migrate`: copies an SQLite deployment, which may be in use, into an
//! empty PostgreSQL database.
//!
//! The source is opened read-only and read in one read transaction, whose first read is the
//! schema version check (WAL lets the running controller go on writing meanwhile: the copy
//! is the snapshot at its start, of the schema version checked). The target
//! must be empty; every table is copied in one transaction that holds the target's writer
//! lock, in foreign-key order, and the row counts are compared before it commits. The
//! caller then verifies the audit chain on the target ([`super::Store::verify_audit`]).

use std::path::Path;

use postgres::types::ToSql;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};

use super::error::PgError;
use super::pg::{PgStore, PgTarget};
use super::{schema, StoreError};

/// How a column is typed on PostgreSQL (SQLite stores the same values as integers, text and
/// blobs).
#[derive(Clone, Copy)]
enum Col {
    Text,
    Int,
    Bool,
    Blob,
}

/// A table: its name, the columns ordering its rows, and its columns.
type Table = (&'static str, &'static str, &'static [(&'static str, Col)]);

/// Takes one row of a table (the values in column order).
type Sink<'a> = dyn FnMut(&[&(dyn ToSql + Sync)]) -> Result<(), StoreError> + 'a;

/// Every table with its columns, in an order that satisfies the foreign keys; the first
/// column(s) named in the primary key order the rows.
const TABLES: &[Table] = &[
    (
        "nodes",
        "id",
        &[
            ("id", Col::Text),
            ("wg_public_key", Col::Text),
            ("identity_key", Col::Text),
            ("addresses", Col::Text),
            ("endpoint", Col::Text),
            ("pin", Col::Text),
            ("enrolled_ms", Col::Int),
            ("membership_sig", Col::Text),
        ],
    ),
    (
        "node_addresses",
        "address",
        &[("address", Col::Text), ("node_id", Col::Text)],
    ),
    (
        "node_candidates",
        "node_id",
        &[
            ("node_id", Col::Text),
            ("candidates", Col::Text),
            ("observed", Col::Text),
            ("reported_ms", Col::Int),
        ],
    ),
    (
        "invites",
        "token_hash",
        &[
            ("token_hash", Col::Text),
            ("node_id", Col::Text),
            ("created_ms", Col::Int),
            ("expires_ms", Col::Int),
            ("used_ms", Col::Int),
            ("addresses", Col::Text),
            ("endpoint", Col::Text),
        ],
    ),
    (
        "benchmarks",
        "node_id, seq",
        &[
            ("node_id", Col::Text),
            ("seq", Col::Int),
            ("suite_version", Col::Text),
            ("scores", Col::Text),
            ("measured_at_ms", Col::Int),
            ("received_ms", Col::Int),
            ("raw_body", Col::Blob),
            ("method", Col::Text),
            ("path", Col::Text),
            ("sig_timestamp_ms", Col::Int),
            ("sig_nonce", Col::Text),
            ("signature", Col::Text),
        ],
    ),
    (
        "evaluators",
        "name",
        &[
            ("name", Col::Text),
            ("public_key", Col::Text),
            ("dimensions", Col::Text),
            ("evaluator_group", Col::Text),
            ("added_ms", Col::Int),
            ("removed_ms", Col::Int),
        ],
    ),
    (
        "statements",
        "id",
        &[
            ("id", Col::Int),
            ("evaluator", Col::Text),
            ("subject", Col::Text),
            ("scores", Col::Text),
            ("evaluated_at_ms", Col::Int),
            ("received_ms", Col::Int),
            ("evidence", Col::Text),
            ("signature", Col::Text),
        ],
    ),
    (
        "observations",
        "id",
        &[
            ("id", Col::Int),
            ("observer", Col::Text),
            ("subject", Col::Text),
            ("scores", Col::Text),
            ("evaluated_at_ms", Col::Int),
            ("received_ms", Col::Int),
            ("evidence", Col::Text),
            ("signature", Col::Text),
        ],
    ),
    (
        "counters",
        "name",
        &[("name", Col::Text), ("value", Col::Int)],
    ),
    (
        "epochs",
        "id",
        &[
            ("id", Col::Int),
            ("secret", Col::Text),
            ("activation_ms", Col::Int),
            ("not_after_ms", Col::Int),
            ("created_ms", Col::Int),
            ("cause", Col::Text),
        ],
    ),
    (
        "decisions",
        "epoch_id, node_id",
        &[
            ("epoch_id", Col::Int),
            ("node_id", Col::Text),
            ("allowed", Col::Bool),
            ("reason", Col::Text),
            ("passing", Col::Bool),
            ("history_allowed", Col::Bool),
            ("streak", Col::Int),
            ("benchmarked", Col::Bool),
            ("evidence", Col::Text),
        ],
    ),
    (
        "audit_checkpoints",
        "seq",
        &[
            ("seq", Col::Int),
            ("body", Col::Text),
            ("signature", Col::Text),
        ],
    ),
    (
        "audit",
        "seq",
        &[
            ("seq", Col::Int),
            ("at_ms", Col::Int),
            ("kind", Col::Text),
            ("entry", Col::Text),
            ("prev_hash", Col::Text),
            ("hash", Col::Text),
        ],
    ),
];

/// Rows copied per table, in the order of `TABLES`.
pub type CopyReport = Vec<(&'static str, u64)>;

fn copy_err(reason: String) -> StoreError {
    PgError::Config {
        location: "migrate".to_owned(),
        reason,
    }
    .into()
}

/// Copies the SQLite database at `from` into the empty PostgreSQL database `to` (creating
/// its schema). Refuses a missing source, a source whose schema is not this build's, and a
/// target that holds anything.
pub fn sqlite_to_postgres(from: &Path, to: &PgTarget) -> Result<CopyReport, StoreError> {
    copy_observed(from, to, |_| ())
}

/// [`sqlite_to_postgres`], calling `before_table(table)` before each table is read (where
/// the tests write to the source).
fn copy_observed(
    from: &Path,
    to: &PgTarget,
    mut before_table: impl FnMut(&str),
) -> Result<CopyReport, StoreError> {
    let location = from.display().to_string();
    if !from.is_file() {
        return Err(copy_err(format!(
            "the source database {location} does not exist"
        )));
    }
    let open_err = |source| StoreError::Open {
        location: location.clone(),
        source,
    };
    let mut source = Connection::open_with_flags(
        from,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open_err)?;
    source
        .busy_timeout(std::time::Duration::from_secs(5))
        .map_err(open_err)?;
    // One read transaction: one snapshot of the source, whatever its writer does meanwhile.
    // Its first read, the schema version, fixes the snapshot: the version checked is the
    // one of the rows copied.
    let read = source.transaction().map_err(open_err)?;
    let version: i64 = read
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(open_err)?;
    if version != schema::MIGRATIONS.len() as i64 {
        return Err(copy_err(format!(
            "the source database {location} has schema version {version}, this build writes \
             {}; run this version of meshtun-controller on it once first",
            schema::MIGRATIONS.len()
        )));
    }
    let target = PgStore::connect(to)?;
    let report = target.copy_in(|table, order, columns, sink| {
        before_table(table);
        copy_table(&read, table, order, columns, sink)
    })?;
    read.finish().map_err(open_err)?;
    Ok(report)
}

/// Reads `table` from the source and hands each row to `sink`.
fn copy_table(
    source: &rusqlite::Transaction<'_>,
    table: &str,
    order: &str,
    columns: &[(&str, Col)],
    sink: &mut Sink<'_>,
) -> Result<u64, StoreError> {
    let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
    let sql = format!("SELECT {} FROM {table} ORDER BY {order}", names.join(", "));
    let what = || format!("reading table {table} of the source");
    let sql_err = |source| StoreError::Sql {
        what: what(),
        source,
    };
    let mut stmt = source.prepare(&sql).map_err(sql_err)?;
    let mut rows = stmt.query([]).map_err(sql_err)?;
    let mut copied = 0;
    while let Some(row) = rows.next().map_err(sql_err)? {
        let mut values: Vec<Box<dyn ToSql + Sync>> = Vec::with_capacity(columns.len());
        for (i, (name, col)) in columns.iter().enumerate() {
            let value: Value = row.get(i).map_err(sql_err)?;
            values
                .push(convert(value, *col).map_err(|reason| {
                    copy_err(format!("table {table} column {name}: {reason}"))
                })?);
        }
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref()).collect();
        sink(&refs)?;
        copied += 1;
    }
    Ok(copied)
}

/// An SQLite value as the PostgreSQL column wants it.
fn convert(value: Value, col: Col) -> Result<Box<dyn ToSql + Sync>, String> {
    Ok(match (col, value) {
        (Col::Text, Value::Text(t)) => Box::new(Some(t)),
        (Col::Text, Value::Null) => Box::new(None::<String>),
        (Col::Int, Value::Integer(i)) => Box::new(Some(i)),
        (Col::Int, Value::Null) => Box::new(None::<i64>),
        (Col::Bool, Value::Integer(i)) => Box::new(i != 0),
        (Col::Blob, Value::Blob(b)) => Box::new(b),
        (_, other) => return Err(format!("unexpected value of type {:?}", other.data_type())),
    })
}

impl PgStore {
    /// Fills this (empty) database: `read(table, order, columns, sink)` hands every row of
    /// `table` to `sink` and returns how many it read. One transaction, under the writer
    /// lock; the counts are compared before the commit.
    fn copy_in(
        &self,
        mut read: impl FnMut(&str, &str, &[(&str, Col)], &mut Sink<'_>) -> Result<u64, StoreError>,
    ) -> Result<CopyReport, StoreError> {
        use super::error::SqlContext as _;
        let what = || "copying into the target database".to_owned();
        self.write(what, |tx| {
            for (table, _, _) in TABLES {
                let count: i64 = tx
                    .query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])
                    .ctx(what)?
                    .get(0);
                if count > 0 {
                    return Err(copy_err(format!(
                        "the target database is not empty: table {table} has {count} rows; \
                         migrate only into a new database"
                    )));
                }
            }
            let mut report = Vec::new();
            for (table, order, columns) in TABLES {
                let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
                let params: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
                let insert = tx
                    .prepare(&format!(
                        "INSERT INTO {table} ({}) VALUES ({})",
                        names.join(", "),
                        params.join(", ")
                    ))
                    .ctx(what)?;
                let mut sink = |row: &[&(dyn ToSql + Sync)]| -> Result<(), StoreError> {
                    tx.execute(&insert, row)
                        .ctx(|| format!("copying a row of table {table}"))?;
                    Ok(())
                };
                let read_rows = read(table, order, columns, &mut sink)?;
                let stored: i64 = tx
                    .query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])
                    .ctx(what)?
                    .get(0);
                if stored != read_rows as i64 {
                    return Err(copy_err(format!(
                        "table {table}: read {read_rows} rows, the target holds {stored}"
                    )));
                }
                report.push((*table, read_rows));
            }
            Ok(report)
        })
    }
}

/// Every row of every table, as text, for comparing two databases.
#[cfg(test)]
pub(crate) mod dump {
    use super::{Col, TABLES};

    /// One table's rows, each a list of column texts.
    pub type Rows = Vec<Vec<String>>;

    /// Every table of the SQLite database at `path`.
    pub fn sqlite(path: &std::path::Path) -> Vec<(&'static str, Rows)> {
        let conn = rusqlite::Connection::open(path).unwrap();
        TABLES
            .iter()
            .map(|(table, order, columns)| {
                let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
                let sql = format!("SELECT {} FROM {table} ORDER BY {order}", names.join(", "));
                let mut stmt = conn.prepare(&sql).unwrap();
                let rows = stmt
                    .query_map([], |r| {
                        (0..columns.len())
                            .map(|i| {
                                Ok(match r.get::<_, rusqlite::types::Value>(i)? {
                                    rusqlite::types::Value::Null => "NULL".to_owned(),
                                    rusqlite::types::Value::Integer(v) => v.to_string(),
                                    rusqlite::types::Value::Text(t) => t,
                                    rusqlite::types::Value::Blob(b) => hex::encode(b),
                                    rusqlite::types::Value::Real(f) => f.to_string(),
                                })
                            })
                            .collect::<rusqlite::Result<Vec<String>>>()
                    })
                    .unwrap()
                    .collect::<rusqlite::Result<Rows>>()
                    .unwrap();
                (*table, rows)
            })
            .collect()
    }

    /// Every table of the PostgreSQL database at `url`.
    pub fn postgres(url: &str) -> Vec<(&'static str, Rows)> {
        let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
        TABLES
            .iter()
            .map(|(table, order, columns)| {
                let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
                let sql = format!("SELECT {} FROM {table} ORDER BY {order}", names.join(", "));
                let rows = client
                    .query(&sql, &[])
                    .unwrap()
                    .iter()
                    .map(|r| {
                        columns
                            .iter()
                            .enumerate()
                            .map(|(i, (_, col))| match col {
                                Col::Text => r
                                    .get::<_, Option<String>>(i)
                                    .unwrap_or_else(|| "NULL".to_owned()),
                                Col::Int => r
                                    .get::<_, Option<i64>>(i)
                                    .map_or_else(|| "NULL".to_owned(), |v| v.to_string()),
                                Col::Bool => u8::from(r.get::<_, bool>(i)).to_string(),
                                Col::Blob => hex::encode(r.get::<_, Vec<u8>>(i)),
                            })
                            .collect()
                    })
                    .collect();
                (*table, rows)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use meshtun_proto::{EpochSecret, IdentityKey};

    use super::super::testutil::{bench_path, benchmark, controller, node};
    use super::super::{Database, Retention, Store, LIVE_EPOCHS};
    use super::*;
    use crate::clock::Clock;
    use crate::model::{Decision, EpochRecord, Evidence, History, NodeInput, Pin, Policy};

    const HOUR_MS: u64 = 3_600_000;

    fn decided(node_id: &str) -> (Decision, NodeInput) {
        let decision = Decision {
            node_id: node_id.into(),
            allowed: true,
            reason: "overall score 0.90 meets the threshold 0.70".into(),
            passing: true,
            history: History {
                allowed: true,
                passing_streak: 3,
                benchmarked: true,
            },
            evidence: Evidence {
                score: Some(0.9),
                threshold: 0.7,
                age_ms: Some(5),
                max_age_ms: 120_000,
                seq: Some(1),
                sources: Vec::new(),
            },
        };
        let input = NodeInput {
            node_id: node_id.into(),
            latest: None,
            pin: None,
            history: None,
            statements: Vec::new(),
        };
        (decision, input)
    }

    /// An SQLite deployment with history: nodes (one with a membership signature, one
    /// pinned, one removed), invites, benchmarks, statements, peer observations, more
    /// epochs than keep their secrets, and a pruned audit log behind a checkpoint.
    fn deployment(path: &Path) -> Store {
        let clock = Clock::starting_at(1_800_000_000_000);
        let store = Store::open(path).unwrap().with_clock(clock.clone());
        let mut keys = Vec::new();
        for (i, id) in ["node-a", "node-b", "node-c"].iter().enumerate() {
            let (mut n, key) = node(id, i as u8 + 1);
            if i == 0 {
                let signer = meshtun_proto::membership::MembershipKey::generate();
                n.membership_sig = signer.sign(id, &n.wg_public_key, &n.identity_key).ok();
            }
            store.add_node(&n).unwrap();
            keys.push((*id, key));
        }
        store.set_pin("node-b", Some(Pin::Deny)).unwrap();
        let candidates = crate::store::Candidates {
            reported: vec!["198.51.100.4:40001".into(), "192.0.2.1:51820".into()],
            observed: "203.0.113.7:51820".into(),
            reported_ms: 1_700_000_000_000,
        };
        store.set_candidates("node-a", &candidates).unwrap();
        store.remove_node("node-c").unwrap();
        store
            .create_invite("node-d", "tok-d", u64::MAX / 4, None, None)
            .unwrap();
        let evaluator = IdentityKey::from_bytes([0xe1; 32]);
        for (name, removed) in [("eval-1", false), ("eval-old", true)] {
            store
                .add_evaluator(&crate::store::EvaluatorRecord {
                    name: name.into(),
                    key: evaluator.public(),
                    dimensions: vec!["honesty".into()],
                    group: Some("lab".into()),
                    added_ms: clock.now_ms(),
                    removed_ms: None,
                })
                .unwrap();
            if removed {
                store.remove_evaluator(name).unwrap();
            }
        }
        for hour in 1..=30u64 {
            clock.step(HOUR_MS as i64);
            for (id, key) in &keys[..2] {
                let (mut rec, body, sig) = benchmark(key, id, hour, 0.9);
                rec.received_ms = clock.now_ms();
                store
                    .insert_benchmark(&controller(), &rec, &body, &sig, &bench_path(id))
                    .unwrap();
            }
            let now = clock.now_ms();
            let statement = meshtun_proto::statement::Statement {
                issuer: meshtun_proto::statement::Issuer::Evaluator("eval-1".into()),
                subject: "node-a".into(),
                scores: [("honesty".to_owned(), 0.5 + hour as f64 / 100.0)].into(),
                evaluated_at_ms: now,
                evidence: meshtun_proto::statement::EvidenceDigest::of(b"run"),
            };
            store
                .insert_statement(&statement.sign(&evaluator).unwrap(), now)
                .unwrap();
            let observation = meshtun_proto::statement::Statement {
                issuer: meshtun_proto::statement::Issuer::Node("node-a".into()),
                subject: "node-b".into(),
                scores: [("reachable".to_owned(), (hour % 2) as f64)].into(),
                evaluated_at_ms: now,
                evidence: meshtun_proto::statement::EvidenceDigest::of(b"probe"),
            };
            store
                .insert_observation(&observation.sign(&keys[0].1).unwrap(), now)
                .unwrap();
            let epoch = EpochRecord {
                id: hour,
                secret: EpochSecret::from_bytes([hour as u8; 32]),
                activation_ms: now,
                not_after_ms: now + HOUR_MS,
                created_ms: now,
                cause: "schedule".into(),
            };
            let (decision, input) = decided("node-a");
            store
                .insert_epoch(&epoch, &[decision], &[input], &Policy::default(), now)
                .unwrap();
            let retention = Retention {
                benchmarks: Duration::from_secs(6 * 3600),
                decisions: Duration::from_secs(12 * 3600),
                audit: Duration::from_secs(24 * 3600),
            };
            store
                .prune(&retention, &IdentityKey::from_bytes([0xc0; 32]).into())
                .unwrap();
        }
        store
    }

    #[test]
    fn a_deployment_with_history_is_copied_whole_and_its_chain_verifies() {
        let Some(cluster) = crate::temp_cluster::shared_or_skip("migrate") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controller.db");
        let source = deployment(&path);
        let before = source
            .verify_audit(&crate::store::testutil::trusted())
            .unwrap();
        assert!(before.pruned_through.is_some(), "no checkpoint to copy");
        assert_eq!(source.epoch_ids().unwrap().len(), 13);
        // The source stays open and in use while it is copied.
        let db = cluster.create_database("migrate").unwrap();
        let target = PgTarget {
            url: cluster.url(&db),
            password_file: None,
        };
        let report = sqlite_to_postgres(&path, &target).unwrap();
        assert!(report.iter().all(|(_, n)| *n > 0), "{report:?}");

        let copied = Store::connect(&Database::Postgres(target.clone())).unwrap();
        let after = copied
            .verify_audit(&crate::store::testutil::trusted())
            .unwrap();
        assert_eq!(after, before);
        assert!(after.observation_rows_verified > 0, "{after:?}");
        assert_eq!(
            copied.latest_observation_scores(0).unwrap(),
            source.latest_observation_scores(0).unwrap()
        );
        assert_eq!(dump::postgres(&cluster.url(&db)), dump::sqlite(&path));
        let signed = copied.node("node-a").unwrap().unwrap();
        assert!(
            signed.membership_sig.is_some(),
            "the membership signature was not copied"
        );
        assert_eq!(Some(signed), source.node("node-a").unwrap());
        // Past secrets stay erased; the live ones are served.
        assert_eq!(
            copied.latest_epochs(LIVE_EPOCHS).unwrap().len(),
            LIVE_EPOCHS
        );
        assert!(copied.epoch(1).is_err() || copied.epoch(1).unwrap().is_none());
        // The copy goes on where the source stopped.
        let (_, key) = node("node-a", 1);
        let (rec, body, sig) = benchmark(&key, "node-a", 30, 0.9);
        let err = copied
            .insert_benchmark(&controller(), &rec, &body, &sig, &bench_path("node-a"))
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Replay { latest: 30, .. }),
            "{err}"
        );
        let (rec, body, sig) = benchmark(&key, "node-a", 31, 0.9);
        copied
            .insert_benchmark(&controller(), &rec, &body, &sig, &bench_path("node-a"))
            .unwrap();
        // Statement and observation ids go on from the copied counter.
        let observation = meshtun_proto::statement::Statement {
            issuer: meshtun_proto::statement::Issuer::Node("node-a".into()),
            subject: "node-b".into(),
            scores: [("latency".to_owned(), 0.9)].into(),
            evaluated_at_ms: 1,
            evidence: meshtun_proto::statement::EvidenceDigest::of(b"probe"),
        };
        let id = copied
            .insert_observation(&observation.sign(&key).unwrap(), 1)
            .unwrap();
        assert_eq!(id, 61);
        copied
            .verify_audit(&crate::store::testutil::trusted())
            .unwrap();

        // A target that holds anything is refused, and keeps what it had.
        let err = sqlite_to_postgres(&path, &target).unwrap_err().to_string();
        assert!(err.contains("not empty"), "{err}");
        assert_eq!(copied.benchmarks("node-a", 1).unwrap()[0].seq, 31);
        drop(source);
    }

    /// Benchmarks the source holds before the copy.
    const PRELOAD: u64 = 20;

    /// Longest a write to the source may take while it is copied (it never waits for the
    /// copy: WAL; a held-up write would wait the store's 5 s busy timeout, then fail).
    const WRITER_STALL_LIMIT: Duration = Duration::from_secs(1);

    #[test]
    fn a_source_written_during_the_copy_is_copied_as_its_snapshot_and_its_writer_never_waits() {
        let Some(cluster) = crate::temp_cluster::shared_or_skip("migrate") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controller.db");
        let store = Store::open(&path).unwrap();
        let (n, key) = node("node-a", 1);
        store.add_node(&n).unwrap();
        let insert = |seq| {
            let (rec, body, sig) = benchmark(&key, "node-a", seq, 0.9);
            let started = std::time::Instant::now();
            store
                .insert_benchmark(&controller(), &rec, &body, &sig, &bench_path("node-a"))
                .unwrap();
            started.elapsed()
        };
        for seq in 1..=PRELOAD {
            insert(seq);
        }
        let db = cluster.create_database("migrate_live").unwrap();
        let target = PgTarget {
            url: cluster.url(&db),
            password_file: None,
        };
        // The controller commits a benchmark (and its audit entry) before every table is read.
        let mut seq = PRELOAD;
        let mut writes = Vec::new();
        let report = copy_observed(&path, &target, |table| {
            seq += 1;
            writes.push((table.to_owned(), insert(seq)));
        })
        .unwrap();
        assert_eq!(writes.len(), TABLES.len());
        for (table, took) in &writes {
            assert!(
                *took < WRITER_STALL_LIMIT,
                "a write before table {table} waited {took:?} for the copy"
            );
        }
        assert_eq!(store.benchmarks("node-a", 1).unwrap()[0].seq, seq);
        // The copy is the snapshot at its start: none of those writes, and each benchmark
        // copied with its audit entry (one transaction wrote both).
        let tables = dump::postgres(&target.url);
        let rows = |t: &str| &tables.iter().find(|(n, _)| *n == t).unwrap().1;
        let audited = rows("audit").iter().filter(|r| r[2] == "benchmark").count();
        assert_eq!(rows("benchmarks").len() as u64, PRELOAD, "{report:?}");
        assert_eq!(audited as u64, PRELOAD, "{report:?}");
        let copied = Store::connect(&Database::Postgres(target.clone())).unwrap();
        copied
            .verify_audit(&crate::store::testutil::trusted())
            .unwrap();
    }

    #[test]
    fn a_missing_source_is_refused_without_creating_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("typo.db");
        let target = PgTarget {
            url: "postgres://meshtun@%2Fnonexistent/none".into(),
            password_file: None,
        };
        let err = sqlite_to_postgres(&path, &target).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        assert!(!path.exists());
    }
}
