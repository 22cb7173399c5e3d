//! The controller's durable state, in one embedded SQLite database: enrolled nodes, invites,
//! benchmarks, evaluators and their signed statements, nodes' signed observations of their
//! peers, epochs with their secrets, membership decisions, and an append-only, hash-chained
//! audit log (see [`audit`]).
//!
//! Every mutating method runs as one short `BEGIN IMMEDIATE` transaction that also appends
//! its audit entries, and returns only after the commit reached the disk (WAL with
//! `synchronous=FULL`), so whatever a caller acknowledges survives a crash. The database
//! file is created with mode 0600 because it holds the epoch secrets; a secret is stored
//! only in the `epochs` table and never appears in the audit log or in an error message.
//!
//! [`Store`] is `Send + Sync` (the connection sits behind a mutex); async callers use it
//! through `tokio::task::spawn_blocking`.

pub mod audit;
mod audit_log;
mod backend;
mod benchmarks;
mod candidates;
mod codec;
mod dispatch;
mod epochs;
mod error;
mod evaluators;
mod invites;
pub mod migrate;
mod nodes;
mod observations;
pub mod pg;
mod retention;
mod schema;
mod statements;

#[cfg(test)]
mod citations_tests;
#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod retention_tests;
#[cfg(test)]
pub(crate) mod testutil;

use std::fmt;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use meshtun_proto::private_file::{self, Replace};
use rusqlite::{Connection, TransactionBehavior};

pub use audit::{AuditEntry, AuditError, AuditKind, AuditReport};
pub use benchmarks::BENCHMARK_METHOD;
pub use candidates::Candidates;
pub use dispatch::{Database, SharedParts, Store};
pub use epochs::EpochSummary;
pub use error::{PgError, StoreError};
pub use evaluators::{EvaluatorListing, EvaluatorRecord};
pub use invites::invite_token_hash;
pub use observations::ObservationScore;
pub use retention::{PruneReport, Retention, TableRows, LIVE_EPOCHS};
pub use statements::StatementScore;

use backend::{Backend, Tx};
use error::SqlContext as _;

use crate::clock::Clock;

/// How long a statement waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The size the write-ahead log is truncated to after a checkpoint, so that one burst of
/// writes does not keep its disk space.
const WAL_SIZE_LIMIT: i64 = 64 << 20;

/// The SQLite backend of [`Store`]. See the [module documentation](self).
pub struct SqliteStore {
    conn: Mutex<Connection>,
    location: String,
    clock: Clock,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens the database at `path`, creating it (mode 0600) and its directory (mode 0700)
    /// if missing, and migrating its schema to the newest version. An existing file readable
    /// by others is narrowed to 0600. A database written by a newer controller is refused.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        prepare_file(path)?;
        let location = path.display().to_string();
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            location: location.clone(),
            source,
        })?;
        Self::configure(conn, location)
    }

    /// A private in-memory database, for tests.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let location = ":memory:".to_owned();
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            location: location.clone(),
            source,
        })?;
        Self::configure(conn, location)
    }

    /// Where the database lives (a path, or `:memory:`).
    pub fn location(&self) -> &str {
        &self.location
    }

    fn configure(mut conn: Connection, location: String) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open {
            location: location.clone(),
            source,
        };
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(open_err)?;
        // An in-memory database keeps its "memory" journal; a file must be in WAL mode.
        if mode != "wal" && location != ":memory:" {
            return Err(StoreError::JournalMode { location, mode });
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        // Deleted rows (pruned history, erased epoch secrets) are overwritten with zeros,
        // not left in free pages for whoever copies the file.
        conn.pragma_update(None, "secure_delete", "ON")
            .map_err(open_err)?;
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
            .map_err(open_err)?;
        schema::migrate(&mut conn, &location)?;
        Ok(Self {
            conn: Mutex::new(conn),
            location,
            clock: Clock::system(),
        })
    }

    /// The same store, stamping audit entries and invites with `clock` rather than the
    /// system's wall clock (for simulations and tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The database's size in bytes: its pages, in use and free (the write-ahead log
    /// aside).
    pub fn size_bytes(&self) -> Result<u64, StoreError> {
        let what = || "reading the database size".to_owned();
        let conn = self.lock();
        let pages: u64 = conn
            .pragma_query_value(None, "page_count", |r| r.get(0))
            .ctx(what)?;
        let size: u64 = conn
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .ctx(what)?;
        Ok(pages.saturating_mul(size))
    }

    /// The connection. A panic in another thread cannot leave a transaction open (it rolls
    /// back when dropped), so a poisoned lock is safe to take over.
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Backend for SqliteStore {
    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// A `BEGIN IMMEDIATE` transaction: writers are serialized from the start.
    fn write_tx<T>(
        &self,
        what: impl Fn() -> String,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.lock();
        let mut tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(&what)?;
        let out = f(&mut tx)?;
        tx.commit().ctx(&what)?;
        Ok(out)
    }

    fn read_tx<T>(
        &self,
        what: impl Fn() -> String,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.lock();
        let mut tx = conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .ctx(&what)?;
        let out = f(&mut tx)?;
        tx.finish().ctx(&what)?;
        Ok(out)
    }
}

