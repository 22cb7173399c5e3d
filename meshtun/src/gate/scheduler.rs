//! The scheduler task: it runs a [`GateState`], takes verified bundles from the fetcher,
//! keeps the newest in the cache file, and at each activation time (or when the loss rule
//! applies) sends the [`GateUpdate`] to enforce to the daemon. Nothing on that path waits for
//! the network: peer names are looked up in the background ([`super::resolve`]) and the
//! update is sent again once they resolve.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use meshtun_proto::bundle::{Membership, SignedBundle};
use tokio::sync::mpsc;

use super::bundle::{GatedPeer, VerifiedBundle};
use super::cache::save_cache;
use super::clock::ControllerClock;
pub(super) use super::clock::LocalClock;
use super::cutoff::{Fetched, VerifiedCutOff};
use super::resolve::{spawn_lookups, Endpoints, Looked, Lookup};
use super::runner::{note_refused, GateUpdate, GatedPeerConfig};
use super::state::{Enforced, GateState};
use super::status::{MembershipState, SharedGateStatus};
use crate::wgcfg::PeerSettings;
use meshtun_proto::report::Chain;

/// Turns bundles and time into [`GateUpdate`]s.
pub(super) struct Scheduler {
    state: GateState,
    cache_file: PathBuf,
    status: SharedGateStatus,
    updates: mpsc::Sender<GateUpdate>,
    /// Peer endpoints, resolved in the background.
    endpoints: Endpoints,
    lookup: Lookup,
    looked_tx: mpsc::Sender<Looked>,
    looked_rx: mpsc::Receiver<Looked>,
    /// The last bundle accepted, to write to the cache once what is due is enforced.
    unsaved: Option<SignedBundle>,
    /// The controller's time, as estimated from the bundles' `issued_ms`.
    clock: ControllerClock,
}

impl Scheduler {
    /// A scheduler over `state`, sending updates to `updates` and resolving peer names with
    /// `lookup`.
    pub(super) fn new(
        state: GateState,
        cache_file: PathBuf,
        status: SharedGateStatus,
        updates: mpsc::Sender<GateUpdate>,
        lookup: Lookup,
        local: LocalClock,
    ) -> Self {
        let (looked_tx, looked_rx) = mpsc::channel(64);
        Self {
            state,
            cache_file,
            status,
            updates,
            endpoints: Endpoints::default(),
            lookup,
            looked_tx,
            looked_rx,
            unsaved: None,
            clock: ControllerClock::new(local),
        }
    }

    /// Runs until the daemon stops listening or the fetcher is gone.
    pub(super) async fn run(mut self, mut received: mpsc::Receiver<Fetched>) {
        self.resolve_endpoints_of_known();
        loop {
            crate::supervise::fault_point("scheduler");
            if self.state.advance(self.clock.now()) && !self.send_update().await {
                return;
            }
            // After the update: a cut-off does not wait for the disk.
            if let Some(signed) = self.unsaved.take() {
                self.save(signed).await;
            }
            let deadline = self.state.next_deadline();
            tokio::select! {
                fetched = received.recv() => match fetched {
                    Some(Fetched::Bundle(bundle)) => self.accept(bundle),
                    Some(Fetched::CutOff(notice)) => {
                        if self.cut_off(notice) && !self.send_update().await {
                            return;
                        }
                    }
                    None => return,
                },
                Some(looked) = self.looked_rx.recv() => {
                    if self.learned(looked) && !self.send_update().await {
                        return;
                    }
                }
                () = sleep_until(deadline, self.clock.now()) => {}
            }
        }
    }

