//! The store on PostgreSQL: the same tables, rules and audit chain as the SQLite store, for
//! deployments that keep their state in a server (and, later, share it between several
//! controller instances).
//!
//! Concurrency. Every write transaction first takes the row lock of the single
//! `writer_lock` row (`SELECT … FOR UPDATE`), then runs at READ COMMITTED: writers are
//! serialized exactly as SQLite's `BEGIN IMMEDIATE` serializes them, and since each
//! statement after the lock sees everything committed before it, the checks a write makes
//! (the newest epoch id, a benchmark's newest seq, the audit chain's head) hold until its
//! commit, whichever controller instance or connection the other writers use. The database
//! refuses what the lock would prevent anyway: `epochs.id`, `(node, seq)` and `audit.seq`
//! are primary keys, and triggers keep the audit log append-only. Reads run in a
//! REPEATABLE READ, READ ONLY transaction: one snapshot, like SQLite's read transaction.
//!
//! Durability: every connection runs with `synchronous_commit=on`, and a method returns only
//! after its `COMMIT` returned, so what a caller acknowledges is on the server's disk (and,
//! with synchronous replication, on its standby's).
//!
//! The API is synchronous (a pool of blocking connections, `r2d2`), like the SQLite store's:
//! async callers use it through `tokio::task::spawn_blocking`.

mod audit_log;
mod benchmarks;
mod candidates;
pub(crate) mod connect;
mod epochs;
mod evaluators;
mod invites;
mod nodes;
mod observations;
mod retention;
mod schema;

use std::fmt;

use postgres::{IsolationLevel, Row, Transaction};

use super::backend::{Backend, Tx};
use super::codec::corrupt;
use super::error::{PgError, SqlContext as _};
use super::StoreError;
use crate::blocking::OffRuntime;
use crate::clock::Clock;
pub use connect::PgTarget;

/// Connections the pool keeps at most per store: the API's blocking threads share them.
const POOL_SIZE: u32 = 16;

/// The PostgreSQL store. See the [module documentation](self).
pub struct PgStore {
    pool: OffRuntime<r2d2::Pool<connect::Manager>>,
    location: String,
    clock: Clock,
    connector: crate::ha::Connect,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// One pooled connection.
type Conn = r2d2::PooledConnection<connect::Manager>;

impl PgStore {
    /// Connects to `target` and migrates its schema to the newest version (refusing one newer
    /// than this build).
    pub fn connect(target: &PgTarget) -> Result<Self, StoreError> {
        let prepared = connect::prepare(target)?;
        connect::check_transport(&prepared.config, &prepared.location)?;
        let location = prepared.location;
        let (config, tls) = (prepared.config.clone(), prepared.tls.clone());
        let connector: crate::ha::Connect =
            std::sync::Arc::new(move || config.connect(tls.clone()));
        let manager = connect::Manager::new(prepared.config, prepared.tls);
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(0))
            .connection_timeout(connect::CONNECT_TIMEOUT)
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(manager);
        let store = Self {
            pool: OffRuntime::new(pool),
            location,
            clock: Clock::system(),
            connector,
        };
        let mut conn = store.conn()?;
        schema::migrate(&mut conn, &store.location)?;
        drop(conn);
        Ok(store)
    }

    /// Opens dedicated connections, outside the pool: the lease keeper's and the epoch
    /// listener's.
    pub fn connector(&self) -> crate::ha::Connect {
        self.connector.clone()
    }

    /// The replay nonces every instance on this database shares, over the pool, for a
    /// replay window of `window_ms`.
    pub fn nonces(&self, window_ms: u64) -> crate::ha::PgNonces<connect::Manager> {
        crate::ha::PgNonces::new(r2d2::Pool::clone(&self.pool), window_ms)
    }

    /// Host and database (never a password).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The same store, with `clock`.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The database's size on disk, in bytes.
    pub fn size_bytes(&self) -> Result<u64, StoreError> {
        let what = || "reading the database size".to_owned();
        let mut conn = self.conn()?;
        let row = conn
            .query_one("SELECT pg_database_size(current_database())", &[])
            .ctx(what)?;
        get_u64(&row, 0, "database size")
    }

