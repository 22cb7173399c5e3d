//! Harnesses for microbenchmarks without I/O:
//! - the packet path: one batch of IP packets routed and encrypted by Alice, and the
//!   resulting datagrams decrypted and checked against Alice's allowed IPs by Bob, with the
//!   buffers the workers use, reused between rounds;
//! - forwarding: a batch Alice encrypts to a hub, decrypted there and encrypted again to
//!   Carol, the other spoke;
//! - the control path: a configuration change applied as the device applies it under its
//!   control lock.

use std::time::Instant;

use super::control::Control;
use super::fuzzing::{Harness, HubHarness, MTU};
use super::inbound::Inbound;
use super::outbound::encapsulate_batch;
use super::prepare::{self, Prepared};
use super::snapshot::Snapshot;
use super::transport::{DatagramBatch, PacketBatch, MAX_PACKET, TUN_HEADROOM};
use super::BATCH;
use std::net::{IpAddr, SocketAddr};

use meshtun_proto::{PresharedKey, PrivateKey};

use crate::wgcfg::{DeviceSettings, DeviceStatus, PeerSettings};

/// Two peers with an established session and a full batch of packets from Alice to Bob.
pub struct PacketBench {
    harness: Harness,
    packets: PacketBatch,
    wire: DatagramBatch,
    tun: PacketBatch,
    big: PacketBatch,
    replies: DatagramBatch,
}

/// An IPv4/UDP packet of `len` bytes (at least 28, at most the MTU) from Alice's tunnel
/// address (100.64.0.1) to Bob's (100.64.0.2), with a correct total length.
fn packet(len: usize) -> Vec<u8> {
    let len = len.clamp(28, MTU);
    let total = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
    let mut p = vec![0x45, 0, total[0], total[1], 0, 0, 0, 0, 64, 17, 0, 0];
    p.extend_from_slice(&[100, 64, 0, 1, 100, 64, 0, 2]);
    p.resize(len, 0xab);
    p
}

impl PacketBench {
    /// A handshaken pair and [`BATCH`] packets of `packet_len` bytes (clamped to 28..=1420).
    pub fn new(packet_len: usize) -> Self {
        Self::with_harness(packet_len, Harness::new())
    }

    /// Like [`PacketBench::new`], but Alice has `peers` peers configured in all: Bob and
    /// `peers - 1` others (as [`hub_settings`] makes them: a preshared key, an endpoint and
    /// two networks each), placed before Bob, with no session.
    pub fn with_peers(packet_len: usize, peers: usize) -> Self {
        let keys: Vec<PrivateKey> = (1..peers).map(|_| PrivateKey::generate()).collect();
        let others = hub_settings(&PrivateKey::generate(), &keys).peers;
        Self::with_harness(packet_len, Harness::with_other_peers(others))
    }

    fn with_harness(packet_len: usize, harness: Harness) -> Self {
        let mut packets = PacketBatch::new(BATCH, MTU, TUN_HEADROOM);
        let p = packet(packet_len);
        while packets.push(&p) {}
        Self {
            harness,
            packets,
            wire: DatagramBatch::new(BATCH, MTU + 64),
            tun: PacketBatch::coalescing(BATCH, MTU + 64, TUN_HEADROOM),
            big: PacketBatch::new(1, MAX_PACKET, TUN_HEADROOM),
            replies: DatagramBatch::new(64, MTU + 64),
        }
    }

    /// Packets in one batch.
    pub fn batch_len(&self) -> usize {
        self.packets.len()
    }

    /// Alice routes (longest-prefix match) and encrypts the batch, as a send worker does;
    /// returns the number of datagrams produced.
    pub fn encapsulate(&mut self) -> usize {
        self.wire.clear();
        let h = &self.harness;
        encapsulate_batch(
            &h.alice.snap,
            &self.packets,
            0,
            &mut self.wire,
            &h.counters,
            Instant::now(),
        );
        self.wire.len()
    }

