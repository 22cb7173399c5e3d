//! The audit log in the database: appending inside a caller's transaction, reading it back
//! and verifying it. The rules are written once ([`append`], [`AuditRules`]); [`AuditSql`]
//! is the SQL each backend provides (SQLite here, PostgreSQL in `pg::audit_log`).

use meshtun_proto::KeySet;
use rusqlite::{params, OptionalExtension as _, Row, Transaction};
use serde::Serialize;

use super::audit::{chain_hash, AuditEntry, AuditError, AuditKind, AuditReport, ChainVerifier};
use super::audit::{SignedCheckpoint, GENESIS_HASH};
use super::backend::{Backend, What};
use super::codec::{int, to_json};
use super::error::SqlContext as _;
use super::observations::ObservationRules as _;
use super::statements::StatementRules as _;
use super::StoreError;

/// Entries read per transaction while verifying, so writers are never held up for long.
pub(super) const VERIFY_PAGE: usize = 512;

/// The audit log's queries, on either backend.
pub(crate) trait AuditSql {
    /// The newest entry's seq and hash, if any.
    fn audit_head(&mut self, what: What<'_>) -> Result<Option<(u64, String)>, StoreError>;

    /// Inserts one entry, already chained.
    fn insert_audit(&mut self, row: &AuditRow<'_>, what: What<'_>) -> Result<(), StoreError>;

    /// The newest checkpoint, with the entry it covers, if the log was ever pruned.
    fn latest_checkpoint(&mut self) -> Result<Option<(u64, SignedCheckpoint)>, StoreError>;

    /// Up to `limit` entries from `from` on, oldest first.
    fn audit_page(
        &mut self,
        from: i64,
        limit: i64,
        what: What<'_>,
    ) -> Result<Vec<AuditEntry>, StoreError>;
}

/// An audit row to insert, in its column types.
pub(crate) struct AuditRow<'a> {
    pub(crate) seq: i64,
    pub(crate) at_ms: i64,
    pub(crate) kind: &'a str,
    pub(crate) entry: &'a str,
    pub(crate) prev_hash: &'a str,
    pub(crate) hash: &'a str,
}

/// Appends one entry to the chain inside `tx`, stamped `at_ms` (the store's clock). The
/// transaction holds the writer lock, so the chain's head cannot move under it.
pub(crate) fn append(
    tx: &mut (impl AuditSql + ?Sized),
    at_ms: u64,
    kind: AuditKind,
    entry: &impl Serialize,
) -> Result<u64, StoreError> {
    let json = to_json(entry, || format!("the {kind} audit entry"))?;
    let what = || format!("appending a {kind} audit entry");
    let (last, prev_hash) = chain_head(tx, &what)?;
    let seq = last + 1;
    let hash = chain_hash(&prev_hash, seq, at_ms, kind.as_str(), &json);
    let row = AuditRow {
        seq: int(seq, || "audit seq".into())?,
        at_ms: int(at_ms, || "audit time".into())?,
        kind: kind.as_str(),
        entry: &json,
        prev_hash: &prev_hash,
        hash: &hash,
    };
    tx.insert_audit(&row, &what)?;
    Ok(seq)
}

/// The chain's head: its newest entry or, when pruning removed every entry, the newest
/// checkpoint (so the chain goes on from it, never from a second genesis), or the genesis.
fn chain_head(
    tx: &mut (impl AuditSql + ?Sized),
    what: What<'_>,
) -> Result<(u64, String), StoreError> {
    if let Some(head) = tx.audit_head(what)? {
        return Ok(head);
    }
    match tx.latest_checkpoint()? {
        None => Ok((0, GENESIS_HASH.to_owned())),
        Some((seq, signed)) => {
            let checkpoint = signed.body().map_err(|reason| StoreError::Corrupt {
                what: format!("audit checkpoint {seq}"),
                reason,
            })?;
            Ok((checkpoint.seq, checkpoint.hash))
        }
    }
}

/// Reading and verifying the audit log, on every backend.
pub(crate) trait AuditRules: Backend {
    /// Up to `limit` audit entries from `from_seq` on, oldest first.
    fn audit_entries(&self, from_seq: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let what = || format!("reading audit entries from {from_seq}");
        let from = i64::try_from(from_seq).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read_tx(what, |tx| tx.audit_page(from, limit, &what))
    }

    /// See [`Store::verify_audit`](crate::store::Store::verify_audit).
    fn verify_audit(&self, controller: &KeySet) -> Result<AuditReport, AuditError> {
        let mut verifier = self.verifier_at_checkpoint(controller)?;
        self.verify_from(&mut verifier, u64::MAX)?;
        let rows = self.verify_statement_rows(&verifier)?;
        let observation_rows = self.verify_observation_rows(&verifier)?;
        let mut report = verifier.finish();
        report.statement_rows_verified = rows;
        report.observation_rows_verified = observation_rows;
        Ok(report)
    }

