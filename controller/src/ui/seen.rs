//! What the dashboard shows that only the bundle long-poll sees: the epoch each node says it
//! holds (its `after`), the newest epoch served to it, and the time from a denying epoch's
//! decision to the moment each node was served that epoch's bundle or cut-off notice.
//!
//! The controller does not see when a node applies a cut-off; the page says so and shows
//! this, the part it measures. Entries are only made for authenticated requests of
//! enrolled nodes, and their number is capped besides ([`MAX_NODES`]).

use std::collections::HashMap;

use meshtun_proto::EpochId;
use parking_lot::Mutex;
use serde::Serialize;

/// Nodes tracked at most (enrolled nodes only; beyond this, new nodes are not tracked).
pub const MAX_NODES: usize = 100_000;

/// Upper bounds of the latency histogram's buckets, milliseconds (one more bucket above the
/// last).
pub const BUCKETS_MS: [u64; 10] = [10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000];

/// What is served to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServedKind {
    /// A bundle (keys) of the epoch.
    Bundle,
    /// A cut-off notice of the epoch.
    CutoffNotice,
}

/// One node's bundle requests, as seen by this instance.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeSeen {
    /// The epoch the node said it holds at its last bundle request (`after`).
    pub holds_epoch: Option<EpochId>,
    /// When that request came, Unix milliseconds.
    pub asked_ms: Option<u64>,
    /// The newest epoch whose bundle (keys) was served to it.
    pub bundle_epoch: Option<EpochId>,
    /// When, Unix milliseconds.
    pub bundle_ms: Option<u64>,
    /// The newest epoch whose cut-off notice was served to it.
    pub notice_epoch: Option<EpochId>,
    /// When, Unix milliseconds.
    pub notice_ms: Option<u64>,
}

impl NodeSeen {
    /// The newest epoch served to it, bundle or notice.
    fn served_epoch(&self) -> Option<EpochId> {
        self.bundle_epoch.max(self.notice_epoch)
    }
}

/// Latencies, by bucket of [`BUCKETS_MS`] (the last count is above the last bound).
#[derive(Debug, Clone, Serialize)]
pub struct Latencies {
    /// Bucket upper bounds, milliseconds.
    pub bounds_ms: Vec<u64>,
    /// Samples per bucket (`bounds_ms.len() + 1` counts).
    pub counts: Vec<u64>,
    /// The largest sample, milliseconds.
    pub max_ms: u64,
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            bounds_ms: BUCKETS_MS.to_vec(),
            counts: vec![0; BUCKETS_MS.len() + 1],
            max_ms: 0,
        }
    }
}

impl Latencies {
    pub(crate) fn add(&mut self, ms: u64) {
        let i = BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(BUCKETS_MS.len());
        if let Some(c) = self.counts.get_mut(i) {
            *c = c.saturating_add(1);
        }
        self.max_ms = self.max_ms.max(ms);
    }
}

/// The tracker; cheap to update from the request path.
#[derive(Debug, Default)]
pub struct Seen {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    nodes: HashMap<String, NodeSeen>,
    latencies: Latencies,
}

/// A denying epoch: its id and when it was decided.
#[derive(Debug, Clone, Copy)]
pub struct Denying {
    /// The epoch.
    pub epoch: EpochId,
    /// Its decision time, Unix milliseconds.
    pub decided_ms: u64,
}

impl Seen {
    /// Node `node` asked for a bundle newer than `after` at `now_ms`.
    pub fn asked(&self, node: &str, after: Option<EpochId>, now_ms: u64) {
        let mut inner = self.inner.lock();
        if let Some(seen) = entry(&mut inner.nodes, node) {
            seen.holds_epoch = after;
            seen.asked_ms = Some(now_ms);
        }
    }

    /// `kind` of `epoch` was served to `node` at `now_ms`; `denying` is set when that epoch
    /// denied a node allowed before. The first serving of a denying epoch (or a newer one)
    /// to each node adds a latency sample.
    pub fn served(
        &self,
        node: &str,
        kind: ServedKind,
        epoch: EpochId,
        denying: Option<Denying>,
        now_ms: u64,
    ) {
        let mut inner = self.inner.lock();
        let Some(seen) = entry(&mut inner.nodes, node) else {
            return;
        };
        let before = seen.served_epoch();
        let (epoch_slot, ms_slot) = match kind {
            ServedKind::Bundle => (&mut seen.bundle_epoch, &mut seen.bundle_ms),
            ServedKind::CutoffNotice => (&mut seen.notice_epoch, &mut seen.notice_ms),
        };
        if epoch_slot.is_none_or(|e| epoch >= e) {
            *epoch_slot = Some(epoch);
            *ms_slot = Some(now_ms);
        }
        if let Some(d) = denying {
            if before.is_none_or(|b| b < d.epoch) && epoch >= d.epoch {
                inner.latencies.add(now_ms.saturating_sub(d.decided_ms));
            }
        }
    }

    /// A copy of every node's entry and of the histogram.
    pub fn snapshot(&self) -> (HashMap<String, NodeSeen>, Latencies) {
        let inner = self.inner.lock();
        (inner.nodes.clone(), inner.latencies.clone())
    }
}

fn entry<'a>(nodes: &'a mut HashMap<String, NodeSeen>, node: &str) -> Option<&'a mut NodeSeen> {
    if !nodes.contains_key(node) && nodes.len() >= MAX_NODES {
        return None;
    }
    Some(nodes.entry(node.to_owned()).or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_denying_epoch_counts_once_per_node() {
        let seen = Seen::default();
        let d = Denying {
            epoch: 7,
            decided_ms: 1_000,
        };
        seen.served("a", ServedKind::Bundle, 6, None, 500);
        seen.served("a", ServedKind::CutoffNotice, 7, Some(d), 1_040);
        // The bundle of the same epoch later: no second sample.
        seen.served("a", ServedKind::Bundle, 7, Some(d), 1_900);
        seen.served("b", ServedKind::Bundle, 7, Some(d), 3_000);
        let (nodes, lat) = seen.snapshot();
        assert_eq!(lat.counts.iter().sum::<u64>(), 2);
        assert_eq!(lat.counts[2], 1, "40 ms is in the 25..=50 bucket: {lat:?}");
        assert_eq!(
            lat.counts[7], 1,
            "2000 ms is in the 1000..=2500 bucket: {lat:?}"
        );
        assert_eq!(lat.max_ms, 2_000);
        let a = &nodes["a"];
        assert_eq!(a.notice_epoch, Some(7));
        assert_eq!(a.notice_ms, Some(1_040));
        assert_eq!(a.bundle_epoch, Some(7));
        assert_eq!(a.bundle_ms, Some(1_900));
    }

    #[test]
    fn an_older_epoch_served_later_does_not_go_back() {
        let seen = Seen::default();
        seen.served("a", ServedKind::Bundle, 9, None, 10);
        seen.served("a", ServedKind::Bundle, 8, None, 20);
        seen.asked("a", Some(9), 30);
        let (nodes, _) = seen.snapshot();
        assert_eq!(nodes["a"].bundle_epoch, Some(9));
        assert_eq!(nodes["a"].bundle_ms, Some(10));
        assert_eq!(nodes["a"].holds_epoch, Some(9));
        assert_eq!(nodes["a"].asked_ms, Some(30));
    }

    #[test]
    fn samples_above_the_last_bound_land_in_the_overflow_bucket() {
        let mut lat = Latencies::default();
        lat.add(60_000);
        lat.add(0);
        assert_eq!(lat.counts[BUCKETS_MS.len()], 1);
        assert_eq!(lat.counts[0], 1);
    }
}