    /// Takes a verified bundle from the fetcher. Its peers' names are looked up in the
    /// background: the loop enforces it when due without waiting for them.
    fn accept(&mut self, mut bundle: VerifiedBundle) {
        let epoch = bundle.epoch;
        let signed = bundle.signed.clone();
        let signer = bundle.signer;
        let endpoints: Vec<String> = bundle
            .peers
            .iter()
            .flat_map(|p| p.candidates.iter().cloned())
            .collect();
        if let Some(offset) = self.clock.observe(bundle.issued_ms) {
            tracing::warn!(
                target: "meshtun::gate",
                offset_ms = offset,
                "this node's clock is {:.1} s {} the controller's: activation times are \
                 corrected by that offset, but fix the clock (NTP): signed requests are \
                 refused beyond the controller's clock_skew",
                offset.unsigned_abs() as f64 / 1000.0,
                if offset < 0 { "ahead of" } else { "behind" }
            );
        }
        let refused = std::mem::take(&mut bundle.refused);
        match self.state.offer(bundle, self.clock.now()) {
            Ok(()) => note_refused(epoch, &refused, &self.status),
            Err(error) => {
                tracing::debug!(target: "meshtun::gate", "bundle ignored: {}", Chain(&error));
                return;
            }
        }
        {
            let mut status = self.status.lock();
            status.next_epoch = self.state.next_epoch();
            if status.controller_key.is_some_and(|k| k != signer) {
                tracing::info!(
                    target: "meshtun::gate",
                    epoch,
                    "bundles are now signed by the controller key {signer} (a pinned key: the \
                     controller key is being rotated)"
                );
            }
            status.controller_key = Some(signer);
        }
        self.resolve(&endpoints);
        self.unsaved = Some(signed);
        tracing::debug!(target: "meshtun::gate", epoch, "bundle accepted");
    }

    /// Takes a verified cut-off notice from the fetcher; true if it changes the membership or
    /// the peers enforced (the update must then be sent at once: nothing waits for an
    /// activation time). A notice naming nobody enforced here changes nothing.
    fn cut_off(&mut self, notice: VerifiedCutOff) -> bool {
        let (epoch, denied) = (notice.epoch, notice.denied.len());
        let before = self.update();
        match self.state.cut_off(notice, self.clock.now()) {
            Ok(()) => {
                tracing::info!(target: "meshtun::gate", epoch, denied, "cut-off notice applied");
                let after = self.update();
                (after.membership, after.peers) != (before.membership, before.peers)
            }
            Err(error) => {
                tracing::debug!(target: "meshtun::gate", "cut-off notice ignored: {}", Chain(&error));
                false
            }
        }
    }

