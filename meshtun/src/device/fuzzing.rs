//! A harness for fuzzing the packet path without I/O: two peers with an established session,
//! so that arbitrary datagrams reach index routing, the rate limiter, the handshake parser
//! and decryption, arbitrary IP packets reach routing and encryption, and arbitrary packets a
//! peer encrypts reach the receiving side's tun batch (for the tun write path).

use std::net::SocketAddr;
use std::time::Instant;

use meshtun_proto::PrivateKey;

use super::control::Control;
use super::inbound::Inbound;
use super::outbound::encapsulate_batch;
use super::snapshot::Snapshot;
use super::stats::Counters;
use super::transport::{DatagramBatch, PacketBatch, TUN_HEADROOM};
use crate::wgcfg::{DeviceSettings, PeerSettings};

pub(super) const MTU: usize = 1420;

/// One side of the harness.
pub(super) struct Side {
    control: Control,
    pub(super) snap: Snapshot,
    pub(super) addr: SocketAddr,
}

/// Two devices, Alice and Bob, that have completed a handshake.
pub struct Harness {
    pub(super) alice: Side,
    pub(super) bob: Side,
    pub(super) counters: Counters,
}

fn side(
    own: &PrivateKey,
    peer: &PrivateKey,
    addr: &str,
    peer_addr: &str,
    peer_nets: &[&str],
) -> Side {
    side_with(
        own,
        vec![peer_settings(peer, peer_addr, peer_nets, false)],
        addr,
    )
}

fn peer_settings(key: &PrivateKey, endpoint: &str, nets: &[&str], forward: bool) -> PeerSettings {
    PeerSettings {
        probes: Vec::new(),
        public_key: key.public_key(),
        preshared_key: None,
        endpoint: endpoint.parse().ok(),
        allowed_ips: nets.iter().filter_map(|n| n.parse().ok()).collect(),
        persistent_keepalive: None,
        forward,
    }
}

fn side_with(own: &PrivateKey, peers: Vec<PeerSettings>, addr: &str) -> Side {
    let settings = DeviceSettings {
        private_key: own.clone(),
        listen_port: None,
        fwmark: None,
        peers,
    };
    let mut control = Control::new(51820, 0);
    let mut out = DatagramBatch::new(8, MTU + 64);
    // A fresh control with a few peers cannot run out of indices.
    let _ = control.apply_settings(&settings, Instant::now(), &mut out);
    let snap = control.snapshot();
    Side {
        control,
        snap,
        addr: addr
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([192, 0, 2, 1], 51820))),
    }
}

/// Encrypts `packet` on `from`'s send path; the datagrams it produces.
fn send_from(from: &Side, packet: &[u8], counters: &Counters) -> Vec<Vec<u8>> {
    let mut batch = PacketBatch::new(1, MTU, TUN_HEADROOM);
    batch.push(packet);
    let mut out = DatagramBatch::new(8, MTU + 64);
    encapsulate_batch(&from.snap, &batch, 0, &mut out, counters, Instant::now());
    out.iter().map(|(_, d)| d.to_vec()).collect()
}

/// Delivers datagrams to `to` as if from `from`, returning what it sends back.
fn deliver(
    to: &Side,
    from: SocketAddr,
    datagrams: &[Vec<u8>],
    counters: &Counters,
) -> Vec<Vec<u8>> {
    let mut tun = PacketBatch::new(8, MTU + 64, TUN_HEADROOM);
    let mut big = PacketBatch::new(1, super::transport::MAX_PACKET, TUN_HEADROOM);
    let mut out = DatagramBatch::new(16, MTU + 64);
    let mut inbound = Inbound::new(&to.snap, Instant::now(), counters);
    for d in datagrams {
        let slot = big.next_slot().unwrap_or_default();
        let _ = inbound.datagram(from, d, &mut tun, &mut out, slot);
    }
    out.iter().map(|(_, d)| d.to_vec()).collect()
}

