//! The `benchmarks` table: every accepted benchmark with the signed request it came in.
//! The rules are written once ([`BenchmarkRules`]); [`BenchmarkSql`] is the SQL each backend
//! provides (SQLite here, PostgreSQL in `pg::benchmarks`).

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use meshtun_proto::auth::RequestSignature;
use meshtun_proto::wire::{Benchmark, Scores};
use meshtun_proto::IdentityPublic;
use rusqlite::{params, Row, Transaction};

use super::audit::{AuditKind, BenchmarkEntry};
use super::audit_log::append;
use super::backend::{Backend, What};
use super::codec::{from_json, int, to_json};
use super::error::SqlContext as _;
use super::StoreError;
use crate::model::BenchmarkRecord;

/// The HTTP method benchmarks are submitted with, as signed.
pub const BENCHMARK_METHOD: &str = "POST";

pub(super) const COLUMNS: &str = "node_id, suite_version, scores, measured_at_ms, seq, received_ms";

pub(super) struct BenchmarkRow {
    pub(super) node_id: String,
    pub(super) suite_version: String,
    pub(super) scores: String,
    pub(super) measured_at_ms: u64,
    pub(super) seq: u64,
    pub(super) received_ms: u64,
}

impl BenchmarkRow {
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            node_id: row.get(0)?,
            suite_version: row.get(1)?,
            scores: row.get(2)?,
            measured_at_ms: row.get(3)?,
            seq: row.get(4)?,
            received_ms: row.get(5)?,
        })
    }

    pub(super) fn decode(self) -> Result<BenchmarkRecord, StoreError> {
        let scores: Scores = from_json(&self.scores, || {
            format!("benchmark seq {} for {} scores", self.seq, self.node_id)
        })?;
        Ok(BenchmarkRecord {
            node_id: self.node_id,
            suite_version: self.suite_version,
            scores,
            measured_at_ms: self.measured_at_ms,
            seq: self.seq,
            received_ms: self.received_ms,
        })
    }
}

/// Checks that the signed body holds exactly the record being stored.
pub(super) fn check_body(record: &BenchmarkRecord, body: &[u8]) -> Result<(), StoreError> {
    let mismatch = |reason: String| StoreError::BodyMismatch {
        node: record.node_id.clone(),
        seq: record.seq,
        reason,
    };
    let wire: Benchmark = serde_json::from_slice(body).map_err(|e| mismatch(e.to_string()))?;
    let differs = [
        ("suite_version", wire.suite_version != record.suite_version),
        ("scores", wire.scores != record.scores),
        (
            "measured_at_ms",
            wire.measured_at_ms != record.measured_at_ms,
        ),
        ("seq", wire.seq != record.seq),
    ];
    match differs.iter().find(|(_, d)| *d) {
        Some((field, _)) => Err(mismatch(format!("{field} differs"))),
        None => Ok(()),
    }
}

/// A new `benchmarks` row, in its column types.
pub(super) struct NewBenchmark<'a> {
    pub(super) node_id: &'a str,
    pub(super) seq: i64,
    pub(super) suite_version: &'a str,
    pub(super) scores: &'a str,
    pub(super) measured_at_ms: i64,
    pub(super) received_ms: i64,
    pub(super) raw_body: &'a [u8],
    pub(super) path: &'a str,
    pub(super) sig_timestamp_ms: i64,
    pub(super) sig_nonce: String,
    pub(super) signature: String,
}

