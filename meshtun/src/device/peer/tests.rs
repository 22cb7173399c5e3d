//! The make-before-break state machine of a peer's preshared key, driven through two
//! devices' control state and packet path talking in memory, on a clock the tests set:
//! every `now` below is `t0` plus a chosen offset. (boringtun's `Tunn` reads its own clock for
//! its handshake retries; nothing here waits for them.)
//!
//! Each test asserts what a user sees: which key encrypts the traffic (the key of the
//! session a data packet arrives on), whether a packet gets through, and which session is
//! active.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshtun_proto::{PresharedKey, PrivateKey};

use super::{SlotKind, GIVE_UP_AFTER, RETIRE_AFTER};
use crate::device::control::Control;
use crate::device::inbound::{Inbound, Need};
use crate::device::outbound::encapsulate_batch;
use crate::device::snapshot::{Peer, Snapshot};
use crate::device::stats::{CounterTotals, Counters};
use crate::device::transport::{DatagramBatch, PacketBatch, MAX_PACKET, TUN_HEADROOM};
use crate::wgcfg::{DeviceSettings, DeviceUpdate, PeerSettings, PeerUpdate};

const MTU: usize = 1420;
const INITIATION: u8 = 1;
const RESPONSE: u8 = 2;
const DATA: u8 = 4;

/// Datagrams on the wire, with their destinations.
type Wire = Vec<(SocketAddr, Vec<u8>)>;

fn wire(out: &DatagramBatch) -> Wire {
    out.iter().map(|(to, d)| (to, d.to_vec())).collect()
}

fn batch() -> DatagramBatch {
    DatagramBatch::new(64, MTU + 64)
}

/// The 24-bit session index at `offset` of a datagram.
fn index_at(datagram: &[u8], offset: usize) -> u32 {
    let b: [u8; 4] = datagram[offset..offset + 4].try_into().unwrap();
    u32::from_le_bytes(b) >> 8
}

/// An IPv4 packet from `src` to `dst`, 100.64.0.x each, carrying `payload`.
fn ip_packet(src: u8, dst: u8, payload: &[u8]) -> Vec<u8> {
    let len = (20 + payload.len()) as u16;
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0];
    p[2..4].copy_from_slice(&len.to_be_bytes());
    p.extend_from_slice(&[100, 64, 0, src, 100, 64, 0, dst]);
    p.extend_from_slice(payload);
    p
}

/// One device: its control state, the snapshot its packet path reads, and what reached
/// its host.
struct Side {
    key: PrivateKey,
    addr: SocketAddr,
    control: Control,
    snap: Snapshot,
    counters: Counters,
    delivered: Vec<Vec<u8>>,
}

impl Side {
    fn new(addr: &str) -> Self {
        let control = Control::new(51820, 0);
        let snap = control.snapshot();
        Self {
            key: PrivateKey::generate(),
            addr: addr.parse().unwrap(),
            control,
            snap,
            counters: Counters::default(),
            delivered: Vec::new(),
        }
    }

    /// Ends a change as the device does: publishes the snapshot, then sends the handshake
    /// initiations the change made due.
    fn publish(&mut self, out: DatagramBatch, now: Instant) -> Wire {
        self.control.finish_change(now);
        self.snap = self.control.snapshot();
        let mut sent = wire(&out);
        loop {
            let mut out = batch();
            let peers = self.control.take_pending(out.remaining());
            if peers.is_empty() {
                return sent;
            }
            for peer in &peers {
                let mut state = peer.state.lock();
                if !state.removed {
                    state.initiate_next(&mut out, now);
                }
            }
            sent.extend(wire(&out));
        }
    }

    fn configure(&mut self, settings: &DeviceSettings, now: Instant) -> Wire {
        let mut out = batch();
        self.control
            .apply_settings(settings, now, &mut out)
            .unwrap();
        self.publish(out, now)
    }

    fn update(&mut self, update: &DeviceUpdate, now: Instant) -> Wire {
        let mut out = batch();
        self.control.apply_update(update, now, &mut out).unwrap();
        self.publish(out, now)
    }

    /// Sets the preshared key of the one peer, as `wg set … preshared-key` does.
    fn set_psk(&mut self, psk: &PresharedKey, now: Instant) -> Wire {
        let update = DeviceUpdate {
            peers: vec![PeerUpdate {
                preshared_key: Some(Some(psk.clone())),
                ..PeerUpdate::new(self.peer().key)
            }],
            ..DeviceUpdate::default()
        };
        self.update(&update, now)
    }

