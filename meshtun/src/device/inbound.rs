//! The receive path: WireGuard datagrams in, IP packets out to the tun device.
//!
//! Data packets are routed by session index to exactly one `Tunn`; handshake initiations go
//! through the device-wide rate limiter (mac1, then cookies under load) before one X25519
//! operation finds the sending peer. A decrypted packet reaches the host only if its inner
//! source lies in the sending peer's allowed IPs. On a hub, one between two forwarding peers
//! is encrypted again to its destination's peer instead ([`Snapshot::forward`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use boringtun::noise::{Packet, TunnResult};

use super::outbound::destination;
use super::peer::{DropReason, Initiation, Received, SlotKind};
use super::relayed::{relayed_endpoint, unwrap_channel_data, RelayRoutes};
use super::snapshot::{Forward, Locked, Peer, Snapshot};
use super::stats::Counters;
use super::stun::StunInbox;
use super::transport::{DatagramBatch, PacketBatch};

const HANDSHAKE_INIT: u8 = 1;
const HANDSHAKE_RESP: u8 = 2;
const COOKIE_REPLY: u8 = 3;
const DATA: u8 = 4;
const INIT_LEN: usize = 148;
const RESP_LEN: usize = 92;
const COOKIE_LEN: usize = 64;
const DATA_MIN_LEN: usize = 32;

/// The message type of a datagram, if it is well-formed enough to route.
fn classify(datagram: &[u8]) -> Option<u8> {
    let header = datagram.get(..4)?;
    // The three reserved bytes must be zero.
    if header[1..] != [0, 0, 0] {
        return None;
    }
    match (header[0], datagram.len()) {
        (HANDSHAKE_INIT, INIT_LEN) | (HANDSHAKE_RESP, RESP_LEN) | (COOKIE_REPLY, COOKIE_LEN) => {
            Some(header[0])
        }
        (DATA, n) if n >= DATA_MIN_LEN => Some(DATA),
        _ => None,
    }
}

fn receiver_index(datagram: &[u8], offset: usize) -> Option<u32> {
    let b = datagram.get(offset..offset + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) >> 8)
}

/// Working state of one receive worker.
pub struct Inbound<'a> {
    snap: &'a Snapshot,
    stun: Option<&'a StunInbox>,
    relay: Option<&'a RelayRoutes>,
    locked: Locked<'a>,
    now: Instant,
    counters: &'a Counters,
}

/// What the caller must do before the next datagram can be processed.
#[derive(Debug, PartialEq, Eq)]
pub enum Need {
    /// Nothing: continue.
    Nothing,
    /// Flush the tun batch and the datagram batch, then retry this datagram.
    Flush,
}

impl<'a> Inbound<'a> {
    /// A worker over `snap`.
    pub fn new(snap: &'a Snapshot, now: Instant, counters: &'a Counters) -> Self {
        Self {
            snap,
            stun: None,
            relay: None,
            locked: Locked::new(),
            now,
            counters,
        }
    }

    /// Hands STUN responses to `inbox` rather than counting them as invalid.
    pub fn with_stun(mut self, inbox: &'a StunInbox) -> Self {
        self.stun = Some(inbox);
        self
    }

    /// Unwraps ChannelData from `routes`' relay server on a bound channel and handles the
    /// datagram inside as from its relayed endpoint.
    pub fn with_relay(mut self, routes: Option<&'a RelayRoutes>) -> Self {
        self.relay = routes;
        self
    }

    /// Handles one datagram from `src`. Decrypted packets go into `tun`; handshake replies
    /// and cookies into `out`. `big` is scratch space for a datagram too large for a tun
    /// batch slot; when used, the packet is left in `big[..len]` and returned as
    /// `Some(len)` for the caller to write on its own.
    pub fn datagram(
        &mut self,
        src: SocketAddr,
        datagram: &[u8],
        tun: &mut PacketBatch,
        out: &mut DatagramBatch,
        big: &mut [u8],
    ) -> (Need, Option<usize>) {
        if tun.is_full() || out.remaining() < 3 {
            return (Need::Flush, None);
        }
        match classify(datagram) {
            Some(DATA) => (Need::Nothing, self.data(src, datagram, tun, out, big)),
            Some(HANDSHAKE_INIT) => {
                self.initiation(src, datagram, out);
                (Need::Nothing, None)
            }
            Some(kind @ (HANDSHAKE_RESP | COOKIE_REPLY)) => {
                self.reply(kind, src, datagram, out);
                (Need::Nothing, None)
            }
            // Not WireGuard: the only place ChannelData and STUN messages cost a check.
            _ => {
                let relayed = self
                    .relay
                    .and_then(|r| unwrap_channel_data(r, src, datagram));
                if let Some((slot, inner)) = relayed {
                    return self.datagram(relayed_endpoint(slot), inner, tun, out, big);
                }
                if !self.stun.is_some_and(|inbox| inbox.offer(src, datagram)) {
                    self.counters.dropped_invalid();
                }
                (Need::Nothing, None)
            }
        }
    }