/// The `benchmarks` table's queries, on either backend.
pub(crate) trait BenchmarkSql {
    /// The newest stored seq of `node_id`.
    fn latest_benchmark_seq(
        &mut self,
        node_id: &str,
        what: What<'_>,
    ) -> Result<Option<u64>, StoreError>;
    /// Inserts `row` (its method is [`BENCHMARK_METHOD`]).
    fn insert_benchmark_row(
        &mut self,
        row: &NewBenchmark<'_>,
        what: What<'_>,
    ) -> Result<(), StoreError>;
    /// The newest stored benchmark of every enrolled node that has one.
    fn latest_benchmark_rows(&mut self, what: What<'_>) -> Result<Vec<BenchmarkRow>, StoreError>;
    /// Up to `limit` of a node's stored benchmarks, newest first.
    fn benchmark_rows(
        &mut self,
        node_id: &str,
        limit: i64,
        what: What<'_>,
    ) -> Result<Vec<BenchmarkRow>, StoreError>;
}

/// Storing and reading benchmarks, on every backend.
pub(crate) trait BenchmarkRules: Backend {
    /// See [`Store::insert_benchmark`](crate::store::Store::insert_benchmark).
    fn insert_benchmark(
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
        let what = || format!("storing benchmark seq {} for {node}", record.seq);
        self.write_tx(what, |tx| {
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
            let latest = tx.latest_benchmark_seq(node, &what)?;
            if let Some(latest) = latest.filter(|l| record.seq <= *l) {
                return Err(StoreError::Replay {
                    node: node.clone(),
                    seq: record.seq,
                    latest,
                });
            }
            let row = NewBenchmark {
                node_id: node,
                seq,
                suite_version: &record.suite_version,
                scores: &scores,
                measured_at_ms: int(record.measured_at_ms, || {
                    format!("benchmark measured_at_ms for {node}")
                })?,
                received_ms: int(record.received_ms, || {
                    format!("benchmark received_ms for {node}")
                })?,
                raw_body,
                path,
                sig_timestamp_ms: int(sig.timestamp_ms, || {
                    format!("request timestamp for {node}")
                })?,
                sig_nonce: hex::encode(sig.nonce),
                signature: STANDARD.encode(sig.signature),
            };
            tx.insert_benchmark_row(&row, &what)?;
            let entry = BenchmarkEntry::new(
                controller,
                record.seq,
                record.received_ms,
                BENCHMARK_METHOD,
                path,
                raw_body,
                sig,
            );
            append(tx, self.now_ms(), AuditKind::Benchmark, &entry)?;
            Ok(())
        })
    }

    /// The newest stored benchmark of every enrolled node that has one.
    fn latest_benchmarks(&self) -> Result<HashMap<String, BenchmarkRecord>, StoreError> {
        let what = || "reading the latest benchmarks".to_owned();
        let rows = self.read_tx(what, |tx| tx.latest_benchmark_rows(&what))?;
        rows.into_iter()
            .map(|r| r.decode().map(|b| (b.node_id.clone(), b)))
            .collect()
    }

    /// Up to `limit` of a node's stored benchmarks, newest first.
    fn benchmarks(&self, node_id: &str, limit: usize) -> Result<Vec<BenchmarkRecord>, StoreError> {
        let what = || format!("reading the benchmarks of node {node_id}");
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.read_tx(what, |tx| tx.benchmark_rows(node_id, limit, &what))?;
        rows.into_iter().map(BenchmarkRow::decode).collect()
    }
}

impl<B: Backend + ?Sized> BenchmarkRules for B {}

impl BenchmarkSql for Transaction<'_> {
    fn latest_benchmark_seq(
        &mut self,
        node_id: &str,
        what: What<'_>,
    ) -> Result<Option<u64>, StoreError> {
        self.query_row(
            "SELECT MAX(seq) FROM benchmarks WHERE node_id = ?1",
            [node_id],
            |r| r.get(0),
        )
        .ctx(what)
    }

