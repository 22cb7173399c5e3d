//! The node daemons' log lines the demo shows: their gating events (`MEMBERSHIP=…`,
//! `APPLIED …`, `CUTOFF …`, read by [`meshtun_testbed::gatelog`], the parser the e2e tests
//! use) and their warnings and errors. The `MEMBERSHIP=` and `APPLIED` lines of one epoch,
//! from every node, are gathered into one line once they stop coming.

use std::collections::{BTreeMap, BTreeSet};

use meshtun_testbed::gatelog::{self, GateEvent};

pub use gatelog::notable as notable_log;

/// What one node applied in one epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeApplied {
    /// Its membership, if it logged it.
    pub allowed: Option<bool>,
    /// The peers it holds keys for.
    pub peers: Vec<String>,
}

/// The nodes' membership and key events, gathered per epoch.
#[derive(Debug)]
pub struct AppliedEpochs {
    first: u64,
    pending: BTreeMap<u64, BTreeMap<String, NodeApplied>>,
    touched: BTreeSet<u64>,
}

impl Default for AppliedEpochs {
    /// Gathers nothing until [`AppliedEpochs::start_at`].
    fn default() -> Self {
        Self {
            first: u64::MAX,
            pending: BTreeMap::new(),
            touched: BTreeSet::new(),
        }
    }
}

impl AppliedEpochs {
    /// Gathers the events of epoch `first` and later; earlier ones (the controller's first
    /// epoch, decided before any score) are dropped.
    pub fn start_at(&mut self, first: u64) {
        self.first = first;
    }

    /// Records `node`'s notable line `text`; returns it back if it is not a membership or
    /// key event.
    pub fn record(&mut self, node: &str, text: &str) -> Option<String> {
        match gatelog::parse_line(text) {
            Some(GateEvent::Membership {
                state,
                epoch: Some(epoch),
                ..
            }) if state == "ALLOWED" || state == "DENIED" => {
                if let Some(entry) = self.entry(epoch, node) {
                    entry.allowed = Some(state == "ALLOWED");
                }
                None
            }
            Some(GateEvent::Applied {
                epoch: Some(epoch),
                peer,
            }) if !peer.is_empty() => {
                if let Some(entry) = self.entry(epoch, node) {
                    entry.peers.push(peer);
                }
                None
            }
            _ => Some(text.to_owned()),
        }
    }

    /// What `node` applied in `epoch`, marked as just logged; `None` before the first epoch.
    fn entry(&mut self, epoch: u64, node: &str) -> Option<&mut NodeApplied> {
        if epoch < self.first {
            return None;
        }
        self.touched.insert(epoch);
        Some(
            self.pending
                .entry(epoch)
                .or_default()
                .entry(node.to_owned())
                .or_default(),
        )
    }

    /// The epochs that got no event since the previous call, with what each node applied;
    /// they are forgotten.
    pub fn settled(&mut self) -> Vec<(u64, BTreeMap<String, NodeApplied>)> {
        let quiet: Vec<u64> = self
            .pending
            .keys()
            .filter(|e| !self.touched.contains(e))
            .copied()
            .collect();
        self.touched.clear();
        quiet
            .into_iter()
            .filter_map(|e| self.pending.remove(&e).map(|nodes| (e, nodes)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_is_reported_once_its_events_stop_coming() {
        let mut epochs = AppliedEpochs::default();
        epochs.start_at(8);
        assert_eq!(
            epochs.record("node-a", "MEMBERSHIP=ALLOWED epoch=8 peers=1"),
            None
        );
        assert_eq!(
            epochs.record("node-a", "APPLIED epoch=8 peer=node-b psk=****"),
            None
        );
        assert!(
            epochs.settled().is_empty(),
            "epoch 8 was still being logged"
        );
        epochs.record("node-c", "MEMBERSHIP=DENIED epoch=8 reason=\"low\"");
        assert!(epochs.settled().is_empty());
        let settled = epochs.settled();
        assert_eq!(settled.len(), 1);
        let (epoch, nodes) = &settled[0];
        assert_eq!(*epoch, 8);
        assert_eq!(
            nodes["node-a"],
            NodeApplied {
                allowed: Some(true),
                peers: vec!["node-b".into()]
            }
        );
        assert_eq!(nodes["node-c"].allowed, Some(false));
        assert!(epochs.settled().is_empty(), "reported once");
        let cutoff = "CUTOFF peer=node-c epoch=9 decision_to_cutoff_ms=3";
        assert_eq!(epochs.record("node-a", cutoff), Some(cutoff.into()));
    }

    #[test]
    fn epochs_before_the_first_shown_are_dropped_and_odd_lines_kept() {
        let mut epochs = AppliedEpochs::default();
        assert_eq!(
            epochs.record("node-a", "MEMBERSHIP=DENIED epoch=1 reason=x"),
            None
        );
        epochs.start_at(2);
        assert_eq!(epochs.record("node-a", "APPLIED epoch=1 peer=node-b"), None);
        assert!(epochs.settled().is_empty());
        for other in [
            "MEMBERSHIP=LOST since_ms=1",
            "MEMBERSHIP=ALLOWED epoch=x",
            "APPLIED epoch=8",
        ] {
            assert_eq!(epochs.record("node-a", other), Some(other.into()));
        }
    }
}
