//! The WireGuard device's configuration and status, as plain data.
//!
//! Three shapes, shared by every layer that talks to the device:
//! - [`DeviceSettings`] / [`PeerSettings`]: the whole desired configuration. The config file
//!   becomes one; a reload hands the new one to the device, which applies only the difference.
//! - [`DeviceUpdate`] / [`PeerUpdate`]: an ordered, partial change, as `wg set` sends it over
//!   the UAPI.
//! - [`DeviceStatus`] / [`PeerStatus`]: what `wg show` and `meshtun show` report; for a
//!   gated interface with a [`DeviceGate`] and, per peer in the bundle, a [`PeerGate`].

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::SystemTime;

use ipnet::IpNet;
use meshtun_proto::{EpochId, PresharedKey, PrivateKey, PublicKey};

/// The full desired configuration of one WireGuard device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSettings {
    /// The interface's private key.
    pub private_key: PrivateKey,
    /// UDP port to listen on; `None` picks a free port.
    pub listen_port: Option<u16>,
    /// Firewall mark on outgoing encrypted packets; `None` or 0 means none.
    pub fwmark: Option<u32>,
    /// The peers, in configuration order.
    pub peers: Vec<PeerSettings>,
}

/// The desired configuration of one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSettings {
    /// The peer's public key, its identity.
    pub public_key: PublicKey,
    /// Optional symmetric key mixed into the handshake.
    pub preshared_key: Option<PresharedKey>,
    /// Resolved outer endpoint, if known; it roams to the last authenticated source.
    pub endpoint: Option<SocketAddr>,
    /// Networks routed to this peer and accepted from it.
    pub allowed_ips: Vec<IpNet>,
    /// Seconds between keepalives when idle; `None` disables them.
    pub persistent_keepalive: Option<u16>,
    /// Other addresses the peer may be reached at (a gated peer's further candidates): while
    /// the peer is silent, each handshake initiation also goes to them, at most once per
    /// [`PROBE_INTERVAL`](crate::device::PROBE_INTERVAL); the first to answer with an
    /// authenticated packet becomes the endpoint. Empty for static peers.
    pub probes: Vec<SocketAddr>,
    /// Forwarding (a hub): a packet from this peer addressed to another peer that also has
    /// `forward` is encrypted again to that peer by the device, never reaching the host;
    /// one addressed to a peer without it is dropped. The gate sets it on every gated peer
    /// when the bundle says the node forwards. Peers created by a UAPI `set` do not forward.
    pub forward: bool,
}

/// One ordered change to a device, as carried by a UAPI `set` request.
///
/// Fields that are `None` are left as they are. The device applies the device-level fields
/// first, then each [`PeerUpdate`] in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceUpdate {
    /// `Some(None)` removes the private key; `Some(Some(k))` sets it.
    pub private_key: Option<Option<PrivateKey>>,
    /// New listen port (0 means "pick one").
    pub listen_port: Option<u16>,
    /// New firewall mark (0 removes it).
    pub fwmark: Option<u32>,
    /// Remove every peer before applying the peer sections, as wireguard-go does.
    pub replace_peers: bool,
    /// Peer changes, in request order.
    pub peers: Vec<PeerUpdate>,
}

/// A change to one peer, creating it unless `update_only` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerUpdate {
    /// The peer this section is about.
    pub public_key: PublicKey,
    /// Remove the peer; other fields are ignored.
    pub remove: bool,
    /// Change the peer only if it already exists.
    pub update_only: bool,
    /// `Some(None)` clears the preshared key; `Some(Some(k))` sets it.
    pub preshared_key: Option<Option<PresharedKey>>,
    /// New endpoint.
    pub endpoint: Option<SocketAddr>,
    /// New keepalive interval in seconds; `Some(0)` disables keepalives.
    pub persistent_keepalive: Option<u16>,
    /// Clear the allowed IPs before applying `allowed_ips`.
    pub replace_allowed_ips: bool,
    /// Allowed-IP additions and removals, in request order.
    pub allowed_ips: Vec<AllowedIpChange>,
}

impl PeerUpdate {
    /// An update that names the peer and changes nothing else.
    pub fn new(public_key: PublicKey) -> Self {
        Self {
            public_key,
            remove: false,
            update_only: false,
            preshared_key: None,
            endpoint: None,
            persistent_keepalive: None,
            replace_allowed_ips: false,
            allowed_ips: Vec::new(),
        }
    }
}

