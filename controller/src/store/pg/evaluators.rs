//! [`EvaluatorSql`] and [`StatementSql`] for PostgreSQL (the rules are in
//! [`super::super::evaluators`] and [`super::super::statements`]).

use postgres::{Row, Transaction};

use super::get;
use crate::store::backend::What;
use crate::store::error::SqlContext as _;
use crate::store::evaluators::{self, EvaluatorRow, EvaluatorSql};
use crate::store::statements::{self, StatementRow, StatementSql};
use crate::store::StoreError;

fn evaluator_row(row: &Row) -> Result<EvaluatorRow, StoreError> {
    Ok(EvaluatorRow {
        name: get(row, 0, "evaluator name")?,
        public_key: get(row, 1, "evaluator public_key")?,
        dimensions: get(row, 2, "evaluator dimensions")?,
        group: get(row, 3, "evaluator group")?,
        added_ms: get(row, 4, "evaluator added_ms")?,
        removed_ms: get(row, 5, "evaluator removed_ms")?,
    })
}

fn statement_row(row: &Row) -> Result<StatementRow, StoreError> {
    Ok(StatementRow {
        id: get(row, 0, "statement id")?,
        evaluator: get(row, 1, "statement evaluator")?,
        subject: get(row, 2, "statement subject")?,
        scores: get(row, 3, "statement scores")?,
        evaluated_at_ms: get(row, 4, "statement evaluated_at_ms")?,
        received_ms: get(row, 5, "statement received_ms")?,
        evidence: get(row, 6, "statement evidence")?,
        signature: get(row, 7, "statement signature")?,
    })
}

impl EvaluatorSql for Transaction<'_> {
    fn evaluator_row(
        &mut self,
        name: &str,
        what: What<'_>,
    ) -> Result<Option<EvaluatorRow>, StoreError> {
        let sql = format!(
            "SELECT {} FROM evaluators WHERE name = $1",
            evaluators::COLUMNS
        );
        let row = self.query_opt(&sql, &[&name]).ctx(what)?;
        row.as_ref().map(evaluator_row).transpose()
    }

    fn insert_evaluator_row(&mut self, r: &EvaluatorRow, what: What<'_>) -> Result<(), StoreError> {
        self.execute(
            evaluators::INSERT,
            &[
                &r.name,
                &r.public_key,
                &r.dimensions,
                &r.group,
                &r.added_ms,
                &r.removed_ms,
            ],
        )
        .ctx(what)?;
        Ok(())
    }

    fn mark_evaluator_removed(
        &mut self,
        name: &str,
        at_ms: i64,
        what: What<'_>,
    ) -> Result<bool, StoreError> {
        Ok(self
            .execute(evaluators::REMOVE, &[&at_ms, &name])
            .ctx(what)?
            > 0)
    }

    fn evaluator_rows(
        &mut self,
        what: What<'_>,
    ) -> Result<Vec<(EvaluatorRow, Option<i64>)>, StoreError> {
        self.query(evaluators::LIST, &[])
            .ctx(what)?
            .iter()
            .map(|row| Ok((evaluator_row(row)?, get(row, 6, "last statement time")?)))
            .collect()
    }
}

impl StatementSql for Transaction<'_> {
    fn next_statement_id(&mut self, what: What<'_>) -> Result<i64, StoreError> {
        let row = self.query_one(statements::NEXT_ID, &[]).ctx(what)?;
        get(&row, 0, "statement id counter")
    }

    fn insert_statement_row(&mut self, r: &StatementRow, what: What<'_>) -> Result<(), StoreError> {
        self.execute(
            statements::INSERT,
            &[
                &r.id,
                &r.evaluator,
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

    fn statement_rows_since(
        &mut self,
        since_ms: i64,
        what: What<'_>,
    ) -> Result<Vec<(StatementRow, Option<String>)>, StoreError> {
        self.query(statements::SINCE, &[&since_ms])
            .ctx(what)?
            .iter()
            .map(|row| Ok((statement_row(row)?, get(row, 8, "evaluator group")?)))
            .collect()
    }

    fn statement_page(
        &mut self,
        after_id: i64,
        limit: i64,
        what: What<'_>,
    ) -> Result<Vec<StatementRow>, StoreError> {
        self.query(statements::PAGE, &[&after_id, &limit])
            .ctx(what)?
            .iter()
            .map(statement_row)
            .collect()
    }

    fn delete_old_statements(
        &mut self,
        cutoff: i64,
        limit: i64,
        what: What<'_>,
    ) -> Result<u64, StoreError> {
        self.execute(statements::PRUNE, &[&cutoff, &limit])
            .ctx(what)
    }
}
