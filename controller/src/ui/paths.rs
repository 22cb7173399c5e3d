//! What nodes report (`PUT /v1/paths/{node}`): each node's counts of its gated peers by
//! path (direct, relayed, trying, none) and its newest cut-offs, with the time they came.
//! Kept in memory only, by the instance that received them; one entry per node, made only
//! for authenticated requests of enrolled nodes and capped besides
//! ([`super::seen::MAX_NODES`]).

use std::collections::HashMap;

use meshtun_proto::paths::PathReport;
use meshtun_proto::EpochId;
use parking_lot::Mutex;
use serde::Serialize;

use super::seen::{Latencies, MAX_NODES};

/// Cut-offs the dashboard lists at most (the newest epochs first).
pub const MAX_LISTED_CUTOFFS: usize = 2_000;

/// A node's last report, as the dashboard shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportedPaths {
    /// The counts (the cut-offs are shown apart, by [`Paths::cutoffs`]).
    #[serde(flatten)]
    pub report: PathReport,
    /// When the report came, Unix milliseconds.
    pub received_ms: u64,
}

/// One cut-off a node reported: `by` removed `peer` `ms` after `epoch` was decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportedCutoff {
    /// The epoch that cut the peer off.
    pub epoch: EpochId,
    /// The peer cut off.
    pub peer: String,
    /// The node that cut it off, and reported it.
    pub by: String,
    /// From the decision to the cut-off, milliseconds, by the reporting node's clock.
    pub ms: u64,
}

/// The nodes' reported cut-offs: a histogram of all, and the newest listed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeCutoffs {
    /// Every reported cut-off, by bucket.
    pub latency: Latencies,
    /// The cut-offs of the newest epochs, newest first (at most [`MAX_LISTED_CUTOFFS`]).
    pub listed: Vec<ReportedCutoff>,
}

/// The reports, by node.
#[derive(Debug, Default)]
pub struct Paths {
    nodes: Mutex<HashMap<String, ReportedPaths>>,
}

impl Paths {
    /// Keeps `report` as `node`'s, received at `now_ms`; false (and nothing kept) when the
    /// table is full and `node` has no entry yet.
    pub fn report(&self, node: &str, report: PathReport, now_ms: u64) -> bool {
        let mut nodes = self.nodes.lock();
        if !nodes.contains_key(node) && nodes.len() >= MAX_NODES {
            return false;
        }
        nodes.insert(
            node.to_owned(),
            ReportedPaths {
                report,
                received_ms: now_ms,
            },
        );
        true
    }

    /// A copy of every node's last report, without the cut-offs.
    pub fn snapshot(&self) -> HashMap<String, ReportedPaths> {
        let nodes = self.nodes.lock();
        let counts = |r: &ReportedPaths| ReportedPaths {
            report: PathReport {
                cutoffs: Vec::new(),
                ..r.report.clone()
            },
            received_ms: r.received_ms,
        };
        nodes
            .iter()
            .map(|(id, r)| (id.clone(), counts(r)))
            .collect()
    }

    /// The cut-offs in every node's last report.
    pub fn cutoffs(&self) -> NodeCutoffs {
        let nodes = self.nodes.lock();
        let mut out = NodeCutoffs::default();
        for (by, reported) in nodes.iter() {
            for c in &reported.report.cutoffs {
                out.latency.add(c.ms);
                out.listed.push(ReportedCutoff {
                    epoch: c.epoch,
                    peer: c.peer.clone(),
                    by: by.clone(),
                    ms: c.ms,
                });
            }
        }
        drop(nodes);
        out.listed
            .sort_unstable_by(|a, b| (b.epoch, &a.peer, &a.by).cmp(&(a.epoch, &b.peer, &b.by)));
        out.listed.truncate(MAX_LISTED_CUTOFFS);
        out
    }

    /// Forgets the reports of nodes for which `enrolled` is false (removed since).
    pub fn retain(&self, enrolled: impl Fn(&str) -> bool) {
        self.nodes.lock().retain(|node, _| enrolled(node));
    }
}