    /// A verifier at the newest checkpoint (checked with `controller`), or at the genesis.
    fn verifier_at_checkpoint(&self, controller: &KeySet) -> Result<ChainVerifier, AuditError> {
        let what = || "reading the newest audit checkpoint".to_owned();
        match self.read_tx(what, |tx| tx.latest_checkpoint())? {
            None => Ok(ChainVerifier::new()),
            Some((seq, signed)) => Ok(ChainVerifier::resume(&signed.verify(seq, controller)?)),
        }
    }

    /// Pushes the entries after the verifier's position, up to `through` (inclusive), into
    /// it, page by page.
    fn verify_from(&self, verifier: &mut ChainVerifier, through: u64) -> Result<(), AuditError> {
        let mut next = verifier.position().saturating_add(1);
        while next <= through {
            let want =
                usize::try_from(through - next + 1).map_or(VERIFY_PAGE, |n| n.min(VERIFY_PAGE));
            let page = self.audit_entries(next, want)?;
            let Some(last) = page.last() else { break };
            next = last.seq.saturating_add(1);
            for e in &page {
                verifier.push(e)?;
            }
        }
        Ok(())
    }
}

impl<B: Backend + ?Sized> AuditRules for B {}

impl AuditSql for Transaction<'_> {
    fn audit_head(&mut self, what: What<'_>) -> Result<Option<(u64, String)>, StoreError> {
        self.query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .ctx(what)
    }

    fn insert_audit(&mut self, r: &AuditRow<'_>, what: What<'_>) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO audit (seq, at_ms, kind, entry, prev_hash, hash) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![r.seq, r.at_ms, r.kind, r.entry, r.prev_hash, r.hash],
        )
        .ctx(what)?;
        Ok(())
    }

    fn latest_checkpoint(&mut self) -> Result<Option<(u64, SignedCheckpoint)>, StoreError> {
        self.query_row(
            "SELECT seq, body, signature FROM audit_checkpoints ORDER BY seq DESC LIMIT 1",
            [],
            |r| {
                Ok((
                    r.get(0)?,
                    SignedCheckpoint {
                        body: r.get(1)?,
                        signature: r.get(2)?,
                    },
                ))
            },
        )
        .optional()
        .ctx(|| "reading the newest audit checkpoint".to_owned())
    }

    fn audit_page(
        &mut self,
        from: i64,
        limit: i64,
        what: What<'_>,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mut stmt = self
            .prepare_cached(
                "SELECT seq, at_ms, kind, entry, prev_hash, hash FROM audit \
                 WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
            )
            .ctx(what)?;
        let rows = stmt
            .query_map(params![from, limit], entry_from_row)
            .ctx(what)?;
        rows.collect::<Result<Vec<_>, _>>().ctx(what)
    }
}

