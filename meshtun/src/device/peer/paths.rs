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
//!
//! And one rule for the moment a relay path opens: the relay drops what a peer sends to
//! this node's relayed address until it confirms the permission for the peer's address,
//! and both nodes learn of each other from the same bundle, so the first copies of the
//! initiations usually arrive too early. When the relay confirms a permission, every silent
//! peer with a candidate at that address gets a fresh initiation at once
//! ([`PeerState::retry_through_relay`]) rather than at the next retry, five seconds on.

use std::net::{IpAddr, SocketAddr};
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

    /// A fresh initiation now, to the endpoint and copied to every candidate, if this peer
    /// has no session, has sent nothing authenticated for
    /// [`SILENT_AFTER`](crate::device::SILENT_AFTER), and lists a candidate at one of `ips`
    /// (addresses the relay has just let send to this node's relayed address). Returns
    /// whether one was written.
    pub(in crate::device) fn retry_through_relay(
        &mut self,
        ips: &[IpAddr],
        out: &mut DatagramBatch,
        now: Instant,
    ) -> bool {
        let heard = self
            .last_received
            .is_some_and(|t| now.saturating_duration_since(t) < crate::device::SILENT_AFTER);
        let listed = self
            .endpoint
            .iter()
            .chain(&self.probes)
            .any(|a| ips.contains(&a.ip()));
        let Some(endpoint) = self.endpoint.filter(|_| listed && !heard) else {
            return false;
        };
        let slot = match self.next.as_mut() {
            Some(next) => Some(next),
            None => self.active.as_mut().filter(|a| !a.has_session()),
        };
        let (Some(slot), Some(space)) = (slot, out.space_max()) else {
            return false;
        };
        let TunnResult::WriteToNetwork(p) = slot.tunn.format_handshake_initiation(space, true)
        else {
            return false;
        };
        let len = p.len();
        slot.due = false;
        slot.initiated.get_or_insert(now);
        out.commit(endpoint, len);
        self.note_sent(len, now);
        self.probed_at = None;
        self.probe(out, now);
        true
    }
}
