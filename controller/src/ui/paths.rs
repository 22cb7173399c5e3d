//! The paths nodes report (`PUT /v1/paths/{node}`): each node's counts of its gated peers
//! by path (direct, relayed, trying, none), with the time they came. Kept in memory only,
//! by the instance that received them; one entry per node, made only for authenticated
//! requests of enrolled nodes and capped besides ([`super::seen::MAX_NODES`]).

use std::collections::HashMap;

use meshtun_proto::paths::PathReport;
use parking_lot::Mutex;
use serde::Serialize;

use super::seen::MAX_NODES;

/// A node's last report, as the dashboard shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReportedPaths {
    /// Peers reached directly.
    pub direct: u32,
    /// Peers reached through a relay.
    pub relayed: u32,
    /// Peers being tried.
    pub trying: u32,
    /// Peers with no endpoint to try.
    pub none: u32,
    /// When the report came, Unix milliseconds.
    pub received_ms: u64,
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
        let PathReport {
            direct,
            relayed,
            trying,
            none,
        } = report;
        nodes.insert(
            node.to_owned(),
            ReportedPaths {
                direct,
                relayed,
                trying,
                none,
                received_ms: now_ms,
            },
        );
        true
    }

    /// A copy of every node's last report.
    pub fn snapshot(&self) -> HashMap<String, ReportedPaths> {
        self.nodes.lock().clone()
    }

    /// Forgets the reports of nodes for which `enrolled` is false (removed since).
    pub fn retain(&self, enrolled: impl Fn(&str) -> bool) {
        self.nodes.lock().retain(|node, _| enrolled(node));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(paths.report("a", first, 10));
        assert!(paths.report("a", second, 20));
        let got = paths.snapshot()["a"];
        assert_eq!((got.direct, got.relayed, got.received_ms), (0, 2, 20));
        {
            let mut nodes = paths.nodes.lock();
            for i in nodes.len()..MAX_NODES {
                nodes.insert(format!("n{i}"), got);
            }
        }
        assert!(
            !paths.report("newcomer", first, 30),
            "a full table takes no new node"
        );
        assert!(paths.report("a", first, 40), "a known node still updates");
        assert_eq!(paths.snapshot().len(), MAX_NODES);
        paths.retain(|node| node == "a");
        assert_eq!(paths.snapshot().len(), 1, "removed nodes are forgotten");
        assert!(paths.report("newcomer", first, 50), "room again");
    }
}
