//! What the store's rules need of a backend, so that each rule (what an invite redemption
//! checks and in which order, what retention deletes, which audit entries a change appends)
//! is written once, for SQLite and PostgreSQL alike.
//!
//! A backend is two things: a [`Backend`] runs a closure in one read or write transaction
//! (committed before it returns) and stamps with its clock; a [`Tx`] is that transaction's
//! few queries, one trait per table group (`AuditSql`, `NodeSql`, …), implemented for
//! `rusqlite::Transaction` next to the rule and for `postgres::Transaction` in
//! [`super::pg`]. The rules themselves are the provided methods of extension traits
//! (`NodeRules`, `InviteRules`, …) that every [`Backend`] has, and generic functions over
//! [`Tx`] that other rules reuse inside their transaction.

use super::audit_log::AuditSql;
use super::benchmarks::BenchmarkSql;
use super::candidates::CandidateSql;
use super::epochs::EpochSql;
use super::evaluators::EvaluatorSql;
use super::invites::InviteSql;
use super::nodes::NodeSql;
use super::observations::ObservationSql;
use super::retention::RetentionSql;
use super::statements::StatementSql;
use super::StoreError;

/// One transaction's queries, on either backend: only the SQL, never a rule.
pub(crate) trait Tx:
    AuditSql
    + BenchmarkSql
    + CandidateSql
    + EpochSql
    + EvaluatorSql
    + InviteSql
    + NodeSql
    + ObservationSql
    + RetentionSql
    + StatementSql
{
}

impl<T> Tx for T where
    T: AuditSql
        + BenchmarkSql
        + CandidateSql
        + EpochSql
        + EvaluatorSql
        + InviteSql
        + NodeSql
        + ObservationSql
        + RetentionSql
        + StatementSql
        + ?Sized
{
}

/// A store backend: transactions and a clock.
pub(crate) trait Backend {
    /// Unix milliseconds now, by the store's clock (what audit entries are stamped with).
    fn now_ms(&self) -> u64;

    /// Runs `f` in one write transaction (writers serialized) and commits, durably, before
    /// returning its result; nothing of it stays if `f` fails. `what` names the operation
    /// in errors.
    fn write_tx<T>(
        &self,
        what: impl Fn() -> String,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError>;

    /// Runs `f` in one read transaction, so that its queries see one snapshot.
    fn read_tx<T>(
        &self,
        what: impl Fn() -> String,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError>;
}

/// What an operation is doing, for the message of a query error (built only on error).
pub(crate) type What<'a> = &'a dyn Fn() -> String;
