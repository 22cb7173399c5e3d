//! The replay-nonce table every instance shares: a signed request accepted by one instance
//! and replayed, byte for byte, to another is refused there.
//!
//! `request_nonces (node_id, nonce)` is the primary key, and recording is one
//! `INSERT … ON CONFLICT DO NOTHING`: no row inserted means the nonce was already used, on
//! whichever instance. Like the in-memory [`NonceCache`](crate::auth::NonceCache), a nonce
//! is recorded only after the signature verified and the node's quota allowed the request,
//! and it is kept until its request's timestamp is out of the window.
//!
//! Each instance judges freshness with its own clock, so a nonce is pruned only one more
//! window after its request went stale (`expires_ms < now - window`): an instance whose
//! clock lags the pruner's by up to a window still finds it. Instances must keep their
//! clocks within a window of each other (they must anyway, for nodes' requests to be fresh).
//!
//! Bounded: at most [`MAX_ROWS`] rows (by default) are allowed (then requests are refused as busy until
//! pruning frees room, as in memory); the count is taken at each pruning, at most once per
//! [`PRUNE_EVERY`] per instance.

use std::time::{Duration, Instant};

use meshtun_proto::auth::NONCE_LEN;
use parking_lot::Mutex;
use postgres::Client;
use r2d2::{ManageConnection, Pool};

use crate::blocking::OffRuntime;

use crate::auth::{NonceStore, Refusal, MAX_NONCES};

/// Most nonces the table may hold (as many as one instance holds in memory).
pub const MAX_ROWS: i64 = MAX_NONCES as i64;

/// Least time between two prunings by one instance.
pub const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// The shared nonce table, through a pool of connections (the store's, at merge).
pub struct PgNonces<M: ManageConnection<Connection = Client>> {
    pool: OffRuntime<Pool<M>>,
    window_ms: u64,
    max_rows: i64,
    pruning: Mutex<Pruning>,
}

#[derive(Default)]
struct Pruning {
    last: Option<Instant>,
    full: bool,
}

impl<M: ManageConnection<Connection = Client>> PgNonces<M> {
    /// Nonces of requests accepted within `window_ms` of now, in `pool`'s database (whose
    /// schema [`super::ensure_schema`] created).
    pub fn new(pool: Pool<M>, window_ms: u64) -> Self {
        Self {
            pool: OffRuntime::new(pool),
            window_ms,
            max_rows: MAX_ROWS,
            pruning: Mutex::new(Pruning::default()),
        }
    }

    /// The store refusing requests once the table holds `max_rows` (default [`MAX_ROWS`]).
    pub fn with_max_rows(mut self, max_rows: i64) -> Self {
        self.max_rows = max_rows;
        self
    }

    /// Deletes nonces out of every instance's window, and notes whether the table is full.
    /// Returns the rows deleted.
    pub fn prune(&self, now_ms: u64) -> Result<u64, Refusal> {
        let mut client = self.client()?;
        let cutoff = to_i64(now_ms.saturating_sub(self.window_ms));
        let deleted = client
            .execute(
                "DELETE FROM request_nonces WHERE expires_ms < $1",
                &[&cutoff],
            )
            .map_err(|e| unavailable("pruning request_nonces", &e))?;
        let rows: i64 = client
            .query_one("SELECT count(*) FROM request_nonces", &[])
            .and_then(|r| r.try_get(0))
            .map_err(|e| unavailable("counting request_nonces", &e))?;
        let mut pruning = self.pruning.lock();
        pruning.full = rows >= self.max_rows;
        pruning.last = Some(Instant::now());
        Ok(deleted)
    }

    /// Prunes if [`PRUNE_EVERY`] has passed (one caller at a time); true if the table is
    /// full.
    fn prune_if_due(&self, now_ms: u64) -> Result<bool, Refusal> {
        let due = {
            let Some(p) = self.pruning.try_lock() else {
                return Ok(false);
            };
            p.last.is_none_or(|t| t.elapsed() >= PRUNE_EVERY)
        };
        if due {
            self.prune(now_ms)?;
        }
        Ok(self.pruning.lock().full)
    }

    fn client(&self) -> Result<r2d2::PooledConnection<M>, Refusal> {
        self.pool.get().map_err(|e| {
            tracing::error!(error = %e, "PostgreSQL: no connection for the replay check");
            Refusal::Unavailable("no database connection".into())
        })
    }
}

impl<M: ManageConnection<Connection = Client>> NonceStore for PgNonces<M> {
    fn blocks(&self) -> bool {
        true
    }

    fn window_ms(&self) -> u64 {
        self.window_ms
    }

    fn record(
        &self,
        node: &str,
        nonce: [u8; NONCE_LEN],
        timestamp_ms: u64,
        now_ms: u64,
    ) -> Result<bool, Refusal> {
        if self.prune_if_due(now_ms)? {
            return Err(Refusal::Busy);
        }
        // Kept until the request is stale, inclusive (as in memory).
        let expires = to_i64(timestamp_ms.saturating_add(self.window_ms).max(now_ms));
        let inserted = self
            .client()?
            .execute(
                "INSERT INTO request_nonces (node_id, nonce, expires_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
                &[&node, &&nonce[..], &expires],
            )
            .map_err(|e| unavailable("recording a request nonce", &e))?;
        Ok(inserted == 1)
    }
}

fn to_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// Logs the database's error and tells the client only what failed, not how.
fn unavailable(what: &str, e: &postgres::Error) -> Refusal {
    tracing::error!(error = %e, "PostgreSQL, {what}");
    Refusal::Unavailable(format!("the database failed {what}"))
}