    /// Writes `signed` to the cache file (a failure is logged: the bundle is still used).
    async fn save(&self, signed: SignedBundle) {
        let file = self.cache_file.clone();
        let saved = tokio::task::spawn_blocking(move || save_cache(&file, &signed)).await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(target: "meshtun::gate", "{}", Chain(&error)),
            Err(error) => {
                tracing::warn!(target: "meshtun::gate", "bundle cache writer stopped: {}", Chain(&error))
            }
        }
    }

    /// Starts looking up the endpoints of the bundles known at start (the cached one).
    fn resolve_endpoints_of_known(&mut self) {
        let endpoints: Vec<String> = self
            .state
            .bundles()
            .flat_map(|b| b.peers.iter().flat_map(|p| p.candidates.iter().cloned()))
            .collect();
        self.resolve(&endpoints);
    }

    /// Starts the lookups `endpoints` need, in the background.
    fn resolve(&mut self, endpoints: &[String]) {
        let names = self
            .endpoints
            .to_look_up(endpoints.iter().map(String::as_str), self.clock.local_ms());
        spawn_lookups(names, self.lookup.clone(), self.looked_tx.clone());
    }

    /// Records a lookup's result; true if it gives an enforced peer a new endpoint (the
    /// update must then be sent again).
    fn learned(&mut self, looked: Looked) -> bool {
        let text = looked.0.clone();
        if !self.endpoints.record(looked, self.clock.local_ms()) {
            return false;
        }
        match self.state.enforced() {
            Enforced::Bundle(b) => b.peers.iter().any(|p| p.candidates.contains(&text)),
            _ => false,
        }
    }

    /// The peer's candidates that resolved, in the bundle's order, each once: the first is
    /// its endpoint, the others are probed while it is silent.
    fn resolved(&self, peer: &GatedPeer) -> Vec<SocketAddr> {
        let mut list: Vec<SocketAddr> = Vec::with_capacity(peer.candidates.len());
        for addr in peer.candidates.iter().filter_map(|c| self.endpoints.get(c)) {
            if !list.contains(&addr) {
                list.push(addr);
            }
        }
        list
    }

    /// Sends what is enforced now; false if the daemon is gone.
    async fn send_update(&mut self) -> bool {
        let update = self.update();
        self.status.lock().next_epoch = self.state.next_epoch();
        self.updates.send(update).await.is_ok()
    }

    fn update(&self) -> GateUpdate {
        let (membership, bundle) = match self.state.enforced() {
            Enforced::Nothing => (MembershipState::Pending, None),
            Enforced::Lost(b) => (MembershipState::Lost, Some(b)),
            Enforced::Bundle(b) => match &b.membership {
                Membership::Allowed => (MembershipState::Allowed, Some(b)),
                Membership::Denied { reason } => (
                    MembershipState::Denied {
                        reason: reason.clone(),
                    },
                    Some(b),
                ),
            },
        };
        let peers = match (&membership, bundle) {
            (MembershipState::Allowed, Some(b)) => b
                .peers
                .iter()
                .map(|p| {
                    let mut resolved = self.resolved(p).into_iter();
                    GatedPeerConfig {
                        node_id: p.node_id.clone(),
                        forwards_to: p.forwards_to.clone(),
                        settings: PeerSettings {
                            public_key: p.public_key,
                            preshared_key: Some(p.psk.clone()),
                            endpoint: resolved.next(),
                            allowed_ips: p.allowed_ips.clone(),
                            persistent_keepalive: None,
                            probes: resolved.collect(),
                            forward: b.forward,
                        },
                        endpoint_name: endpoint_name(p),
                    }
                })
                .collect(),
            _ => Vec::new(),
        };
        let forward = membership == MembershipState::Allowed && bundle.is_some_and(|b| b.forward);
        let update = GateUpdate {
            forward,
            epoch: bundle.map(|b| b.epoch),
            activation_ms: bundle.map(|b| b.activation_ms),
            not_after_ms: bundle.map(|b| b.not_after_ms),
            decided_ms: bundle.map_or(0, |b| self.clock.to_local(b.decided_ms)),
            relay: match membership {
                MembershipState::Allowed => bundle.and_then(|b| b.relay.clone()),
                _ => None,
            },
            membership,
            peers,
        };
        match self.state.cutoff() {
            Some(notice) => self.with_cutoff(update, notice),
            None => update,
        }
    }

    /// `update` with what `notice` removes: the peers it names, or every gated peer when it
    /// names this node (then denied, as by a bundle). Nothing is ever added. When it removes
    /// something, the update carries the notice's epoch and decision time (the cut-off
    /// latency is measured from it).
    fn with_cutoff(&self, mut update: GateUpdate, notice: &VerifiedCutOff) -> GateUpdate {
        let before = update.peers.len();
        let me = notice.names_me && update.membership == MembershipState::Allowed;
        if me {
            update.membership = MembershipState::Denied {
                reason: format!(
                    "cut off by the controller's notice for epoch {}",
                    notice.epoch
                ),
            };
            update.peers.clear();
            update.forward = false;
            update.relay = None;
        } else {
            update
                .peers
                .retain(|p| !notice.denied.contains(&p.settings.public_key));
        }
        if me || update.peers.len() < before {
            update.epoch = Some(notice.epoch);
            update.decided_ms = self.clock.to_local(notice.decided_ms);
        }
        update
    }
}

/// The peer's first candidate, if it is a name rather than an address.
fn endpoint_name(peer: &GatedPeer) -> Option<String> {
    let first = peer.candidates.first()?;
    first.parse::<SocketAddr>().is_err().then(|| first.clone())
}

/// Sleeps until `deadline_ms`, given that it is `now_ms` (both controller time), or forever
/// without a deadline.
async fn sleep_until(deadline_ms: Option<u64>, now_ms: u64) {
    match deadline_ms {
        Some(deadline) => {
            let wait = deadline.saturating_sub(now_ms);
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "scheduler_cutoff_tests.rs"]
mod cutoff_tests;
