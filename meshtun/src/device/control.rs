//! The device's control state: keys, the peer table and session indices.
//!
//! Every change goes through [`Control`] under the device's control lock, which is never
//! taken on the packet path. After a change the caller publishes a new
//! [`Snapshot`](super::snapshot::Snapshot) and sends whatever datagrams the change produced
//! (keepalives), then the handshake initiations it made due
//! ([`take_pending`](Control::take_pending)).
//!
//! Peers are kept by public key, with the configuration order beside them, and every allowed
//! network knows its owner: applying a configuration of n peers costs O(n) map operations
//! plus the snapshot's O(n log n), whatever changed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use meshtun_proto::{PresharedKey, PrivateKey, PublicKey};
use parking_lot::Mutex;

use super::index::IndexTable;
use super::peer::{PeerState, Slot};
use super::prepare::{Prepared, SlotMaker};
use super::queue::{QueueBudget, QUEUE_BUDGET};
use super::snapshot::{Identity, Peer, Snapshot};
use super::stamps::RemovedStamps;
use super::transport::DatagramBatch;
use super::DeviceError;
use crate::wgcfg::{
    AllowedIpChange, DeviceSettings, DeviceStatus, DeviceUpdate, PeerSettings, PeerStatus,
    PeerUpdate,
};

/// A peer and the endpoint its configuration names (the live one roams).
struct PeerEntry {
    peer: Arc<Peer>,
    configured_endpoint: Option<SocketAddr>,
    /// The device forwards between this peer and the other peers that have it (a hub).
    forward: bool,
}

/// Keys, peers and indices of one device.
pub struct Control {
    private_key: Option<PrivateKey>,
    identity: Option<Arc<Identity>>,
    /// The UDP port the sockets are bound to.
    pub listen_port: u16,
    /// The firewall mark on outgoing datagrams (0: none).
    pub fwmark: u32,
    indices: Arc<Mutex<IndexTable>>,
    /// `Tunn`s built for this change before it took the lock.
    prepared: Prepared,
    /// The budget of every packet queued before a handshake.
    budget: Arc<QueueBudget>,
    /// The peers, by public key.
    peers: HashMap<PublicKey, PeerEntry>,
    /// Their public keys, in configuration order.
    order: Vec<PublicKey>,
    /// The peer each allowed network (truncated) belongs to; the inverse of the peers'
    /// `allowed_ips`.
    owners: HashMap<IpNet, PublicKey>,
    /// Peers with a new `next` session whose initiation is not sent yet.
    pending_initiations: VecDeque<Arc<Peer>>,
    /// The newest initiation timestamps of removed peers.
    removed_stamps: RemovedStamps,
    /// How long a previous preshared key may carry traffic after a change; `None`: until
    /// the new one completes a handshake.
    pub key_handover: Option<Duration>,
    /// The IP address of the TURN relay this device allocates on, if any.
    relay_ip: Option<std::net::IpAddr>,
}

impl Control {
    /// Tells every peer (and every peer added later) the relay's IP address: an endpoint
    /// there is a path through the relay.
    pub fn set_relay_ip(&mut self, ip: Option<std::net::IpAddr>) {
        self.relay_ip = ip;
        for entry in self.peers.values() {
            entry.peer.state.lock().relay_ip = ip;
        }
    }

    /// Control state with no key and no peers.
    pub fn new(listen_port: u16, fwmark: u32) -> Self {
        Self {
            private_key: None,
            identity: None,
            listen_port,
            fwmark,
            indices: Arc::new(Mutex::new(IndexTable::new())),
            prepared: Prepared::default(),
            budget: Arc::new(QueueBudget::new(QUEUE_BUDGET)),
            peers: HashMap::new(),
            order: Vec::new(),
            owners: HashMap::new(),
            pending_initiations: VecDeque::new(),
            removed_stamps: RemovedStamps::default(),
            key_handover: None,
            relay_ip: None,
        }
    }