#[cfg(test)]
mod tests {
    use meshtun_proto::paths::{CutoffSample, MAX_CUTOFFS};

    use super::*;

    fn cutoff(epoch: EpochId, peer: &str, ms: u64) -> CutoffSample {
        CutoffSample {
            epoch,
            peer: peer.into(),
            ms,
        }
    }

    #[test]
    fn the_newest_report_replaces_the_last_and_the_table_is_capped() {
        let paths = Paths::default();
        let first = PathReport {
            direct: 1,
            ..PathReport::default()
        };
        let second = PathReport {
            relayed: 2,
            ..PathReport::default()
        };
        assert!(paths.report("a", first.clone(), 10));
        assert!(paths.report("a", second, 20));
        let got = paths.snapshot()["a"].clone();
        assert_eq!(
            (got.report.direct, got.report.relayed, got.received_ms),
            (0, 2, 20)
        );
        {
            let mut nodes = paths.nodes.lock();
            for i in nodes.len()..MAX_NODES {
                nodes.insert(format!("n{i}"), got.clone());
            }
        }
        assert!(
            !paths.report("newcomer", first.clone(), 30),
            "a full table takes no new node"
        );
        assert!(
            paths.report("a", first.clone(), 40),
            "a known node still updates"
        );
        assert_eq!(paths.snapshot().len(), MAX_NODES);
        paths.retain(|node| node == "a");
        assert_eq!(paths.snapshot().len(), 1, "removed nodes are forgotten");
        assert!(paths.report("newcomer", first, 50), "room again");
    }

    /// A node's report replaces its cut-offs (sent again, they are not counted twice), the
    /// list names who reported each, newest epoch first, and the counts leave them out.
    #[test]
    fn cut_offs_are_counted_once_per_report_and_listed_newest_first() {
        let paths = Paths::default();
        let with = |cutoffs| PathReport {
            direct: 1,
            cutoffs,
            ..PathReport::default()
        };
        assert!(paths.report("a", with(vec![cutoff(3, "d", 12)]), 10));
        assert!(paths.report("a", with(vec![cutoff(3, "d", 12), cutoff(5, "c", 40)]), 20));
        assert!(paths.report("b", with(vec![cutoff(3, "d", 700)]), 20));
        let got = paths.cutoffs();
        assert_eq!(got.latency.counts.iter().sum::<u64>(), 3);
        assert_eq!(got.latency.max_ms, 700);
        let listed: Vec<_> = got
            .listed
            .iter()
            .map(|c| (c.epoch, c.peer.as_str(), c.by.as_str(), c.ms))
            .collect();
        assert_eq!(
            listed,
            [(5, "c", "a", 40), (3, "d", "a", 12), (3, "d", "b", 700)]
        );
        assert!(paths.snapshot()["a"].report.cutoffs.is_empty());
        let json = serde_json::to_value(&paths.snapshot()["a"]).unwrap();
        assert_eq!(json["direct"], 1);
        assert!(json.get("cutoffs").is_none(), "{json}");
    }

    /// However many nodes report their most cut-offs, the list stays bounded.
    #[test]
    fn the_listed_cut_offs_are_bounded() {
        let paths = Paths::default();
        for n in 0..(MAX_LISTED_CUTOFFS / MAX_CUTOFFS + 10) {
            let cutoffs = (0..MAX_CUTOFFS as u64).map(|e| cutoff(e, "x", e)).collect();
            let report = PathReport {
                cutoffs,
                ..PathReport::default()
            };
            assert!(paths.report(&format!("n{n}"), report, 1));
        }
        let got = paths.cutoffs();
        assert_eq!(got.listed.len(), MAX_LISTED_CUTOFFS);
        assert!(got.latency.counts.iter().sum::<u64>() > MAX_LISTED_CUTOFFS as u64);
        assert_eq!(got.listed[0].epoch, MAX_CUTOFFS as u64 - 1);
    }
}
