//! The `statements` table: every accepted statement an evaluator signed about a node, with
//! its signature, so that it can be checked again (`audit verify` does, row by row). The
//! rules are written once ([`StatementRules`]); [`StatementSql`] is the SQL each backend
//! provides (SQLite here, PostgreSQL in `pg::evaluators`).
//!
//! [`Store::latest_statement_scores`](crate::store::Store::latest_statement_scores) is what
//! the policy engine reads: the newest score per (evaluator, subject, dimension).

use std::collections::{BTreeMap, HashMap};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use meshtun_proto::statement::{
    parse_signature, EvidenceDigest, Issuer, SignedStatement, Statement,
};
use rusqlite::{params, Row, Transaction};

use super::audit::{AuditError, AuditKind, ChainVerifier, StatementEntry};
use super::audit_log::append;
use super::backend::{Backend, What};
use super::codec::{corrupt, from_json, int, to_json};
use super::error::SqlContext as _;
use super::StoreError;

/// One score of one statement, as the policy engine reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct StatementScore {
    /// The evaluator that signed it.
    pub evaluator: String,
    /// The evaluator's group, if it has one.
    pub group: Option<String>,
    /// The node it is about.
    pub subject: String,
    /// The dimension.
    pub dimension: String,
    /// The score, in `[0, 1]`.
    pub score: f64,
    /// When the evaluation was made (as the evaluator signed it), Unix milliseconds.
    pub evaluated_at_ms: u64,
    /// The stored statement's id.
    pub statement_id: u64,
}

/// A `statements` row, in its column types.
pub(crate) struct StatementRow {
    pub(crate) id: i64,
    pub(crate) evaluator: String,
    pub(crate) subject: String,
    pub(crate) scores: String,
    pub(crate) evaluated_at_ms: i64,
    pub(crate) received_ms: i64,
    pub(crate) evidence: String,
    pub(crate) signature: String,
}

impl StatementRow {
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            evaluator: row.get(1)?,
            subject: row.get(2)?,
            scores: row.get(3)?,
            evaluated_at_ms: row.get(4)?,
            received_ms: row.get(5)?,
            evidence: row.get(6)?,
            signature: row.get(7)?,
        })
    }

    /// The signed statement the row holds (unverified).
    pub(crate) fn signed(&self) -> Result<SignedStatement, StoreError> {
        let what = || format!("statement {} of evaluator {}", self.id, self.evaluator);
        let issuer = Issuer::Evaluator(self.evaluator.clone());
        rebuild(
            issuer,
            &self.subject,
            &self.scores,
            self.evaluated_at_ms,
            &self.evidence,
            &self.signature,
            what,
        )
    }
}

/// The signed statement stored in these columns (unverified); `what` names the row in
/// errors. Shared with the `observations` table, which stores node-issued statements.
pub(crate) fn rebuild(
    issuer: Issuer,
    subject: &str,
    scores: &str,
    evaluated_at_ms: i64,
    evidence: &str,
    signature: &str,
    what: impl Fn() -> String,
) -> Result<SignedStatement, StoreError> {
    let scores: BTreeMap<String, f64> = from_json(scores, &what)?;
    let evidence = EvidenceDigest::from_hex(evidence).map_err(|e| corrupt(what(), e))?;
    let signature = parse_signature(signature).map_err(|e| corrupt(what(), e))?;
    let evaluated_at_ms = u64::try_from(evaluated_at_ms).map_err(|e| corrupt(what(), e))?;
    Ok(SignedStatement {
        statement: Statement {
            issuer,
            subject: subject.to_owned(),
            scores,
            evaluated_at_ms,
            evidence,
        },
        signature,
    })
}

/// Inserts a statement, the same SQL on both backends.
pub(crate) const INSERT: &str = "INSERT INTO statements (id, evaluator, subject, scores, \
     evaluated_at_ms, received_ms, evidence, signature) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// The next statement id (ids are never reused, even after their rows are pruned or
/// removed with their node), the same SQL on both backends.
pub(crate) const NEXT_ID: &str = "INSERT INTO counters (name, value) VALUES ('statement', 1) \
     ON CONFLICT (name) DO UPDATE SET value = counters.value + 1 RETURNING value";

/// The statements of active evaluators evaluated at or after `$1`, with the evaluator's
/// group, the same SQL on both backends.
pub(crate) const SINCE: &str = "SELECT s.id, s.evaluator, s.subject, s.scores, \
     s.evaluated_at_ms, s.received_ms, s.evidence, s.signature, e.evaluator_group \
     FROM statements s JOIN evaluators e ON e.name = s.evaluator \
     WHERE e.removed_ms IS NULL AND s.evaluated_at_ms >= $1 ORDER BY s.id";

/// Up to `$2` statements after id `$1`, the same SQL on both backends.
pub(crate) const PAGE: &str = "SELECT id, evaluator, subject, scores, evaluated_at_ms, \
     received_ms, evidence, signature FROM statements WHERE id > $1 ORDER BY id LIMIT $2";

