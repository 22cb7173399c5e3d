//! What a gated daemon knows about its membership, as plain data: the daemon updates it,
//! and `meshtun show`, the UAPI socket and the metrics endpoint read it. Holds no secret.

use std::collections::VecDeque;
use std::sync::Arc;

use meshtun_proto::paths::{CutoffSample, MAX_CUTOFFS};
use meshtun_proto::{EpochId, IdentityPublic, PublicKey};
use parking_lot::Mutex;

pub use crate::wgcfg::MembershipState;
use crate::wgcfg::{DeviceGate, DeviceStatus, NatStatus, ObservingShown, PeerGate, RelayShown};

/// One peer configured from the bundle in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatedPeerInfo {
    /// The peer's node id.
    pub node_id: String,
    /// The peer's WireGuard public key.
    pub public_key: PublicKey,
    /// When this peer's current preshared key was put in use, Unix milliseconds.
    pub psk_since_ms: u64,
    /// The epoch of the bundle that brought this preshared key (`None` for a key from a
    /// bundle without an epoch).
    pub psk_epoch: Option<EpochId>,
    /// For a hub: the nodes reached through it.
    pub forwards_to: Vec<String>,
}

/// The gating state of one interface.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GateStatus {
    /// This node's id at the controller.
    pub node_id: String,
    /// The base URL of the controller instance in use.
    pub controller_url: String,
    /// The pinned controller key that signed the last bundle accepted.
    pub controller_key: Option<IdentityPublic>,
    /// Moves from one controller instance to another since start.
    pub failovers: u64,
    /// The loss policy (`fail_closed` or `keep_last`).
    pub loss_policy: &'static str,
    /// The grace after the bundle's end before the loss policy applies, milliseconds
    /// (`[controller] grace`).
    pub grace_ms: u64,
    /// The membership enforced now.
    pub membership: MembershipState,
    /// The epoch of the bundle in force.
    pub epoch: Option<EpochId>,
    /// Its activation, Unix milliseconds.
    pub activation_ms: Option<u64>,
    /// Its end, Unix milliseconds.
    pub not_after_ms: Option<u64>,
    /// A verified bundle waiting for its activation time.
    pub next_epoch: Option<EpochId>,
    /// The last time the controller answered a request, Unix milliseconds.
    pub last_contact_ms: Option<u64>,
    /// The last error talking to the controller, cleared by the next success.
    pub last_error: Option<String>,
    /// The last benchmark the controller acknowledged, Unix milliseconds.
    pub last_benchmark_ms: Option<u64>,
    /// Benchmarks acknowledged since start.
    pub benchmarks_submitted: u64,
    /// Benchmark runs or submissions that failed since start.
    pub benchmark_failures: u64,
    /// Bundles applied since start (each a rotation of every gated peer's key).
    pub bundles_applied: u64,
    /// The gated peers configured now.
    pub peers: Vec<GatedPeerInfo>,
    /// Whether this node forwards between its gated peers (a hub).
    pub forward: bool,
    /// Peers cut off since start (left a bundle, or removed by a denial or the loss rule).
    pub cutoffs: u64,
    /// Sum of decision-to-cut-off times over [`Self::cutoffs`] with a known decision time,
    /// in seconds.
    pub cutoff_seconds_sum: f64,
    /// Cut-offs counted in [`Self::cutoff_seconds_sum`].
    pub cutoff_seconds_count: u64,
    /// Of those, how many fell in each of [`CUTOFF_BUCKETS`]: at most its bound and more
    /// than the one before (the rest took longer than the last).
    pub cutoff_buckets: [u64; CUTOFF_BUCKETS.len()],
    /// The last decision-to-cut-off time, in seconds.
    pub last_cutoff_seconds: Option<f64>,
    /// The newest cut-offs with a known decision time and epoch, oldest first (at most
    /// [`MAX_CUTOFFS`]), for the controller's dashboard (sent with the path report).
    pub recent_cutoffs: VecDeque<CutoffSample>,
    /// What the STUN client found out (written by the daemon's STUN task only).
    pub nat: NatStatus,
    /// STUN responses the client dropped since start: malformed, with an unknown transaction
    /// id, or from another address than the server asked.
    pub stun_rejected: u64,
    /// The TURN allocation (written by the daemon's relay task only).
    pub relay: Option<RelayShown>,
    /// Peers of accepted bundles refused for their membership signature since start
    /// (`[controller] membership_key`), counted once per bundle.
    pub membership_refused: u64,
    /// Peer observations the controller stored since start.
    pub observations_sent: u64,
    /// Peer observations the controller refused (4xx) since start.
    pub observations_refused: u64,
    /// Peer observations that could not be signed or reach a controller since start.
    pub observations_failed: u64,
    /// The observation settings in force, while observations are on.
    pub observing: Option<crate::config::ObserveSettings>,
}