/// `a` sends an IPv4 packet from `src` to `dst` (last octets in 100.64.0.0/24), then `a` and
/// `b` pass each other's answers until nothing is left to say: a completed handshake.
fn handshake(a: &Side, b: &Side, src: u8, dst: u8, counters: &Counters) {
    let mut packet = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 100, 64, 0, src];
    packet.extend_from_slice(&[100, 64, 0, dst, 0, 0, 0, 0, 0, 8, 0, 0]);
    let mut wire = send_from(a, &packet, counters);
    for _ in 0..4 {
        let replies = deliver(b, a.addr, &wire, counters);
        wire = deliver(a, b.addr, &replies, counters);
    }
}

/// Three devices: Alice (100.64.0.1) and Carol (100.64.0.3), each with the hub (100.64.0.2)
/// as its one peer routing the other's address, and the hub forwarding between them; both
/// pairs have completed a handshake.
pub struct HubHarness {
    pub(super) alice: Side,
    pub(super) hub: Side,
    pub(super) carol: Side,
    pub(super) counters: Counters,
}

impl HubHarness {
    /// Builds the three and runs both handshakes.
    pub fn new() -> Self {
        let (ka, kh, kc) = (
            PrivateKey::generate(),
            PrivateKey::generate(),
            PrivateKey::generate(),
        );
        let (a, h, c) = ("192.0.2.1:51820", "192.0.2.2:51820", "192.0.2.3:51820");
        let via_hub = |nets: &[&str]| vec![peer_settings(&kh, h, nets, false)];
        let alice = side_with(&ka, via_hub(&["100.64.0.2/32", "100.64.0.3/32"]), a);
        let carol = side_with(&kc, via_hub(&["100.64.0.2/32", "100.64.0.1/32"]), c);
        let spokes = vec![
            peer_settings(&ka, a, &["100.64.0.1/32"], true),
            peer_settings(&kc, c, &["100.64.0.3/32"], true),
        ];
        let hub = side_with(&kh, spokes, h);
        let harness = Self {
            alice,
            hub,
            carol,
            counters: Counters::default(),
        };
        handshake(&harness.alice, &harness.hub, 1, 2, &harness.counters);
        handshake(&harness.carol, &harness.hub, 3, 2, &harness.counters);
        harness
    }
}

