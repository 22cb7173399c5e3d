//! Retention: the database keeps a bounded window of history, whatever the mesh's size or
//! its members do.
//!
//! - An epoch's secret is erased (overwritten, with `secure_delete` on) in the transaction
//!   that stores the epoch [`LIVE_EPOCHS`] newer than it: only the newest epochs can still
//!   be served, so an older secret is of use only to whoever steals the file or a backup.
//! - [`Store::prune`] deletes, in short transactions:
//!   - benchmarks received before the benchmark window, except each node's newest (which
//!     its next request's `seq` is checked against, and the next decision reads);
//!   - epochs (with their decisions) that ended before the decision window, except the
//!     newest [`LIVE_EPOCHS`];
//!   - audit entries appended before the audit window, behind a checkpoint signed with the
//!     controller key, after verifying them (see [`super::audit::checkpoint`]); a chain
//!     that does not verify is never pruned, so pruning cannot hide tampering.

use std::time::Duration;

use meshtun_proto::IdentityKey;
use rusqlite::{params, OptionalExtension as _, Transaction};
use sha2::{Digest, Sha256};

use super::audit::{AuditError, AuditKind, Checkpoint, CheckpointEntry, SignedCheckpoint};
use super::audit_log::{append, AuditRules as _, AuditSql as _};
use super::backend::Backend as _;
use super::codec::int;
use super::error::SqlContext as _;
use super::{SqliteStore as Store, StoreError};

/// How many of the newest epochs keep their secrets: the ones the controller can still
/// serve (the current one, the next, and those nodes may still be moving off).
pub const LIVE_EPOCHS: usize = 4;

/// Benchmark rows or audit entries removed per transaction, so that pruning never holds
/// the writer for long.
pub(super) const BATCH: usize = 5_000;

/// Epochs (each with a decision per node) removed per transaction.
pub(super) const EPOCH_BATCH: usize = 16;

/// How long each kind of history is kept; [`Store::prune`] deletes what is older.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Benchmarks, by the time they were received.
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

/// What one [`Store::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Benchmark rows.
    pub benchmarks: u64,
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
        self.benchmarks == 0 && self.epochs == 0 && self.audit_entries == 0
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
}

/// Erases the secret of every epoch older than the newest [`LIVE_EPOCHS`], inside the
/// transaction that stores a new one.
pub(crate) fn erase_old_secrets(tx: &Transaction<'_>) -> Result<usize, StoreError> {
    tx.execute(
        "UPDATE epochs SET secret = '' WHERE secret != '' AND id < \
         (SELECT MIN(id) FROM (SELECT id FROM epochs ORDER BY id DESC LIMIT ?1))",
        [LIVE_EPOCHS as i64],
    )
    .ctx(|| "erasing the secrets of past epochs".to_owned())
}

impl Store {
    /// How many rows each table holds.
    pub fn table_rows(&self) -> Result<TableRows, StoreError> {
        let what = || "counting rows".to_owned();
        self.read(what, |tx| {
            let count = |table: &str| -> Result<u64, StoreError> {
                tx.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
                    .ctx(what)
            };
            Ok(TableRows {
                nodes: count("nodes")?,
                benchmarks: count("benchmarks")?,
                epochs: count("epochs")?,
                decisions: count("decisions")?,
                audit: count("audit")?,
            })
        })
    }

    /// Deletes what `retention` no longer keeps, by the store's clock, signing the audit
    /// checkpoint with the controller `key`. Refuses to prune an audit chain that does not
    /// verify (the error names the broken entry); benchmarks and epochs are pruned first.
    pub fn prune(
        &self,
        retention: &Retention,
        key: &IdentityKey,
    ) -> Result<PruneReport, AuditError> {
        let now = self.now_ms();
        let cutoff = |keep: Duration| {
            now.saturating_sub(u64::try_from(keep.as_millis()).unwrap_or(u64::MAX))
        };
        let mut report = PruneReport {
            benchmarks: self.prune_benchmarks(cutoff(retention.benchmarks))?,
            epochs: self.prune_epochs(cutoff(retention.decisions))?,
            ..PruneReport::default()
        };
        let cutoff_audit = cutoff(retention.audit);
        while let Some((removed, through)) = self.prune_audit_batch(cutoff_audit, key)? {
            report.audit_entries += removed;
            report.checkpoint = Some(through);
        }
        Ok(report)
    }

    fn prune_benchmarks(&self, cutoff_ms: u64) -> Result<u64, StoreError> {
        let what = || "pruning old benchmarks".to_owned();
        let cutoff = int(cutoff_ms, || "benchmark retention cutoff".into())?;
        let mut removed = 0;
        loop {
            let n = self.write(what, |tx| {
                tx.execute(
                    "DELETE FROM benchmarks WHERE rowid IN (SELECT b.rowid FROM benchmarks AS b \
                     WHERE b.received_ms < ?1 AND b.seq < \
                     (SELECT MAX(n.seq) FROM benchmarks AS n WHERE n.node_id = b.node_id) \
                     LIMIT ?2)",
                    params![cutoff, BATCH as i64],
                )
                .ctx(what)
            })?;
            removed += n as u64;
            if n < BATCH {
                return Ok(removed);
            }
        }
    }

