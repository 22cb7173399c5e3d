//! Cut-off notices ([`meshtun_proto::cutoff`]): when an epoch is decided that denies nodes
//! allowed in an earlier epoch not ended yet, one signed notice naming them is built at
//! once, O(denied), before any bundle. Until the epoch is announced (its bundles built), a
//! long-poll that says which notice it saw last (`cutoff=E`) and has not seen this one is
//! answered with the notice; nodes remove the named peers and keep polling for the bundle.
//! Any instance builds the notice of an epoch it decides or loads from the store: they all
//! sign with the same key.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use meshtun_proto::cutoff::{CutOff, DeniedNode, SignedCutOff, CUTOFF_FORMAT, MAX_DENIED};
use meshtun_proto::EpochId;

use super::{Engine, EpochView};
use crate::bundles::BundleJson;
use crate::model::{Decision, EpochRecord};

/// What a bundle request is answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    /// The node's signed bundle of an announced epoch.
    Bundle(EpochId, BundleJson),
    /// The signed cut-off notice of a decided epoch whose bundles are not announced yet.
    CutOff(EpochId, BundleJson),
}

impl Engine {
    /// The signed notice (JSON) of the epoch `record` deciding `decisions`, given the epochs
    /// held before it: the nodes allowed in one of those not ended at `now_ms` and not
    /// allowed now, with their keys. `None` if it denies nobody allowed before, or more than
    /// [`MAX_DENIED`] (their bundles carry it).
    pub(super) fn cutoff_notice(
        &self,
        record: &EpochRecord,
        decisions: &BTreeMap<String, Decision>,
        earlier: &[Arc<EpochView>],
        now_ms: u64,
    ) -> Option<BundleJson> {
        let before: BTreeSet<&str> = earlier
            .iter()
            .filter(|e| e.record.id < record.id && e.record.not_after_ms > now_ms)
            .flat_map(|e| e.allowed())
            .collect();
        let state = self.state.read();
        let denied: Vec<DeniedNode> = before
            .into_iter()
            .filter(|id| !decisions.get(*id).is_some_and(|d| d.allowed))
            // A node removed since has no key left here: its peers drop it with the bundle.
            .filter_map(|id| state.nodes.get(id))
            .map(|n| DeniedNode {
                node_id: n.id.clone(),
                public_key: n.wg_public_key,
            })
            .collect();
        drop(state);
        if denied.is_empty() {
            return None;
        }
        if denied.len() > MAX_DENIED {
            tracing::warn!(
                epoch = record.id,
                denied = denied.len(),
                "epoch {} denies {} nodes, more than a cut-off notice names ({MAX_DENIED}): \
                 nodes learn of it from their bundles",
                record.id,
                denied.len()
            );
            return None;
        }
        let notice = CutOff {
            format: CUTOFF_FORMAT,
            epoch: record.id,
            issued_ms: now_ms,
            decided_ms: record.created_ms,
            not_after_ms: record.not_after_ms,
            denied,
        };
        let signed = SignedCutOff::sign(&notice, self.keys.signing());
        serde_json::to_vec(&signed).ok().map(BundleJson::from)
    }

    /// The notice for a node that holds epoch `after` and saw the notices up to epoch
    /// `seen`: that of the newest decided epoch newer than both, not announced yet.
    pub fn cutoff_for(
        &self,
        after: Option<EpochId>,
        seen: EpochId,
    ) -> Option<(EpochId, BundleJson)> {
        let announced = *self.published.borrow();
        let floor = after.unwrap_or(0).max(seen).max(announced);
        let state = self.state.read();
        state
            .epochs
            .iter()
            .rev()
            .take_while(|e| e.record.id > floor)
            .find_map(|e| e.cutoff.clone().map(|json| (e.record.id, json)))
    }

    /// What to answer a node that holds `after`: a notice it has not seen (only when it
    /// says which it saw, `seen`), else its bundle of an announced epoch newer than `after`.
    pub fn serve(
        &self,
        node: &str,
        after: Option<EpochId>,
        seen: Option<EpochId>,
    ) -> Option<Served> {
        if let Some((epoch, json)) = seen.and_then(|s| self.cutoff_for(after, s)) {
            return Some(Served::CutOff(epoch, json));
        }
        self.bundle(node, after)
            .map(|(epoch, json)| Served::Bundle(epoch, json))
    }

    /// Waits up to `max_wait` for a notice or a bundle to serve ([`Engine::serve`]): woken
    /// when an epoch is decided (its notice) and when one is announced (its bundles).
    pub async fn wait_served(
        &self,
        node: &str,
        after: Option<EpochId>,
        seen: Option<EpochId>,
        max_wait: Duration,
    ) -> Option<Served> {
        let deadline = tokio::time::Instant::now() + max_wait;
        let mut published = self.published.subscribe();
        let mut decided = self.decided.subscribe();
        loop {
            published.mark_unchanged();
            decided.mark_unchanged();
            if let Some(found) = self.serve(node, after, seen) {
                return Some(found);
            }
            let changed = async {
                tokio::select! {
                    r = published.changed() => r,
                    r = decided.changed() => r,
                }
            };
            match tokio::time::timeout_at(deadline, changed).await {
                Ok(Ok(())) => continue,
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
#[path = "cutoff_tests.rs"]
mod tests;
