//! `meshtun show --json`: the same facts as the text, as numbers (milliseconds, seconds,
//! bytes) and state words.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::Report;
use crate::probe::Reachability;
use crate::wgcfg::{DeviceGate, PeerGate, PeerStatus};
use meshtun_proto::time::unix_ms_of;

/// One interface, as `meshtun show --json` prints it.
#[derive(Debug, Serialize)]
pub struct InterfaceView {
    /// Interface name.
    pub name: String,
    /// Our public key, if a private key is set.
    pub public_key: Option<String>,
    /// UDP listen port.
    pub listen_port: u16,
    /// Firewall mark, 0 if none.
    pub fwmark: u32,
    /// The membership gating state; `null` for an interface without a controller.
    pub gate: Option<GateView>,
    /// The peers.
    pub peers: Vec<PeerView>,
}

/// The membership gating state of an interface, as `meshtun show --json` prints it.
#[derive(Debug, Serialize)]
pub struct GateView {
    /// This node's id.
    pub node_id: String,
    /// The controller's base URL.
    pub controller_url: String,
    /// The pinned controller key that signed the last bundle accepted (empty before the
    /// first).
    pub controller_key: String,
    /// `fail_closed` or `keep_last`.
    pub loss_policy: String,
    /// `PENDING`, `ALLOWED`, `DENIED` or `LOST`.
    pub membership: String,
    /// The controller's reason, for `DENIED`.
    pub reason: Option<String>,
    /// The epoch of the bundle in force.
    pub epoch: Option<u64>,
    /// When it ends, Unix milliseconds.
    pub epoch_not_after_ms: Option<u64>,
    /// Milliseconds until it ends; negative once it has ended.
    pub epoch_remaining_ms: Option<i64>,
    /// A verified bundle waiting for its activation time.
    pub next_epoch: Option<u64>,
    /// The controller's last answer, Unix milliseconds.
    pub controller_last_contact_ms: Option<u64>,
    /// Milliseconds since then.
    pub controller_last_contact_age_ms: Option<u64>,
    /// The last error talking to the controller.
    pub controller_error: Option<String>,
    /// The node's reflexive addresses, one per STUN server that answered.
    pub reflexive: Vec<ReflexiveView>,
    /// `unknown`, `endpoint_independent` or `endpoint_dependent`.
    pub nat: String,
    /// Whether this node forwards between its gated peers (a hub of `hub_and_spoke`).
    pub forward: bool,
    /// Peers refused since start for their membership signature; left out while 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub membership_refused: u64,
    /// Peer observations, while `[controller] observe` is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observing: Option<ObservingView>,
    /// The TURN allocation, if the bundle carries relay credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay: Option<RelayView>,
}

/// Peer observations, as `meshtun show --json` prints them.
#[derive(Debug, Serialize)]
pub struct ObservingView {
    /// The most gated peers observed per round.
    pub peers: u64,
    /// Seconds between two rounds.
    pub interval_s: u64,
    /// Observations the controller stored since start.
    pub sent: u64,
    /// Observations it refused since start.
    pub refused: u64,
    /// Observations not signed or not delivered since start.
    pub failed: u64,
}

/// The TURN allocation, as `meshtun show --json` prints it.
#[derive(Debug, Serialize)]
pub struct RelayView {
    /// The relay server, `address:port`.
    pub server: String,
    /// The relayed address peers send to, once allocated.
    pub relayed: Option<String>,
    /// `allocating`, `allocated` or `failed`.
    pub state: String,
    /// When the credentials expire, Unix seconds.
    pub expires_s: u64,
}

/// One STUN server's answer, as `meshtun show --json` prints it.
#[derive(Debug, Serialize)]
pub struct ReflexiveView {
    /// The server, `host:port`.
    pub server: String,
    /// The address and port it saw the WireGuard socket's request come from.
    pub address: String,
    /// Milliseconds since it answered.
    pub age_ms: u64,
}