    /// The snapshot the packet path should use now.
    pub fn snapshot(&self) -> Snapshot {
        let peers = self.ordered().map(|e| e.peer.clone()).collect();
        let forwarding = self.ordered().filter(|e| e.forward).map(|e| &e.peer);
        Snapshot::build(peers, self.identity.clone()).with_forwarding(forwarding)
    }

    /// The peers in configuration order.
    fn ordered(&self) -> impl Iterator<Item = &PeerEntry> {
        self.order.iter().filter_map(|k| self.peers.get(k))
    }

    /// Our public key, if we have a private key.
    pub fn public_key(&self) -> Option<PublicKey> {
        self.private_key.as_ref().map(PrivateKey::public_key)
    }

    fn peer(&self, key: &PublicKey) -> Option<Arc<Peer>> {
        self.peers.get(key).map(|e| e.peer.clone())
    }

    /// What builds `Tunn`s for this device outside the control lock; `None` without a
    /// private key.
    pub fn slot_maker(&self) -> Option<SlotMaker> {
        let (private, identity) = (self.private_key.clone()?, self.identity.clone()?);
        let budget = self.budget.clone();
        Some(SlotMaker::new(
            private,
            identity,
            self.indices.clone(),
            budget,
        ))
    }

    /// Hands over `Tunn`s built for the change about to be applied; see
    /// [`finish_change`](Self::finish_change).
    pub fn use_prepared(&mut self, prepared: Prepared) {
        self.prepared = prepared;
    }

    /// Ends a change: the prepared `Tunn`s it did not use are dropped.
    pub fn finish_change(&mut self, now: Instant) {
        let leftover = self.prepared.leftover();
        self.release(leftover, now);
        self.prepared = Prepared::default();
    }

    /// A `Tunn` for `key` with `psk`: the prepared one if there is one, else a new one.
    fn new_slot(
        &mut self,
        key: &PublicKey,
        psk: Option<PresharedKey>,
        now: Instant,
    ) -> Result<Option<Slot>, DeviceError> {
        let Some(identity) = &self.identity else {
            return Ok(None);
        };
        if let Some(slot) = self.prepared.take(identity, key, &psk) {
            return Ok(Some(slot));
        }
        match self.slot_maker() {
            Some(maker) => Ok(Some(maker.make(key, psk, now)?)),
            None => Ok(None),
        }
    }

    /// Returns session indices to the table (they enter quarantine).
    pub fn release(&mut self, indices: impl IntoIterator<Item = u32>, now: Instant) {
        let mut table = self.indices.lock();
        for idx in indices {
            table.release(idx, now);
        }
    }

    /// Sets or removes the private key. Every session is dropped, as in WireGuard; peers
    /// whose public key is our own are removed. Returns false if nothing changed.
    pub fn set_private_key(
        &mut self,
        key: Option<PrivateKey>,
        now: Instant,
    ) -> Result<bool, DeviceError> {
        if key == self.private_key {
            return Ok(false);
        }
        self.identity = key.as_ref().map(|k| Arc::new(Identity::new(k)));
        self.private_key = key;
        if let Some(own) = self.public_key() {
            self.remove_peer(&own, now);
        }
        for key in self.order.clone() {
            let Some(peer) = self.peer(&key) else {
                continue;
            };
            let psk = peer.state.lock().psk.clone();
            let slot = self.new_slot(&peer.key, psk, now)?;
            let dropped = {
                let mut state = peer.state.lock();
                match slot {
                    Some(slot) => state.install_active(slot),
                    None => state.clear_slots(),
                }
            };
            self.release(dropped, now);
        }
        Ok(true)
    }

    /// Removes the peer with `key`, dropping its sessions at once.
    pub fn remove_peer(&mut self, key: &PublicKey, now: Instant) -> bool {
        if !self.forget(key, now) {
            return false;
        }
        self.order.retain(|k| k != key);
        true
    }

