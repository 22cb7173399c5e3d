//! Several controller instances on one PostgreSQL database: exactly one of them, the leader,
//! decides and publishes epochs; every instance serves nodes.
//!
//! - [`lease`]: who leads. A single-row `leader_lease` table holds the holder, a term that
//!   only grows (the fencing token) and an expiry computed with the database's clock. The
//!   sans-IO [`lease::LeaseCore`] decides, from the results of acquire/renew statements and a
//!   boot-time monotonic clock, whether this instance may act as leader now; it steps down by
//!   itself before the lease can expire in the database.
//! - [`fence()`]: inside the publishing transaction, refuses unless the token's holder and term
//!   still hold an unexpired lease, and keeps the lease row locked until the commit, so a
//!   deposed leader's late write fails.
//! - [`notify`]: `NOTIFY meshtun_epoch` in the publishing transaction, and a supervised
//!   listener on its own connection that wakes every instance (also after a reconnect, when
//!   notifications may have been missed).
//! - [`nonces`]: the replay-nonce table every instance shares, so a signed request replayed
//!   to another instance is refused ([`crate::auth::NonceStore`]).
//! - [`instances`]: `controller_instances`, one row per instance with its last contact, and
//!   the cluster's status (leader, term, each instance's last contact).
//! - [`keeper`]: the loop that acquires and renews the lease and heartbeats, feeding a
//!   [`Leadership`] handle, which the engine asks "may I publish now, with which token".
//!
//! Request quotas stay per instance: a node talking to N instances gets at most N times its
//! quota. Nodes use one controller URL at a time and move on only when it fails, so in
//! practice a node spends one quota; N is the operator's (small) number of instances, and
//! every row a node can make an instance write (a nonce) is still bounded by N times its
//! quota over the replay window.

pub mod fence;
pub mod instances;
pub mod keeper;
pub mod leadership;
pub mod lease;
pub mod nonces;
pub mod notify;
pub mod settings;

#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use fence::{fence, FenceError};
pub use instances::{cluster_status, ClusterStatus, InstanceStatus};
pub use keeper::{run_keeper, KeeperSettings};
pub use leadership::{Leadership, Publish};
pub use lease::{LeaseCore, LeaseTiming, LeaseToken};
pub use nonces::PgNonces;
pub use notify::{notify_epoch, run_listener, Wake, EPOCH_CHANNEL};

/// Opens a new, dedicated connection to the database (the lease keeper's and the listener's
/// own; the store's pool is not used for them, so that a busy pool never delays a renewal).
pub type Connect = Arc<dyn Fn() -> Result<postgres::Client, postgres::Error> + Send + Sync>;

/// Why a leadership operation on the database failed.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    /// A statement failed (connection lost, timeout, constraint...).
    #[error("PostgreSQL, {what}")]
    Sql {
        /// What was being done.
        what: String,
        /// What the driver said.
        #[source]
        source: postgres::Error,
    },
    /// No connection from the pool.
    #[error("PostgreSQL, {what}: no connection from the pool")]
    Pool {
        /// What was being done.
        what: String,
        /// What r2d2 said.
        #[source]
        source: r2d2::Error,
    },
    /// A value read from the database is out of range.
    #[error("PostgreSQL, {what}: {reason}")]
    Corrupt {
        /// What was being read.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Adds what was being done to a driver error.
pub(crate) trait Ctx<T> {
    /// The error as [`HaError::Sql`] with `what`.
    fn ctx(self, what: &str) -> Result<T, HaError>;
}

impl<T> Ctx<T> for Result<T, postgres::Error> {
    fn ctx(self, what: &str) -> Result<T, HaError> {
        self.map_err(|source| HaError::Sql {
            what: what.to_owned(),
            source,
        })
    }
}

/// Creates the tables of this module if missing: `leader_lease` (with its one row),
/// `controller_instances` and `request_nonces`. Idempotent; safe to run from several
/// instances at once (under a transaction-scoped advisory lock, since concurrent `CREATE
/// TABLE IF NOT EXISTS` can collide).
pub fn ensure_schema(client: &mut postgres::Client) -> Result<(), HaError> {
    let what = "creating the leader_lease, controller_instances and request_nonces tables";
    let mut tx = client.transaction().ctx(what)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .ctx(what)?;
    tx.batch_execute(SCHEMA).ctx(what)?;
    tx.commit().ctx(what)
}

/// The advisory lock key that serialises [`ensure_schema`] ("meshtunH" in ASCII).
const SCHEMA_LOCK: i64 = 0x6d65_7368_7475_6e48;

/// The tables of this module. The lease row exists once (`id = 1`, checked); its term starts
/// at 0 and an expiry of `-infinity`, so the first acquisition gets term 1.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS leader_lease (
    id integer PRIMARY KEY CHECK (id = 1),
    holder text NOT NULL,
    term bigint NOT NULL CHECK (term >= 0),
    expires_at timestamptz NOT NULL
);
INSERT INTO leader_lease (id, holder, term, expires_at)
    VALUES (1, '', 0, '-infinity') ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS controller_instances (
    id text PRIMARY KEY,
    url text NOT NULL,
    started_at timestamptz NOT NULL,
    last_seen timestamptz NOT NULL,
    leader boolean NOT NULL DEFAULT false
);
CREATE TABLE IF NOT EXISTS request_nonces (
    node_id text NOT NULL,
    nonce bytea NOT NULL,
    expires_ms bigint NOT NULL,
    PRIMARY KEY (node_id, nonce)
);
CREATE INDEX IF NOT EXISTS request_nonces_expiry ON request_nonces (expires_ms);
";
