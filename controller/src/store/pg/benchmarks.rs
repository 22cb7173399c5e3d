//! The `benchmarks` table's SQL on PostgreSQL (the rules are in
//! [`super::super::benchmarks`]).

use postgres::{Row, Transaction};

use super::super::backend::What;
use super::super::benchmarks::{BenchmarkRow, BenchmarkSql, NewBenchmark, COLUMNS};
use super::super::error::SqlContext as _;
use super::super::{StoreError, BENCHMARK_METHOD};
use super::{get, get_opt_u64, get_u64};

fn benchmark_row(row: &Row) -> Result<BenchmarkRow, StoreError> {
    Ok(BenchmarkRow {
        node_id: get(row, 0, "benchmark node_id")?,
        suite_version: get(row, 1, "benchmark suite_version")?,
        scores: get(row, 2, "benchmark scores")?,
        measured_at_ms: get_u64(row, 3, "benchmark measured_at_ms")?,
        seq: get_u64(row, 4, "benchmark seq")?,
        received_ms: get_u64(row, 5, "benchmark received_ms")?,
    })
}

impl BenchmarkSql for Transaction<'_> {
    fn latest_benchmark_seq(
        &mut self,
        node_id: &str,
        what: What<'_>,
    ) -> Result<Option<u64>, StoreError> {
        let row = self
            .query_one(
                "SELECT MAX(seq) FROM benchmarks WHERE node_id = $1",
                &[&node_id],
            )
            .ctx(what)?;
        get_opt_u64(&row, 0, "benchmark seq")
    }

    fn insert_benchmark_row(
        &mut self,
        b: &NewBenchmark<'_>,
        what: What<'_>,
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO benchmarks (node_id, seq, suite_version, scores, measured_at_ms, \
             received_ms, raw_body, method, path, sig_timestamp_ms, sig_nonce, signature) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            &[
                &b.node_id,
                &b.seq,
                &b.suite_version,
                &b.scores,
                &b.measured_at_ms,
                &b.received_ms,
                &b.raw_body,
                &BENCHMARK_METHOD,
                &b.path,
                &b.sig_timestamp_ms,
                &b.sig_nonce,
                &b.signature,
            ],
        )
        .ctx(what)?;
        Ok(())
    }

    fn latest_benchmark_rows(&mut self, what: What<'_>) -> Result<Vec<BenchmarkRow>, StoreError> {
        // One index probe per node on the primary key (node_id, seq).
        let rows = self
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM nodes CROSS JOIN LATERAL (SELECT * FROM benchmarks \
                     b WHERE b.node_id = nodes.id ORDER BY b.seq DESC LIMIT 1) AS benchmarks"
                ),
                &[],
            )
            .ctx(what)?;
        rows.iter().map(benchmark_row).collect()
    }

    fn benchmark_rows(
        &mut self,
        node_id: &str,
        limit: i64,
        what: What<'_>,
    ) -> Result<Vec<BenchmarkRow>, StoreError> {
        let rows = self
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM benchmarks WHERE node_id = $1 \
                     ORDER BY seq DESC LIMIT $2"
                ),
                &[&node_id, &limit],
            )
            .ctx(what)?;
        rows.iter().map(benchmark_row).collect()
    }
}