    /// Removes the peer with `key` from everything but `order`. False if there is none.
    fn forget(&mut self, key: &PublicKey, now: Instant) -> bool {
        let Some(entry) = self.peers.remove(key) else {
            return false;
        };
        let dropped = {
            let mut state = entry.peer.state.lock();
            state.removed = true;
            if let Some(stamp) = state.newest_initiation {
                self.removed_stamps.remember(*key, stamp);
            }
            for net in &state.allowed_ips {
                if self.owners.get(net) == Some(key) {
                    self.owners.remove(net);
                }
            }
            state.clear_slots()
        };
        self.release(dropped, now);
        true
    }

    /// Removes every peer.
    pub fn clear_peers(&mut self, now: Instant) {
        for key in std::mem::take(&mut self.order) {
            self.forget(&key, now);
        }
    }

    /// Adds a peer with `key` and preshared key `psk`, nothing else configured; `None` for
    /// our own key. A peer with a preshared key handshakes at once, once it has an endpoint
    /// (as a gated peer must after a restart: its peers' old sessions are useless).
    fn add_peer(
        &mut self,
        key: PublicKey,
        psk: Option<PresharedKey>,
        now: Instant,
    ) -> Result<Option<Arc<Peer>>, DeviceError> {
        if Some(key) == self.public_key() {
            // As in wireguard-go: a peer with our own key is ignored.
            return Ok(None);
        }
        let mut state = PeerState::new(psk.clone(), None, None, Vec::new());
        state.newest_initiation = self.removed_stamps.take(&key);
        state.relay_ip = self.relay_ip;
        let keyed = psk.is_some();
        if let Some(slot) = self.new_slot(&key, psk, now)? {
            if keyed {
                state.begin_rekey(slot, None);
            } else {
                state.install_active(slot);
            }
        }
        let peer = Arc::new(Peer {
            key,
            state: Mutex::new(state),
        });
        if keyed {
            self.pending_initiations.push_back(peer.clone());
        }
        let entry = PeerEntry {
            peer: peer.clone(),
            configured_endpoint: None,
            forward: false,
        };
        self.peers.insert(key, entry);
        self.order.push(key);
        Ok(Some(peer))
    }

    /// The peer with `key`, added with `psk` if missing (unless `update_only`). `None` if
    /// there is none to change.
    fn find_or_add(
        &mut self,
        key: PublicKey,
        update_only: bool,
        psk: Option<PresharedKey>,
        now: Instant,
    ) -> Result<Option<Arc<Peer>>, DeviceError> {
        match self.peer(&key) {
            Some(peer) => Ok(Some(peer)),
            None if update_only => Ok(None),
            None => self.add_peer(key, psk, now),
        }
    }

    /// Sets `peer`'s preshared key. A peer with an established session keeps it; the new
    /// key handshakes beside it and takes over once confirmed.
    fn set_psk(
        &mut self,
        peer: &Arc<Peer>,
        psk: Option<PresharedKey>,
        now: Instant,
    ) -> Result<(), DeviceError> {
        peer.state.lock().psk = psk;
        self.rekey_if_needed(peer, now)
    }

    /// Starts a make-before-break handshake for `peer` if its configured key differs from the
    /// one in use.
    pub fn rekey_if_needed(&mut self, peer: &Arc<Peer>, now: Instant) -> Result<(), DeviceError> {
        let psk = {
            let state = peer.state.lock();
            if state.removed || !state.needs_rekey() {
                return Ok(());
            }
            state.psk.clone()
        };
        let Some(slot) = self.new_slot(&peer.key, psk, now)? else {
            return Ok(());
        };
        let deadline = self.key_handover.map(|limit| now + limit);
        let dropped = peer.state.lock().begin_rekey(slot, deadline);
        self.release(dropped, now);
        self.pending_initiations.push_back(peer.clone());
        Ok(())
    }