/// One peer, as `meshtun show --json` prints it.
#[derive(Debug, Serialize)]
pub struct PeerView {
    /// The peer's public key.
    pub public_key: String,
    /// Whether a preshared key is set (the key itself is never shown).
    pub preshared_key: bool,
    /// Current endpoint; for a peer reached through the TURN relay, the relay server.
    pub endpoint: Option<String>,
    /// True when the path goes through the TURN relay (its own allocation or the peer's).
    pub relayed: bool,
    /// When the endpoint last changed, Unix seconds.
    pub endpoint_since: Option<u64>,
    /// For a gated peer: `direct` (a handshake in the last 3 minutes), `relayed` (the same,
    /// through the relay), `trying` (an endpoint, no recent handshake) or `none` (no
    /// candidate to try); `null` for a static peer.
    pub path: Option<&'static str>,
    /// Allowed IPs.
    pub allowed_ips: Vec<String>,
    /// Unix time of the latest handshake, if any.
    pub latest_handshake: Option<u64>,
    /// Bytes received from the peer.
    pub rx_bytes: u64,
    /// Bytes sent to the peer.
    pub tx_bytes: u64,
    /// Persistent keepalive interval in seconds.
    pub persistent_keepalive: Option<u16>,
    /// For a peer from the controller's bundle: its node and key age; `null` otherwise.
    pub gate: Option<PeerGateView>,
    /// Whether it answered a probe over the tunnel; `null` if not probed.
    pub reachability: Option<Reachability>,
}

/// A gated peer's node and key age, as `meshtun show --json` prints them.
#[derive(Debug, Serialize)]
pub struct PeerGateView {
    /// The peer's node id.
    pub node_id: String,
    /// When its current preshared key was put in use, Unix milliseconds.
    pub psk_since_ms: u64,
    /// Milliseconds since then.
    pub psk_age_ms: u64,
    /// The epoch of the bundle that brought that key; left out without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub psk_epoch: Option<meshtun_proto::EpochId>,
    /// For a hub: the nodes reached through it (their path is "via" this peer).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub forwards_to: Vec<String>,
}

impl InterfaceView {
    /// The view of `report` as of `now`.
    pub fn new(report: &Report, now: SystemTime) -> Self {
        let s = &report.status;
        let now_ms = unix_ms_of(now);
        let relay = s
            .gate
            .as_ref()
            .and_then(|g| g.relay.as_ref())
            .map(|r| r.server);
        let peers = s.peers.iter().enumerate().map(|(index, peer)| {
            let reachability = report.peer_reachability(index).cloned();
            PeerView::new(peer, reachability, relay, now_ms)
        });
        Self {
            name: s.name.clone(),
            public_key: s.private_key.as_ref().map(|k| k.public_key().to_base64()),
            listen_port: s.listen_port,
            fwmark: s.fwmark,
            gate: s.gate.as_ref().map(|g| GateView::new(g, now_ms)),
            peers: peers.collect(),
        }
    }
}

impl GateView {
    fn new(g: &DeviceGate, now_ms: u64) -> Self {
        let signed = |ms: u64| i64::try_from(ms).unwrap_or(i64::MAX);
        Self {
            node_id: g.node_id.clone(),
            controller_url: g.controller_url.clone(),
            controller_key: g.controller_key.clone(),
            loss_policy: g.loss_policy.clone(),
            membership: g.membership.as_str().to_owned(),
            reason: g.membership.reason().map(str::to_owned),
            epoch: g.epoch,
            epoch_not_after_ms: g.epoch_not_after_ms,
            epoch_remaining_ms: g
                .epoch_not_after_ms
                .map(|end| signed(end).saturating_sub(signed(now_ms))),
            next_epoch: g.next_epoch,
            controller_last_contact_ms: g.controller_last_contact_ms,
            controller_last_contact_age_ms: g
                .controller_last_contact_ms
                .map(|at| now_ms.saturating_sub(at)),
            controller_error: g.controller_error.clone(),
            reflexive: g
                .nat
                .reflexive
                .iter()
                .map(|r| ReflexiveView {
                    server: r.server.clone(),
                    address: r.address.to_string(),
                    age_ms: now_ms.saturating_sub(r.at_ms),
                })
                .collect(),
            nat: g.nat.kind.as_str().to_owned(),
            forward: g.forward,
            membership_refused: g.membership_refused,
            observing: g.observing.map(|o| ObservingView {
                peers: o.peers,
                interval_s: o.interval_s,
                sent: o.sent,
                refused: o.refused,
                failed: o.failed,
            }),
            relay: g.relay.as_ref().map(|r| RelayView {
                server: r.server.to_string(),
                relayed: r.relayed.map(|a| a.to_string()),
                state: r.state.clone(),
                expires_s: r.expires_s,
            }),
        }
    }
}