    /// Bob routes the datagrams of the last [`PacketBench::encapsulate`] by session index,
    /// decrypts them and checks their sources against Alice's allowed IPs, as a receive
    /// worker does; returns the number of packets bound for the tun device.
    ///
    /// Each batch decrypts once: a second call sees replays and delivers nothing.
    pub fn decapsulate(&mut self) -> usize {
        self.tun.clear();
        self.replies.clear();
        let h = &self.harness;
        let mut inbound = Inbound::new(&h.bob.snap, Instant::now(), &h.counters);
        for (_, datagram) in self.wire.iter() {
            let slot = self.big.next_slot().unwrap_or_default();
            let _ = inbound.datagram(
                h.alice.addr,
                datagram,
                &mut self.tun,
                &mut self.replies,
                slot,
            );
        }
        self.tun.len()
    }
}

/// A hub between two spokes, each with an established session, and a batch of packets from
/// Alice (100.64.0.1) to Carol (100.64.0.3) through the hub.
pub struct ForwardBench {
    harness: HubHarness,
    packets: PacketBatch,
    wire: DatagramBatch,
    tun: PacketBatch,
    big: PacketBatch,
    forwarded: DatagramBatch,
}

/// Packets per forwarding batch: what one receive worker's datagram batch takes before it
/// must flush.
pub const FORWARD_BATCH: usize = 60;

impl ForwardBench {
    /// The three devices and [`FORWARD_BATCH`] packets of `packet_len` bytes (28..=1420).
    pub fn new(packet_len: usize) -> Self {
        let mut packets = PacketBatch::new(FORWARD_BATCH, MTU, TUN_HEADROOM);
        let mut p = packet(packet_len);
        p[19] = 3;
        while packets.push(&p) {}
        Self {
            harness: HubHarness::new(),
            packets,
            wire: DatagramBatch::new(BATCH, MTU + 64),
            tun: PacketBatch::coalescing(BATCH, MTU + 64, TUN_HEADROOM),
            big: PacketBatch::new(1, MAX_PACKET, TUN_HEADROOM),
            forwarded: DatagramBatch::new(64, MTU + 64),
        }
    }

    /// Packets in one batch.
    pub fn batch_len(&self) -> usize {
        self.packets.len()
    }

    /// Alice encrypts the batch to the hub; returns the number of datagrams.
    pub fn encapsulate(&mut self) -> usize {
        self.wire.clear();
        let h = &self.harness;
        let now = Instant::now();
        encapsulate_batch(
            &h.alice.snap,
            &self.packets,
            0,
            &mut self.wire,
            &h.counters,
            now,
        );
        self.wire.len()
    }

    /// The hub receives the datagrams of the last [`ForwardBench::encapsulate`], as a receive
    /// worker does; returns the number it forwarded to Carol, or 0 if any reached the hub's
    /// own tun batch instead.
    pub fn forward(&mut self) -> usize {
        self.tun.clear();
        self.forwarded.clear();
        let h = &self.harness;
        let mut inbound = Inbound::new(&h.hub.snap, Instant::now(), &h.counters);
        for (_, datagram) in self.wire.iter() {
            let slot = self.big.next_slot().unwrap_or_default();
            let _ = inbound.datagram(
                h.alice.addr,
                datagram,
                &mut self.tun,
                &mut self.forwarded,
                slot,
            );
        }
        if !self.tun.is_empty() {
            return 0;
        }
        let to_carol = self.forwarded.iter().filter(|(to, _)| *to == h.carol.addr);
        to_carol.count()
    }

    /// Carol decrypts what the hub forwarded; returns the packets bound for her tun device
    /// that are exactly the ones Alice sent.
    pub fn receive_at_carol(&mut self) -> usize {
        self.tun.clear();
        let mut replies = DatagramBatch::new(64, MTU + 64);
        let h = &self.harness;
        let mut inbound = Inbound::new(&h.carol.snap, Instant::now(), &h.counters);
        for (_, datagram) in self.forwarded.iter() {
            let slot = self.big.next_slot().unwrap_or_default();
            let _ = inbound.datagram(h.hub.addr, datagram, &mut self.tun, &mut replies, slot);
        }
        let sent = self.packets.packet(0);
        (0..self.tun.len())
            .filter(|&i| self.tun.packet(i) == sent)
            .count()
    }
}

/// A device's control state, to time configuration changes.
pub struct ApplyBench {
    control: Control,
    snapshot: Snapshot,
    prepared: Option<Prepared>,
    out: DatagramBatch,
}

impl ApplyBench {
    /// Control state configured with `settings`.
    pub fn new(settings: &DeviceSettings) -> Self {
        let mut bench = Self {
            control: Control::new(51820, 0),
            snapshot: Snapshot::default(),
            prepared: None,
            out: DatagramBatch::new(BATCH, MTU + 64),
        };
        bench.apply(settings);
        bench
    }

