//! The audit log's SQL on PostgreSQL (the rules are in [`super::super::audit_log`]).

use postgres::{Row, Transaction};

use super::super::audit::{AuditEntry, SignedCheckpoint};
use super::super::audit_log::{AuditRow, AuditSql};
use super::super::backend::What;
use super::super::error::SqlContext as _;
use super::super::StoreError;
use super::{get, get_u64};

impl AuditSql for Transaction<'_> {
    fn audit_head(&mut self, what: What<'_>) -> Result<Option<(u64, String)>, StoreError> {
        let head = self
            .query_opt("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", &[])
            .ctx(what)?;
        head.map(|row| Ok((get_u64(&row, 0, "audit seq")?, get(&row, 1, "audit hash")?)))
            .transpose()
    }

    fn insert_audit(&mut self, r: &AuditRow<'_>, what: What<'_>) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO audit (seq, at_ms, kind, entry, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[&r.seq, &r.at_ms, &r.kind, &r.entry, &r.prev_hash, &r.hash],
        )
        .ctx(what)?;
        Ok(())
    }

    fn latest_checkpoint(&mut self) -> Result<Option<(u64, SignedCheckpoint)>, StoreError> {
        let row = self
            .query_opt(
                "SELECT seq, body, signature FROM audit_checkpoints ORDER BY seq DESC LIMIT 1",
                &[],
            )
            .ctx(|| "reading the newest audit checkpoint".to_owned())?;
        row.map(|r| {
            Ok((
                get_u64(&r, 0, "audit checkpoint seq")?,
                SignedCheckpoint {
                    body: get(&r, 1, "audit checkpoint body")?,
                    signature: get(&r, 2, "audit checkpoint signature")?,
                },
            ))
        })
        .transpose()
    }

    fn audit_page(
        &mut self,
        from: i64,
        limit: i64,
        what: What<'_>,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = self
            .query(
                "SELECT seq, at_ms, kind, entry, prev_hash, hash FROM audit \
                 WHERE seq >= $1 ORDER BY seq LIMIT $2",
                &[&from, &limit],
            )
            .ctx(what)?;
        rows.iter().map(entry_from_row).collect()
    }
}

fn entry_from_row(row: &Row) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        seq: get_u64(row, 0, "audit seq")?,
        at_ms: get_u64(row, 1, "audit at_ms")?,
        kind: get(row, 2, "audit kind")?,
        entry: get(row, 3, "audit entry")?,
        prev_hash: get(row, 4, "audit prev_hash")?,
        hash: get(row, 5, "audit hash")?,
    })
}