/// Adds or removes one allowed-IP network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowedIpChange {
    /// `allowed_ip=cidr`.
    Add(IpNet),
    /// `allowed_ip=-cidr` (a wireguard-go extension).
    Remove(IpNet),
}

/// A snapshot of a running device, for `wg show` and `meshtun show`.
#[derive(Debug, Clone)]
pub struct DeviceStatus {
    /// Interface name.
    pub name: String,
    /// The private key; `None` if unset. Only ever sent over the 0600 UAPI socket.
    pub private_key: Option<PrivateKey>,
    /// The UDP port actually bound.
    pub listen_port: u16,
    /// Firewall mark, 0 if none.
    pub fwmark: u32,
    /// Per-peer status, in configuration order.
    pub peers: Vec<PeerStatus>,
    /// The membership gating state; `None` for an interface without a controller.
    pub gate: Option<DeviceGate>,
}

/// The live state of one peer.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    /// The peer's public key.
    pub public_key: PublicKey,
    /// The preshared key in use, if any. Only ever sent over the 0600 UAPI socket.
    pub preshared_key: Option<PresharedKey>,
    /// Current endpoint (the last authenticated source, or the configured one).
    pub endpoint: Option<SocketAddr>,
    /// When the endpoint last changed (the path moved), if ever set.
    pub endpoint_since: Option<SystemTime>,
    /// Wall-clock time of the last completed handshake.
    pub last_handshake: Option<SystemTime>,
    /// Bytes of inner packets received from this peer.
    pub rx_bytes: u64,
    /// Bytes of inner packets sent to this peer.
    pub tx_bytes: u64,
    /// Keepalive interval in seconds, `None` if off.
    pub persistent_keepalive: Option<u16>,
    /// Allowed IPs, in the order they were added.
    pub allowed_ips: Vec<IpNet>,
    /// For a peer configured from the controller's bundle: its node and key age.
    pub gate: Option<PeerGate>,
}

/// The relayed endpoint's address: `100::6d74:7265:6c79:SLOT` ("mt" "re" "ly"), in the
/// discard-only prefix.
const RELAYED_PREFIX: [u16; 7] = [0x0100, 0, 0, 0, 0x6d74, 0x7265, 0x6c79];

/// The relayed endpoint of `slot`.
pub fn relayed_endpoint(slot: u16) -> SocketAddr {
    let [a, b, c, d, e, f, g] = RELAYED_PREFIX;
    SocketAddr::V6(SocketAddrV6::new(
        Ipv6Addr::new(a, b, c, d, e, f, g, slot),
        0,
        0,
        0,
    ))
}

/// The slot a relayed endpoint names, or `None` for any other address.
#[inline]
pub fn relayed_slot(addr: &SocketAddr) -> Option<u16> {
    match addr {
        SocketAddr::V6(v6) => {
            let s = v6.ip().segments();
            (s[..7] == RELAYED_PREFIX).then_some(s[7])
        }
        SocketAddr::V4(_) => None,
    }
}

/// How long after its last handshake a peer still counts as reached (WireGuard's
/// `REJECT_AFTER_TIME`).
const REACHED_WITHIN: std::time::Duration = std::time::Duration::from_secs(180);

impl PeerStatus {
    /// The path to the peer as `meshtun show` and the metrics name it: `direct` (a
    /// handshake within the last 3 minutes, at the endpoint shown), `relayed` (the same,
    /// through the TURN relay: a relayed endpoint, or an address on the relay server
    /// `relay`), `trying` (an endpoint, no recent handshake: its candidates are being
    /// probed) or `none` (nothing to try).
    pub fn path(&self, now: SystemTime, relay: Option<SocketAddr>) -> &'static str {
        match (self.endpoint, self.last_handshake) {
            (None, _) => "none",
            (Some(_), Some(t)) if now.duration_since(t).is_ok_and(|d| d <= REACHED_WITHIN) => {
                match self.is_relayed(relay) {
                    true => "relayed",
                    false => "direct",
                }
            }
            (Some(_), _) => "trying",
        }
    }

    /// True if the endpoint is a path through the relay `relay`.
    pub fn is_relayed(&self, relay: Option<SocketAddr>) -> bool {
        self.endpoint
            .is_some_and(|e| relayed_slot(&e).is_some() || relay.is_some_and(|r| r.ip() == e.ip()))
    }
}