    fn conn(&self) -> Result<Conn, StoreError> {
        self.pool.get().map_err(|e| {
            // r2d2 keeps the driver's last error in its message; it never holds a password.
            PgError::Connect {
                location: self.location.clone(),
                reason: e.to_string(),
            }
            .into()
        })
    }

    /// Runs `f` in one write transaction, holding the writer lock, and commits before
    /// returning its result.
    pub(in crate::store) fn write<T>(
        &self,
        what: impl Fn() -> String,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn
            .build_transaction()
            .isolation_level(IsolationLevel::ReadCommitted)
            .start()
            .ctx(&what)?;
        tx.execute("SELECT 1 FROM writer_lock WHERE id = 1 FOR UPDATE", &[])
            .ctx(&what)?;
        let out = f(&mut tx)?;
        tx.commit().ctx(&what)?;
        Ok(out)
    }

    /// Runs raw SQL behind the store's back, as someone with access to the database would
    /// (for the tests of what the database itself refuses).
    #[cfg(test)]
    pub(crate) fn execute_raw(&self, sql: &str) -> Result<u64, String> {
        let mut conn = self.conn().map_err(|e| e.to_string())?;
        let message = |e: postgres::Error| {
            e.as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_owned())
        };
        if sql.trim_end().trim_end_matches(';').contains(';') {
            return conn.batch_execute(sql).map(|()| 0).map_err(message);
        }
        conn.execute(sql, &[]).map_err(message)
    }

    /// Runs raw SQL that returns one text column.
    #[cfg(test)]
    pub(crate) fn query_strings(&self, sql: &str) -> Vec<String> {
        let mut conn = self.conn().unwrap();
        let rows = conn.query(sql, &[]).unwrap();
        rows.iter().map(|r| r.get(0)).collect()
    }

    /// Runs raw SQL that returns one integer.
    #[cfg(test)]
    pub(crate) fn query_i64(&self, sql: &str) -> i64 {
        let mut conn = self.conn().unwrap();
        conn.query_one(sql, &[]).unwrap().get(0)
    }
}

impl Backend for PgStore {
    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    fn write_tx<T>(
        &self,
        what: impl Fn() -> String,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.write(what, |tx| f(tx))
    }

    /// A REPEATABLE READ, READ ONLY transaction: one snapshot, like SQLite's.
    fn read_tx<T>(
        &self,
        what: impl Fn() -> String,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .ctx(&what)?;
        let out = f(&mut tx)?;
        tx.commit().ctx(&what)?;
        Ok(out)
    }
}

/// Column `idx` of `row` as a `u64` (stored as `BIGINT`, never negative when written here).
pub(crate) fn get_u64(row: &Row, idx: usize, what: &str) -> Result<u64, StoreError> {
    let value: i64 = row.try_get(idx).map_err(|e| corrupt(what.to_owned(), e))?;
    u64::try_from(value).map_err(|_| corrupt(what.to_owned(), format!("negative value {value}")))
}

/// Column `idx` of `row` as an optional `u64`.
pub(crate) fn get_opt_u64(row: &Row, idx: usize, what: &str) -> Result<Option<u64>, StoreError> {
    let value: Option<i64> = row.try_get(idx).map_err(|e| corrupt(what.to_owned(), e))?;
    value
        .map(|v| {
            u64::try_from(v).map_err(|_| corrupt(what.to_owned(), format!("negative value {v}")))
        })
        .transpose()
}

/// Column `idx` of `row`, of any type the driver reads.
pub(crate) fn get<'a, T: postgres::types::FromSql<'a>>(
    row: &'a Row,
    idx: usize,
    what: &str,
) -> Result<T, StoreError> {
    row.try_get(idx).map_err(|e| corrupt(what.to_owned(), e))
}
