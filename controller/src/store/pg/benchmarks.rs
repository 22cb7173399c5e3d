//! The `benchmarks` table on PostgreSQL.

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use meshtun_proto::auth::RequestSignature;
use meshtun_proto::IdentityPublic;
use postgres::Row;

use super::super::audit::{AuditKind, BenchmarkEntry};
use super::super::audit_log::append;
use super::super::backend::Backend as _;
use super::super::benchmarks::{check_body, BenchmarkRow, COLUMNS};
use super::super::codec::{int, to_json};
use super::super::error::SqlContext as _;
use super::super::nodes::NodeSql as _;
use super::super::{StoreError, BENCHMARK_METHOD};
use super::{get, get_opt_u64, get_u64, PgStore};
use crate::model::BenchmarkRecord;

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

impl PgStore {
    /// See [`Store::insert_benchmark`](crate::store::Store::insert_benchmark).
    pub fn insert_benchmark(
        &self,
        controller: &IdentityPublic,
        record: &BenchmarkRecord,
        raw_body: &[u8],
        sig: &RequestSignature,
        path: &str,
    ) -> Result<(), StoreError> {
        let node = &record.node_id;
        if sig.node != *node {
            return Err(StoreError::SignerMismatch {
                node: node.clone(),
                seq: record.seq,
                signer: sig.node.clone(),
            });
        }
        check_body(record, raw_body)?;
        let seq = int(record.seq, || format!("benchmark seq for {node}"))?;
        let scores = to_json(&record.scores, || format!("benchmark scores for {node}"))?;
        let measured = int(record.measured_at_ms, || {
            format!("benchmark measured_at_ms for {node}")
        })?;
        let received = int(record.received_ms, || {
            format!("benchmark received_ms for {node}")
        })?;
        let timestamp = int(sig.timestamp_ms, || format!("request timestamp for {node}"))?;
        let what = || format!("storing benchmark seq {} for {node}", record.seq);
        let now = self.now_ms();
        self.write(what, |tx| {
            let enrolled = tx
                .load_node(node)?
                .ok_or_else(|| StoreError::NoSuchNode(node.clone()))?;
            sig.verify(
                &enrolled.identity_key,
                controller,
                BENCHMARK_METHOD,
                path,
                raw_body,
            )
            .map_err(|_| StoreError::BadSignature {
                node: node.clone(),
                seq: record.seq,
                method: BENCHMARK_METHOD,
                path: path.to_owned(),
            })?;
            let row = tx
                .query_one(
                    "SELECT MAX(seq) FROM benchmarks WHERE node_id = $1",
                    &[node],
                )
                .ctx(what)?;
            let latest = get_opt_u64(&row, 0, "benchmark seq")?;
            if let Some(latest) = latest.filter(|l| record.seq <= *l) {
                return Err(StoreError::Replay {
                    node: node.clone(),
                    seq: record.seq,
                    latest,
                });
            }
            tx.execute(
                "INSERT INTO benchmarks (node_id, seq, suite_version, scores, measured_at_ms, \
                 received_ms, raw_body, method, path, sig_timestamp_ms, sig_nonce, signature) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                &[
                    node,
                    &seq,
                    &record.suite_version,
                    &scores,
                    &measured,
                    &received,
                    &raw_body,
                    &BENCHMARK_METHOD,
                    &path,
                    &timestamp,
                    &hex::encode(sig.nonce),
                    &STANDARD.encode(sig.signature),
                ],
            )
            .ctx(what)?;
            let entry = BenchmarkEntry::new(
                controller,
                record.seq,
                record.received_ms,
                BENCHMARK_METHOD,
                path,
                raw_body,
                sig,
            );
            append(tx, now, AuditKind::Benchmark, &entry)?;
            Ok(())
        })
    }

    /// See [`Store::latest_benchmarks`](crate::store::Store::latest_benchmarks).
    pub fn latest_benchmarks(&self) -> Result<HashMap<String, BenchmarkRecord>, StoreError> {
        let what = || "reading the latest benchmarks".to_owned();
        self.read(what, |tx| {
            // One index probe per node on the primary key (node_id, seq).
            let rows = tx
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM nodes CROSS JOIN LATERAL (SELECT * FROM benchmarks \
                         b WHERE b.node_id = nodes.id ORDER BY b.seq DESC LIMIT 1) AS benchmarks"
                    ),
                    &[],
                )
                .ctx(what)?;
            rows.iter()
                .map(|r| {
                    let b = benchmark_row(r)?.decode()?;
                    Ok((b.node_id.clone(), b))
                })
                .collect()
        })
    }

    /// See [`Store::benchmarks`](crate::store::Store::benchmarks).
    pub fn benchmarks(
        &self,
        node_id: &str,
        limit: usize,
    ) -> Result<Vec<BenchmarkRecord>, StoreError> {
        let what = || format!("reading the benchmarks of node {node_id}");
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(what, |tx| {
            let rows = tx
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM benchmarks WHERE node_id = $1 \
                         ORDER BY seq DESC LIMIT $2"
                    ),
                    &[&node_id, &limit],
                )
                .ctx(what)?;
            rows.iter().map(|r| benchmark_row(r)?.decode()).collect()
        })
    }
}