    /// Up to `max` of the peers that started rekeying and whose initiation is not sent yet;
    /// the caller sends them with [`PeerState::initiate_next`], outside the control lock,
    /// after publishing a snapshot that holds their new indices (so that the response finds
    /// its way back), and calls again until none is left.
    pub fn take_pending(&mut self, max: usize) -> Vec<Arc<Peer>> {
        let n = max.min(self.pending_initiations.len());
        self.pending_initiations.drain(..n).collect()
    }

    fn set_keepalive(peer: &Peer, keepalive: Option<u16>, now: Instant, out: &mut DatagramBatch) {
        let keepalive = keepalive.filter(|k| *k > 0);
        let mut state = peer.state.lock();
        let switched_on = state.keepalive.is_none() && keepalive.is_some();
        state.keepalive = keepalive;
        if switched_on {
            state.send_keepalive(out, now);
        }
    }

    fn set_configured_endpoint(&mut self, key: &PublicKey, endpoint: Option<SocketAddr>) {
        let Some(entry) = self.peers.get_mut(key) else {
            return;
        };
        if entry.configured_endpoint != endpoint {
            entry.configured_endpoint = endpoint;
            if let Some(endpoint) = endpoint {
                entry.peer.state.lock().move_endpoint(endpoint);
            }
        }
    }

    /// Gives `net` to peer `key`, taking it from any other peer, as WireGuard does.
    fn claim_allowed_ip(&mut self, key: &PublicKey, net: IpNet) {
        let net = net.trunc();
        match self.owners.insert(net, *key) {
            Some(owner) if owner == *key => return,
            Some(owner) => {
                if let Some(entry) = self.peers.get(&owner) {
                    entry.peer.state.lock().allowed_ips.retain(|n| *n != net);
                }
            }
            None => {}
        }
        if let Some(entry) = self.peers.get(key) {
            entry.peer.state.lock().allowed_ips.push(net);
        }
    }

    /// Takes `net` from peer `key`, if it has it.
    fn drop_allowed_ip(&mut self, key: &PublicKey, net: IpNet) {
        let net = net.trunc();
        if self.owners.get(&net) == Some(key) {
            self.owners.remove(&net);
        }
        if let Some(entry) = self.peers.get(key) {
            entry.peer.state.lock().allowed_ips.retain(|n| *n != net);
        }
    }

    /// Takes every network from peer `key`.
    fn clear_allowed_ips(&mut self, key: &PublicKey) {
        let Some(entry) = self.peers.get(key) else {
            return;
        };
        let nets = std::mem::take(&mut entry.peer.state.lock().allowed_ips);
        for net in nets {
            if self.owners.get(&net) == Some(key) {
                self.owners.remove(&net);
            }
        }
    }

    /// Gives peer `key` exactly `nets`, in that order.
    fn set_allowed_ips(&mut self, key: &PublicKey, nets: &[IpNet]) {
        let Some(peer) = self.peer(key) else {
            return;
        };
        let unchanged = {
            let state = peer.state.lock();
            state.allowed_ips.len() == nets.len()
                && state
                    .allowed_ips
                    .iter()
                    .zip(nets)
                    .all(|(a, b)| *a == b.trunc())
                && nets
                    .iter()
                    .all(|n| self.owners.get(&n.trunc()) == Some(key))
        };
        if unchanged {
            return;
        }
        self.clear_allowed_ips(key);
        for net in nets {
            self.claim_allowed_ip(key, *net);
        }
    }