impl GateStatus {
    /// The gated peer with `key`, if the bundle in force lists it.
    pub fn peer(&self, key: &PublicKey) -> Option<&GatedPeerInfo> {
        self.peers.iter().find(|p| p.public_key == *key)
    }
}

/// The upper bounds, in seconds, of the decision-to-cut-off histogram's buckets (the bound
/// the project holds to is 1 s).
pub const CUTOFF_BUCKETS: [f64; 7] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

impl GateStatus {
    /// Counts the cut-off of `peer`, `ms` milliseconds after the controller decided
    /// `epoch`, and keeps it among the [`MAX_CUTOFFS`] newest when the epoch is known.
    pub fn count_cutoff(&mut self, peer: &str, epoch: Option<EpochId>, ms: u64) {
        if let Some(epoch) = epoch {
            if self.recent_cutoffs.len() >= MAX_CUTOFFS {
                self.recent_cutoffs.pop_front();
            }
            self.recent_cutoffs.push_back(CutoffSample {
                epoch,
                peer: peer.to_owned(),
                ms,
            });
        }
        let seconds = ms as f64 / 1000.0;
        self.cutoff_seconds_sum += seconds;
        self.cutoff_seconds_count += 1;
        if let Some(bucket) = CUTOFF_BUCKETS.iter().position(|&bound| seconds <= bound) {
            self.cutoff_buckets[bucket] += 1;
        }
        self.last_cutoff_seconds = Some(seconds);
    }
}

/// The status shared between the gating task and its readers.
pub type SharedGateStatus = Arc<Mutex<GateStatus>>;

impl From<&GateStatus> for DeviceGate {
    fn from(gate: &GateStatus) -> Self {
        Self {
            node_id: gate.node_id.clone(),
            controller_url: gate.controller_url.clone(),
            controller_key: gate
                .controller_key
                .map(|k| k.to_base64())
                .unwrap_or_default(),
            loss_policy: gate.loss_policy.to_owned(),
            membership: gate.membership.clone(),
            epoch: gate.epoch,
            epoch_not_after_ms: gate.not_after_ms,
            next_epoch: gate.next_epoch,
            controller_last_contact_ms: gate.last_contact_ms,
            controller_error: gate.last_error.clone(),
            nat: gate.nat.clone(),
            forward: gate.forward,
            relay: gate.relay.clone(),
            membership_refused: gate.membership_refused,
            observing: gate.observing.map(|o| ObservingShown {
                peers: u64::try_from(o.peers).unwrap_or(u64::MAX),
                interval_s: o.interval.as_secs(),
                sent: gate.observations_sent,
                refused: gate.observations_refused,
                failed: gate.observations_failed,
            }),
        }
    }
}

