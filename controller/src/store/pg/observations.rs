//! [`ObservationSql`] for PostgreSQL (the rules are in [`super::super::observations`]).

use postgres::{Row, Transaction};

use super::get;
use crate::store::backend::What;
use crate::store::error::SqlContext as _;
use crate::store::observations::{self, ObservationRow, ObservationSql};
use crate::store::StoreError;

fn observation_row(row: &Row) -> Result<ObservationRow, StoreError> {
    Ok(ObservationRow {
        id: get(row, 0, "observation id")?,
        observer: get(row, 1, "observation observer")?,
        subject: get(row, 2, "observation subject")?,
        scores: get(row, 3, "observation scores")?,
        evaluated_at_ms: get(row, 4, "observation evaluated_at_ms")?,
        received_ms: get(row, 5, "observation received_ms")?,
        evidence: get(row, 6, "observation evidence")?,
        signature: get(row, 7, "observation signature")?,
    })
}

impl ObservationSql for Transaction<'_> {
    fn insert_observation_row(
        &mut self,
        r: &ObservationRow,
        what: What<'_>,
    ) -> Result<(), StoreError> {
        self.execute(
            observations::INSERT,
            &[
                &r.id,
                &r.observer,
                &r.subject,
                &r.scores,
                &r.evaluated_at_ms,
                &r.received_ms,
                &r.evidence,
                &r.signature,
            ],
        )
        .ctx(what)?;
        Ok(())
    }

    fn observation_rows_since(
        &mut self,
        since_ms: i64,
        what: What<'_>,
    ) -> Result<Vec<ObservationRow>, StoreError> {
        self.query(observations::SINCE, &[&since_ms])
            .ctx(what)?
            .iter()
            .map(observation_row)
            .collect()
    }

    fn observation_page(
        &mut self,
        after_id: i64,
        limit: i64,
        what: What<'_>,
    ) -> Result<Vec<ObservationRow>, StoreError> {
        self.query(observations::PAGE, &[&after_id, &limit])
            .ctx(what)?
            .iter()
            .map(observation_row)
            .collect()
    }

    fn delete_old_observations(
        &mut self,
        cutoff: i64,
        limit: i64,
        what: What<'_>,
    ) -> Result<u64, StoreError> {
        self.execute(observations::PRUNE, &[&cutoff, &limit])
            .ctx(what)
    }
}
