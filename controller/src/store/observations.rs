//! The `observations` table: every accepted peer observation, a statement a node (the
//! observer) signed with its identity key about another enrolled node (the subject), scoring
//! only the [`PEER_DIMENSIONS`]. A node's statement about itself is never one. The rules are
//! written once ([`ObservationRules`]); [`ObservationSql`] is the SQL each backend provides
//! (SQLite here, PostgreSQL in `pg::observations`).
//!
//! Observation ids come from the statements' counter: an id names one statement or one
//! observation, so a decision citing it is unambiguous.
//! [`Store::latest_observation_scores`](crate::store::Store::latest_observation_scores) is
//! what the policy engine reads: the newest score per (observer, subject, dimension).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use meshtun_proto::observation::{is_peer_dimension, PEER_DIMENSIONS};
use meshtun_proto::statement::{Issuer, SignedStatement};
use rusqlite::{params, Row, Transaction};

use super::audit::{AuditError, AuditKind, ChainVerifier, ObservationEntry};
use super::audit_log::append;
use super::backend::{Backend, What};
use super::codec::{corrupt, int, to_json};
use super::error::SqlContext as _;
use super::statements::{newest, rebuild, verify_pages};
use super::StoreError;

/// One score of one peer observation, as the policy engine reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservationScore {
    /// The node that observed and signed it.
    pub observer: String,
    /// The node it is about.
    pub subject: String,
    /// The dimension (one of [`PEER_DIMENSIONS`]).
    pub dimension: String,
    /// The score, in `[0, 1]`.
    pub score: f64,
    /// When the observation was made (as the observer signed it), Unix milliseconds.
    pub evaluated_at_ms: u64,
    /// The stored observation's id (from the same counter as statement ids).
    pub statement_id: u64,
}

/// An `observations` row, in its column types.
pub(crate) struct ObservationRow {
    pub(crate) id: i64,
    pub(crate) observer: String,
    pub(crate) subject: String,
    pub(crate) scores: String,
    pub(crate) evaluated_at_ms: i64,
    pub(crate) received_ms: i64,
    pub(crate) evidence: String,
    pub(crate) signature: String,
}