impl GateStatus {
    /// Adds this gating state to the device's `status`: the device's part, and the node and
    /// key age of every peer the bundle in force lists (other peers, configured statically,
    /// get none).
    pub fn attach_to(&self, status: &mut DeviceStatus) {
        status.gate = Some(DeviceGate::from(self));
        for peer in &mut status.peers {
            peer.gate = self.peer(&peer.public_key).map(|info| PeerGate {
                node_id: info.node_id.clone(),
                psk_since_ms: info.psk_since_ms,
                psk_epoch: info.psk_epoch,
                forwards_to: info.forwards_to.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use meshtun_proto::PrivateKey;

    use super::*;
    use crate::wgcfg::PeerStatus;

    fn peer(public_key: PublicKey) -> PeerStatus {
        PeerStatus {
            endpoint_since: None,
            public_key,
            preshared_key: None,
            endpoint: None,
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
            persistent_keepalive: None,
            allowed_ips: Vec::new(),
            gate: None,
        }
    }

    #[test]
    fn attach_gate_marks_only_the_bundle_peers() {
        let gated = PrivateKey::generate().public_key();
        let fixed = PrivateKey::generate().public_key();
        let mut status = DeviceStatus {
            name: "wg0".into(),
            private_key: None,
            listen_port: 51820,
            fwmark: 0,
            peers: vec![peer(fixed), peer(gated)],
            gate: None,
        };
        let gate = GateStatus {
            node_id: "node-a".into(),
            controller_url: "http://192.0.2.1:8080".into(),
            loss_policy: "keep_last",
            membership: MembershipState::Denied {
                reason: "overall 0.40 below 0.70".into(),
            },
            epoch: Some(42),
            not_after_ms: Some(1_700_000_060_000),
            next_epoch: Some(43),
            last_contact_ms: Some(1_700_000_000_000),
            last_error: Some("timed out".into()),
            peers: vec![GatedPeerInfo {
                forwards_to: Vec::new(),
                node_id: "node-b".into(),
                public_key: gated,
                psk_since_ms: 1_699_999_990_000,
                psk_epoch: Some(41),
            }],
            ..GateStatus::default()
        };
        gate.attach_to(&mut status);
        let device = status.gate.as_ref().unwrap();
        assert_eq!(device.node_id, "node-a");
        assert_eq!(device.loss_policy, "keep_last");
        assert_eq!(device.membership.reason(), Some("overall 0.40 below 0.70"));
        assert_eq!(device.epoch, Some(42));
        assert_eq!(device.epoch_not_after_ms, Some(1_700_000_060_000));
        assert_eq!(device.next_epoch, Some(43));
        assert_eq!(device.controller_error.as_deref(), Some("timed out"));
        assert_eq!(status.peers[0].gate, None);
        let expected = PeerGate {
            forwards_to: Vec::new(),
            node_id: "node-b".into(),
            psk_since_ms: 1_699_999_990_000,
            psk_epoch: Some(41),
        };
        assert_eq!(status.peers[1].gate, Some(expected));
    }

    #[test]
    fn each_cut_off_falls_in_the_first_bucket_that_holds_it() {
        let mut status = GateStatus::default();
        for ms in [50, 300, 1_000, 1_010, 7_500] {
            status.count_cutoff("node-d", Some(3), ms);
        }
        assert_eq!(status.cutoff_buckets, [1, 0, 0, 1, 1, 1, 0]);
        assert_eq!(status.cutoff_seconds_count, 5);
        assert!((status.cutoff_seconds_sum - 9.86).abs() < 1e-9);
        assert_eq!(status.last_cutoff_seconds, Some(7.5));
        assert_eq!(status.recent_cutoffs.len(), 5);
    }

    #[test]
    fn only_the_newest_cut_offs_are_kept_for_the_report() {
        let mut status = GateStatus::default();
        for i in 0..(MAX_CUTOFFS as u64 + 5) {
            status.count_cutoff(&format!("n{i}"), Some(i), i);
        }
        // Without an epoch it is counted but not reported.
        status.count_cutoff("x", None, 1);
        assert_eq!(status.cutoff_seconds_count, MAX_CUTOFFS as u64 + 6);
        assert_eq!(status.recent_cutoffs.len(), MAX_CUTOFFS);
        assert_eq!(status.recent_cutoffs.front().unwrap().peer, "n5");
        assert_eq!(
            status.recent_cutoffs.back().unwrap().epoch,
            MAX_CUTOFFS as u64 + 4
        );
    }
}