/// The membership gating state of a device, as `meshtun show` and the UAPI report it.
///
/// A summary of the gate's status (`crate::gate::GateStatus`) without its counters; it
/// holds no secret. The gate fills it in; the device never does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceGate {
    /// This node's id at the controller.
    pub node_id: String,
    /// The controller's base URL.
    pub controller_url: String,
    /// The pinned controller key that signed the last bundle accepted (base64; empty before
    /// the first).
    pub controller_key: String,
    /// What happens when the controller is lost: `fail_closed` or `keep_last`.
    pub loss_policy: String,
    /// The membership enforced now, with the controller's reason for a denial.
    pub membership: MembershipState,
    /// The epoch of the bundle in force.
    pub epoch: Option<EpochId>,
    /// When that bundle ends, Unix milliseconds.
    pub epoch_not_after_ms: Option<u64>,
    /// A verified bundle waiting for its activation time.
    pub next_epoch: Option<EpochId>,
    /// The last time the controller answered, Unix milliseconds.
    pub controller_last_contact_ms: Option<u64>,
    /// The last error talking to the controller, cleared by the next success.
    pub controller_error: Option<String>,
    /// What STUN found out about the NAT in front of the node.
    pub nat: NatStatus,
    /// Whether this node forwards between its gated peers (a hub of `hub_and_spoke`).
    pub forward: bool,
    /// The allocation on the TURN relay, if the bundle carries relay credentials.
    pub relay: Option<RelayShown>,
    /// Peers of accepted bundles refused since start for their membership signature
    /// (`[controller] membership_key`).
    pub membership_refused: u64,
    /// Peer observations, when `[controller] observe` is on.
    pub observing: Option<ObservingShown>,
}

/// Peer observations as `meshtun show` prints them: the settings and the outcomes since
/// start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObservingShown {
    /// The most gated peers observed per round.
    pub peers: u64,
    /// Seconds between two rounds.
    pub interval_s: u64,
    /// Observations the controller stored.
    pub sent: u64,
    /// Observations the controller refused.
    pub refused: u64,
    /// Observations not signed or not delivered.
    pub failed: u64,
}

/// This node's allocation on a TURN relay, as `meshtun show` prints it (no secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayShown {
    /// The relay server.
    pub server: SocketAddr,
    /// The relayed address peers send to, once allocated.
    pub relayed: Option<SocketAddr>,
    /// When the credentials expire, Unix seconds.
    pub expires_s: u64,
    /// `allocating`, `allocated` or `failed`.
    pub state: String,
}

/// The gating state of one peer configured from the bundle in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerGate {
    /// The peer's node id at the controller.
    pub node_id: String,
    /// When the peer's current preshared key was put in use, Unix milliseconds.
    pub psk_since_ms: u64,
    /// The epoch of the bundle that brought the peer's current preshared key.
    pub psk_epoch: Option<EpochId>,
    /// For a hub: the nodes reached through it (`hub_and_spoke`), whose addresses are among
    /// its allowed IPs.
    pub forwards_to: Vec<String>,
}

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

/// What STUN found out about this node's NAT: one reflexive address per STUN server that
/// answered, and the kind of NAT their comparison shows. Filled in by the daemon's STUN
/// client; reported by `meshtun show` (the UAPI keys `meshtun_reflexive` and `meshtun_nat`)
/// and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatStatus {
    /// The address and port each STUN server saw the WireGuard socket's requests come from.
    pub reflexive: Vec<Reflexive>,
    /// The kind of NAT, from comparing them.
    pub kind: NatKind,
}

/// One STUN server's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reflexive {
    /// The server, as configured (`host:port`).
    pub server: String,
    /// The address and port it saw.
    pub address: SocketAddr,
    /// When it answered, Unix milliseconds.
    pub at_ms: u64,
}

/// How the NAT in front of this node maps its WireGuard socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NatKind {
    /// Fewer than two servers of one address family answered: no comparison yet.
    #[default]
    Unknown,
    /// Every server saw the same address and port: the mapping is endpoint-independent
    /// (a direct path through it can be opened by a simultaneous open).
    EndpointIndependent,
    /// Servers saw different ports or addresses: the mapping depends on the destination
    /// ("symmetric" NAT); a direct path is unlikely, a relay is needed.
    EndpointDependent,
}

impl NatKind {
    /// The word `show`, the UAPI and the metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::EndpointIndependent => "endpoint_independent",
            Self::EndpointDependent => "endpoint_dependent",
        }
    }

    /// The kind a word names, as [`Self::as_str`] writes it.
    pub fn parse(word: &str) -> Option<Self> {
        [
            Self::Unknown,
            Self::EndpointIndependent,
            Self::EndpointDependent,
        ]
        .into_iter()
        .find(|k| k.as_str() == word)
    }
}
