//! The read-only routing snapshot the packet path works from.
//!
//! The control plane builds a new [`Snapshot`] whenever peers, allowed IPs or session indices
//! change and publishes it atomically; workers load it once per batch. The packet path
//! therefore takes no shared lock: only the lock of the peer it is working on, once per run
//! of packets for that peer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::x25519;
use meshtun_proto::{PrivateKey, PublicKey};
use parking_lot::{Mutex, MutexGuard};

use super::noise::Responder;
use super::peer::PeerState;
use crate::allowed_ips::AllowedIps;

/// Handshake initiations accepted per second, device-wide, before cookies are required.
pub const HANDSHAKES_PER_SECOND: u64 = 100;

/// The limit of the rate limiter every `Tunn` holds: one it can never reach.
const TUNN_LIMIT: u64 = u64::MAX;

/// A peer: its identity and its lock-protected state.
pub struct Peer {
    /// The peer's public key.
    pub key: PublicKey,
    /// Everything that changes, behind the peer's own lock.
    pub state: Mutex<PeerState>,
}

/// Our own key material, as the handshake path needs it.
pub struct Identity {
    /// Our private key, and what reads the claimed sender of an initiation.
    pub responder: Responder,
    /// Device-wide handshake rate limiter: checks mac1 first, then answers with cookies
    /// under load. The only place where load is judged.
    pub limiter: RateLimiter,
    /// The rate limiter every `Tunn` of the device shares. boringtun runs a `Tunn`'s limiter
    /// on every handshake message it decapsulates, before any authentication, and answers
    /// one over its limit with a cookie reply that looks like any other datagram to send;
    /// boringtun's own device skips that check through a crate-private call. This one checks
    /// mac1 again and is never over its limit, so no `Tunn` ever makes a cookie reply: they
    /// come only from [`limiter`](Self::limiter), before the handshake reaches a peer.
    pub tunn_limiter: Arc<RateLimiter>,
}

impl Identity {
    /// Key material for `private`.
    pub fn new(private: &PrivateKey) -> Self {
        let secret = private.to_static_secret();
        let public = x25519::PublicKey::from(&secret);
        let limiter = RateLimiter::new(&public, HANDSHAKES_PER_SECOND);
        let tunn_limiter = Arc::new(RateLimiter::new(&public, TUNN_LIMIT));
        Self {
            responder: Responder::new(secret),
            limiter,
            tunn_limiter,
        }
    }
}

/// Everything the packet path looks up, immutable once published.
#[derive(Default)]
pub struct Snapshot {
    /// Cryptokey routing: allowed IPs to peers.
    pub by_ip: AllowedIps<Arc<Peer>>,
    /// Session index (24 bits) to peer.
    pub by_index: HashMap<u32, Arc<Peer>>,
    /// Public key to peer.
    pub by_key: HashMap<PublicKey, Arc<Peer>>,
    /// Every peer, in configuration order.
    pub peers: Vec<Arc<Peer>>,
    /// Our keys; `None` while the device has no private key.
    pub identity: Option<Arc<Identity>>,
    /// Forwarding (a hub): the allowed IPs of the peers the device forwards between, each
    /// to its peer; `None` when no peer forwards.
    pub forwarding: Option<AllowedIps<Arc<Peer>>>,
}

/// What to do with a packet decrypted from a peer, whose source is that peer's.
pub enum Forward<'a> {
    /// Hand it to the host (the tun device), as any received packet.
    Host,
    /// Encrypt it again to this other forwarding peer.
    To(&'a Arc<Peer>),
    /// Drop it: it came from a forwarding peer and is addressed to a peer the device does
    /// not forward to (a static peer, or the sender itself).
    Drop,
}

impl Snapshot {
    /// Builds the snapshot for `peers`, reading each peer's allowed IPs and indices.
    pub fn build(peers: Vec<Arc<Peer>>, identity: Option<Arc<Identity>>) -> Self {
        let mut snap = Snapshot {
            identity,
            ..Snapshot::default()
        };
        for peer in &peers {
            let state = peer.state.lock();
            for net in &state.allowed_ips {
                snap.by_ip.insert(*net, peer.clone());
            }
            for idx in state.indices() {
                snap.by_index.insert(idx, peer.clone());
            }
            snap.by_key.insert(peer.key, peer.clone());
        }
        snap.peers = peers;
        snap
    }

    /// Makes the device forward between `peers` (the routing table of their allowed IPs,
    /// as in [`Self::by_ip`]); none forwards when empty.
    pub fn with_forwarding<'a>(mut self, peers: impl Iterator<Item = &'a Arc<Peer>>) -> Self {
        let mut table = AllowedIps::new();
        let mut any = false;
        for peer in peers {
            any = true;
            for net in &peer.state.lock().allowed_ips {
                table.insert(*net, peer.clone());
            }
        }
        self.forwarding = any.then_some(table);
        self
    }

    /// Where a packet decrypted from `from`, whose inner source `src` lies in `from`'s
    /// allowed IPs, goes next, by its destination `dst`.
    ///
    /// Only a packet between two forwarding peers is forwarded; one from a forwarding peer
    /// to any other peer (a static peer, or back to itself) is dropped, so that neither the
    /// device nor the host's routing carries it there; anything else goes to the host,
    /// which accepts only what is addressed to it (its own forwarding stays off).
    pub fn forward(&self, from: &Arc<Peer>, src: IpAddr, dst: Option<IpAddr>) -> Forward<'_> {
        let Some(table) = &self.forwarding else {
            return Forward::Host;
        };
        let is_forwarder = table.lookup(src).is_some_and(|p| Arc::ptr_eq(p, from));
        let Some(dst) = dst.filter(|_| is_forwarder) else {
            return Forward::Host;
        };
        match (table.lookup(dst), self.by_ip.lookup(dst)) {
            (Some(to), Some(owner)) if Arc::ptr_eq(to, owner) && !Arc::ptr_eq(to, from) => {
                Forward::To(to)
            }
            (_, Some(_)) => Forward::Drop,
            (_, None) => Forward::Host,
        }
    }
}

/// Holds the lock of the peer being worked on, so that a run of packets for one peer takes
/// its lock once.
pub struct Locked<'a> {
    held: Option<(&'a Arc<Peer>, MutexGuard<'a, PeerState>)>,
}

impl<'a> Locked<'a> {
    /// Holds nothing yet.
    pub fn new() -> Self {
        Self { held: None }
    }

    /// The state of `peer`, locking it unless it is already held. `None` if the peer has
    /// been removed since the snapshot was taken.
    pub fn get(&mut self, peer: &'a Arc<Peer>) -> Option<&mut PeerState> {
        let same = self
            .held
            .as_ref()
            .is_some_and(|(p, _)| Arc::ptr_eq(p, peer));
        if !same {
            self.held = None;
            self.held = Some((peer, peer.state.lock()));
        }
        let (_, guard) = self.held.as_mut()?;
        if guard.removed {
            None
        } else {
            Some(&mut **guard)
        }
    }
}

impl Default for Locked<'_> {
    fn default() -> Self {
        Self::new()
    }
}
