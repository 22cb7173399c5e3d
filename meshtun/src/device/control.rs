//! The device's control state: keys, the ordered peer table and session indices.
//!
//! Every change goes through [`Control`] under the device's control lock, which is never
//! taken on the packet path. After a change the caller publishes a new
//! [`Snapshot`](super::snapshot::Snapshot) and sends whatever datagrams the change produced
//! (handshake initiations, keepalives).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use meshtun_proto::{PresharedKey, PrivateKey, PublicKey};
use parking_lot::Mutex;

use super::index::IndexTable;
use super::noise::Tai64n;
use super::peer::{PeerState, Slot};
use super::snapshot::{Identity, Peer, Snapshot};
use super::transport::DatagramBatch;
use super::DeviceError;
use crate::wgcfg::{
    AllowedIpChange, DeviceSettings, DeviceStatus, DeviceUpdate, PeerSettings, PeerStatus,
    PeerUpdate,
};

/// A peer and the endpoint its configuration names (the live one roams).
pub struct PeerEntry {
    /// The peer.
    pub peer: Arc<Peer>,
    configured_endpoint: Option<SocketAddr>,
}

/// Keys, peers and indices of one device.
pub struct Control {
    private_key: Option<PrivateKey>,
    identity: Option<Arc<Identity>>,
    /// The UDP port the sockets are bound to.
    pub listen_port: u16,
    /// The firewall mark on outgoing datagrams (0: none).
    pub fwmark: u32,
    indices: IndexTable,
    peers: Vec<PeerEntry>,
    /// Peers with a new `next` session whose initiation is not sent yet.
    pending_initiations: VecDeque<Arc<Peer>>,
    /// The newest initiation timestamps of removed peers.
    removed_stamps: RemovedStamps,
    /// How long a previous preshared key may carry traffic after a change; `None`: until
    /// the new one completes a handshake.
    pub key_handover: Option<Duration>,
}

/// Removed peers remembered in [`RemovedStamps`], at most.
const REMOVED_STAMPS: usize = 16_384;

/// The newest initiation timestamp of each recently removed peer, so that a peer removed and
/// added again (a gated peer denied, then allowed) keeps its replay protection. Bounded: the
/// longest-removed peers are forgotten first.
#[derive(Default)]
struct RemovedStamps {
    /// Each remembered peer's timestamp, and the number of the entry in `order` that keeps it.
    stamps: HashMap<PublicKey, (Tai64n, u64)>,
    /// Removals, oldest first; an entry whose number no longer matches is stale.
    order: VecDeque<(PublicKey, u64)>,
    next: u64,
}

impl RemovedStamps {
    fn remember(&mut self, key: PublicKey, stamp: Tai64n) {
        self.next += 1;
        self.stamps.insert(key, (stamp, self.next));
        self.order.push_back((key, self.next));
        while self.order.len() > REMOVED_STAMPS {
            if let Some((old, number)) = self.order.pop_front() {
                if self.stamps.get(&old).is_some_and(|(_, n)| *n == number) {
                    self.stamps.remove(&old);
                }
            }
        }
    }

    fn take(&mut self, key: &PublicKey) -> Option<Tai64n> {
        self.stamps.remove(key).map(|(stamp, _)| stamp)
    }
}

impl Control {
    /// Control state with no key and no peers.
    pub fn new(listen_port: u16, fwmark: u32) -> Self {
        Self {
            private_key: None,
            identity: None,
            listen_port,
            fwmark,
            indices: IndexTable::new(),
            peers: Vec::new(),
            pending_initiations: VecDeque::new(),
            removed_stamps: RemovedStamps::default(),
            key_handover: None,
        }
    }

    /// The snapshot the packet path should use now.
    pub fn snapshot(&self) -> Snapshot {
        let peers = self.peers.iter().map(|e| e.peer.clone()).collect();
        Snapshot::build(peers, self.identity.clone())
    }

    /// Our public key, if we have a private key.
    pub fn public_key(&self) -> Option<PublicKey> {
        self.private_key.as_ref().map(PrivateKey::public_key)
    }

    fn find(&self, key: &PublicKey) -> Option<usize> {
        self.peers.iter().position(|e| e.peer.key == *key)
    }