    fn data(
        &mut self,
        src: SocketAddr,
        datagram: &[u8],
        tun: &mut PacketBatch,
        out: &mut DatagramBatch,
        big: &mut [u8],
    ) -> Option<usize> {
        let snap = self.snap;
        let Some((idx, peer)) =
            receiver_index(datagram, 4).and_then(|i| snap.by_index.get(&i).map(|p| (i, p)))
        else {
            self.counters.dropped_invalid();
            return None;
        };
        let now = self.now;
        let state = self.locked.get(peer)?;
        let kind = state.slot_of(idx)?;
        let slot_len = tun.next_slot().map_or(0, |s| s.len());
        let use_big = slot_len < datagram.len();
        let dst = if use_big { &mut *big } else { tun.next_slot()? };
        match state.decapsulate(kind, src, datagram, dst, now) {
            Received::Packet(len, inner_src) => {
                let allowed = snap
                    .by_ip
                    .lookup(inner_src)
                    .is_some_and(|owner| Arc::ptr_eq(owner, peer));
                if !allowed {
                    self.counters.dropped_source();
                    return None;
                }
                let packet = if use_big {
                    &big[..len]
                } else {
                    &tun.next_slot()?[..len]
                };
                match snap.forward(peer, inner_src, destination(packet)) {
                    Forward::Host => {}
                    Forward::To(to) => {
                        self.relay(to, packet, out);
                        return None;
                    }
                    Forward::Drop => {
                        self.counters.dropped_forward();
                        return None;
                    }
                }
                self.counters.received(len);
                if use_big {
                    return Some(len);
                }
                tun.commit(len);
                None
            }
            Received::Control => None,
            Received::Dropped(_) => {
                self.counters.dropped_invalid();
                None
            }
        }
    }

    /// Encrypts `packet`, decrypted from another peer, again to `to` (forwarding).
    fn relay(&mut self, to: &'a Arc<Peer>, packet: &[u8], out: &mut DatagramBatch) {
        let now = self.now;
        let Some(state) = self.locked.get(to) else {
            self.counters.dropped_forward();
            return;
        };
        match state.encapsulate(packet, out, now) {
            Ok(()) => self.counters.forwarded(),
            Err(DropReason::NoEndpoint) => self.counters.dropped_no_endpoint(),
            Err(DropReason::QueueFull) => self.counters.dropped_queue_full(),
            Err(_) => self.counters.dropped_forward(),
        }
    }

    fn initiation(&mut self, src: SocketAddr, datagram: &[u8], out: &mut DatagramBatch) {
        let snap = self.snap;
        let Some(identity) = snap.identity.as_deref() else {
            return;
        };
        let Some(space) = out.space(COOKIE_LEN) else {
            return;
        };
        let opened = match identity
            .limiter
            .verify_packet(Some(src.ip()), datagram, space)
        {
            Ok(Packet::HandshakeInit(_)) => match identity.responder.open(datagram) {
                Some(opened) => opened,
                None => {
                    self.counters.dropped_invalid();
                    return;
                }
            },
            Err(TunnResult::WriteToNetwork(cookie)) => {
                let len = cookie.len();
                out.commit(src, len);
                self.counters.cookie_sent();
                return;
            }
            _ => {
                self.counters.dropped_invalid();
                return;
            }
        };
        let Some(peer) = snap.by_key.get(&opened.claimed) else {
            self.counters.dropped_invalid();
            return;
        };
        let init = Initiation {
            src,
            datagram,
            opened: &opened,
            ours: identity.responder.secret(),
            peer: &peer.key,
        };
        let now = self.now;
        if let Some(state) = self.locked.get(peer) {
            if state.handle_initiation(&init, out, now).is_err() {
                self.counters.dropped_invalid();
            }
        }
    }

    fn reply(&mut self, kind: u8, src: SocketAddr, datagram: &[u8], out: &mut DatagramBatch) {
        let snap = self.snap;
        if kind == HANDSHAKE_RESP {
            // mac1 and the load check, as for initiations.
            let Some(identity) = snap.identity.as_deref() else {
                return;
            };
            let Some(space) = out.space(COOKIE_LEN) else {
                return;
            };
            match identity
                .limiter
                .verify_packet(Some(src.ip()), datagram, space)
            {
                Ok(_) => {}
                Err(TunnResult::WriteToNetwork(cookie)) => {
                    let len = cookie.len();
                    out.commit(src, len);
                    self.counters.cookie_sent();
                    return;
                }
                Err(_) => {
                    self.counters.dropped_invalid();
                    return;
                }
            }
        }
        let offset = if kind == HANDSHAKE_RESP { 8 } else { 4 };
        let Some((idx, peer)) =
            receiver_index(datagram, offset).and_then(|i| snap.by_index.get(&i).map(|p| (i, p)))
        else {
            self.counters.dropped_invalid();
            return;
        };
        let now = self.now;
        let Some(state) = self.locked.get(peer) else {
            return;
        };
        let result = match state.slot_of(idx) {
            Some(slot @ (SlotKind::Active | SlotKind::Next)) => {
                state.handle_reply(slot, src, datagram, out, now)
            }
            _ => Err(super::peer::DropReason::Invalid),
        };
        if result.is_err() {
            self.counters.dropped_invalid();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_checks_type_length_and_reserved_bytes() {
        assert_eq!(classify(&[1, 0, 0, 0]), None);
        assert_eq!(classify(&[1; INIT_LEN]), None);
        let mut init = [0u8; INIT_LEN];
        init[0] = 1;
        assert_eq!(classify(&init), Some(HANDSHAKE_INIT));
        let mut data = [0u8; 32];
        data[0] = 4;
        assert_eq!(classify(&data), Some(DATA));
        assert_eq!(classify(&data[..31]), None);
        assert_eq!(classify(&[]), None);
        assert_eq!(classify(&[9, 0, 0, 0, 0, 0]), None);
    }

    #[test]
    fn receiver_index_drops_the_counter_byte() {
        let d = [4, 0, 0, 0, 0x07, 0x34, 0x12, 0x00];
        assert_eq!(receiver_index(&d, 4), Some(0x1234));
        assert_eq!(receiver_index(&d, 6), None);
    }
}
