//! Fencing: the check, inside the publishing transaction, that the publisher still leads.
//!
//! [`fence`] locks the lease row (`FOR SHARE`) and compares it with the token, judging the
//! expiry by the database's clock at that moment (`clock_timestamp()`). The lock is held
//! until the transaction ends, and acquiring the lease is an `UPDATE` of that row, which
//! waits for it: no other instance can start a new term between the check and the commit.
//! So every publication that commits happened inside its publisher's unexpired term, and a
//! deposed leader's late write fails.
//!
//! A leader paused after the check would hold that lock, and so block the takeover, for as
//! long as it is paused. [`fence`] therefore also sets the transaction's
//! `idle_in_transaction_session_timeout` to what is left of the lease: a transaction left
//! idle past the lease is ended by the server (its connection closed, nothing committed),
//! and the next instance takes over about when the lease would have expired anyway.

use postgres::Transaction;

use super::lease::{term_param, LeaseToken};

/// Why [`fence`] refused a publication.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FenceError {
    /// Another instance holds the lease (or held it later).
    #[error(
        "not the leader: the lease is held by {holder:?} in term {term}, not by {instance:?} \
         in term {mine}"
    )]
    Deposed {
        /// Who holds it now.
        holder: String,
        /// In which term.
        term: u64,
        /// Who tried to publish.
        instance: String,
        /// With which term.
        mine: u64,
    },
    /// The token's lease has expired by the database's clock.
    #[error("not the leader: the lease of {instance:?} in term {term} has expired")]
    Expired {
        /// Who tried to publish.
        instance: String,
        /// With which term.
        term: u64,
    },
    /// The lease row is missing or the check failed; the message says which.
    #[error("cannot check the leader lease: {0}")]
    Database(String),
}

/// Refuses unless `token` names the instance and term that hold the lease now, unexpired by
/// the database's clock; on success the lease row stays locked until `tx` ends. Call it in
/// the transaction that publishes, before its writes. See the [module documentation](self).
pub fn fence(tx: &mut Transaction<'_>, token: &LeaseToken) -> Result<(), FenceError> {
    let db = |e: postgres::Error| FenceError::Database(e.to_string());
    let term =
        term_param(token.term(), "fencing").map_err(|e| FenceError::Database(e.to_string()))?;
    let row = tx
        .query_opt(
            "SELECT holder, term, \
                 GREATEST(0, CEIL(EXTRACT(EPOCH FROM expires_at - clock_timestamp()) * 1000))::bigint \
             FROM leader_lease WHERE id = 1 FOR SHARE",
            &[],
        )
        .map_err(db)?
        .ok_or_else(|| FenceError::Database("the leader_lease row is missing".into()))?;
    let holder: String = row.try_get(0).map_err(db)?;
    let held_term: i64 = row.try_get(1).map_err(db)?;
    let left_ms: i64 = row.try_get(2).map_err(db)?;
    if holder != token.instance() || held_term != term {
        return Err(FenceError::Deposed {
            holder,
            term: u64::try_from(held_term).unwrap_or(0),
            instance: token.instance().to_owned(),
            mine: token.term(),
        });
    }
    if left_ms <= 0 {
        return Err(FenceError::Expired {
            instance: token.instance().to_owned(),
            term: token.term(),
        });
    }
    // Zero would disable the timeout: at least 1 ms.
    tx.execute(
        "SELECT set_config('idle_in_transaction_session_timeout', $1, true)",
        &[&left_ms.max(1).to_string()],
    )
    .map_err(db)?;
    Ok(())
}