impl ObservationRow {
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            observer: row.get(1)?,
            subject: row.get(2)?,
            scores: row.get(3)?,
            evaluated_at_ms: row.get(4)?,
            received_ms: row.get(5)?,
            evidence: row.get(6)?,
            signature: row.get(7)?,
        })
    }

    /// The signed observation the row holds (unverified).
    pub(crate) fn signed(&self) -> Result<SignedStatement, StoreError> {
        let what = || format!("observation {} of node {}", self.id, self.observer);
        let issuer = Issuer::Node(self.observer.clone());
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

/// Inserts an observation, the same SQL on both backends.
pub(crate) const INSERT: &str = "INSERT INTO observations (id, observer, subject, scores, \
     evaluated_at_ms, received_ms, evidence, signature) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// The observations evaluated at or after `$1` whose observer and subject are both enrolled,
/// the same SQL on both backends.
pub(crate) const SINCE: &str = "SELECT o.id, o.observer, o.subject, o.scores, \
     o.evaluated_at_ms, o.received_ms, o.evidence, o.signature FROM observations o \
     JOIN nodes n_o ON n_o.id = o.observer JOIN nodes n_s ON n_s.id = o.subject \
     WHERE o.evaluated_at_ms >= $1 ORDER BY o.id";

/// Up to `$2` observations after id `$1`, the same SQL on both backends.
pub(crate) const PAGE: &str = "SELECT id, observer, subject, scores, evaluated_at_ms, \
     received_ms, evidence, signature FROM observations WHERE id > $1 ORDER BY id LIMIT $2";

/// Deletes up to `$2` observations received before `$1`, never the newest of an (observer,
/// subject) pair, the same SQL on both backends.
pub(crate) const PRUNE: &str = "DELETE FROM observations WHERE id IN (SELECT o.id FROM \
     observations o WHERE o.received_ms < $1 AND o.id < (SELECT MAX(n.id) FROM observations n \
     WHERE n.observer = o.observer AND n.subject = o.subject) LIMIT $2)";

/// Rows read per transaction while verifying.
const VERIFY_PAGE: i64 = 512;

/// The `observations` table's queries, on either backend (ids come from
/// [`StatementSql::next_statement_id`](super::statements::StatementSql::next_statement_id)).
pub(crate) trait ObservationSql {
    /// Inserts `row`.
    fn insert_observation_row(
        &mut self,
        row: &ObservationRow,
        what: What<'_>,
    ) -> Result<(), StoreError>;
    /// The rows of [`SINCE`].
    fn observation_rows_since(
        &mut self,
        since_ms: i64,
        what: What<'_>,
    ) -> Result<Vec<ObservationRow>, StoreError>;
    /// The rows of [`PAGE`].
    fn observation_page(
        &mut self,
        after_id: i64,
        limit: i64,
        what: What<'_>,
    ) -> Result<Vec<ObservationRow>, StoreError>;
    /// Runs [`PRUNE`]; how many rows it deleted.
    fn delete_old_observations(
        &mut self,
        cutoff: i64,
        limit: i64,
        what: What<'_>,
    ) -> Result<u64, StoreError>;
}

/// The observer's id, if `signed` is issued by a node and within bounds; checks that need
/// no database.
fn observer_of(signed: &SignedStatement) -> Result<&str, StoreError> {
    let s = &signed.statement;
    let Issuer::Node(observer) = &s.issuer else {
        return Err(StoreError::ObservationIssuer(s.issuer.clone()));
    };
    s.validate().map_err(|e| StoreError::InvalidObservation {
        node: observer.clone(),
        reason: e.to_string(),
    })?;
    Ok(observer)
}

/// Whether the observation, signed by `observer` (whose signature checked), is about a peer
/// and only in peer dimensions.
fn check_peer_statement(observer: &str, signed: &SignedStatement) -> Result<(), StoreError> {
    let s = &signed.statement;
    if s.subject == observer {
        return Err(StoreError::SelfObservation(observer.to_owned()));
    }
    if let Some(dimension) = s.scores.keys().find(|d| !is_peer_dimension(d)) {
        return Err(StoreError::NotPeerDimension {
            node: observer.to_owned(),
            dimension: dimension.clone(),
            allowed: PEER_DIMENSIONS.join(","),
        });
    }
    Ok(())
}

/// Storing, reading and checking peer observations, on every backend.
pub(crate) trait ObservationRules: Backend {
    /// See [`Store::insert_observation`](crate::store::Store::insert_observation).
    fn insert_observation(
        &self,
        signed: &SignedStatement,
        received_ms: u64,
    ) -> Result<u64, StoreError> {
        let observer = observer_of(signed)?;
        let s = &signed.statement;
        let what = || {
            format!(
                "storing an observation of node {observer} about {}",
                s.subject
            )
        };
        let scores = to_json(&s.scores, what)?;
        let evaluated_at_ms = int(s.evaluated_at_ms, what)?;
        let received = int(received_ms, what)?;
        self.write_tx(what, |tx| {
            let node = tx
                .load_node(observer)?
                .ok_or_else(|| StoreError::UnknownObserver(observer.to_owned()))?;
            signed
                .verify(&node.identity_key)
                .map_err(|_| StoreError::ObservationSignature {
                    node: observer.to_owned(),
                    subject: s.subject.clone(),
                })?;
            check_peer_statement(observer, signed)?;
            if tx.load_node(&s.subject)?.is_none() {
                return Err(StoreError::NoSuchNode(s.subject.clone()));
            }
            let id = tx.next_statement_id(&what)?;
            let row = ObservationRow {
                id,
                observer: observer.to_owned(),
                subject: s.subject.clone(),
                scores: scores.clone(),
                evaluated_at_ms,
                received_ms: received,
                evidence: s.evidence.to_hex(),
                signature: STANDARD.encode(signed.signature),
            };
            tx.insert_observation_row(&row, &what)?;
            let id = u64::try_from(id).map_err(|e| corrupt("statement id counter", e))?;
            let entry = ObservationEntry {
                id,
                received_ms,
                signed: signed.clone(),
            };
            append(tx, self.now_ms(), AuditKind::Observation, &entry)?;
            Ok(id)
        })
    }

    /// See [`Store::latest_observation_scores`](crate::store::Store::latest_observation_scores).
    fn latest_observation_scores(
        &self,
        since_ms: u64,
    ) -> Result<Vec<ObservationScore>, StoreError> {
        let what = || "reading the latest observation scores".to_owned();
        let since = i64::try_from(since_ms).unwrap_or(i64::MAX);
        let rows = self.read_tx(what, |tx| tx.observation_rows_since(since, &what))?;
        let mut scores = Vec::new();
        for row in rows {
            let id = u64::try_from(row.id).map_err(|e| corrupt("observation id", e))?;
            let s = row.signed()?.statement;
            for (dimension, score) in s.scores {
                let key = (row.observer.clone(), s.subject.clone(), dimension.clone());
                let candidate = ObservationScore {
                    observer: row.observer.clone(),
                    subject: s.subject.clone(),
                    dimension,
                    score,
                    evaluated_at_ms: s.evaluated_at_ms,
                    statement_id: id,
                };
                scores.push((key, candidate));
            }
        }
        let latest = newest(scores, |o| (o.evaluated_at_ms, o.statement_id));
        let mut out: Vec<ObservationScore> = latest;
        out.sort_by(|a, b| {
            (&a.subject, &a.dimension, &a.observer).cmp(&(&b.subject, &b.dimension, &b.observer))
        });
        Ok(out)
    }

    /// Checks every stored observation's signature with the identity key `verifier` (after
    /// the whole chain) holds for its observer: a row changed behind the store's back
    /// fails. Rows newer than the last statement or observation the chain recorded (stored
    /// while the chain was read) are left for the next verification. Returns how many rows
    /// were checked.
    fn verify_observation_rows(&self, verifier: &ChainVerifier) -> Result<u64, AuditError> {
        let pages = |after: i64| {
            let what = || format!("reading stored observations after id {after}");
            self.read_tx(what, |tx| tx.observation_page(after, VERIFY_PAGE, &what))
        };
        verify_pages(verifier, pages, |r| r.id, |r| check_row(verifier, r))
    }
}

impl<B: Backend + ?Sized> ObservationRules for B {}

/// Checks one stored row: the observer's key from the chain verifies its signature, and it
/// is a peer observation.
fn check_row(verifier: &ChainVerifier, row: &ObservationRow) -> Result<(), AuditError> {
    let id = u64::try_from(row.id).unwrap_or(0);
    let fail = |reason: String| AuditError::StoredObservation {
        id,
        node: row.observer.clone(),
        reason,
    };
    let key = verifier
        .node_key(&row.observer)
        .ok_or_else(|| fail("the audit log has no enrolled node of this id".to_owned()))?;
    let signed = row.signed().map_err(|e| fail(e.to_string()))?;
    signed.verify(&key).map_err(|e| {
        fail(format!(
            "{e}: the row was changed after it was stored (received at {} ms)",
            row.received_ms
        ))
    })?;
    check_peer_statement(&row.observer, &signed).map_err(|e| fail(e.to_string()))
}

impl ObservationSql for Transaction<'_> {
    fn insert_observation_row(
        &mut self,
        r: &ObservationRow,
        what: What<'_>,
    ) -> Result<(), StoreError> {
        self.execute(
            INSERT,
            params![
                r.id,
                r.observer,
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

    fn observation_rows_since(
        &mut self,
        since_ms: i64,
        what: What<'_>,
    ) -> Result<Vec<ObservationRow>, StoreError> {
        let mut stmt = self.prepare_cached(SINCE).ctx(what)?;
        let rows = stmt.query_map([since_ms], ObservationRow::read).ctx(what)?;
        rows.collect::<Result<Vec<_>, _>>().ctx(what)
    }

    fn observation_page(
        &mut self,
        after_id: i64,
        limit: i64,
        what: What<'_>,
    ) -> Result<Vec<ObservationRow>, StoreError> {
        let mut stmt = self.prepare_cached(PAGE).ctx(what)?;
        let rows = stmt
            .query_map(params![after_id, limit], ObservationRow::read)
            .ctx(what)?;
        rows.collect::<Result<Vec<_>, _>>().ctx(what)
    }

    fn delete_old_observations(
        &mut self,
        cutoff: i64,
        limit: i64,
        what: What<'_>,
    ) -> Result<u64, StoreError> {
        Ok(self.execute(PRUNE, params![cutoff, limit]).ctx(what)? as u64)
    }
}

#[cfg(test)]
#[path = "observations_tests.rs"]
mod tests;