    /// Applies a whole configuration: peers that are unchanged keep their sessions, changed
    /// ones are updated in place, missing ones are removed. The listen port and fwmark are
    /// the caller's business (they need the sockets).
    pub fn apply_settings(
        &mut self,
        settings: &DeviceSettings,
        now: Instant,
        out: &mut DatagramBatch,
    ) -> Result<(), DeviceError> {
        self.set_private_key(Some(settings.private_key.clone()), now)?;
        let wanted: HashSet<PublicKey> = settings.peers.iter().map(|p| p.public_key).collect();
        let stale: Vec<PublicKey> = self
            .order
            .iter()
            .filter(|k| !wanted.contains(k))
            .copied()
            .collect();
        for key in &stale {
            self.forget(key, now);
        }
        self.order.retain(|k| self.peers.contains_key(k));
        for peer in &settings.peers {
            self.apply_peer_settings(peer, now, out)?;
        }
        // Keep the configuration's order (each key once).
        let mut seen = HashSet::with_capacity(settings.peers.len());
        self.order = settings
            .peers
            .iter()
            .map(|p| p.public_key)
            .filter(|k| self.peers.contains_key(k) && seen.insert(*k))
            .collect();
        Ok(())
    }

    fn apply_peer_settings(
        &mut self,
        settings: &PeerSettings,
        now: Instant,
        out: &mut DatagramBatch,
    ) -> Result<(), DeviceError> {
        let key = settings.public_key;
        let psk = settings.preshared_key.clone();
        let Some(peer) = self.find_or_add(key, false, psk, now)? else {
            return Ok(());
        };
        self.set_configured_endpoint(&key, settings.endpoint);
        peer.state.lock().set_probes(&settings.probes);
        if let Some(entry) = self.peers.get_mut(&key) {
            entry.forward = settings.forward;
        }
        self.set_allowed_ips(&key, &settings.allowed_ips);
        Self::set_keepalive(&peer, settings.persistent_keepalive, now, out);
        let current = peer.state.lock().psk.clone();
        if current != settings.preshared_key {
            self.set_psk(&peer, settings.preshared_key.clone(), now)?;
        }
        Ok(())
    }

    /// Applies a UAPI `set`, in order. Listen port and fwmark are the caller's business.
    pub fn apply_update(
        &mut self,
        update: &DeviceUpdate,
        now: Instant,
        out: &mut DatagramBatch,
    ) -> Result<(), DeviceError> {
        if let Some(key) = &update.private_key {
            self.set_private_key(key.clone(), now)?;
        }
        if update.replace_peers {
            self.clear_peers(now);
        }
        for peer in &update.peers {
            self.apply_peer_update(peer, now, out)?;
        }
        Ok(())
    }

    fn apply_peer_update(
        &mut self,
        update: &PeerUpdate,
        now: Instant,
        out: &mut DatagramBatch,
    ) -> Result<(), DeviceError> {
        let key = update.public_key;
        if update.remove {
            self.remove_peer(&key, now);
            return Ok(());
        }
        let psk = update.preshared_key.clone().flatten();
        let Some(peer) = self.find_or_add(key, update.update_only, psk, now)? else {
            return Ok(());
        };
        if let Some(endpoint) = update.endpoint {
            if let Some(entry) = self.peers.get_mut(&key) {
                entry.configured_endpoint = Some(endpoint);
            }
            peer.state.lock().move_endpoint(endpoint);
        }
        if update.replace_allowed_ips {
            self.clear_allowed_ips(&key);
        }
        for change in &update.allowed_ips {
            match change {
                AllowedIpChange::Add(net) => self.claim_allowed_ip(&key, *net),
                AllowedIpChange::Remove(net) => self.drop_allowed_ip(&key, *net),
            }
        }
        if let Some(psk) = &update.preshared_key {
            self.set_psk(&peer, psk.clone(), now)?;
        }
        if let Some(keepalive) = update.persistent_keepalive {
            Self::set_keepalive(&peer, Some(keepalive), now, out);
        }
        Ok(())
    }