impl Default for HubHarness {
    fn default() -> Self {
        Self::new()
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// Builds both sides and runs a handshake between them. Each routes only the other's
    /// tunnel address (100.64.0.1 Alice, 100.64.0.2 Bob).
    pub fn new() -> Self {
        Self::with_nets(&["100.64.0.2/32"], &["100.64.0.1/32"])
    }

    /// Like [`Harness::new`], but each side routes everything to the other and accepts any
    /// source from it (`0.0.0.0/0` and `::/0`), as a full tunnel does: whatever IP packet
    /// Alice's host sends reaches Bob's tun batch.
    pub fn open() -> Self {
        Self::with_nets(&["0.0.0.0/0", "::/0"], &["0.0.0.0/0", "::/0"])
    }

    /// Like [`Harness::new`], but Alice also has the peers `others` (placed before Bob in
    /// her configuration), with whom nothing has handshaken: a device with many peers
    /// configured sending to one of them.
    pub fn with_other_peers(others: Vec<PeerSettings>) -> Self {
        Self::build(&["100.64.0.2/32"], &["100.64.0.1/32"], others)
    }

    fn with_nets(bob_nets: &[&str], alice_nets: &[&str]) -> Self {
        Self::build(bob_nets, alice_nets, Vec::new())
    }

    fn build(bob_nets: &[&str], alice_nets: &[&str], others: Vec<PeerSettings>) -> Self {
        let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
        let mut alice_peers = others;
        alice_peers.push(peer_settings(&kb, "192.0.2.2:51820", bob_nets, false));
        let alice = side_with(&ka, alice_peers, "192.0.2.1:51820");
        let bob = side(&kb, &ka, "192.0.2.2:51820", "192.0.2.1:51820", alice_nets);
        let harness = Self {
            alice,
            bob,
            counters: Counters::default(),
        };
        handshake(&harness.alice, &harness.bob, 1, 2, &harness.counters);
        harness
    }

    fn send_from_alice(&self, packet: &[u8]) -> Vec<Vec<u8>> {
        send_from(&self.alice, packet, &self.counters)
    }

    /// Delivers datagrams to `to`, returning what it sends back.
    fn deliver(&self, to: &Side, from: SocketAddr, datagrams: &[Vec<u8>]) -> Vec<Vec<u8>> {
        deliver(to, from, datagrams, &self.counters)
    }

    /// Feeds one arbitrary datagram to Bob, as if from Alice's address (`from_peer`) or from
    /// a stranger.
    pub fn receive(&self, datagram: &[u8], from_peer: bool) {
        let from = if from_peer {
            self.alice.addr
        } else {
            SocketAddr::from(([203, 0, 113, 9], 4444))
        };
        self.deliver(&self.bob, from, &[datagram.to_vec()]);
    }

    /// Feeds one arbitrary IP packet to Alice's send path.
    pub fn send(&self, packet: &[u8]) {
        if packet.len() <= MTU {
            self.send_from_alice(packet);
        }
    }

    /// Alice's host sends `packets` (each up to the MTU; longer ones are skipped) through the
    /// tunnel; returns the batch Bob's receive path fills for his tun device, a coalescing
    /// batch as a receive worker's, ready for the tun write path.
    pub fn through_tunnel(&self, packets: &[&[u8]]) -> PacketBatch {
        let n = packets.len().max(1);
        let mut batch = PacketBatch::new(n, MTU, TUN_HEADROOM);
        for p in packets {
            batch.push(p);
        }
        let mut wire = DatagramBatch::new(n, MTU + 64);
        let now = Instant::now();
        encapsulate_batch(&self.alice.snap, &batch, 0, &mut wire, &self.counters, now);
        let mut tun = PacketBatch::coalescing(n, MTU + 64, TUN_HEADROOM);
        let mut big = PacketBatch::new(1, super::transport::MAX_PACKET, TUN_HEADROOM);
        let mut replies = DatagramBatch::new(16, MTU + 64);
        let mut inbound = Inbound::new(&self.bob.snap, now, &self.counters);
        for (_, datagram) in wire.iter() {
            let slot = big.next_slot().unwrap_or_default();
            let _ = inbound.datagram(self.alice.addr, datagram, &mut tun, &mut replies, slot);
        }
        tun
    }

    /// Alice's session index as Bob addresses it, so that a fuzzer can build data packets
    /// that reach decryption.
    pub fn session_indices(&self) -> Vec<u32> {
        self.bob.snap.by_index.keys().copied().collect()
    }

    /// True once the handshake in [`Harness::new`] completed on both sides.
    pub fn established(&self) -> bool {
        let done = |s: &Side| {
            s.control
                .status("fuzz")
                .peers
                .first()
                .is_some_and(|p| p.last_handshake.is_some())
        };
        done(&self.alice) && done(&self.bob)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_reach_the_other_sides_tun_batch() {
        let h = Harness::open();
        assert!(h.established());
        let mut v4 = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 203, 0, 113, 5];
        v4.extend_from_slice(&[198, 51, 100, 7, 0, 1, 0, 2, 0, 8, 0, 0]);
        let mut v6 = vec![0x60, 0, 0, 0, 0, 0, 59, 64];
        v6.extend_from_slice(&[0x20; 32]);
        let batch = h.through_tunnel(&[&v4, &[1, 2, 3], &v6]);
        assert_eq!(batch.len(), 2);
        assert_eq!(batch.packet(0), v4.as_slice());
        assert_eq!(batch.packet(1), v6.as_slice());
    }

    #[test]
    fn the_harness_reaches_an_established_session() {
        let h = Harness::new();
        assert!(h.established());
        h.receive(
            &[4, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 9, 9],
            true,
        );
        h.receive(&[], false);
        h.send(&[0x60; 40]);
    }
}
