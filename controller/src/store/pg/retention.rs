//! Retention's SQL on PostgreSQL: the same windows, batches and checkpoints as on SQLite
//! (the rules are in [`super::super::retention`]).
//!
//! An erased epoch secret is overwritten by an `UPDATE`; PostgreSQL keeps the old row
//! version until `VACUUM` reclaims it (autovacuum does, soon after), so the erasure reaches
//! the disk a little later than on SQLite with `secure_delete`.

use postgres::Transaction;

use super::super::audit::SignedCheckpoint;
use super::super::backend::What;
use super::super::error::SqlContext as _;
use super::super::retention::RetentionSql;
use super::super::{StoreError, TableRows, LIVE_EPOCHS};
use super::{get, get_u64};

impl RetentionSql for Transaction<'_> {
    fn erase_old_secrets(&mut self) -> Result<u64, StoreError> {
        self.execute(
            "UPDATE epochs SET secret = '' WHERE secret != '' AND id < \
             (SELECT MIN(id) FROM (SELECT id FROM epochs ORDER BY id DESC LIMIT $1) AS live)",
            &[&(LIVE_EPOCHS as i64)],
        )
        .ctx(|| "erasing the secrets of past epochs".to_owned())
    }

    fn table_rows(&mut self, what: What<'_>) -> Result<TableRows, StoreError> {
        let row = self
            .query_one(
                "SELECT (SELECT COUNT(*) FROM nodes), (SELECT COUNT(*) FROM benchmarks), \
                 (SELECT COUNT(*) FROM epochs), (SELECT COUNT(*) FROM decisions), \
                 (SELECT COUNT(*) FROM audit), (SELECT COUNT(*) FROM evaluators), \
                 (SELECT COUNT(*) FROM statements), (SELECT COUNT(*) FROM observations)",
                &[],
            )
            .ctx(what)?;
        Ok(TableRows {
            nodes: get_u64(&row, 0, "node count")?,
            benchmarks: get_u64(&row, 1, "benchmark count")?,
            epochs: get_u64(&row, 2, "epoch count")?,
            decisions: get_u64(&row, 3, "decision count")?,
            audit: get_u64(&row, 4, "audit count")?,
            evaluators: get_u64(&row, 5, "evaluator count")?,
            statements: get_u64(&row, 6, "statement count")?,
            observations: get_u64(&row, 7, "observation count")?,
        })
    }

    fn delete_old_benchmarks(
        &mut self,
        cutoff: i64,
        limit: i64,
        what: What<'_>,
    ) -> Result<u64, StoreError> {
        self.execute(
            "DELETE FROM benchmarks WHERE (node_id, seq) IN (SELECT b.node_id, b.seq \
             FROM benchmarks AS b WHERE b.received_ms < $1 AND b.seq < \
             (SELECT MAX(n.seq) FROM benchmarks AS n WHERE n.node_id = b.node_id) \
             LIMIT $2)",
            &[&cutoff, &limit],
        )
        .ctx(what)
    }

    fn delete_old_epochs(
        &mut self,
        cutoff: i64,
        limit: i64,
        what: What<'_>,
    ) -> Result<u64, StoreError> {
        self.execute(
            "DELETE FROM epochs WHERE id IN (SELECT id FROM epochs \
             WHERE not_after_ms < $1 AND id < \
             (SELECT MIN(id) FROM (SELECT id FROM epochs ORDER BY id DESC LIMIT $3) \
             AS live) ORDER BY id LIMIT $2)",
            &[&cutoff, &limit, &(LIVE_EPOCHS as i64)],
        )
        .ctx(what)
    }

    fn audit_prune_bounds(
        &mut self,
        start: i64,
        end: i64,
        cutoff: i64,
        what: What<'_>,
    ) -> Result<(Option<i64>, Option<i64>), StoreError> {
        let row = self
            .query_one(
                "SELECT (SELECT MAX(seq) FROM audit WHERE seq > $1 AND seq <= $2), \
                 (SELECT MIN(seq) FROM audit WHERE seq > $1 AND seq <= $2 AND at_ms >= $3)",
                &[&start, &end, &cutoff],
            )
            .ctx(what)?;
        Ok((get(&row, 0, "audit seq")?, get(&row, 1, "audit seq")?))
    }

    fn audit_hash(&mut self, seq: i64, what: What<'_>) -> Result<Option<String>, StoreError> {
        let row = self
            .query_opt("SELECT hash FROM audit WHERE seq = $1", &[&seq])
            .ctx(what)?;
        row.map(|r| get(&r, 0, "audit hash")).transpose()
    }

    fn replace_entries(
        &mut self,
        seq: i64,
        signed: &SignedCheckpoint,
        what: What<'_>,
    ) -> Result<u64, StoreError> {
        self.execute(
            "INSERT INTO audit_checkpoints (seq, body, signature) VALUES ($1, $2, $3)",
            &[&seq, &signed.body, &signed.signature],
        )
        .ctx(what)?;
        let removed = self
            .execute("DELETE FROM audit WHERE seq <= $1", &[&seq])
            .ctx(what)?;
        self.execute("DELETE FROM audit_checkpoints WHERE seq < $1", &[&seq])
            .ctx(what)?;
        Ok(removed)
    }
}