/// Deletes up to `$2` statements received before `$1`, never the newest of an (evaluator,
/// subject) pair, the same SQL on both backends.
pub(crate) const PRUNE: &str = "DELETE FROM statements WHERE id IN (SELECT s.id FROM \
     statements s WHERE s.received_ms < $1 AND s.id < (SELECT MAX(n.id) FROM statements n \
     WHERE n.evaluator = s.evaluator AND n.subject = s.subject) LIMIT $2)";

/// Rows read per transaction while verifying.
const VERIFY_PAGE: i64 = 512;

/// The `statements` table's queries, on either backend.
pub(crate) trait StatementSql {
    /// A new statement id.
    fn next_statement_id(&mut self, what: What<'_>) -> Result<i64, StoreError>;
    /// Inserts `row`.
    fn insert_statement_row(
        &mut self,
        row: &StatementRow,
        what: What<'_>,
    ) -> Result<(), StoreError>;
    /// The rows of [`SINCE`], each with its evaluator's group.
    fn statement_rows_since(
        &mut self,
        since_ms: i64,
        what: What<'_>,
    ) -> Result<Vec<(StatementRow, Option<String>)>, StoreError>;
    /// The rows of [`PAGE`].
    fn statement_page(
        &mut self,
        after_id: i64,
        limit: i64,
        what: What<'_>,
    ) -> Result<Vec<StatementRow>, StoreError>;
    /// Runs [`PRUNE`]; how many rows it deleted.
    fn delete_old_statements(
        &mut self,
        cutoff: i64,
        limit: i64,
        what: What<'_>,
    ) -> Result<u64, StoreError>;
}

/// Storing, reading and checking statements, on every backend.
pub(crate) trait StatementRules: Backend {
    /// See [`Store::insert_statement`](crate::store::Store::insert_statement).
    fn insert_statement(
        &self,
        signed: &SignedStatement,
        received_ms: u64,
    ) -> Result<u64, StoreError> {
        let s = &signed.statement;
        let Issuer::Evaluator(name) = &s.issuer else {
            return Err(StoreError::NodeStatement(s.issuer.name().to_owned()));
        };
        s.validate().map_err(|e| StoreError::InvalidStatement {
            evaluator: name.clone(),
            reason: e.to_string(),
        })?;
        let what = || {
            format!(
                "storing a statement of evaluator {name} about {}",
                s.subject
            )
        };
        let scores = to_json(&s.scores, what)?;
        let evaluated_at_ms = int(s.evaluated_at_ms, what)?;
        let received = int(received_ms, what)?;
        self.write_tx(what, |tx| {
            let evaluator = tx
                .evaluator_row(name, &what)?
                .ok_or_else(|| StoreError::UnknownEvaluator(name.clone()))?
                .decode()?;
            if !evaluator.active() {
                return Err(StoreError::EvaluatorRemoved(name.clone()));
            }
            signed
                .verify(&evaluator.key)
                .map_err(|e| StoreError::InvalidStatement {
                    evaluator: name.clone(),
                    reason: e.to_string(),
                })?;
            if let Some(dimension) = s.scores.keys().find(|d| !evaluator.may_score(d)) {
                return Err(StoreError::DimensionNotAllowed {
                    evaluator: name.clone(),
                    dimension: dimension.clone(),
                    allowed: evaluator.dimensions.join(","),
                });
            }
            if tx.load_node(&s.subject)?.is_none() {
                return Err(StoreError::NoSuchNode(s.subject.clone()));
            }
            let id = tx.next_statement_id(&what)?;
            let row = StatementRow {
                id,
                evaluator: name.clone(),
                subject: s.subject.clone(),
                scores: scores.clone(),
                evaluated_at_ms,
                received_ms: received,
                evidence: s.evidence.to_hex(),
                signature: STANDARD.encode(signed.signature),
            };
            tx.insert_statement_row(&row, &what)?;
            let id = u64::try_from(id).map_err(|e| corrupt("statement id counter", e))?;
            let entry = StatementEntry {
                id,
                received_ms,
                signed: signed.clone(),
            };
            append(tx, self.now_ms(), AuditKind::Statement, &entry)?;
            Ok(id)
        })
    }

    /// See [`Store::latest_statement_scores`](crate::store::Store::latest_statement_scores).
    fn latest_statement_scores(&self, since_ms: u64) -> Result<Vec<StatementScore>, StoreError> {
        let what = || "reading the latest statement scores".to_owned();
        let since = i64::try_from(since_ms).unwrap_or(i64::MAX);
        let rows = self.read_tx(what, |tx| tx.statement_rows_since(since, &what))?;
        let mut scores = Vec::new();
        for (row, group) in rows {
            let signed = row.signed()?;
            let id = u64::try_from(row.id).map_err(|e| corrupt("statement id", e))?;
            let s = signed.statement;
            for (dimension, score) in s.scores {
                let key = (row.evaluator.clone(), s.subject.clone(), dimension.clone());
                let candidate = StatementScore {
                    evaluator: row.evaluator.clone(),
                    group: group.clone(),
                    subject: s.subject.clone(),
                    dimension,
                    score,
                    evaluated_at_ms: s.evaluated_at_ms,
                    statement_id: id,
                };
                scores.push((key, candidate));
            }
        }
        let latest = newest(scores, |s| (s.evaluated_at_ms, s.statement_id));
        let mut out: Vec<StatementScore> = latest;
        out.sort_by(|a, b| {
            (&a.subject, &a.dimension, &a.evaluator).cmp(&(&b.subject, &b.dimension, &b.evaluator))
        });
        Ok(out)
    }

