//! What a gated daemon knows about its membership, as plain data: the daemon updates it,
//! and `meshtun show`, the UAPI socket and the metrics endpoint read it. Holds no secret.

use std::sync::Arc;

use meshtun_proto::{EpochId, PublicKey};
use parking_lot::Mutex;

/// This node's membership as the daemon enforces it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MembershipState {
    /// No bundle yet (just started, nothing cached): no gated peer.
    #[default]
    Pending,
    /// The bundle in force allows this node; its gated peers are configured.
    Allowed,
    /// The bundle in force denies this node, for the controller's reason: no gated peer.
    Denied {
        /// The controller's reason.
        reason: String,
    },
    /// The controller was lost past the last bundle's end plus the grace, and the loss
    /// policy is `fail_closed`: no gated peer until a new bundle arrives.
    Lost,
}

impl MembershipState {
    /// The word shown and logged: `PENDING`, `ALLOWED`, `DENIED` or `LOST`.
    pub fn as_str(&self) -> &'static str {
        match self {
            MembershipState::Pending => "PENDING",
            MembershipState::Allowed => "ALLOWED",
            MembershipState::Denied { .. } => "DENIED",
            MembershipState::Lost => "LOST",
        }
    }

    /// The reason, for a denied node.
    pub fn reason(&self) -> Option<&str> {
        match self {
            MembershipState::Denied { reason } => Some(reason),
            _ => None,
        }
    }
}

/// One peer configured from the bundle in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatedPeerInfo {
    /// The peer's node id.
    pub node_id: String,
    /// The peer's WireGuard public key.
    pub public_key: PublicKey,
    /// When this peer's current preshared key was put in use, Unix milliseconds.
    pub psk_since_ms: u64,
}

/// The gating state of one interface.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GateStatus {
    /// This node's id at the controller.
    pub node_id: String,
    /// The controller's base URL.
    pub controller_url: String,
    /// The loss policy (`fail_closed` or `keep_last`).
    pub loss_policy: &'static str,
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
    /// Peers cut off since start (left a bundle, or removed by a denial or the loss rule).
    pub cutoffs: u64,
    /// Sum of decision-to-cut-off times over [`Self::cutoffs`] with a known decision time,
    /// in seconds.
    pub cutoff_seconds_sum: f64,
    /// Cut-offs counted in [`Self::cutoff_seconds_sum`].
    pub cutoff_seconds_count: u64,
    /// The last decision-to-cut-off time, in seconds.
    pub last_cutoff_seconds: Option<f64>,
}

impl GateStatus {
    /// The gated peer with `key`, if the bundle in force lists it.
    pub fn peer(&self, key: &PublicKey) -> Option<&GatedPeerInfo> {
        self.peers.iter().find(|p| p.public_key == *key)
    }
}

/// The status shared between the gating task and its readers.
pub type SharedGateStatus = Arc<Mutex<GateStatus>>;
