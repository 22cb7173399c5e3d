//! The WireGuard device's configuration and status, as plain data.
//!
//! Three shapes, shared by every layer that talks to the device:
//! - [`DeviceSettings`] / [`PeerSettings`]: the whole desired configuration. The config file
//!   becomes one; a reload hands the new one to the device, which applies only the difference.
//! - [`DeviceUpdate`] / [`PeerUpdate`]: an ordered, partial change, as `wg set` sends it over
//!   the UAPI.
//! - [`DeviceStatus`] / [`PeerStatus`]: what `wg show` and `meshtun show` report; for a
//!   gated interface with a [`DeviceGate`] and, per peer in the bundle, a [`PeerGate`].

use std::net::SocketAddr;
use std::time::SystemTime;

use ipnet::IpNet;
use meshtun_proto::{EpochId, PresharedKey, PrivateKey, PublicKey};

use crate::gate::{GateStatus, MembershipState};

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

/// The membership gating state of a device, as `meshtun show` and the UAPI report it.
///
/// A summary of [`GateStatus`] without its counters; it holds no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceGate {
    /// This node's id at the controller.
    pub node_id: String,
    /// The controller's base URL.
    pub controller_url: String,
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
}

/// The gating state of one peer configured from the bundle in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerGate {
    /// The peer's node id at the controller.
    pub node_id: String,
    /// When the peer's current preshared key was put in use, Unix milliseconds.
    pub psk_since_ms: u64,
}

impl From<&GateStatus> for DeviceGate {
    fn from(gate: &GateStatus) -> Self {
        Self {
            node_id: gate.node_id.clone(),
            controller_url: gate.controller_url.clone(),
            loss_policy: gate.loss_policy.to_owned(),
            membership: gate.membership.clone(),
            epoch: gate.epoch,
            epoch_not_after_ms: gate.not_after_ms,
            next_epoch: gate.next_epoch,
            controller_last_contact_ms: gate.last_contact_ms,
            controller_error: gate.last_error.clone(),
        }
    }
}

impl DeviceStatus {
    /// Adds the gating state `gate`: the device's part, and the node and key age of every
    /// peer the bundle in force lists (other peers, configured statically, get none).
    pub fn attach_gate(&mut self, gate: &GateStatus) {
        self.gate = Some(DeviceGate::from(gate));
        for peer in &mut self.peers {
            peer.gate = gate.peer(&peer.public_key).map(|info| PeerGate {
                node_id: info.node_id.clone(),
                psk_since_ms: info.psk_since_ms,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::GatedPeerInfo;

    fn peer(public_key: PublicKey) -> PeerStatus {
        PeerStatus {
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
                node_id: "node-b".into(),
                public_key: gated,
                psk_since_ms: 1_699_999_990_000,
            }],
            ..GateStatus::default()
        };
        status.attach_gate(&gate);
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
            node_id: "node-b".into(),
            psk_since_ms: 1_699_999_990_000,
        };
        assert_eq!(status.peers[1].gate, Some(expected));
    }
}