    /// One run of the device's timer task (`tasks::timer_task`) at `now`.
    fn tick(&mut self, now: Instant) -> Wire {
        let mut out = batch();
        let (mut released, mut rekey) = (Vec::new(), Vec::new());
        for peer in &self.snap.peers {
            let mut state = peer.state.lock();
            if state.removed {
                continue;
            }
            released.extend(state.tick(&mut out, now));
            if state.needs_rekey() && !state.has_next() {
                rekey.push(peer.clone());
            }
        }
        if let Some(identity) = &self.snap.identity {
            identity.limiter.reset_count();
            identity.tunn_limiter.reset_count();
        }
        let mut sent = wire(&out);
        if !released.is_empty() || !rekey.is_empty() {
            self.control.release(released, now);
            for peer in &rekey {
                self.control.rekey_if_needed(peer, now).unwrap();
            }
            sent.extend(self.publish(batch(), now));
        }
        sent
    }

    /// The host sends `packet`; returns the datagrams that go out.
    fn send(&mut self, packet: &[u8], now: Instant) -> Wire {
        let mut packets = PacketBatch::new(1, MTU, TUN_HEADROOM);
        packets.push(packet);
        let mut out = batch();
        encapsulate_batch(&self.snap, &packets, 0, &mut out, &self.counters, now);
        wire(&out)
    }

    /// Datagrams from `from` arrive; returns the replies.
    fn receive(&mut self, from: SocketAddr, datagrams: &[Vec<u8>], now: Instant) -> Wire {
        let mut tun = PacketBatch::new(64, MTU + 64, TUN_HEADROOM);
        let mut big = PacketBatch::new(1, MAX_PACKET, TUN_HEADROOM);
        let mut out = batch();
        let mut inbound = Inbound::new(&self.snap, now, &self.counters);
        for d in datagrams {
            let slot = big.next_slot().unwrap();
            let (need, _) = inbound.datagram(from, d, &mut tun, &mut out, slot);
            assert_eq!(need, Need::Nothing, "the test's batches are large enough");
        }
        self.delivered
            .extend((0..tun.len()).map(|i| tun.packet(i).to_vec()));
        wire(&out)
    }

    fn peer(&self) -> Arc<Peer> {
        self.control.snapshot().peers[0].clone()
    }

    /// The preshared key of the peer's `Tunn` of `kind`; `None` if there is no such `Tunn`.
    fn key(&self, kind: SlotKind) -> Option<PresharedKey> {
        let peer = self.peer();
        let mut state = peer.state.lock();
        state.slot_mut(kind).and_then(|s| s.psk().clone())
    }

    fn index(&self, kind: SlotKind) -> Option<u32> {
        let peer = self.peer();
        let mut state = peer.state.lock();
        state.slot_mut(kind).map(|s| s.index())
    }

    /// The key of the session `datagram`, a data message, is addressed to on this side.
    fn key_of_session(&self, datagram: &[u8]) -> Option<PresharedKey> {
        let peer = self.snap.by_index.get(&index_at(datagram, 4))?;
        let kind = peer.state.lock().slot_of(index_at(datagram, 4))?;
        self.key(kind)
    }

    fn counters(&self) -> CounterTotals {
        let mut total = CounterTotals::default();
        self.counters.add_to(&mut total);
        total
    }
}

/// Alice (100.64.0.1) and Bob (100.64.0.2), each the other's one peer with a known
/// endpoint.
struct Pair {
    alice: Side,
    bob: Side,
    t0: Instant,
    payload: u32,
}

impl Pair {
    /// Configured with `psk` on both sides. With a key, both initiate at once, as a gated
    /// node does after a restart; the handshake has completed.
    fn new(psk: Option<&PresharedKey>) -> Self {
        let mut pair = Self {
            alice: Side::new("192.0.2.1:51820"),
            bob: Side::new("192.0.2.2:51820"),
            t0: Instant::now(),
            payload: 0,
        };
        let t0 = pair.t0;
        let settings = settings_of(&pair.alice, &pair.bob, 2, psk);
        let from_alice = pair.alice.configure(&settings, t0);
        let settings = settings_of(&pair.bob, &pair.alice, 1, psk);
        let from_bob = pair.bob.configure(&settings, t0);
        pair.exchange(from_alice, from_bob, t0);
        pair
    }

