//! Retention: the database keeps a bounded window of history, whatever the mesh's size or
//! its members do.
//!
//! - An epoch's secret is erased (overwritten, with `secure_delete` on) in the transaction
//!   that stores the epoch [`LIVE_EPOCHS`] newer than it: only the newest epochs can still
//!   be served, so an older secret is of use only to whoever steals the file or a backup.
//! - [`Store::prune`](super::Store::prune) deletes, in short transactions:
//!   - benchmarks received before the benchmark window, except each node's newest (which
//!     its next request's `seq` is checked against, and the next decision reads);
//!   - evaluators' statements received before the same window, except the newest of each
//!     (evaluator, subject) pair;
//!   - nodes' peer observations received before the same window, except the newest of each
//!     (observer, subject) pair;
//!   - epochs (with their decisions) that ended before the decision window, except the
//!     newest [`LIVE_EPOCHS`];
//!   - audit entries appended before the audit window, behind a checkpoint signed with the
//!     controller key, after verifying them (see [`super::audit::checkpoint`]); a chain
//!     that does not verify is never pruned, so pruning cannot hide tampering.

use std::time::Duration;

use meshtun_proto::IdentityKey;

use crate::keys::ControllerKeys;
use rusqlite::{params, OptionalExtension as _, Transaction};
use sha2::{Digest, Sha256};

use super::audit::{AuditError, AuditKind, Checkpoint, CheckpointEntry, SignedCheckpoint};
use super::audit_log::{append, AuditRules as _};
use super::backend::{Backend, Tx, What};
use super::codec::int;
use super::error::SqlContext as _;
use super::StoreError;

/// How many of the newest epochs keep their secrets: the ones the controller can still
/// serve (the current one, the next, and those nodes may still be moving off).
pub const LIVE_EPOCHS: usize = 4;

/// Benchmark rows or audit entries removed per transaction, so that pruning never holds
/// the writer for long.
pub(super) const BATCH: usize = 5_000;

/// Epochs (each with a decision per node) removed per transaction.
pub(super) const EPOCH_BATCH: usize = 16;

/// How long each kind of history is kept; [`Store::prune`](super::Store::prune) deletes what is older.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Benchmarks, evaluators' statements and peer observations, by the time they were
    /// received.
    pub benchmarks: Duration,
    /// Epochs and their decisions, by the time the epoch ended.
    pub decisions: Duration,
    /// Audit entries, by the time they were appended.
    pub audit: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            benchmarks: Duration::from_secs(6 * 3600),
            decisions: Duration::from_secs(2 * 86_400),
            audit: Duration::from_secs(2 * 86_400),
        }
    }
}

/// What one [`Store::prune`](super::Store::prune) removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Benchmark rows.
    pub benchmarks: u64,
    /// Statement rows.
    pub statements: u64,
    /// Peer observation rows.
    pub observations: u64,
    /// Epochs, each with its decisions.
    pub epochs: u64,
    /// Audit entries.
    pub audit_entries: u64,
    /// The last audit entry now covered by the newest checkpoint, if any was made.
    pub checkpoint: Option<u64>,
}

impl PruneReport {
    /// Whether anything was removed.
    pub fn is_empty(&self) -> bool {
        self.benchmarks == 0
            && self.statements == 0
            && self.observations == 0
            && self.epochs == 0
            && self.audit_entries == 0
    }
}

/// How many rows each table holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableRows {
    /// Enrolled nodes.
    pub nodes: u64,
    /// Stored benchmarks.
    pub benchmarks: u64,
    /// Stored epochs.
    pub epochs: u64,
    /// Stored decisions.
    pub decisions: u64,
    /// Audit entries in the database.
    pub audit: u64,
    /// Evaluators, removed ones too.
    pub evaluators: u64,
    /// Stored statements.
    pub statements: u64,
    /// Stored peer observations.
    pub observations: u64,
}