impl PeerView {
    fn new(
        p: &PeerStatus,
        reachability: Option<Reachability>,
        relay: Option<std::net::SocketAddr>,
        now_ms: u64,
    ) -> Self {
        let relayed = p.is_relayed(relay);
        let slot = p.endpoint.and_then(|e| crate::wgcfg::relayed_slot(&e));
        let endpoint = match slot {
            Some(_) => relay.map(|r| r.to_string()),
            None => p.endpoint.map(|e| e.to_string()),
        };
        Self {
            public_key: p.public_key.to_base64(),
            preshared_key: p.preshared_key.is_some(),
            endpoint,
            relayed,
            endpoint_since: p
                .endpoint_since
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
            path: p.gate.as_ref().map(|_| p.path(SystemTime::now(), relay)),
            allowed_ips: p.allowed_ips.iter().map(|n| n.to_string()).collect(),
            latest_handshake: p
                .last_handshake
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
            rx_bytes: p.rx_bytes,
            tx_bytes: p.tx_bytes,
            persistent_keepalive: p.persistent_keepalive,
            gate: p.gate.as_ref().map(|g| PeerGateView::new(g, now_ms)),
            reachability,
        }
    }
}

impl PeerGateView {
    fn new(g: &PeerGate, now_ms: u64) -> Self {
        Self {
            node_id: g.node_id.clone(),
            psk_since_ms: g.psk_since_ms,
            psk_age_ms: now_ms.saturating_sub(g.psk_since_ms),
            psk_epoch: g.psk_epoch,
            forwards_to: g.forwards_to.clone(),
        }
    }
}

