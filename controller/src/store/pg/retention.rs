//! Retention on PostgreSQL: the same windows, batches and checkpoints as the SQLite store
//! (see [`super::super::retention`]).
//!
//! An erased epoch secret is overwritten by an `UPDATE`; PostgreSQL keeps the old row
//! version until `VACUUM` reclaims it (autovacuum does, soon after), so the erasure reaches
//! the disk a little later than on SQLite with `secure_delete`.

use std::time::Duration;

use meshtun_proto::IdentityKey;
use postgres::Transaction;
use sha2::{Digest, Sha256};

use super::super::audit::{AuditError, AuditKind, Checkpoint, CheckpointEntry, SignedCheckpoint};
use super::super::audit_log::{append, AuditRules as _, AuditSql as _};
use super::super::backend::Backend as _;
use super::super::codec::int;
use super::super::error::SqlContext as _;
use super::super::retention::{BATCH, EPOCH_BATCH};
use super::super::{PruneReport, StoreError, TableRows, LIVE_EPOCHS};
use super::{get, get_u64, PgStore};

/// Erases the secret of every epoch older than the newest [`LIVE_EPOCHS`], inside the
/// transaction that stores a new one.
pub(crate) fn erase_old_secrets(tx: &mut Transaction<'_>) -> Result<u64, StoreError> {
    tx.execute(
        "UPDATE epochs SET secret = '' WHERE secret != '' AND id < \
         (SELECT MIN(id) FROM (SELECT id FROM epochs ORDER BY id DESC LIMIT $1) AS live)",
        &[&(LIVE_EPOCHS as i64)],
    )
    .ctx(|| "erasing the secrets of past epochs".to_owned())
}

impl PgStore {
    /// See [`Store::table_rows`](crate::store::Store::table_rows).
    pub fn table_rows(&self) -> Result<TableRows, StoreError> {
        let what = || "counting rows".to_owned();
        self.read(what, |tx| {
            let row = tx
                .query_one(
                    "SELECT (SELECT COUNT(*) FROM nodes), (SELECT COUNT(*) FROM benchmarks), \
                     (SELECT COUNT(*) FROM epochs), (SELECT COUNT(*) FROM decisions), \
                     (SELECT COUNT(*) FROM audit)",
                    &[],
                )
                .ctx(what)?;
            Ok(TableRows {
                nodes: get_u64(&row, 0, "node count")?,
                benchmarks: get_u64(&row, 1, "benchmark count")?,
                epochs: get_u64(&row, 2, "epoch count")?,
                decisions: get_u64(&row, 3, "decision count")?,
                audit: get_u64(&row, 4, "audit count")?,
            })
        })
    }

    /// See [`Store::prune`](crate::store::Store::prune).
    pub fn prune(
        &self,
        retention: &super::super::Retention,
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
                    "DELETE FROM benchmarks WHERE (node_id, seq) IN (SELECT b.node_id, b.seq \
                     FROM benchmarks AS b WHERE b.received_ms < $1 AND b.seq < \
                     (SELECT MAX(n.seq) FROM benchmarks AS n WHERE n.node_id = b.node_id) \
                     LIMIT $2)",
                    &[&cutoff, &(BATCH as i64)],
                )
                .ctx(what)
            })?;
            removed += n;
            if n < BATCH as u64 {
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
                     WHERE not_after_ms < $1 AND id < \
                     (SELECT MIN(id) FROM (SELECT id FROM epochs ORDER BY id DESC LIMIT $3) \
                     AS live) ORDER BY id LIMIT $2)",
                    &[&cutoff, &(EPOCH_BATCH as i64), &(LIVE_EPOCHS as i64)],
                )
                .ctx(what)
            })?;
            removed += n;
            if n < EPOCH_BATCH as u64 {
                return Ok(removed);
            }
        }
    }

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

    fn audit_prune_boundary(&self, from: u64, cutoff_ms: u64) -> Result<Option<u64>, StoreError> {
        let what = || "finding the audit entries to prune".to_owned();
        let start = int(from, || "audit checkpoint".into())?;
        let end = start.saturating_add(BATCH as i64);
        let cutoff = int(cutoff_ms, || "audit retention cutoff".into())?;
        self.read(what, |tx| {
            let row = tx
                .query_one(
                    "SELECT (SELECT MAX(seq) FROM audit WHERE seq > $1 AND seq <= $2), \
                     (SELECT MIN(seq) FROM audit WHERE seq > $1 AND seq <= $2 AND at_ms >= $3)",
                    &[&start, &end, &cutoff],
                )
                .ctx(what)?;
            let last: Option<i64> = get(&row, 0, "audit seq")?;
            let first_young: Option<i64> = get(&row, 1, "audit seq")?;
            let through = match (last, first_young) {
                (_, Some(young)) => young - 1,
                (Some(last), None) => last,
                (None, None) => return Ok(None),
            };
            Ok(u64::try_from(through).ok().filter(|t| *t > from))
        })
    }

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
            let head = tx
                .query_opt("SELECT hash FROM audit WHERE seq = $1", &[&through])
                .ctx(what)?;
            let head: Option<String> = head.map(|r| get(&r, 0, "audit hash")).transpose()?;
            if current != from || head.as_deref() != Some(checkpoint.hash.as_str()) {
                return Ok(0);
            }
            tx.execute(
                "INSERT INTO audit_checkpoints (seq, body, signature) VALUES ($1, $2, $3)",
                &[&through, &signed.body, &signed.signature],
            )
            .ctx(what)?;
            let removed = tx
                .execute("DELETE FROM audit WHERE seq <= $1", &[&through])
                .ctx(what)?;
            tx.execute("DELETE FROM audit_checkpoints WHERE seq < $1", &[&through])
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