    /// The status of the device and every peer.
    pub fn status(&self, name: &str) -> DeviceStatus {
        let peers = self
            .ordered()
            .map(|e| {
                let state = e.peer.state.lock();
                PeerStatus {
                    public_key: e.peer.key,
                    preshared_key: state.psk.clone(),
                    endpoint: state.endpoint,
                    endpoint_since: state.endpoint_since,
                    last_handshake: state.last_handshake,
                    rx_bytes: state.rx_bytes,
                    tx_bytes: state.tx_bytes,
                    persistent_keepalive: state.keepalive,
                    allowed_ips: state.allowed_ips.clone(),
                    gate: None,
                }
            })
            .collect();
        DeviceStatus {
            name: name.to_owned(),
            private_key: self.private_key.clone(),
            listen_port: self.listen_port,
            fwmark: self.fwmark,
            peers,
            gate: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(key: &PrivateKey, nets: &[&str]) -> PeerSettings {
        PeerSettings {
            probes: Vec::new(),
            public_key: key.public_key(),
            preshared_key: None,
            endpoint: None,
            allowed_ips: nets.iter().map(|n| n.parse().unwrap()).collect(),
            persistent_keepalive: None,
            forward: false,
        }
    }

    fn nets(control: &Control) -> Vec<Vec<String>> {
        let status = control.status("t");
        let all = status.peers.iter();
        all.map(|p| p.allowed_ips.iter().map(|n| n.to_string()).collect())
            .collect()
    }

    /// Every network has exactly the owner whose list holds it.
    fn consistent(control: &Control) -> bool {
        let mut seen = 0;
        for entry in control.peers.values() {
            for net in &entry.peer.state.lock().allowed_ips {
                seen += 1;
                if control.owners.get(net) != Some(&entry.peer.key) {
                    return false;
                }
            }
        }
        seen == control.owners.len()
    }

    #[test]
    fn networks_move_to_their_last_claimant_and_order_follows_the_configuration() {
        let (own, a, b) = (
            PrivateKey::generate(),
            PrivateKey::generate(),
            PrivateKey::generate(),
        );
        let mut control = Control::new(51820, 0);
        let mut out = DatagramBatch::new(8, 256);
        let now = Instant::now();
        let mut settings = DeviceSettings {
            private_key: own.clone(),
            listen_port: None,
            fwmark: None,
            peers: vec![
                peer(&a, &["100.64.0.1/32", "10.0.0.0/8"]),
                peer(&b, &["10.1.2.3/8", "100.64.0.2/32"]),
            ],
        };
        control.apply_settings(&settings, now, &mut out).unwrap();
        // 10.1.2.3/8 is 10.0.0.0/8: it moved to b, the later claimant.
        assert_eq!(
            nets(&control),
            [vec!["100.64.0.1/32"], vec!["10.0.0.0/8", "100.64.0.2/32"]]
        );
        assert!(consistent(&control));
        settings.peers.reverse();
        settings.peers[1]
            .allowed_ips
            .push("10.0.0.0/8".parse().unwrap());
        control.apply_settings(&settings, now, &mut out).unwrap();
        assert_eq!(control.status("t").peers[0].public_key, b.public_key());
        assert_eq!(
            nets(&control),
            [vec!["100.64.0.2/32"], vec!["100.64.0.1/32", "10.0.0.0/8"]]
        );
        assert!(consistent(&control));
        // A UAPI update: remove a network, replace another peer's, remove a peer.
        let update = DeviceUpdate {
            peers: vec![
                PeerUpdate {
                    allowed_ips: vec![AllowedIpChange::Remove("10.0.0.0/8".parse().unwrap())],
                    ..PeerUpdate::new(a.public_key())
                },
                PeerUpdate {
                    replace_allowed_ips: true,
                    allowed_ips: vec![AllowedIpChange::Add("100.64.0.1/32".parse().unwrap())],
                    ..PeerUpdate::new(b.public_key())
                },
            ],
            ..DeviceUpdate::default()
        };
        control.apply_update(&update, now, &mut out).unwrap();
        assert_eq!(nets(&control), [vec!["100.64.0.1/32"], Vec::<&str>::new()]);
        assert!(consistent(&control));
        assert!(control.remove_peer(&b.public_key(), now));
        assert!(consistent(&control) && control.owners.is_empty());
        assert_eq!(control.status("t").peers.len(), 1);
    }
}