/// For `skip_serializing_if`: a zero count is left out.
fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use serde_json::{json, Value};

    use super::super::tests::{gated_status, probed, status, NOW_SECS};
    use super::*;
    use crate::gate::MembershipState;

    fn view(report: &Report) -> Value {
        let now = UNIX_EPOCH + Duration::from_secs(NOW_SECS);
        serde_json::to_value(InterfaceView::new(report, now)).unwrap()
    }

    #[test]
    fn json_has_no_secrets() {
        let report = probed(status());
        let s = &report.status;
        let json = view(&report).to_string();
        assert!(json.contains("\"latest_handshake\":1699999935"), "{json}");
        assert!(json.contains("\"preshared_key\":true"));
        assert!(!json.contains(&s.private_key.as_ref().unwrap().to_base64()));
        assert!(!json.contains(&s.peers[0].preshared_key.as_ref().unwrap().to_base64()));
    }

    #[test]
    fn ungated_interfaces_have_null_gate_fields() {
        let json = view(&Report {
            status: status(),
            reachability: None,
        });
        assert_eq!(json["gate"], Value::Null);
        assert_eq!(json["peers"][0]["gate"], Value::Null);
        assert_eq!(json["peers"][0]["reachability"], Value::Null);
    }

    #[test]
    fn gated_interface_has_numbers_and_state_words() {
        let report = probed(gated_status(MembershipState::Denied {
            reason: "overall 0.40 below 0.70".into(),
        }));
        let json = view(&report);
        let now_ms = NOW_SECS * 1000;
        assert_eq!(
            json["gate"],
            json!({
                "node_id": "node-a",
                "controller_url": "http://192.0.2.1:8080",
                "controller_key": "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=",
                "loss_policy": "fail_closed",
                "membership": "DENIED",
                "reason": "overall 0.40 below 0.70",
                "epoch": 42,
                "epoch_not_after_ms": now_ms + 7_000,
                "epoch_remaining_ms": 7_000,
                "next_epoch": null,
                "controller_last_contact_ms": now_ms - 2_000,
                "controller_last_contact_age_ms": 2_000,
                "controller_error": null,
                "reflexive": [],
                "nat": "unknown",
                "forward": false,
            })
        );
        assert_eq!(json["peers"][0]["gate"], Value::Null);
        assert_eq!(
            json["peers"][1]["gate"],
            json!({"node_id": "node-b", "psk_since_ms": now_ms - 4_000, "psk_age_ms": 4_000, "psk_epoch": 42})
        );
        assert_eq!(
            json["peers"][0]["reachability"],
            json!({"state": "reachable", "address": "100.64.0.2", "rtt_ms": 0.6})
        );
        assert_eq!(
            json["peers"][1]["reachability"],
            json!({"state": "unreachable", "address": "100.64.0.3", "timeout_ms": 1000})
        );
    }

    #[test]
    fn reflexive_addresses_and_the_nat_kind_are_shown() {
        let mut status = gated_status(MembershipState::Allowed);
        if let Some(gate) = status.gate.as_mut() {
            gate.nat = with_nat();
        }
        let json = view(&probed(status));
        assert_eq!(json["gate"]["nat"], "endpoint_dependent");
        assert_eq!(
            json["gate"]["reflexive"],
            json!([
                {"server": "192.0.2.1:3478", "address": "203.0.113.7:40001", "age_ms": 3_000},
                {"server": "192.0.2.9:3478", "address": "203.0.113.7:40002", "age_ms": 3_000},
            ])
        );
    }

    #[test]
    fn observations_are_shown_while_on() {
        let mut status = gated_status(MembershipState::Allowed);
        if let Some(gate) = status.gate.as_mut() {
            gate.observing = Some(crate::wgcfg::ObservingShown {
                peers: 16,
                interval_s: 30,
                sent: 12,
                refused: 2,
                failed: 1,
            });
        }
        let json = view(&probed(status));
        assert_eq!(
            json["gate"]["observing"],
            json!({"peers": 16, "interval_s": 30, "sent": 12, "refused": 2, "failed": 1})
        );
    }

    /// Two STUN answers that differ: a symmetric NAT.
    pub(crate) fn with_nat() -> crate::wgcfg::NatStatus {
        use crate::wgcfg::{NatKind, NatStatus, Reflexive};
        let at_ms = (NOW_SECS - 3) * 1000;
        NatStatus {
            reflexive: vec![
                Reflexive {
                    server: "192.0.2.1:3478".into(),
                    address: "203.0.113.7:40001".parse().unwrap(),
                    at_ms,
                },
                Reflexive {
                    server: "192.0.2.9:3478".into(),
                    address: "203.0.113.7:40002".parse().unwrap(),
                    at_ms,
                },
            ],
            kind: NatKind::EndpointDependent,
        }
    }

    #[test]
    fn an_ended_epoch_has_negative_remaining_time() {
        let mut status = gated_status(MembershipState::Lost);
        if let Some(gate) = status.gate.as_mut() {
            gate.epoch_not_after_ms = Some(NOW_SECS * 1000 - 1_500);
        }
        let json = view(&Report {
            status,
            reachability: None,
        });
        assert_eq!(json["gate"]["membership"], "LOST");
        assert_eq!(json["gate"]["epoch_remaining_ms"], -1_500);
    }
}
