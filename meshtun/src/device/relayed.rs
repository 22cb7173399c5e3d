//! Peers reached through a TURN relay (RFC 8656): the device's side of the relay data path.
//!
//! A peer whose authenticated packets arrive through the relay gets a *relayed endpoint*:
//! an address in the IPv6 discard-only prefix `100::/64` (RFC 6666), which no real peer can
//! have, naming one slot of the [`RelayRoutes`] table. The rest of the device treats it as
//! any endpoint (roaming, probes, `endpoint_since`); only two places look inside:
//! - sending (the device's `Inner::send`): datagrams to a relayed endpoint are framed as
//!   ChannelData (4-byte header: channel number, length) and sent to the relay server, as
//!   one segmentation-offload run when they were one; before the relay has bound a channel
//!   for the peer they go to the relay task's outbox, which wraps them in a Send indication;
//! - receiving (the receive workers' `Inbound`): ChannelData from the relay server on
//!   a bound channel is unwrapped in place and handled as a datagram from the slot's
//!   relayed endpoint. Anything else the relay sends (Data indications, a channel not bound
//!   yet, TURN responses) takes the slow path through the relay task, which hands peer data
//!   back with [`Device::receive_datagram`](super::Device::receive_datagram).
//!
//! The table has one writer, the daemon's relay task, which publishes a new copy whenever a
//! slot or a channel changes; workers read the copy current at their batch. A direct
//! endpoint costs the send path one comparison of the address's first bytes.

use std::collections::HashMap;
use std::net::SocketAddr;

pub use crate::wgcfg::{relayed_endpoint, relayed_slot};

/// The most peers one relay table holds.
pub const MAX_SLOTS: usize = 256;

/// The length of a ChannelData header.
pub const CHANNEL_HEADER: usize = 4;

/// One peer address on the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayRoute {
    /// The peer's address as the relay sees it (its NAT's mapping towards the relay).
    pub peer: SocketAddr,
    /// The channel the relay bound for it, once bound.
    pub channel: Option<u16>,
}

/// The peers reachable through one relay allocation, by slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayRoutes {
    /// The relay server.
    pub server: SocketAddr,
    /// The relayed address the allocation has on the server.
    pub relayed: SocketAddr,
    slots: Vec<RelayRoute>,
    by_channel: HashMap<u16, u16>,
}

impl RelayRoutes {
    /// An empty table for the allocation `relayed` on `server`.
    pub fn new(server: SocketAddr, relayed: SocketAddr) -> Self {
        Self {
            server,
            relayed,
            slots: Vec::new(),
            by_channel: HashMap::new(),
        }
    }

    /// The slot of `peer`, if it has one.
    pub fn slot_of(&self, peer: SocketAddr) -> Option<u16> {
        let k = self.slots.iter().position(|r| r.peer == peer)?;
        u16::try_from(k).ok()
    }

    /// The route of `slot`.
    pub fn route(&self, slot: u16) -> Option<&RelayRoute> {
        self.slots.get(usize::from(slot))
    }

    /// The slot `channel` is bound for.
    #[inline]
    pub fn slot_of_channel(&self, channel: u16) -> Option<u16> {
        self.by_channel.get(&channel).copied()
    }

    /// Every route, by slot.
    pub fn routes(&self) -> &[RelayRoute] {
        &self.slots
    }

    /// The slot of `peer`, added if new; `None` when [`MAX_SLOTS`] are taken.
    pub fn add(&mut self, peer: SocketAddr) -> Option<u16> {
        if let Some(slot) = self.slot_of(peer) {
            return Some(slot);
        }
        if self.slots.len() >= MAX_SLOTS {
            return None;
        }
        self.slots.push(RelayRoute {
            peer,
            channel: None,
        });
        u16::try_from(self.slots.len() - 1).ok()
    }

    /// Gives `slot` to `peer` in place of its current one (whose relayed endpoint then
    /// reaches `peer`: the caller evicts a slot no peer uses).
    pub fn replace(&mut self, slot: u16, peer: SocketAddr) {
        if let Some(route) = self.slots.get_mut(usize::from(slot)) {
            if let Some(channel) = route.channel.take() {
                self.by_channel.remove(&channel);
            }
            route.peer = peer;
        }
    }

    /// Records the channel bound for `slot` (`None`: none, or it expired).
    pub fn set_channel(&mut self, slot: u16, channel: Option<u16>) {
        let Some(route) = self.slots.get_mut(usize::from(slot)) else {
            return;
        };
        if let Some(old) = route.channel {
            self.by_channel.remove(&old);
        }
        route.channel = channel;
        if let Some(channel) = channel {
            self.by_channel.insert(channel, slot);
        }
    }
}

/// The ChannelData header for `len` bytes on `channel`.
#[inline]
pub fn channel_header(channel: u16, len: usize) -> [u8; CHANNEL_HEADER] {
    let [c0, c1] = channel.to_be_bytes();
    let [l0, l1] = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
    [c0, c1, l0, l1]
}