    fn prune_epochs(&self, cutoff_ms: u64) -> Result<u64, StoreError> {
        let what = || "pruning old epochs and their decisions".to_owned();
        let cutoff = int(cutoff_ms, || "decision retention cutoff".into())?;
        let mut removed = 0;
        loop {
            let n = self.write(what, |tx| {
                tx.execute(
                    "DELETE FROM epochs WHERE id IN (SELECT id FROM epochs \
                     WHERE not_after_ms < ?1 AND id < \
                     (SELECT MIN(id) FROM (SELECT id FROM epochs ORDER BY id DESC LIMIT ?3)) \
                     ORDER BY id LIMIT ?2)",
                    params![cutoff, EPOCH_BATCH as i64, LIVE_EPOCHS as i64],
                )
                .ctx(what)
            })?;
            removed += n as u64;
            if n < EPOCH_BATCH {
                return Ok(removed);
            }
        }
    }

    /// Prunes up to [`BATCH`] audit entries older than `cutoff_ms`; `None` when there is
    /// nothing (left) to prune.
    fn prune_audit_batch(
        &self,
        cutoff_ms: u64,
        key: &IdentityKey,
    ) -> Result<Option<(u64, u64)>, AuditError> {
        let mut verifier = self.verifier_at_checkpoint(&key.public())?;
        let from = verifier.position();
        let Some(through) = self.audit_prune_boundary(from, cutoff_ms)? else {
            return Ok(None);
        };
        self.verify_from(&mut verifier, through)?;
        if verifier.position() != through {
            return Ok(None);
        }
        let checkpoint = verifier.checkpoint(self.now_ms());
        let removed = self.replace_by_checkpoint(from, &checkpoint, key)?;
        Ok((removed > 0).then_some((removed, through)))
    }

    /// The last entry to prune after `from`: the one before the first entry appended at or
    /// after `cutoff_ms`, at most [`BATCH`] entries on.
    fn audit_prune_boundary(&self, from: u64, cutoff_ms: u64) -> Result<Option<u64>, StoreError> {
        let what = || "finding the audit entries to prune".to_owned();
        let start = int(from, || "audit checkpoint".into())?;
        let end = start.saturating_add(BATCH as i64);
        let cutoff = int(cutoff_ms, || "audit retention cutoff".into())?;
        self.read(what, |tx| {
            let (last, first_young): (Option<i64>, Option<i64>) = tx
                .query_row(
                    "SELECT (SELECT MAX(seq) FROM audit WHERE seq > ?1 AND seq <= ?2), \
                     (SELECT MIN(seq) FROM audit WHERE seq > ?1 AND seq <= ?2 AND at_ms >= ?3)",
                    params![start, end, cutoff],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .ctx(what)?;
            let through = match (last, first_young) {
                (_, Some(young)) => young - 1,
                (Some(last), None) => last,
                (None, None) => return Ok(None),
            };
            Ok(u64::try_from(through).ok().filter(|t| *t > from))
        })
    }

    /// In one transaction: stores the signed checkpoint, deletes the entries it covers and
    /// the older checkpoints, and records the pruning in the chain. Returns the number of
    /// entries removed (0 if the log moved on since `from`, so that nothing is removed
    /// on a stale verification).
    fn replace_by_checkpoint(
        &self,
        from: u64,
        checkpoint: &Checkpoint,
        key: &IdentityKey,
    ) -> Result<u64, StoreError> {
        let signed = SignedCheckpoint::sign(checkpoint, key);
        let through = int(checkpoint.seq, || "audit checkpoint".into())?;
        let what = || format!("pruning the audit log through entry {through}");
        let now = self.now_ms();
        self.write(what, |tx| {
            let current = tx.latest_checkpoint()?.map_or(0, |(seq, _)| seq);
            let head: Option<String> = tx
                .query_row("SELECT hash FROM audit WHERE seq = ?1", [through], |r| {
                    r.get(0)
                })
                .optional()
                .ctx(what)?;
            if current != from || head.as_deref() != Some(checkpoint.hash.as_str()) {
                return Ok(0);
            }
            tx.execute(
                "INSERT INTO audit_checkpoints (seq, body, signature) VALUES (?1, ?2, ?3)",
                params![through, signed.body, signed.signature],
            )
            .ctx(what)?;
            let removed = tx
                .execute("DELETE FROM audit WHERE seq <= ?1", [through])
                .ctx(what)? as u64;
            tx.execute("DELETE FROM audit_checkpoints WHERE seq < ?1", [through])
                .ctx(what)?;
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
}