    fn insert_benchmark_row(
        &mut self,
        b: &NewBenchmark<'_>,
        what: What<'_>,
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO benchmarks (node_id, seq, suite_version, scores, measured_at_ms, \
             received_ms, raw_body, method, path, sig_timestamp_ms, sig_nonce, signature) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                b.node_id,
                b.seq,
                b.suite_version,
                b.scores,
                b.measured_at_ms,
                b.received_ms,
                b.raw_body,
                BENCHMARK_METHOD,
                b.path,
                b.sig_timestamp_ms,
                b.sig_nonce,
                b.signature,
            ],
        )
        .ctx(what)?;
        Ok(())
    }

    fn latest_benchmark_rows(&mut self, what: What<'_>) -> Result<Vec<BenchmarkRow>, StoreError> {
        let mut stmt = self
            .prepare_cached(&format!(
                // Driven by the nodes: one index probe each on UNIQUE(node_id, seq),
                // however long the benchmark history grows (CROSS JOIN keeps SQLite
                // from scanning the benchmarks instead).
                "SELECT {COLUMNS} FROM nodes CROSS JOIN benchmarks \
                 ON benchmarks.node_id = nodes.id \
                 AND benchmarks.seq = (SELECT MAX(b2.seq) FROM benchmarks b2 WHERE b2.node_id = nodes.id)"
            ))
            .ctx(what)?;
        let rows = stmt.query_map([], BenchmarkRow::read).ctx(what)?;
        rows.collect::<Result<Vec<_>, _>>().ctx(what)
    }

    fn benchmark_rows(
        &mut self,
        node_id: &str,
        limit: i64,
        what: What<'_>,
    ) -> Result<Vec<BenchmarkRow>, StoreError> {
        let mut stmt = self
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM benchmarks WHERE node_id = ?1 ORDER BY seq DESC LIMIT ?2"
            ))
            .ctx(what)?;
        let rows = stmt
            .query_map(params![node_id, limit], BenchmarkRow::read)
            .ctx(what)?;
        rows.collect::<Result<Vec<_>, _>>().ctx(what)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{bench_path, benchmark, node};
    use super::*;
    use crate::store::Store;
    use meshtun_proto::IdentityKey;

    fn store_with(store: &Store, ids: &[(&str, u8)]) -> Vec<IdentityKey> {
        ids.iter()
            .map(|(id, seed)| {
                let (n, key) = node(id, *seed);
                store.add_node(&n).unwrap();
                key
            })
            .collect()
    }

    fn audit_len(store: &Store) -> usize {
        store.audit_entries(1, 1000).unwrap().len()
    }

    fn benchmarks_are_stored_and_read_newest_first(store: Store) {
        let keys = store_with(&store, &[("node-a", 1), ("node-b", 2)]);
        let mut stored = Vec::new();
        for seq in [1, 2, 5] {
            let (rec, body, sig) = benchmark(&keys[0], "node-a", seq, 0.5 + seq as f64 / 10.0);
            store
                .insert_benchmark(
                    &crate::store::testutil::controller(),
                    &rec,
                    &body,
                    &sig,
                    &bench_path("node-a"),
                )
                .unwrap();
            stored.push(rec);
        }
        let (b, body, sig) = benchmark(&keys[1], "node-b", 7, 0.9);
        store
            .insert_benchmark(
                &crate::store::testutil::controller(),
                &b,
                &body,
                &sig,
                &bench_path("node-b"),
            )
            .unwrap();
        let newest: Vec<_> = stored.iter().rev().cloned().collect();
        assert_eq!(store.benchmarks("node-a", 10).unwrap(), newest);
        assert_eq!(store.benchmarks("node-a", 2).unwrap(), newest[..2]);
        let latest = store.latest_benchmarks().unwrap();
        assert_eq!(latest.len(), 2);
        assert_eq!(latest["node-a"], stored[2]);
        assert_eq!(latest["node-b"], b);
    }

    fn a_replayed_seq_is_refused_and_nothing_is_stored(store: Store) {
        let keys = store_with(&store, &[("node-a", 1)]);
        let (rec, body, sig) = benchmark(&keys[0], "node-a", 7, 0.9);
        store
            .insert_benchmark(
                &crate::store::testutil::controller(),
                &rec,
                &body,
                &sig,
                &bench_path("node-a"),
            )
            .unwrap();
        let before = audit_len(&store);
        for seq in [5, 7] {
            let (old, body, sig) = benchmark(&keys[0], "node-a", seq, 0.1);
            let err = store
                .insert_benchmark(
                    &crate::store::testutil::controller(),
                    &old,
                    &body,
                    &sig,
                    &bench_path("node-a"),
                )
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("benchmark seq {seq} for node-a is not newer than 7 (replay)")
            );
        }
        assert_eq!(store.benchmarks("node-a", 10).unwrap(), vec![rec]);
        assert_eq!(audit_len(&store), before);
    }

    fn the_audit_entry_holds_the_request_for_offline_verification(store: Store) {
        let keys = store_with(&store, &[("node-a", 1)]);
        let (rec, body, sig) = benchmark(&keys[0], "node-a", 3, 0.9);
        store
            .insert_benchmark(
                &crate::store::testutil::controller(),
                &rec,
                &body,
                &sig,
                &bench_path("node-a"),
            )
            .unwrap();
        let last = store.audit_entries(2, 1).unwrap().remove(0);
        assert_eq!(last.kind, "benchmark");
        let entry: BenchmarkEntry = serde_json::from_str(&last.entry).unwrap();
        assert_eq!(STANDARD.decode(&entry.body_base64).unwrap(), body);
        assert_eq!(
            (entry.method.as_str(), entry.path.as_str()),
            ("POST", "/v1/benchmarks/node-a")
        );
        assert_eq!(entry.timestamp_ms, sig.timestamp_ms);
        entry.verify(&keys[0].public()).unwrap();
        assert_eq!(
            entry.controller_key.as_deref(),
            Some(crate::store::testutil::controller().to_base64().as_str())
        );
    }

    fn forged_or_mismatched_requests_are_refused(store: Store) {
        let keys = store_with(&store, &[("node-a", 1), ("node-b", 2)]);
        let (rec, body, sig) = benchmark(&keys[0], "node-a", 1, 0.9);
        // Signed over another path.
        let err = store
            .insert_benchmark(
                &crate::store::testutil::controller(),
                &rec,
                &body,
                &sig,
                "/v1/other",
            )
            .unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");
        // Signed by node-b's key while naming node-a.
        let (_, _, forged) = benchmark(&keys[1], "node-a", 1, 0.9);
        let err = store.insert_benchmark(
            &crate::store::testutil::controller(),
            &rec,
            &body,
            &forged,
            &bench_path("node-a"),
        );
        assert!(matches!(err, Err(StoreError::BadSignature { .. })));
        // Signed as node-b.
        let (_, _, other) = benchmark(&keys[1], "node-b", 1, 0.9);
        let err = store
            .insert_benchmark(
                &crate::store::testutil::controller(),
                &rec,
                &body,
                &other,
                &bench_path("node-a"),
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "benchmark seq 1 for node-a: the request was signed as node node-b"
        );
        // A record that is not what was signed.
        let mut inflated = rec.clone();
        inflated.scores.overall = 1.0;
        let err = store
            .insert_benchmark(
                &crate::store::testutil::controller(),
                &inflated,
                &body,
                &sig,
                &bench_path("node-a"),
            )
            .unwrap_err();
        assert!(err.to_string().ends_with("scores differs"), "{err}");
        assert!(store.benchmarks("node-a", 10).unwrap().is_empty());
        assert_eq!(audit_len(&store), 2);
    }

    fn unknown_nodes_and_huge_seqs_are_refused_by_name(store: Store) {
        let keys = store_with(&store, &[("node-a", 1)]);
        let (rec, body, sig) = benchmark(&keys[0], "node-x", 1, 0.9);
        let err = store
            .insert_benchmark(
                &crate::store::testutil::controller(),
                &rec,
                &body,
                &sig,
                &bench_path("node-x"),
            )
            .unwrap_err();
        assert_eq!(err.to_string(), "node node-x does not exist");
        let (rec, body, sig) = benchmark(&keys[0], "node-a", u64::MAX, 0.9);
        let err = store
            .insert_benchmark(
                &crate::store::testutil::controller(),
                &rec,
                &body,
                &sig,
                &bench_path("node-a"),
            )
            .unwrap_err();
        assert!(err
            .to_string()
            .starts_with("benchmark seq for node-a is 18446744073709551615"));
    }

    crate::store::testutil::on_both_backends!(
        benchmarks_are_stored_and_read_newest_first,
        a_replayed_seq_is_refused_and_nothing_is_stored,
        the_audit_entry_holds_the_request_for_offline_verification,
        forged_or_mismatched_requests_are_refused,
        unknown_nodes_and_huge_seqs_are_refused_by_name,
    );
}
