//! Candidate endpoints: where each node says it can be reached (its host addresses and the
//! reflexive addresses STUN showed it), and the address the controller saw its report come
//! from. Soft state, replaced by each report and not audited; bundles list them per peer.

use std::collections::HashMap;

use rusqlite::{params, Transaction};

use super::backend::{Backend, What};
use super::codec::{from_json, int, to_json};
use super::error::SqlContext as _;
use super::StoreError;

/// A node's latest report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidates {
    /// What the node reported (`ip:port`), best first.
    pub reported: Vec<String>,
    /// The address the report came from (`ip:port` of the node's WireGuard port guess, or
    /// the bare IP), as the controller saw it.
    pub observed: String,
    /// When it was received, Unix milliseconds.
    pub reported_ms: u64,
}

/// The candidate queries of one transaction.
pub(crate) trait CandidateSql {
    /// Replaces node `id`'s row; `Ok(false)` if there is no such node.
    fn put_candidates(
        &mut self,
        id: &str,
        candidates: &str,
        observed: &str,
        reported_ms: i64,
        what: What<'_>,
    ) -> Result<bool, StoreError>;
    /// Every row: node id, candidates JSON, observed, reported_ms.
    fn all_candidates(
        &mut self,
        what: What<'_>,
    ) -> Result<Vec<(String, String, String, u64)>, StoreError>;
}

/// Candidate rules, on every backend.
pub(crate) trait CandidateRules: Backend {
    /// Records node `id`'s report; [`StoreError::NoSuchNode`] if it is not enrolled.
    fn set_candidates(&self, id: &str, candidates: &Candidates) -> Result<(), StoreError> {
        let what = || format!("storing the candidate endpoints of node {id}");
        let list = to_json(&candidates.reported, what)?;
        let at = int(candidates.reported_ms, what)?;
        self.write_tx(what, |tx| {
            if tx.put_candidates(id, &list, &candidates.observed, at, &what)? {
                Ok(())
            } else {
                Err(StoreError::NoSuchNode(id.to_owned()))
            }
        })
    }

    /// Every node's latest report, by node id.
    fn candidates(&self) -> Result<HashMap<String, Candidates>, StoreError> {
        let what = || "reading candidate endpoints".to_owned();
        let rows = self.read_tx(what, |tx| tx.all_candidates(&what))?;
        rows.into_iter()
            .map(|(id, list, observed, reported_ms)| {
                let reported = from_json(&list, || format!("candidates of node {id}"))?;
                Ok((
                    id,
                    Candidates {
                        reported,
                        observed,
                        reported_ms,
                    },
                ))
            })
            .collect()
    }
}

impl<B: Backend + ?Sized> CandidateRules for B {}

/// Upsert of a node's row, the same SQL on both backends; a missing node violates the
/// foreign key and inserts nothing (checked first, so that the error is ours).
pub(crate) const UPSERT: &str =
    "INSERT INTO node_candidates (node_id, candidates, observed, reported_ms)
    VALUES ($1, $2, $3, $4)
    ON CONFLICT (node_id) DO UPDATE SET candidates = excluded.candidates,
        observed = excluded.observed, reported_ms = excluded.reported_ms";

/// Every row, the same SQL on both backends.
pub(crate) const ALL: &str =
    "SELECT node_id, candidates, observed, reported_ms FROM node_candidates ORDER BY node_id";

impl CandidateSql for Transaction<'_> {
    fn put_candidates(
        &mut self,
        id: &str,
        candidates: &str,
        observed: &str,
        reported_ms: i64,
        what: What<'_>,
    ) -> Result<bool, StoreError> {
        let known: i64 = self
            .query_row("SELECT COUNT(*) FROM nodes WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .ctx(what)?;
        if known == 0 {
            return Ok(false);
        }
        self.execute(UPSERT, params![id, candidates, observed, reported_ms])
            .ctx(what)?;
        Ok(true)
    }

    fn all_candidates(
        &mut self,
        what: What<'_>,
    ) -> Result<Vec<(String, String, String, u64)>, StoreError> {
        let mut stmt = self.prepare(ALL).ctx(what)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .ctx(what)?;
        rows.map(|r| {
            let (id, list, observed, at) = r.ctx(what)?;
            Ok((id, list, observed, u64::try_from(at).unwrap_or(0)))
        })
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::node;
    use super::*;
    use crate::store::Store;

    fn report(list: &[&str], at: u64) -> Candidates {
        Candidates {
            reported: list.iter().map(|c| c.to_string()).collect(),
            observed: "203.0.113.7:51820".into(),
            reported_ms: at,
        }
    }

    /// A report replaces the previous one, survives a reopen of the store, goes with its
    /// node, and one for a node that is not enrolled is refused and stores nothing.
    fn a_report_replaces_the_last_and_goes_with_its_node(store: Store) {
        let (a, _) = node("node-a", 1);
        store.add_node(&a).unwrap();
        store
            .set_candidates("node-a", &report(&["192.0.2.1:51820"], 1))
            .unwrap();
        let second = report(&["198.51.100.4:40001", "192.0.2.1:51820"], 2);
        store.set_candidates("node-a", &second).unwrap();
        assert_eq!(store.candidates().unwrap()["node-a"], second);
        let err = store
            .set_candidates("node-x", &report(&["192.0.2.9:1"], 3))
            .unwrap_err();
        assert!(
            matches!(err, StoreError::NoSuchNode(ref id) if id == "node-x"),
            "{err}"
        );
        assert!(!store.candidates().unwrap().contains_key("node-x"));
        store.remove_node("node-a").unwrap();
        assert!(store.candidates().unwrap().is_empty());
    }

    super::super::testutil::on_both_backends!(a_report_replaces_the_last_and_goes_with_its_node,);
}
