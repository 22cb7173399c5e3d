//! [`CandidateSql`] for PostgreSQL.

use postgres::Transaction;

use super::get_u64;
use crate::store::backend::What;
use crate::store::candidates::{CandidateSql, ALL, UPSERT};
use crate::store::error::SqlContext as _;
use crate::store::StoreError;

impl CandidateSql for Transaction<'_> {
    fn put_candidates(
        &mut self,
        id: &str,
        candidates: &str,
        observed: &str,
        reported_ms: i64,
        what: What<'_>,
    ) -> Result<bool, StoreError> {
        let known = self
            .query_opt("SELECT 1 FROM nodes WHERE id = $1", &[&id])
            .ctx(what)?;
        if known.is_none() {
            return Ok(false);
        }
        self.execute(UPSERT, &[&id, &candidates, &observed, &reported_ms])
            .ctx(what)?;
        Ok(true)
    }

    fn all_candidates(
        &mut self,
        what: What<'_>,
    ) -> Result<Vec<(String, String, String, u64)>, StoreError> {
        self.query(ALL, &[])
            .ctx(what)?
            .iter()
            .map(|row| {
                Ok((
                    row.try_get(0).ctx(what)?,
                    row.try_get(1).ctx(what)?,
                    row.try_get(2).ctx(what)?,
                    get_u64(row, 3, "node_candidates.reported_ms")?,
                ))
            })
            .collect()
    }
}
