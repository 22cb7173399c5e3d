//! Per-worker packet counters.
//!
//! Each worker owns its own [`Counters`] (one writer, relaxed atomics), so counting costs no
//! cross-core traffic on the packet path; readers sum them.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one worker.
#[derive(Debug, Default)]
pub struct Counters {
    packets_in: AtomicU64,
    bytes_in: AtomicU64,
    packets_out: AtomicU64,
    dropped_invalid: AtomicU64,
    dropped_source: AtomicU64,
    dropped_no_route: AtomicU64,
    dropped_no_endpoint: AtomicU64,
    dropped_queue_full: AtomicU64,
    cookies_sent: AtomicU64,
    forwarded: AtomicU64,
    dropped_forward: AtomicU64,
}

/// A sum of counters, for display.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CounterTotals {
    /// Packets delivered to the host.
    pub packets_in: u64,
    /// Bytes delivered to the host.
    pub bytes_in: u64,
    /// Packets encrypted and sent.
    pub packets_out: u64,
    /// Datagrams that failed to parse, authenticate or were replays.
    pub dropped_invalid: u64,
    /// Decrypted packets whose inner source was not in the sender's allowed IPs.
    pub dropped_source: u64,
    /// Outgoing packets with no peer for their destination.
    pub dropped_no_route: u64,
    /// Outgoing packets for a peer with no known endpoint.
    pub dropped_no_endpoint: u64,
    /// Outgoing packets for a peer without a session, with the device's budget for packets
    /// waiting for a handshake spent.
    pub dropped_queue_full: u64,
    /// Cookie replies sent under load.
    pub cookies_sent: u64,
    /// Packets from one forwarding peer encrypted again to another (a hub).
    pub forwarded: u64,
    /// Packets from a forwarding peer to a peer it may not reach through this node, or that
    /// could not be encrypted again.
    pub dropped_forward: u64,
}

fn bump(c: &AtomicU64, by: u64) {
    c.fetch_add(by, Ordering::Relaxed);
}

impl Counters {
    /// A packet of `len` bytes went to the host.
    pub fn received(&self, len: usize) {
        bump(&self.packets_in, 1);
        bump(&self.bytes_in, len as u64);
    }
    /// A packet was encrypted for a peer.
    pub fn sent(&self) {
        bump(&self.packets_out, 1);
    }
    /// A datagram was refused.
    pub fn dropped_invalid(&self) {
        bump(&self.dropped_invalid, 1);
    }
    /// A decrypted packet had a source outside the peer's allowed IPs.
    pub fn dropped_source(&self) {
        bump(&self.dropped_source, 1);
    }
    /// An outgoing packet matched no peer.
    pub fn dropped_no_route(&self) {
        bump(&self.dropped_no_route, 1);
    }
    /// An outgoing packet's peer has no endpoint.
    pub fn dropped_no_endpoint(&self) {
        bump(&self.dropped_no_endpoint, 1);
    }
    /// An outgoing packet could not wait for its peer's handshake: the queue budget is spent.
    pub fn dropped_queue_full(&self) {
        bump(&self.dropped_queue_full, 1);
    }
    /// A cookie reply was sent.
    pub fn cookie_sent(&self) {
        bump(&self.cookies_sent, 1);
    }

    /// A packet was forwarded from one peer to another.
    pub fn forwarded(&self) {
        bump(&self.forwarded, 1);
    }
    /// A packet from a forwarding peer was not forwarded.
    pub fn dropped_forward(&self) {
        bump(&self.dropped_forward, 1);
    }

    /// Adds these counters to `total`.
    pub fn add_to(&self, total: &mut CounterTotals) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        total.packets_in += get(&self.packets_in);
        total.bytes_in += get(&self.bytes_in);
        total.packets_out += get(&self.packets_out);
        total.dropped_invalid += get(&self.dropped_invalid);
        total.dropped_source += get(&self.dropped_source);
        total.dropped_no_route += get(&self.dropped_no_route);
        total.dropped_no_endpoint += get(&self.dropped_no_endpoint);
        total.dropped_queue_full += get(&self.dropped_queue_full);
        total.cookies_sent += get(&self.cookies_sent);
        total.forwarded += get(&self.forwarded);
        total.dropped_forward += get(&self.dropped_forward);
    }
}