    fn new_slot(
        &mut self,
        key: &PublicKey,
        psk: Option<PresharedKey>,
        now: Instant,
    ) -> Result<Option<Slot>, DeviceError> {
        let (Some(private), Some(identity)) = (&self.private_key, &self.identity) else {
            return Ok(None);
        };
        let index = self.indices.allocate(now)?;
        let limiter = identity.tunn_limiter.clone();
        Ok(Some(Slot::new(private, key, psk, index, limiter)))
    }

    /// Returns session indices to the table (they enter quarantine).
    pub fn release(&mut self, indices: impl IntoIterator<Item = u32>, now: Instant) {
        for idx in indices {
            self.indices.release(idx, now);
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
            if let Some(i) = self.find(&own) {
                self.remove_at(i, now);
            }
        }
        for i in 0..self.peers.len() {
            let peer = self.peers[i].peer.clone();
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
        match self.find(key) {
            Some(i) => {
                self.remove_at(i, now);
                true
            }
            None => false,
        }
    }

    fn remove_at(&mut self, i: usize, now: Instant) {
        let entry = self.peers.remove(i);
        let dropped = {
            let mut state = entry.peer.state.lock();
            state.removed = true;
            if let Some(stamp) = state.newest_initiation {
                self.removed_stamps.remember(entry.peer.key, stamp);
            }
            state.clear_slots()
        };
        self.release(dropped, now);
    }

    /// Removes every peer.
    pub fn clear_peers(&mut self, now: Instant) {
        while !self.peers.is_empty() {
            self.remove_at(0, now);
        }
    }

    fn add_peer(&mut self, key: PublicKey, now: Instant) -> Result<Option<usize>, DeviceError> {
        if Some(key) == self.public_key() {
            // As in wireguard-go: a peer with our own key is ignored.
            return Ok(None);
        }
        let mut state = PeerState::new(None, None, None, Vec::new());
        state.newest_initiation = self.removed_stamps.take(&key);
        if let Some(slot) = self.new_slot(&key, None, now)? {
            state.install_active(slot);
        }
        let peer = Arc::new(Peer {
            key,
            state: Mutex::new(state),
        });
        self.peers.push(PeerEntry {
            peer,
            configured_endpoint: None,
        });
        Ok(Some(self.peers.len() - 1))
    }

    /// Sets peer `i`'s preshared key. A peer with an established session keeps it; the new
    /// key handshakes beside it and takes over once confirmed.
    fn set_psk(
        &mut self,
        i: usize,
        psk: Option<PresharedKey>,
        now: Instant,
    ) -> Result<(), DeviceError> {
        let peer = self.peers[i].peer.clone();
        peer.state.lock().psk = psk;
        self.rekey_if_needed(&peer, now)
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

    /// Writes the initiation of every peer that started rekeying since the last call into
    /// `out`, as many as fit. Returns true if some are left: send `out`, then call again.
    /// Call after publishing a snapshot that contains the new indices, so that the response
    /// finds its way back.
    pub fn initiate_rekeys(&mut self, out: &mut DatagramBatch, now: Instant) -> bool {
        while !self.pending_initiations.is_empty() {
            if out.remaining() == 0 {
                return true;
            }
            if let Some(peer) = self.pending_initiations.pop_front() {
                peer.state.lock().initiate_next(out, now);
            }
        }
        false
    }

    fn set_keepalive(
        &mut self,
        i: usize,
        keepalive: Option<u16>,
        now: Instant,
        out: &mut DatagramBatch,
    ) {
        let keepalive = keepalive.filter(|k| *k > 0);
        let mut state = self.peers[i].peer.state.lock();
        let switched_on = state.keepalive.is_none() && keepalive.is_some();
        state.keepalive = keepalive;
        if switched_on {
            state.send_keepalive(out, now);
        }
    }

    fn set_configured_endpoint(&mut self, i: usize, endpoint: Option<SocketAddr>) {
        let entry = &mut self.peers[i];
        if entry.configured_endpoint != endpoint {
            entry.configured_endpoint = endpoint;
            if endpoint.is_some() {
                entry.peer.state.lock().endpoint = endpoint;
            }
        }
    }

    /// Gives `net` to peer `i`, taking it from any other peer, as WireGuard does.
    fn claim_allowed_ip(&mut self, i: usize, net: IpNet) {
        let net = net.trunc();
        for (j, entry) in self.peers.iter().enumerate() {
            let mut state = entry.peer.state.lock();
            if j == i {
                if !state.allowed_ips.contains(&net) {
                    state.allowed_ips.push(net);
                }
            } else {
                state.allowed_ips.retain(|n| *n != net);
            }
        }
    }

    fn set_allowed_ips(&mut self, i: usize, nets: &[IpNet]) {
        self.peers[i].peer.state.lock().allowed_ips.clear();
        for net in nets {
            self.claim_allowed_ip(i, *net);
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
        let wanted: Vec<PublicKey> = settings.peers.iter().map(|p| p.public_key).collect();
        let stale: Vec<PublicKey> = self
            .peers
            .iter()
            .map(|e| e.peer.key)
            .filter(|k| !wanted.contains(k))
            .collect();
        for key in stale {
            self.remove_peer(&key, now);
        }
        for peer in &settings.peers {
            self.apply_peer_settings(peer, now, out)?;
        }
        // Keep the configuration's order.
        self.peers
            .sort_by_key(|e| wanted.iter().position(|k| *k == e.peer.key));
        Ok(())
    }

    fn apply_peer_settings(
        &mut self,
        peer: &PeerSettings,
        now: Instant,
        out: &mut DatagramBatch,
    ) -> Result<(), DeviceError> {
        let i = match self.find(&peer.public_key) {
            Some(i) => i,
            None => match self.add_peer(peer.public_key, now)? {
                Some(i) => i,
                None => return Ok(()),
            },
        };
        self.set_configured_endpoint(i, peer.endpoint);
        self.set_allowed_ips(i, &peer.allowed_ips);
        self.set_keepalive(i, peer.persistent_keepalive, now, out);
        let current = self.peers[i].peer.state.lock().psk.clone();
        if current != peer.preshared_key {
            self.set_psk(i, peer.preshared_key.clone(), now)?;
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
        if update.remove {
            self.remove_peer(&update.public_key, now);
            return Ok(());
        }
        let i = match (self.find(&update.public_key), update.update_only) {
            (Some(i), _) => i,
            (None, true) => return Ok(()),
            (None, false) => match self.add_peer(update.public_key, now)? {
                Some(i) => i,
                None => return Ok(()),
            },
        };
        if let Some(endpoint) = update.endpoint {
            self.peers[i].configured_endpoint = Some(endpoint);
            self.peers[i].peer.state.lock().endpoint = Some(endpoint);
        }
        if update.replace_allowed_ips {
            self.peers[i].peer.state.lock().allowed_ips.clear();
        }
        for change in &update.allowed_ips {
            match change {
                AllowedIpChange::Add(net) => self.claim_allowed_ip(i, *net),
                AllowedIpChange::Remove(net) => {
                    let net = net.trunc();
                    self.peers[i]
                        .peer
                        .state
                        .lock()
                        .allowed_ips
                        .retain(|n| *n != net);
                }
            }
        }
        if let Some(psk) = &update.preshared_key {
            self.set_psk(i, psk.clone(), now)?;
        }
        if let Some(keepalive) = update.persistent_keepalive {
            self.set_keepalive(i, Some(keepalive), now, out);
        }
        Ok(())
    }

    /// The status of the device and every peer.
    pub fn status(&self, name: &str) -> DeviceStatus {
        let peers = self
            .peers
            .iter()
            .map(|e| {
                let state = e.peer.state.lock();
                PeerStatus {
                    public_key: e.peer.key,
                    preshared_key: state.psk.clone(),
                    endpoint: state.endpoint,
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

    #[test]
    fn removed_stamps_are_bounded_and_keep_the_newest_removals() {
        let mut r = RemovedStamps::default();
        let keys: Vec<PublicKey> = (0..REMOVED_STAMPS + 10)
            .map(|_| PrivateKey::generate().public_key())
            .collect();
        let stamp = |n: u8| Tai64n([n; 12]);
        // The first key is removed, added back and removed again: its newer entry counts.
        r.remember(keys[0], stamp(1));
        assert_eq!(r.take(&keys[0]), Some(stamp(1)));
        r.remember(keys[0], stamp(2));
        for key in &keys[1..] {
            r.remember(*key, stamp(3));
        }
        assert!(r.order.len() <= REMOVED_STAMPS && r.stamps.len() <= REMOVED_STAMPS);
        assert_eq!(r.take(&keys[0]), None, "the oldest removal is forgotten");
        assert_eq!(r.take(&keys[keys.len() - 1]), Some(stamp(3)));
        assert_eq!(r.take(&keys[keys.len() - 1]), None);
    }
}
