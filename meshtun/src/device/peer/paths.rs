//! Choosing between a peer's direct and relayed paths.
//!
//! WireGuard's roaming rule sends to wherever the last authenticated packet came from. With
//! a relay, two rules are added:
//! - a working direct path is kept: an authenticated packet through the relay does not move
//!   the endpoint off a direct address heard from in the last
//!   [`SILENT_AFTER`](crate::device::SILENT_AFTER) (handshake copies sent to every candidate
//!   reach the peer both ways);
//! - while the endpoint is relayed, the direct candidates get a keepalive every
//!   [`RELAYED_PROBE_INTERVAL`]. A keepalive that gets through is authenticated by the peer,
//!   which moves its endpoint to our direct address and answers there, so the path moves
//!   back to direct by the roaming rule on both sides.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use boringtun::noise::TunnResult;

use super::PeerState;
use crate::device::transport::DatagramBatch;
use crate::wgcfg::relayed_slot;

/// How often a relayed peer's direct candidates are probed (with keepalives).
pub const RELAYED_PROBE_INTERVAL: Duration = Duration::from_secs(30);

/// Room for a keepalive datagram (32 bytes) in the output batch.
const KEEPALIVE_LEN: usize = 32;

impl PeerState {
    /// Moves the endpoint to `to`, the source of an authenticated packet, by the roaming
    /// rule, except from a direct address heard from recently to a relayed one.
    pub(in crate::device) fn roam(&mut self, to: SocketAddr, now: Instant) {
        if !self.through_relay(&to) {
            self.direct_heard = Some(now);
        } else if self.endpoint.is_some_and(|e| !self.through_relay(&e))
            && self
                .direct_heard
                .is_some_and(|t| now.saturating_duration_since(t) < crate::device::SILENT_AFTER)
        {
            return;
        }
        self.move_endpoint(to);
    }

    /// Moves the endpoint to `to`, noting when if it changed (a comparison on the packet
    /// path; the clock is read only on a change).
    pub fn move_endpoint(&mut self, to: SocketAddr) {
        if self.endpoint != Some(to) {
            self.endpoint = Some(to);
            self.endpoint_since = Some(SystemTime::now());
        }
    }

    /// True if datagrams to `addr` pass the relay: a relayed endpoint (through this
    /// device's allocation) or an address on the relay server (the peer's allocation).
    pub fn through_relay(&self, addr: &SocketAddr) -> bool {
        relayed_slot(addr).is_some() || self.relay_ip == Some(addr.ip())
    }

    /// True if the endpoint is a path through the relay.
    pub fn is_relayed(&self) -> bool {
        self.endpoint.is_some_and(|e| self.through_relay(&e))
    }

    /// While relayed: a keepalive to every direct candidate, every
    /// [`RELAYED_PROBE_INTERVAL`], over the active session.
    pub(super) fn probe_direct(&mut self, out: &mut DatagramBatch, now: Instant) {
        if !self.is_relayed()
            || self.probes.is_empty()
            || self
                .direct_probed_at
                .is_some_and(|t| now.saturating_duration_since(t) < RELAYED_PROBE_INTERVAL)
        {
            return;
        }
        let Some(slot) = self.active.as_mut().filter(|s| s.has_session()) else {
            return;
        };
        self.direct_probed_at = Some(now);
        let mut sent = 0;
        let relay_ip = self.relay_ip;
        let direct = |a: &&SocketAddr| relayed_slot(a).is_none() && Some(a.ip()) != relay_ip;
        for addr in self.probes.iter().filter(direct) {
            let Some(space) = out.space(KEEPALIVE_LEN) else {
                break;
            };
            if let TunnResult::WriteToNetwork(p) = slot.tunn.encapsulate(&[], space) {
                let len = p.len();
                out.commit(*addr, len);
                sent += len;
            }
        }
        self.tx_bytes += sent as u64;
    }
}