/// Creates the directory (0700) and an empty database file (0600) if missing, and narrows
/// an existing file that others could read.
fn prepare_file(path: &Path) -> Result<(), StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        private_file::create_dir(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
    }
    let file_err = |source| StoreError::File {
        path: path.to_owned(),
        source,
    };
    match private_file::write(path, b"", Replace::Never) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(file_err(e)),
    }
    let meta = fs::metadata(path).map_err(file_err)?;
    if let Some(mode) = private_file::exposed_mode(&meta) {
        tracing::warn!(
            "database {} had mode {mode:04o}; narrowing it to 0600 (it holds epoch secrets)",
            path.display(),
        );
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(file_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::audit_log::AuditRules as _;
    use super::benchmarks::BenchmarkRules as _;
    use super::nodes::NodeRules as _;
    use super::testutil::{benchmark, node};
    use super::SqliteStore as Store;
    use super::*;

    #[test]
    fn store_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Store>();
    }

    #[test]
    fn open_creates_directory_and_private_file_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/sub/controller.db");
        let store = Store::open(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let conn = store.lock();
        let journal: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(journal, "wal");
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
        let fk: i64 = conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
    }

    #[test]
    fn open_narrows_a_world_readable_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controller.db");
        fs::write(&path, b"").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        Store::open(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn reopening_is_a_no_op_and_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controller.db");
        let (a, key) = node("node-a", 1);
        let (record, body, sig) = benchmark(&key, "node-a", 3, 0.9);
        {
            let store = Store::open(&path).unwrap();
            store.add_node(&a).unwrap();
            store
                .insert_benchmark(
                    &crate::store::testutil::controller(),
                    &record,
                    &body,
                    &sig,
                    &testutil::bench_path("node-a"),
                )
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let version: i64 = store
            .lock()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version as usize, schema::MIGRATIONS.len());
        assert_eq!(store.nodes().unwrap(), vec![a]);
        assert_eq!(store.latest_benchmarks().unwrap()["node-a"], record);
        let report = store
            .verify_audit(&crate::store::testutil::trusted())
            .unwrap();
        assert_eq!(report.entries, 2);
    }

    #[test]
    fn version_1_databases_get_their_node_addresses_and_the_first_holder_keeps_a_shared_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controller.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(schema::MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            for (id, key, addresses, enrolled) in [
                ("node-b", "b", r#"["100.64.0.2/24","fd00:64::2/64"]"#, 2),
                ("node-a", "a", r#"["100.64.0.1/24"]"#, 1),
                ("node-z", "z", r#"["100.64.0.2/32"]"#, 3),
            ] {
                conn.execute(
                    "INSERT INTO nodes (id, wg_public_key, identity_key, addresses, enrolled_ms) \
                     VALUES (?1, ?2, ?2, ?3, ?4)",
                    rusqlite::params![id, key, addresses, enrolled],
                )
                .unwrap();
            }
        }
        let store = Store::open(&path).unwrap();
        let conn = store.lock();
        let mut stmt = conn
            .prepare("SELECT address, node_id FROM node_addresses ORDER BY address")
            .unwrap();
        let rows: Vec<(String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let expected = [
            ("100.64.0.1", "node-a"),
            ("100.64.0.2", "node-b"),
            ("fd00:64::2", "node-b"),
        ];
        assert_eq!(
            rows,
            expected.map(|(a, n)| (a.to_owned(), n.to_owned())).to_vec()
        );
    }

    #[test]
    fn a_newer_schema_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controller.db");
        drop(Store::open(&path).unwrap());
        {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "user_version", 99).unwrap();
        }
        let err = Store::open(&path).unwrap_err().to_string();
        assert!(err.contains("schema version 99"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("use a newer meshtun-controller"), "{err}");
    }

    #[test]
    fn concurrent_writers_share_one_unbroken_chain() {
        // Two handles on one file (as the server and an admin command would have), each
        // used from two threads.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controller.db");
        let stores = [
            std::sync::Arc::new(Store::open(&path).unwrap()),
            std::sync::Arc::new(Store::open(&path).unwrap()),
        ];
        let threads: Vec<_> = (0..4u8)
            .map(|i| {
                let store = stores[usize::from(i % 2)].clone();
                std::thread::spawn(move || {
                    let id = format!("node-{i}");
                    let (n, key) = node(&id, i + 1);
                    store.add_node(&n).unwrap();
                    for seq in 1..=25 {
                        let (rec, body, sig) = benchmark(&key, &id, seq, 0.9);
                        store
                            .insert_benchmark(
                                &crate::store::testutil::controller(),
                                &rec,
                                &body,
                                &sig,
                                &testutil::bench_path(&id),
                            )
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let report = stores[1]
            .verify_audit(&crate::store::testutil::trusted())
            .unwrap();
        assert_eq!(report.entries, 4 + 100);
        assert_eq!(report.signatures_verified, 100);
        assert_eq!(stores[0].latest_benchmarks().unwrap().len(), 4);
    }

    #[test]
    fn a_directory_in_the_way_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, b"x").unwrap();
        let err = Store::open(blocker.join("controller.db"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot create the database directory"),
            "{err}"
        );
        assert!(err.contains(&blocker.display().to_string()), "{err}");
    }
}
