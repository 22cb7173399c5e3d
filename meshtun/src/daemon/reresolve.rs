//! The daemon's side of [`crate::reresolve`]: every [`CHECK_EVERY`] it reads the device's
//! peers, starts the lookups that are due in the background (the gate's resolver: each
//! bounded in time, at most 16 at once), and hands their results back to the daemon loop,
//! which moves the endpoints that changed ([`Reresolving::endpoint`] in force in
//! `apply_peers`). Nothing here waits for the network on the daemon's loop.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use meshtun_proto::PublicKey;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::gate::resolve::{spawn_lookups, system_lookup, Looked, Lookup};
use crate::gate::GatedPeerConfig;
use crate::reresolve::{Reresolver, Watched};
use crate::wgcfg::DeviceStatus;

/// How often the peers' counters are read.
pub(super) const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Lookup results waiting for the daemon loop at most.
const RESULTS: usize = 64;

/// Re-resolution of the daemon's host-name endpoints.
pub(super) struct Reresolving {
    core: Reresolver,
    lookup: Lookup,
    results_tx: mpsc::Sender<Looked>,
    results: mpsc::Receiver<Looked>,
    /// Static peers whose endpoint a live edit set: the edit wins over the name.
    pinned: HashSet<PublicKey>,
}

impl Reresolving {
    /// Nothing looked up yet, with the system resolver.
    pub fn new() -> Self {
        let (results_tx, results) = mpsc::channel(RESULTS);
        Self {
            core: Reresolver::default(),
            lookup: system_lookup(),
            results_tx,
            results,
            pinned: HashSet::new(),
        }
    }

    /// The host-name endpoints (`host:port`) of the static peers of `config` (unless an
    /// edit pinned them) and of the gated peers `gated`, by peer.
    pub fn names(&self, config: &Config, gated: &[GatedPeerConfig]) -> HashMap<PublicKey, String> {
        let statics = config.peers.iter().filter_map(|p| {
            let endpoint = p.endpoint.as_ref()?;
            let named = endpoint.host.parse::<IpAddr>().is_err();
            (named && !self.pinned.contains(&p.public_key))
                .then(|| (p.public_key, endpoint.to_string()))
        });
        let gated = gated
            .iter()
            .filter_map(|g| Some((g.settings.public_key, g.endpoint_name.clone()?)));
        statics.chain(gated).collect()
    }

    /// Reads the peers' counters in `status` and starts the lookups due.
    pub fn check(&mut self, status: &DeviceStatus, names: &HashMap<PublicKey, String>) {
        let wall = SystemTime::now();
        let watched: Vec<Watched<'_>> = status
            .peers
            .iter()
            .filter_map(|p| {
                Some(Watched {
                    key: p.public_key,
                    name: names.get(&p.public_key)?,
                    handshake_age: p
                        .last_handshake
                        .map(|t| wall.duration_since(t).unwrap_or_default()),
                    tx_bytes: p.tx_bytes,
                    rx_bytes: p.rx_bytes,
                })
            })
            .collect();
        let due = self.core.due(&watched, Instant::now());
        for name in &due {
            tracing::info!(endpoint = %name, "a peer is silent: looking up its endpoint again");
        }
        spawn_lookups(due, self.lookup.clone(), self.results_tx.clone());
    }

    /// The next lookup result.
    pub async fn next(&mut self) -> Looked {
        match self.results.recv().await {
            Some(looked) => looked,
            // Never: `self` holds a sender.
            None => std::future::pending().await,
        }
    }

    /// Records a lookup result; true if the name's peers must move.
    pub fn record(&mut self, (name, address): Looked) -> bool {
        let moved = self.core.record(&name, address, Instant::now());
        if moved {
            if let Some(address) = address {
                tracing::info!(endpoint = %name, %address, "the endpoint's name resolves to a new address: moving the peer");
            }
        }
        moved
    }

    /// The address `name` last resolved to here, if it was looked up again.
    pub fn endpoint(&self, name: &str) -> Option<SocketAddr> {
        self.core.address(name)
    }

    /// A live edit set these static peers' endpoints.
    pub fn pin(&mut self, keys: impl IntoIterator<Item = PublicKey>) {
        self.pinned.extend(keys);
    }

    /// After a reload: every endpoint was resolved afresh and edits are gone.
    pub fn reloaded(&mut self) {
        self.core.forget_addresses();
        self.pinned.clear();
    }
}