    /// Checks every stored statement's signature with the key `verifier` (after the whole
    /// chain) holds for its evaluator: a row changed behind the store's back fails. Rows
    /// newer than the last statement the chain recorded (stored while the chain was read)
    /// are left for the next verification. Returns how many rows were checked.
    fn verify_statement_rows(&self, verifier: &ChainVerifier) -> Result<u64, AuditError> {
        let pages = |after: i64| {
            let what = || format!("reading stored statements after id {after}");
            self.read_tx(what, |tx| tx.statement_page(after, VERIFY_PAGE, &what))
        };
        verify_pages(verifier, pages, |r| r.id, |r| check_row(verifier, r))
    }
}

impl<B: Backend + ?Sized> StatementRules for B {}

/// Checks one stored row's signature with its evaluator's key from the chain.
fn check_row(verifier: &ChainVerifier, row: &StatementRow) -> Result<(), AuditError> {
    let id = u64::try_from(row.id).unwrap_or(0);
    let fail = |reason: String| AuditError::StoredStatement {
        id,
        evaluator: row.evaluator.clone(),
        reason,
    };
    let key = verifier
        .evaluator_key(&row.evaluator)
        .ok_or_else(|| fail("the audit log never added this evaluator".to_owned()))?;
    let signed = row.signed().map_err(|e| fail(e.to_string()))?;
    signed.verify(&key).map_err(|e| {
        fail(format!(
            "{e}: the row was changed after it was stored (received at {} ms)",
            row.received_ms
        ))
    })
}

/// Of `scores`, keyed by (issuer, subject, dimension), the newest of each key by `stamp`
/// (evaluation time, then id), in no particular order.
pub(crate) fn newest<T>(
    scores: impl IntoIterator<Item = ((String, String, String), T)>,
    stamp: impl Fn(&T) -> (u64, u64),
) -> Vec<T> {
    let mut latest: HashMap<(String, String, String), T> = HashMap::new();
    for (key, candidate) in scores {
        if latest
            .get(&key)
            .is_none_or(|old| stamp(&candidate) > stamp(old))
        {
            latest.insert(key, candidate);
        }
    }
    latest.into_values().collect()
}

/// Checks, page by page, every stored row up to the last statement or observation id
/// `verifier` saw in the chain (rows stored while the chain was read are left for the next
/// verification): `page(after)` reads the rows after an id, `check` judges one. Returns how
/// many rows were checked.
pub(crate) fn verify_pages<R>(
    verifier: &ChainVerifier,
    mut page: impl FnMut(i64) -> Result<Vec<R>, StoreError>,
    id: impl Fn(&R) -> i64,
    mut check: impl FnMut(&R) -> Result<(), AuditError>,
) -> Result<u64, AuditError> {
    let through = i64::try_from(verifier.last_statement_id()).unwrap_or(i64::MAX);
    let mut after = 0i64;
    let mut checked = 0;
    loop {
        let rows = page(after)?;
        let Some(last) = rows.last() else { break };
        after = id(last);
        for row in rows.iter().filter(|r| id(r) <= through) {
            check(row)?;
            checked += 1;
        }
        if after >= through {
            break;
        }
    }
    Ok(checked)
}

impl StatementSql for Transaction<'_> {
    fn next_statement_id(&mut self, what: What<'_>) -> Result<i64, StoreError> {
        self.query_row(NEXT_ID, [], |r| r.get(0)).ctx(what)
    }

    fn insert_statement_row(&mut self, r: &StatementRow, what: What<'_>) -> Result<(), StoreError> {
        self.execute(
            INSERT,
            params![
                r.id,
                r.evaluator,
                r.subject,
                r.scores,
                r.evaluated_at_ms,
                r.received_ms,
                r.evidence,
                r.signature
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
        let mut stmt = self.prepare_cached(SINCE).ctx(what)?;
        let rows = stmt
            .query_map([since_ms], |r| Ok((StatementRow::read(r)?, r.get(8)?)))
            .ctx(what)?;
        rows.collect::<Result<Vec<_>, _>>().ctx(what)
    }

    fn statement_page(
        &mut self,
        after_id: i64,
        limit: i64,
        what: What<'_>,
    ) -> Result<Vec<StatementRow>, StoreError> {
        let mut stmt = self.prepare_cached(PAGE).ctx(what)?;
        let rows = stmt
            .query_map(params![after_id, limit], StatementRow::read)
            .ctx(what)?;
        rows.collect::<Result<Vec<_>, _>>().ctx(what)
    }

    fn delete_old_statements(
        &mut self,
        cutoff: i64,
        limit: i64,
        what: What<'_>,
    ) -> Result<u64, StoreError> {
        Ok(self.execute(PRUNE, params![cutoff, limit]).ctx(what)? as u64)
    }
}