    /// Builds the `Tunn`s that applying `settings` will need, as
    /// [`Device::reconfigure`](super::Device::reconfigure) does before it takes the control
    /// lock.
    pub fn prepare(&mut self, settings: &DeviceSettings) {
        let wanted = prepare::wanted_by_settings(&self.snapshot, settings);
        self.prepared = self
            .control
            .slot_maker()
            .map(|maker| Prepared::make(&maker, wanted, Instant::now()));
    }

    /// Applies `settings` as the device does while it holds the control lock: the change
    /// (with the `Tunn`s of [`prepare`](Self::prepare), if called), then the new routing
    /// snapshot. The handshake initiations it makes due are dropped here (the device sends
    /// them after releasing the lock). Returns the number of peers in the snapshot; 0 if the
    /// change failed.
    pub fn apply(&mut self, settings: &DeviceSettings) -> usize {
        let now = Instant::now();
        self.out.clear();
        if let Some(prepared) = self.prepared.take() {
            self.control.use_prepared(prepared);
        }
        let result = self.control.apply_settings(settings, now, &mut self.out);
        self.control.finish_change(now);
        self.snapshot = self.control.snapshot();
        self.control.take_pending(usize::MAX);
        match result {
            Ok(()) => self.snapshot.peers.len(),
            Err(_) => 0,
        }
    }

    /// The status of every peer, as the device would report it.
    pub fn status(&self) -> DeviceStatus {
        self.control.status("bench")
    }

    /// Looks up each of `addrs` in the routing snapshot (longest-prefix match), as the send
    /// path routes a packet; returns how many found a peer.
    pub fn route(&self, addrs: &[IpAddr]) -> usize {
        let by_ip = &self.snapshot.by_ip;
        addrs.iter().filter(|a| by_ip.lookup(**a).is_some()).count()
    }
}

/// The tunnel address [`hub_settings`] gives its `i`-th peer (its IPv4 network's one
/// address).
pub fn hub_peer_ip(i: usize) -> IpAddr {
    IpAddr::from([100, 65, ((i / 256) % 256) as u8, (i % 256) as u8])
}

/// A hub configuration with one peer per key in `keys`, each with its own preshared key, an
/// endpoint in 198.51.100.1:20000+ and two allowed networks (`100.65.x.y/32` and
/// `fd00:65::i/128`): the large configuration the scale tests and benchmarks apply.
pub fn hub_settings(hub: &PrivateKey, keys: &[PrivateKey]) -> DeviceSettings {
    let peers = keys
        .iter()
        .enumerate()
        .map(|(i, key)| PeerSettings {
            probes: Vec::new(),
            public_key: key.public_key(),
            preshared_key: Some(PresharedKey::generate()),
            endpoint: Some(SocketAddr::from((
                [198, 51, 100, 1],
                20_000u16.wrapping_add(i as u16),
            ))),
            allowed_ips: vec![
                format!("100.65.{}.{}/32", (i / 256) % 256, i % 256)
                    .parse()
                    .expect("a valid IPv4 network"),
                format!("fd00:65::{i:x}/128")
                    .parse()
                    .expect("a valid IPv6 network"),
            ],
            persistent_keepalive: None,
            forward: false,
        })
        .collect();
    DeviceSettings {
        private_key: hub.clone(),
        listen_port: Some(51820),
        fwmark: None,
        peers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_goes_through_both_paths_once() {
        let mut bench = PacketBench::new(1420);
        assert_eq!(bench.batch_len(), BATCH);
        assert_eq!(bench.encapsulate(), BATCH);
        assert_eq!(bench.decapsulate(), BATCH);
        assert_eq!(bench.tun.packet(0), packet(1420).as_slice());
        // Replays are refused.
        assert_eq!(bench.decapsulate(), 0);
        assert_eq!(bench.encapsulate(), BATCH);
        assert_eq!(bench.decapsulate(), BATCH);
    }

    #[test]
    fn packet_lengths_are_clamped_to_a_valid_ipv4_packet() {
        assert_eq!(packet(1).len(), 28);
        assert_eq!(packet(9000).len(), MTU);
        assert_eq!(&packet(100)[2..4], &[0, 100]);
    }
}