fn entry_from_row(row: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        seq: row.get(0)?,
        at_ms: row.get(1)?,
        kind: row.get(2)?,
        entry: row.get(3)?,
        prev_hash: row.get(4)?,
        hash: row.get(5)?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{bench_path, benchmark, node};
    use super::*;
    use crate::store::Store;

    /// A store with two nodes, two benchmarks and a pin: five entries.
    fn populate(store: &Store) {
        let (a, key_a) = node("node-a", 1);
        let (b, _) = node("node-b", 2);
        store.add_node(&a).unwrap();
        store.add_node(&b).unwrap();
        for seq in [1, 2] {
            let (rec, body, sig) = benchmark(&key_a, "node-a", seq, 0.8);
            store
                .insert_benchmark(
                    &crate::store::testutil::controller(),
                    &rec,
                    &body,
                    &sig,
                    &bench_path("node-a"),
                )
                .unwrap();
        }
        store
            .set_pin("node-b", Some(crate::model::Pin::Deny))
            .unwrap();
    }

    /// Runs raw SQL as someone with write access to the file would, past the triggers.
    fn tamper(store: &Store, sql: &str) {
        crate::store::testutil::drop_audit_triggers(store);
        crate::store::testutil::execute(store, sql).unwrap();
    }

    fn an_intact_chain_verifies_with_counts_and_head(store: Store) {
        populate(&store);
        let report = store
            .verify_audit(&crate::store::testutil::trusted())
            .unwrap();
        assert_eq!(report.entries, 5);
        assert_eq!(report.counts[&AuditKind::Enroll], 2);
        assert_eq!(report.counts[&AuditKind::Benchmark], 2);
        assert_eq!(report.counts[&AuditKind::Pin], 1);
        assert_eq!(report.signatures_verified, 2);
        let entries = store.audit_entries(1, 100).unwrap();
        assert_eq!(report.head_hash, entries[4].hash);
        assert_eq!(entries[0].prev_hash, GENESIS_HASH);
        for pair in entries.windows(2) {
            assert_eq!(pair[1].prev_hash, pair[0].hash);
        }
        assert_eq!(store.audit_entries(4, 1).unwrap(), vec![entries[3].clone()]);
    }

    fn the_log_refuses_updates_and_deletes(store: Store) {
        populate(&store);
        let err =
            crate::store::testutil::execute(&store, "DELETE FROM audit WHERE seq = 1").unwrap_err();
        assert!(err.contains("append-only"), "{err}");
        let err =
            crate::store::testutil::execute(&store, "UPDATE audit SET at_ms = 0").unwrap_err();
        assert!(err.contains("append-only"), "{err}");
        assert_eq!(
            store
                .verify_audit(&crate::store::testutil::trusted())
                .unwrap()
                .entries,
            5
        );
    }

    fn a_modified_entry_is_found(store: Store) {
        populate(&store);
        tamper(
            &store,
            "UPDATE audit SET entry = replace(entry, '\"deny\"', '\"allow\"') WHERE seq = 5",
        );
        let err = store
            .verify_audit(&crate::store::testutil::trusted())
            .unwrap_err();
        assert_eq!(err.seq(), Some(5));
        assert!(matches!(err, AuditError::Hash { .. }), "{err}");
        assert!(
            err.to_string().contains("audit entry 5 (pin) was modified"),
            "{err}"
        );
    }

    fn a_modified_time_is_found(store: Store) {
        populate(&store);
        tamper(&store, "UPDATE audit SET at_ms = at_ms + 1 WHERE seq = 2");
        assert_eq!(
            store
                .verify_audit(&crate::store::testutil::trusted())
                .unwrap_err()
                .seq(),
            Some(2)
        );
    }

    fn a_deleted_entry_is_found(store: Store) {
        populate(&store);
        tamper(&store, "DELETE FROM audit WHERE seq = 3");
        let err = store
            .verify_audit(&crate::store::testutil::trusted())
            .unwrap_err();
        assert!(
            matches!(
                err,
                AuditError::Sequence {
                    seq: 4,
                    expected: 3
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("deleted"), "{err}");
    }

    fn a_deleted_and_renumbered_entry_is_found(store: Store) {
        populate(&store);
        tamper(
            &store,
            "DELETE FROM audit WHERE seq = 3; UPDATE audit SET seq = seq - 1 WHERE seq > 3;",
        );
        let err = store
            .verify_audit(&crate::store::testutil::trusted())
            .unwrap_err();
        assert!(matches!(err, AuditError::PrevHash { seq: 3, .. }), "{err}");
    }

    fn a_reordered_chain_is_found(store: Store) {
        populate(&store);
        tamper(
            &store,
            "UPDATE audit SET seq = 100 WHERE seq = 3; UPDATE audit SET seq = 3 WHERE seq = 4; \
             UPDATE audit SET seq = 4 WHERE seq = 100;",
        );
        let err = store
            .verify_audit(&crate::store::testutil::trusted())
            .unwrap_err();
        assert_eq!(err.seq(), Some(3), "{err}");
    }

    fn a_rehashed_forgery_still_fails_its_signature(store: Store) {
        // Someone rewrites a benchmark body and recomputes every hash after it: the chain
        // links again, but the node never signed that body.
        populate(&store);
        let mut entries = store.audit_entries(1, 100).unwrap();
        let forged = entries[2]
            .entry
            .replace("\"body_base64\":\"", "\"body_base64\":\"AAAA");
        entries[2].entry = forged;
        for i in 2..entries.len() {
            if i > 0 {
                entries[i].prev_hash = entries[i - 1].hash.clone();
            }
            let e = &entries[i];
            entries[i].hash = chain_hash(&e.prev_hash, e.seq, e.at_ms, &e.kind, &e.entry);
        }
        let err = super::super::audit::verify_chain(&entries).unwrap_err();
        assert!(
            matches!(
                err,
                AuditError::Signature {
                    seq: 3,
                    bench_seq: 1,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("node node-a"), "{err}");
    }

    fn verification_pages_through_long_logs(store: Store) {
        let (a, key) = node("node-a", 1);
        store.add_node(&a).unwrap();
        let n = VERIFY_PAGE as u64 + 10;
        for seq in 1..=n {
            let (rec, body, sig) = benchmark(&key, "node-a", seq, 0.8);
            store
                .insert_benchmark(
                    &crate::store::testutil::controller(),
                    &rec,
                    &body,
                    &sig,
                    &bench_path("node-a"),
                )
                .unwrap();
        }
        let report = store
            .verify_audit(&crate::store::testutil::trusted())
            .unwrap();
        assert_eq!(report.entries, n + 1);
        assert_eq!(report.signatures_verified, n);
    }

    fn an_empty_log_verifies_to_the_genesis_hash(store: Store) {
        let report = store
            .verify_audit(&crate::store::testutil::trusted())
            .unwrap();
        assert_eq!(report.entries, 0);
        assert_eq!(report.head_hash, GENESIS_HASH);
    }

    crate::store::testutil::on_both_backends!(
        verification_pages_through_long_logs,
        an_empty_log_verifies_to_the_genesis_hash,
        an_intact_chain_verifies_with_counts_and_head,
        the_log_refuses_updates_and_deletes,
        a_modified_entry_is_found,
        a_modified_time_is_found,
        a_deleted_entry_is_found,
        a_deleted_and_renumbered_entry_is_found,
        a_reordered_chain_is_found,
        a_rehashed_forgery_still_fails_its_signature,
    );
}
