//! The node daemons' log lines the demo shows: their gating events (`MEMBERSHIP=…`,
//! `APPLIED …`, `CUTOFF …`) and their warnings and errors. The `MEMBERSHIP=` and `APPLIED`
//! lines of one epoch, from every node, are gathered into one line once they stop coming.

use std::collections::{BTreeMap, BTreeSet};

/// The part of a daemon's log line worth showing, if any: from the gating event's keyword
/// on, or from the level of a warning or an error.
pub fn notable_log(line: &str) -> Option<&str> {
    let marker = ["MEMBERSHIP=", "APPLIED ", "CUTOFF "]
        .iter()
        .filter_map(|m| line.find(m))
        .min();
    if let Some(start) = marker {
        return line.get(start..);
    }
    // Plain-text tracing lines: "<timestamp>  WARN target: message".
    let level = line
        .split_whitespace()
        .nth(1)
        .filter(|l| matches!(*l, "WARN" | "ERROR"))?;
    line.find(level).and_then(|start| line.get(start..))
}

/// A notable log line, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateEvent {
    /// `MEMBERSHIP=ALLOWED epoch=E …` or `MEMBERSHIP=DENIED epoch=E …`.
    Membership {
        /// The epoch.
        epoch: u64,
        /// Allowed or denied.
        allowed: bool,
    },
    /// `APPLIED epoch=E peer=NODE …`: the node holds a key for the peer in that epoch.
    Applied {
        /// The epoch.
        epoch: u64,
        /// The peer.
        peer: String,
    },
    /// Anything else, shown as it is.
    Other(String),
}

/// The value of `key=` among the space-separated fields of `text`.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.split_whitespace()
        .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
}

impl GateEvent {
    /// Understands a line returned by [`notable_log`].
    pub fn parse(text: &str) -> Self {
        let epoch = field(text, "epoch").and_then(|e| e.parse().ok());
        let membership = text
            .strip_prefix("MEMBERSHIP=")
            .and_then(|rest| rest.split_whitespace().next());
        match (membership, epoch) {
            (Some("ALLOWED"), Some(epoch)) => {
                return GateEvent::Membership {
                    epoch,
                    allowed: true,
                }
            }
            (Some("DENIED"), Some(epoch)) => {
                return GateEvent::Membership {
                    epoch,
                    allowed: false,
                }
            }
            _ => {}
        }
        if let (true, Some(epoch), Some(peer)) =
            (text.starts_with("APPLIED "), epoch, field(text, "peer"))
        {
            return GateEvent::Applied {
                epoch,
                peer: peer.to_owned(),
            };
        }
        GateEvent::Other(text.to_owned())
    }
}

/// What one node applied in one epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeApplied {
    /// Its membership, if it logged it.
    pub allowed: Option<bool>,
    /// The peers it holds keys for.
    pub peers: Vec<String>,
}

/// The nodes' membership and key events, gathered per epoch.
#[derive(Debug, Default)]
pub struct AppliedEpochs {
    pending: BTreeMap<u64, BTreeMap<String, NodeApplied>>,
    touched: BTreeSet<u64>,
}

impl AppliedEpochs {
    /// Records `node`'s event; returns it back if it is not a membership or key event.
    pub fn record(&mut self, node: &str, event: GateEvent) -> Option<String> {
        match event {
            GateEvent::Membership { epoch, allowed } => {
                self.entry(epoch, node).allowed = Some(allowed);
            }
            GateEvent::Applied { epoch, peer } => self.entry(epoch, node).peers.push(peer),
            GateEvent::Other(text) => return Some(text),
        }
        None
    }

    /// What `node` applied in `epoch`, marked as just logged.
    fn entry(&mut self, epoch: u64, node: &str) -> &mut NodeApplied {
        self.touched.insert(epoch);
        self.pending
            .entry(epoch)
            .or_default()
            .entry(node.to_owned())
            .or_default()
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
    fn notable_lines_are_the_gating_events_and_problems() {
        let line =
            "2026-11-21T10:00:00.123456Z  INFO meshtun::gate: MEMBERSHIP=ALLOWED epoch=3 peers=1";
        assert_eq!(
            notable_log(line),
            Some("MEMBERSHIP=ALLOWED epoch=3 peers=1")
        );
        let line = "2026-11-21T10:00:00Z  INFO meshtun::gate: CUTOFF peer=node-c epoch=4 decision_to_cutoff_ms=3";
        assert_eq!(
            notable_log(line),
            Some("CUTOFF peer=node-c epoch=4 decision_to_cutoff_ms=3")
        );
        let line = "2026-11-21T10:00:00Z  WARN meshtun::gate: cannot reach the controller";
        assert_eq!(
            notable_log(line),
            Some("WARN meshtun::gate: cannot reach the controller")
        );
        assert_eq!(
            notable_log("2026-11-21T10:00:00Z  INFO meshtun: interface is up"),
            None
        );
        assert_eq!(notable_log(""), None);
    }

    #[test]
    fn events_are_understood_and_the_rest_is_kept() {
        assert_eq!(
            GateEvent::parse("MEMBERSHIP=ALLOWED epoch=3 peers=1"),
            GateEvent::Membership {
                epoch: 3,
                allowed: true
            }
        );
        assert_eq!(
            GateEvent::parse("MEMBERSHIP=DENIED epoch=12 reason=\"overall score 0.40 is below\""),
            GateEvent::Membership {
                epoch: 12,
                allowed: false
            }
        );
        assert_eq!(
            GateEvent::parse("APPLIED epoch=8 peer=node-c psk=****"),
            GateEvent::Applied {
                epoch: 8,
                peer: "node-c".into()
            }
        );
        for other in [
            "MEMBERSHIP=LOST since_ms=1",
            "MEMBERSHIP=ALLOWED epoch=x",
            "APPLIED epoch=8",
            "CUTOFF peer=node-c epoch=4 decision_to_cutoff_ms=3",
        ] {
            assert_eq!(GateEvent::parse(other), GateEvent::Other(other.into()));
        }
    }

    #[test]
    fn an_epoch_is_reported_once_its_events_stop_coming() {
        let mut epochs = AppliedEpochs::default();
        let event = |text: &str| GateEvent::parse(text);
        assert_eq!(
            epochs.record("node-a", event("MEMBERSHIP=ALLOWED epoch=8 peers=1")),
            None
        );
        assert_eq!(
            epochs.record("node-a", event("APPLIED epoch=8 peer=node-b psk=****")),
            None
        );
        assert!(
            epochs.settled().is_empty(),
            "epoch 8 was still being logged"
        );
        epochs.record("node-c", event("MEMBERSHIP=DENIED epoch=8 reason=\"low\""));
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
        assert_eq!(
            epochs.record(
                "node-a",
                event("CUTOFF peer=node-c epoch=9 decision_to_cutoff_ms=3")
            ),
            Some("CUTOFF peer=node-c epoch=9 decision_to_cutoff_ms=3".into())
        );
    }
}