/// Frames the datagrams of `run` (back to back, each `seg` bytes but the last) as
/// ChannelData on `channel` into `framed`, each `seg + 4` bytes but the last, so that the
/// run still goes out as one segmentation-offload send.
pub fn frame_run(channel: u16, run: &[u8], seg: usize, framed: &mut Vec<u8>) {
    framed.clear();
    for datagram in run.chunks(seg.max(1)) {
        framed.extend_from_slice(&channel_header(channel, datagram.len()));
        framed.extend_from_slice(datagram);
    }
}

/// The slot and payload of `datagram` from `src`, if it is ChannelData from `routes`'
/// server on a bound channel.
#[inline]
pub fn unwrap_channel_data<'d>(
    routes: &RelayRoutes,
    src: SocketAddr,
    datagram: &'d [u8],
) -> Option<(u16, &'d [u8])> {
    if src != routes.server || !super::stun::is_channel_data(datagram) {
        return None;
    }
    let channel = u16::from_be_bytes([datagram[0], datagram[1]]);
    let len = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    let slot = routes.slot_of_channel(channel)?;
    Some((slot, datagram.get(CHANNEL_HEADER..CHANNEL_HEADER + len)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn relayed_endpoints_are_told_from_every_real_address() {
        for slot in [0, 1, 255, u16::MAX] {
            assert_eq!(relayed_slot(&relayed_endpoint(slot)), Some(slot));
        }
        for real in ["192.0.2.1:51820", "[2001:db8::1]:51820", "[100::1]:51820"] {
            assert_eq!(relayed_slot(&addr(real)), None, "{real}");
        }
    }

    #[test]
    fn the_table_is_bounded_and_channels_map_back_to_slots() {
        let mut routes = RelayRoutes::new(addr("192.0.2.9:3478"), addr("192.0.2.9:49200"));
        let a = routes.add(addr("198.51.100.1:40000")).unwrap();
        assert_eq!(routes.add(addr("198.51.100.1:40000")), Some(a));
        routes.set_channel(a, Some(0x4001));
        assert_eq!(routes.slot_of_channel(0x4001), Some(a));
        routes.set_channel(a, Some(0x4002));
        assert_eq!(
            routes.slot_of_channel(0x4001),
            None,
            "the old channel is gone"
        );
        for k in 1..MAX_SLOTS {
            let port = u16::try_from(40000 + k).unwrap();
            assert!(routes
                .add(SocketAddr::new(addr("198.51.100.1:1").ip(), port))
                .is_some());
        }
        assert_eq!(routes.add(addr("198.51.100.2:1")), None, "full");
        routes.replace(a, addr("198.51.100.2:1"));
        assert_eq!(routes.slot_of(addr("198.51.100.2:1")), Some(a));
        assert_eq!(
            routes.slot_of_channel(0x4002),
            None,
            "a replaced slot loses its channel"
        );
    }

    #[test]
    fn channel_data_is_unwrapped_only_from_the_server_on_a_bound_channel() {
        let server = addr("192.0.2.9:3478");
        let mut routes = RelayRoutes::new(server, addr("192.0.2.9:49200"));
        let slot = routes.add(addr("198.51.100.1:40000")).unwrap();
        routes.set_channel(slot, Some(0x4001));
        let mut framed = Vec::new();
        frame_run(0x4001, &[4, 0, 0, 0, 9, 9], 6, &mut framed);
        assert_eq!(framed, [0x40, 0x01, 0, 6, 4, 0, 0, 0, 9, 9]);
        assert_eq!(
            unwrap_channel_data(&routes, server, &framed),
            Some((slot, &framed[4..]))
        );
        // From anyone but the server, or on another channel: not ours.
        assert_eq!(
            unwrap_channel_data(&routes, addr("192.0.2.10:3478"), &framed),
            None
        );
        framed[1] = 0x02;
        assert_eq!(unwrap_channel_data(&routes, server, &framed), None);
        // A length beyond the datagram.
        assert_eq!(
            unwrap_channel_data(&routes, server, &[0x40, 1, 0, 90, 1]),
            None
        );
    }

    #[test]
    fn a_run_keeps_equal_segments_once_framed() {
        let run: Vec<u8> = (0..250u8).collect();
        let mut framed = Vec::new();
        frame_run(0x4abc, &run, 100, &mut framed);
        assert_eq!(framed.len(), 250 + 3 * 4);
        let segs: Vec<&[u8]> = framed.chunks(104).collect();
        assert_eq!(segs.len(), 3);
        assert_eq!(&segs[0][..4], &[0x4a, 0xbc, 0, 100]);
        assert_eq!(&segs[2][..4], &[0x4a, 0xbc, 0, 50]);
        assert_eq!(&segs[2][4..], &run[200..]);
    }
}