/// The queries retention needs, on either backend.
pub(crate) trait RetentionSql {
    /// Erases the secret of every epoch older than the newest [`LIVE_EPOCHS`], inside the
    /// transaction that stores a new one; how many it erased.
    fn erase_old_secrets(&mut self) -> Result<u64, StoreError>;
    /// How many rows each table holds.
    fn table_rows(&mut self, what: What<'_>) -> Result<TableRows, StoreError>;
    /// Deletes up to `limit` benchmarks received before `cutoff`, never a node's newest.
    fn delete_old_benchmarks(
        &mut self,
        cutoff: i64,
        limit: i64,
        what: What<'_>,
    ) -> Result<u64, StoreError>;
    /// Deletes up to `limit` of the oldest epochs (with their decisions) that ended before
    /// `cutoff`, never one of the newest [`LIVE_EPOCHS`].
    fn delete_old_epochs(
        &mut self,
        cutoff: i64,
        limit: i64,
        what: What<'_>,
    ) -> Result<u64, StoreError>;
    /// Among the entries after `start` up to `end`: the last one, and the first appended
    /// at or after `cutoff`.
    fn audit_prune_bounds(
        &mut self,
        start: i64,
        end: i64,
        cutoff: i64,
        what: What<'_>,
    ) -> Result<(Option<i64>, Option<i64>), StoreError>;
    /// The hash of audit entry `seq`, if it is stored.
    fn audit_hash(&mut self, seq: i64, what: What<'_>) -> Result<Option<String>, StoreError>;
    /// Stores `signed` as the checkpoint covering entries up to `seq`, deletes those
    /// entries and the older checkpoints; how many entries it deleted.
    fn replace_entries(
        &mut self,
        seq: i64,
        signed: &SignedCheckpoint,
        what: What<'_>,
    ) -> Result<u64, StoreError>;
}

/// Counting rows and pruning history, on every backend.
pub(crate) trait RetentionRules: Backend {
    /// How many rows each table holds.
    fn table_rows(&self) -> Result<TableRows, StoreError> {
        let what = || "counting rows".to_owned();
        self.read_tx(what, |tx| tx.table_rows(&what))
    }

    /// See [`Store::prune`](crate::store::Store::prune).
    fn prune(
        &self,
        retention: &Retention,
        keys: &ControllerKeys,
    ) -> Result<PruneReport, AuditError> {
        let now = self.now_ms();
        let cutoff = |keep: Duration| {
            now.saturating_sub(u64::try_from(keep.as_millis()).unwrap_or(u64::MAX))
        };
        let mut report = PruneReport {
            benchmarks: prune_benchmarks(self, cutoff(retention.benchmarks))?,
            statements: prune_rows(
                self,
                cutoff(retention.benchmarks),
                "statements",
                |tx, c, n, w| tx.delete_old_statements(c, n, w),
            )?,
            observations: prune_rows(
                self,
                cutoff(retention.benchmarks),
                "observations",
                |tx, c, n, w| tx.delete_old_observations(c, n, w),
            )?,
            epochs: prune_epochs(self, cutoff(retention.decisions))?,
            ..PruneReport::default()
        };
        let cutoff_audit = cutoff(retention.audit);
        while let Some((removed, through)) = prune_audit_batch(self, cutoff_audit, keys)? {
            report.audit_entries += removed;
            report.checkpoint = Some(through);
        }
        Ok(report)
    }
}

impl<B: Backend + ?Sized> RetentionRules for B {}

fn prune_benchmarks(store: &(impl Backend + ?Sized), cutoff_ms: u64) -> Result<u64, StoreError> {
    let what = || "pruning old benchmarks".to_owned();
    let cutoff = int(cutoff_ms, || "benchmark retention cutoff".into())?;
    let mut removed = 0;
    loop {
        let n = store.write_tx(what, |tx| {
            tx.delete_old_benchmarks(cutoff, BATCH as i64, &what)
        })?;
        removed += n;
        if n < BATCH as u64 {
            return Ok(removed);
        }
    }
}

/// Deletes old rows of a table of signed statements, [`BATCH`] at a time: `delete(tx,
/// cutoff, limit, what)` deletes up to `limit` rows of `table` received before `cutoff`.
fn prune_rows(
    store: &(impl Backend + ?Sized),
    cutoff_ms: u64,
    table: &str,
    delete: impl Fn(&mut dyn Tx, i64, i64, What<'_>) -> Result<u64, StoreError>,
) -> Result<u64, StoreError> {
    let what = || format!("pruning old {table}");
    let cutoff = int(cutoff_ms, || format!("{table} retention cutoff"))?;
    let mut removed = 0;
    loop {
        let n = store.write_tx(what, |tx| delete(tx, cutoff, BATCH as i64, &what))?;
        removed += n;
        if n < BATCH as u64 {
            return Ok(removed);
        }
    }
}

fn prune_epochs(store: &(impl Backend + ?Sized), cutoff_ms: u64) -> Result<u64, StoreError> {
    let what = || "pruning old epochs and their decisions".to_owned();
    let cutoff = int(cutoff_ms, || "decision retention cutoff".into())?;
    let mut removed = 0;
    loop {
        let n = store.write_tx(what, |tx| {
            tx.delete_old_epochs(cutoff, EPOCH_BATCH as i64, &what)
        })?;
        removed += n;
        if n < EPOCH_BATCH as u64 {
            return Ok(removed);
        }
    }
}

/// Prunes up to [`BATCH`] audit entries older than `cutoff_ms`; `None` when there is
/// nothing (left) to prune.
fn prune_audit_batch(
    store: &(impl Backend + ?Sized),
    cutoff_ms: u64,
    keys: &ControllerKeys,
) -> Result<Option<(u64, u64)>, AuditError> {
    let mut verifier = store.verifier_at_checkpoint(keys.answers_to())?;
    let from = verifier.position();
    let Some(through) = audit_prune_boundary(store, from, cutoff_ms)? else {
        return Ok(None);
    };
    store.verify_from(&mut verifier, through)?;
    if verifier.position() != through {
        return Ok(None);
    }
    let checkpoint = verifier.checkpoint(store.now_ms());
    let removed = replace_by_checkpoint(store, from, &checkpoint, keys.signing())?;
    Ok((removed > 0).then_some((removed, through)))
}

/// The last entry to prune after `from`: the one before the first entry appended at or
/// after `cutoff_ms`, at most [`BATCH`] entries on.
fn audit_prune_boundary(
    store: &(impl Backend + ?Sized),
    from: u64,
    cutoff_ms: u64,
) -> Result<Option<u64>, StoreError> {
    let what = || "finding the audit entries to prune".to_owned();
    let start = int(from, || "audit checkpoint".into())?;
    let end = start.saturating_add(BATCH as i64);
    let cutoff = int(cutoff_ms, || "audit retention cutoff".into())?;
    let (last, first_young) =
        store.read_tx(what, |tx| tx.audit_prune_bounds(start, end, cutoff, &what))?;
    let through = match (last, first_young) {
        (_, Some(young)) => young - 1,
        (Some(last), None) => last,
        (None, None) => return Ok(None),
    };
    Ok(u64::try_from(through).ok().filter(|t| *t > from))
}

/// In one transaction: stores the signed checkpoint, deletes the entries it covers and
/// the older checkpoints, and records the pruning in the chain. Returns the number of
/// entries removed (0 if the log moved on since `from`, so that nothing is removed
/// on a stale verification).
fn replace_by_checkpoint(
    store: &(impl Backend + ?Sized),
    from: u64,
    checkpoint: &Checkpoint,
    key: &IdentityKey,
) -> Result<u64, StoreError> {
    let signed = SignedCheckpoint::sign(checkpoint, key);
    let through = int(checkpoint.seq, || "audit checkpoint".into())?;
    let what = || format!("pruning the audit log through entry {through}");
    let now = store.now_ms();
    store.write_tx(what, |tx| {
        let current = tx.latest_checkpoint()?.map_or(0, |(seq, _)| seq);
        let head = tx.audit_hash(through, &what)?;
        if current != from || head.as_deref() != Some(checkpoint.hash.as_str()) {
            return Ok(0);
        }
        let removed = tx.replace_entries(through, &signed, &what)?;
        let entry = CheckpointEntry {
            through_seq: checkpoint.seq,
            through_hash: checkpoint.hash.clone(),
            removed,
            checkpoint_sha256: hex::encode(Sha256::digest(signed.body.as_bytes())),
        };
        append(tx, now, AuditKind::Checkpoint, &entry)?;
        Ok(removed)
    })
}

impl RetentionSql for Transaction<'_> {
    fn erase_old_secrets(&mut self) -> Result<u64, StoreError> {
        let n = self
            .execute(
                "UPDATE epochs SET secret = '' WHERE secret != '' AND id < \
                 (SELECT MIN(id) FROM (SELECT id FROM epochs ORDER BY id DESC LIMIT ?1))",
                [LIVE_EPOCHS as i64],
            )
            .ctx(|| "erasing the secrets of past epochs".to_owned())?;
        Ok(n as u64)
    }

    fn table_rows(&mut self, what: What<'_>) -> Result<TableRows, StoreError> {
        let count = |table: &str| -> Result<u64, StoreError> {
            self.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
                .ctx(what)
        };
        Ok(TableRows {
            nodes: count("nodes")?,
            benchmarks: count("benchmarks")?,
            epochs: count("epochs")?,
            decisions: count("decisions")?,
            audit: count("audit")?,
            evaluators: count("evaluators")?,
            statements: count("statements")?,
            observations: count("observations")?,
        })
    }

    fn delete_old_benchmarks(
        &mut self,
        cutoff: i64,
        limit: i64,
        what: What<'_>,
    ) -> Result<u64, StoreError> {
        let n = self
            .execute(
                "DELETE FROM benchmarks WHERE rowid IN (SELECT b.rowid FROM benchmarks AS b \
                 WHERE b.received_ms < ?1 AND b.seq < \
                 (SELECT MAX(n.seq) FROM benchmarks AS n WHERE n.node_id = b.node_id) \
                 LIMIT ?2)",
                params![cutoff, limit],
            )
            .ctx(what)?;
        Ok(n as u64)
    }

    fn delete_old_epochs(
        &mut self,
        cutoff: i64,
        limit: i64,
        what: What<'_>,
    ) -> Result<u64, StoreError> {
        let n = self
            .execute(
                "DELETE FROM epochs WHERE id IN (SELECT id FROM epochs \
                 WHERE not_after_ms < ?1 AND id < \
                 (SELECT MIN(id) FROM (SELECT id FROM epochs ORDER BY id DESC LIMIT ?3)) \
                 ORDER BY id LIMIT ?2)",
                params![cutoff, limit, LIVE_EPOCHS as i64],
            )
            .ctx(what)?;
        Ok(n as u64)
    }

    fn audit_prune_bounds(
        &mut self,
        start: i64,
        end: i64,
        cutoff: i64,
        what: What<'_>,
    ) -> Result<(Option<i64>, Option<i64>), StoreError> {
        self.query_row(
            "SELECT (SELECT MAX(seq) FROM audit WHERE seq > ?1 AND seq <= ?2), \
             (SELECT MIN(seq) FROM audit WHERE seq > ?1 AND seq <= ?2 AND at_ms >= ?3)",
            params![start, end, cutoff],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .ctx(what)
    }

    fn audit_hash(&mut self, seq: i64, what: What<'_>) -> Result<Option<String>, StoreError> {
        self.query_row("SELECT hash FROM audit WHERE seq = ?1", [seq], |r| r.get(0))
            .optional()
            .ctx(what)
    }

    fn replace_entries(
        &mut self,
        seq: i64,
        signed: &SignedCheckpoint,
        what: What<'_>,
    ) -> Result<u64, StoreError> {
        self.execute(
            "INSERT INTO audit_checkpoints (seq, body, signature) VALUES (?1, ?2, ?3)",
            params![seq, signed.body, signed.signature],
        )
        .ctx(what)?;
        let removed = self
            .execute("DELETE FROM audit WHERE seq <= ?1", [seq])
            .ctx(what)?;
        self.execute("DELETE FROM audit_checkpoints WHERE seq < ?1", [seq])
            .ctx(what)?;
        Ok(removed as u64)
    }
}