    /// `secs` seconds after the start.
    fn at(&self, secs: u64) -> Instant {
        self.t0 + Duration::from_secs(secs)
    }

    /// Delivers datagrams both ways until nobody has anything more to say.
    fn exchange(&mut self, mut from_alice: Wire, mut from_bob: Wire, now: Instant) {
        for _ in 0..16 {
            if from_alice.is_empty() && from_bob.is_empty() {
                return;
            }
            let to_bob = addressed(&from_alice, self.bob.addr);
            let to_alice = addressed(&from_bob, self.alice.addr);
            from_bob = self.bob.receive(self.alice.addr, &to_bob, now);
            from_alice = self.alice.receive(self.bob.addr, &to_alice, now);
        }
        panic!("the two sides never fell silent");
    }

    fn next_packet(&mut self, src: u8, dst: u8) -> Vec<u8> {
        self.payload += 1;
        ip_packet(src, dst, &self.payload.to_be_bytes())
    }

    /// Alice's host sends a packet to Bob's; true if it reached Bob's host.
    fn alice_to_bob(&mut self, now: Instant) -> bool {
        let packet = self.next_packet(1, 2);
        let out = self.alice.send(&packet, now);
        self.exchange(out, Vec::new(), now);
        std::mem::take(&mut self.bob.delivered).contains(&packet)
    }

    /// Bob's host sends a packet to Alice's; true if it reached Alice's host.
    fn bob_to_alice(&mut self, now: Instant) -> bool {
        let packet = self.next_packet(2, 1);
        let out = self.bob.send(&packet, now);
        self.exchange(Vec::new(), out, now);
        std::mem::take(&mut self.alice.delivered).contains(&packet)
    }

    /// The one data datagram Alice sends for a packet to Bob, not delivered yet.
    fn alice_data(&mut self, now: Instant) -> (Vec<u8>, Vec<u8>) {
        let packet = self.next_packet(1, 2);
        let out = self.alice.send(&packet, now);
        assert_eq!(out.len(), 1, "one datagram");
        assert_eq!(out[0].1[0], DATA, "a data message");
        (packet, out[0].1.clone())
    }

    /// Which key Alice's traffic to Bob is encrypted with: the key of the session Bob
    /// receives it on. The packet is not delivered.
    fn key_alice_sends_with(&mut self, now: Instant) -> Option<PresharedKey> {
        let (_, datagram) = self.alice_data(now);
        self.bob.key_of_session(&datagram)
    }

    /// Which key Bob's traffic to Alice is encrypted with.
    fn key_bob_sends_with(&mut self, now: Instant) -> Option<PresharedKey> {
        let packet = self.next_packet(2, 1);
        let out = self.bob.send(&packet, now);
        assert_eq!(out.len(), 1, "one datagram");
        assert_eq!(out[0].1[0], DATA, "a data message");
        self.alice.key_of_session(&out[0].1)
    }
}

/// `own`'s configuration: `peer` is its one peer, at its address, owning 100.64.0.`host`.
fn settings_of(own: &Side, peer: &Side, host: u8, psk: Option<&PresharedKey>) -> DeviceSettings {
    DeviceSettings {
        private_key: own.key.clone(),
        listen_port: None,
        fwmark: None,
        peers: vec![PeerSettings {
            probes: Vec::new(),
            public_key: peer.key.public_key(),
            preshared_key: psk.cloned(),
            endpoint: Some(peer.addr),
            allowed_ips: vec![format!("100.64.0.{host}/32").parse().unwrap()],
            persistent_keepalive: None,
            forward: false,
        }],
    }
}

/// The datagrams of `wire` sent to `to`.
fn addressed(wire: &Wire, to: SocketAddr) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (dest, d) in wire {
        if *dest == to {
            out.push(d.clone());
        }
    }
    out
}

fn only(wire: &Wire, kind: u8) -> Vec<Vec<u8>> {
    wire.iter()
        .filter(|(_, d)| d[0] == kind)
        .map(|(_, d)| d.clone())
        .collect()
}

mod probes;
mod relayed;
mod transitions;
