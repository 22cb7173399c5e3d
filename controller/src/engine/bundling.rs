//! Serving bundles: each node's signed bundle of an announced epoch, built on first use or
//! ahead of time in parallel, cached per epoch, and the long-poll that waits for a newer one.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use std::time::Duration;

use meshtun_proto::EpochId;

use super::{Engine, EpochView};
use crate::bundles::{self, BundleJson, BundleSource};
use crate::membership::{forwards, peers_of, routed_via};
use crate::model::NodeRecord;
use crate::store::Candidates;

impl Engine {
    /// The signed bundle (JSON) for `node` newer than `after`, of an announced epoch, built on
    /// first use.
    pub fn bundle(&self, node: &str, after: Option<EpochId>) -> Option<(EpochId, BundleJson)> {
        let epoch = self.epoch_for(after, true)?;
        let id = epoch.record.id;
        if let Some(json) = self.cache.get(id, node) {
            return Some((id, json));
        }
        let state = self.state.read();
        let now = self.clock.now_ms();
        let json = self.build_bundle(
            &epoch,
            &epoch.allowed(),
            (&state.nodes, &state.candidates),
            node,
            now,
        )?;
        drop(state);
        Some((id, self.cache.put(id, node, json)))
    }

    /// Builds (without caching) the bundle of `node` in `epoch`, whose allowed nodes are
    /// `allowed`, issued at `now_ms`; `None` if `node` is not enrolled.
    fn build_bundle(
        &self,
        epoch: &EpochView,
        allowed: &BTreeSet<&str>,
        (nodes, candidates): (&BTreeMap<String, NodeRecord>, &HashMap<String, Candidates>),
        node: &str,
        now_ms: u64,
    ) -> Option<BundleJson> {
        let recipient = nodes.get(node)?;
        let peer_ids = peers_of(node, allowed, &self.settings.policy.topology);
        let peers: Vec<&NodeRecord> = peer_ids.iter().filter_map(|p| nodes.get(*p)).collect();
        let topology = &self.settings.policy.topology;
        let via = routed_via(node, allowed, topology, |id| {
            bundles::address_block(nodes.get(id))
        });
        let routed: Vec<Vec<&NodeRecord>> = peers
            .iter()
            .map(|peer| {
                via.iter()
                    .find(|(hub, _)| *hub == peer.id)
                    .map_or_else(Vec::new, |(_, spokes)| {
                        spokes.iter().filter_map(|s| nodes.get(*s)).collect()
                    })
            })
            .collect();
        let source = BundleSource {
            epoch: &epoch.record,
            node: recipient,
            decision: epoch.decisions.get(node),
            peers: &peers,
            routed: &routed,
            forward: forwards(node, allowed, topology),
            candidates,
            relay: self.settings.relay.as_ref(),
        };
        let signed = bundles::build(&source, self.keys.signing(), now_ms);
        let mut json = Vec::with_capacity(signed.payload.len() + signed.signature.len() + 32);
        // Two strings in a struct always serialize.
        serde_json::to_writer(&mut json, &signed).ok()?;
        Some(BundleJson::from(json))
    }

    /// Builds and caches the bundle of every enrolled node for every live epoch (those not
    /// cached yet), spread over all cores, and drops cached bundles of epochs no node can be
    /// given any more. Returns how many bundles were built.
    ///
    /// [`Engine::run`] calls it after each publication, so that nodes long-polling for the
    /// new epoch are served from the cache instead of each building its own bundle.
    pub fn prebuild_bundles(&self) -> usize {
        // Read here: the clock follows tokio's, which the building threads do not see.
        let now = self.clock.now_ms();
        let live = self.live_epochs(now, false);
        if let Some(oldest) = live.iter().map(|e| e.record.id).min() {
            self.cache.retain_from(oldest);
        }
        let (nodes, candidates) = {
            let state = self.state.read();
            (state.nodes.clone(), state.candidates.clone())
        };
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let mut built = 0;
        for epoch in &live {
            let id = epoch.record.id;
            let allowed = epoch.allowed();
            let missing: Vec<&str> = nodes
                .keys()
                .map(String::as_str)
                .filter(|n| !self.cache.contains(id, n))
                .collect();
            let chunk = missing.len().div_ceil(threads).max(1);
            std::thread::scope(|scope| {
                for part in missing.chunks(chunk) {
                    let (allowed, sources) = (&allowed, (&nodes, &*candidates));
                    scope.spawn(move || {
                        for node in part {
                            let built = self.build_bundle(epoch, allowed, sources, node, now);
                            if let Some(json) = built {
                                self.cache.put(id, node, json);
                            }
                        }
                    });
                }
            });
            built += missing.len();
        }
        built
    }

    /// Number of signed bundles held in memory, across the epochs kept.
    pub fn cached_bundles(&self) -> usize {
        self.cache.len()
    }

    /// Waits up to `max_wait` for a bundle newer than `after`.
    pub async fn wait_bundle(
        &self,
        node: &str,
        after: Option<EpochId>,
        max_wait: Duration,
    ) -> Option<(EpochId, BundleJson)> {
        match self.wait_served(node, after, None, max_wait).await? {
            super::cutoff::Served::Bundle(epoch, json) => Some((epoch, json)),
            // Never served without `seen`.
            super::cutoff::Served::CutOff(..) => None,
        }
    }
}
