//! What a user sees of a gated daemon: its gate log lines (`MEMBERSHIP=…`, `APPLIED …`,
//! `CUTOFF …`, read by [`meshtun_testbed::gatelog`], the parser `meshtun demo` uses too) and
//! its peers as the UAPI (`wg show`) reports them.

use std::time::{Duration, Instant};

use meshtun_proto::PublicKey;

use crate::netns::Netns;
use crate::process::uapi_get;

pub use meshtun_testbed::gatelog::{events, GateEvent};

/// Whether the log has a `MEMBERSHIP=state` line (for any epoch).
pub fn has_membership(log: &str, state: &str) -> bool {
    events(log)
        .iter()
        .any(|e| matches!(e, GateEvent::Membership { state: s, .. } if s == state))
}

/// The epochs named by the log's `MEMBERSHIP=state` lines, in order.
pub fn membership_epochs(log: &str, state: &str) -> Vec<u64> {
    events(log)
        .into_iter()
        .filter_map(|e| match e {
            GateEvent::Membership {
                state: s,
                epoch: Some(epoch),
                ..
            } if s == state => Some(epoch),
            _ => None,
        })
        .collect()
}

/// The `decision_to_cutoff_ms` of the log's `CUTOFF` lines for `peer`.
pub fn cutoffs(log: &str, peer: &str) -> Vec<Option<u64>> {
    events(log)
        .into_iter()
        .filter_map(|e| match e {
            GateEvent::Cutoff {
                peer: p,
                decision_to_cutoff_ms,
                ..
            } if p == peer => Some(decision_to_cutoff_ms),
            _ => None,
        })
        .collect()
}

/// The `gate` object of `meshtun show IFACE --json --no-probe` run in `ns`: the interface's
/// membership as its user sees it (`membership`, `reason`, `epoch`, …).
pub fn show_gate(ns: &Netns, iface: &str) -> serde_json::Value {
    show_json(ns, iface)["gate"].clone()
}

/// The interface's view in `meshtun show IFACE --json --no-probe`, run in `ns`.
fn show_json(ns: &Netns, iface: &str) -> serde_json::Value {
    let out = crate::meshtun_in(
        ns,
        &["show", iface, "--json", "--no-probe"],
        crate::netns::COMMAND_TIMEOUT,
    )
    .expect_success();
    let views: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("`meshtun show {iface} --json` is not JSON ({e}):\n{out}"));
    views[0].clone()
}

/// The view `meshtun show IFACE --json --no-probe`, run in `ns`, gives of the peer with
/// public key `key` (base64): its endpoint, path, handshake, … (`null` if it is not listed).
pub fn peer_view(ns: &Netns, iface: &str, key: &str) -> serde_json::Value {
    show_json(ns, iface)["peers"]
        .as_array()
        .and_then(|peers| peers.iter().find(|p| p["public_key"] == key))
        .cloned()
        .unwrap_or_default()
}

/// The membership `meshtun show IFACE --json` reports (`ALLOWED`, `DENIED`, `LOST`, …).
pub fn shown_membership(ns: &Netns, iface: &str) -> String {
    let gate = show_gate(ns, iface);
    gate["membership"]
        .as_str()
        .unwrap_or_else(|| panic!("`meshtun show {iface} --json` reports no membership: {gate}"))
        .to_owned()
}

/// A peer as the UAPI `get` reports it.
#[derive(Clone, PartialEq, Eq)]
pub struct UapiPeer {
    /// Public key.
    pub public_key: PublicKey,
    /// Preshared key, hex (`None` when unset or all zero).
    pub preshared_key_hex: Option<String>,
    /// Unix seconds of the latest handshake, 0 for never.
    pub last_handshake_sec: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Its allowed IPs, as listed (`100.64.0.2/32`).
    pub allowed_ips: Vec<String>,
}

impl std::fmt::Debug for UapiPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UapiPeer")
            .field("public_key", &self.public_key.to_base64())
            .field(
                "preshared_key",
                &self.preshared_key_hex.as_ref().map(|_| "(set)"),
            )
            .field("last_handshake_sec", &self.last_handshake_sec)
            .field("rx_bytes", &self.rx_bytes)
            .field("allowed_ips", &self.allowed_ips)
            .finish()
    }
}

/// The peers of interface `iface`, from its UAPI socket; `None` if it does not answer.
pub fn uapi_peers(iface: &str) -> Option<Vec<UapiPeer>> {
    let reply = uapi_get(&crate::uapi_socket(iface))?;
    Some(parse_uapi_peers(&reply))
}

fn parse_uapi_peers(reply: &str) -> Vec<UapiPeer> {
    let mut peers: Vec<UapiPeer> = Vec::new();
    for line in reply.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key == "public_key" {
            if let Ok(public_key) = PublicKey::from_hex(value) {
                peers.push(UapiPeer {
                    public_key,
                    preshared_key_hex: None,
                    last_handshake_sec: 0,
                    rx_bytes: 0,
                    allowed_ips: Vec::new(),
                });
            }
            continue;
        }
        let Some(peer) = peers.last_mut() else {
            continue;
        };
        match key {
            "preshared_key" if value.bytes().any(|b| b != b'0') => {
                peer.preshared_key_hex = Some(value.to_owned());
            }
            "last_handshake_time_sec" => peer.last_handshake_sec = value.parse().unwrap_or(0),
            "rx_bytes" => peer.rx_bytes = value.parse().unwrap_or(0),
            "allowed_ip" => peer.allowed_ips.push(value.to_owned()),
            _ => {}
        }
    }
    peers
}

/// Whether `iface` answers and lists every key of `keys` among its peers.
pub fn peers_present(iface: &str, keys: &[PublicKey]) -> bool {
    uapi_peers(iface).is_some_and(|peers| {
        keys.iter()
            .all(|k| peers.iter().any(|p| &p.public_key == k))
    })
}

/// Whether `iface` answers and lists none of `keys` among its peers.
pub fn peers_absent(iface: &str, keys: &[PublicKey]) -> bool {
    uapi_peers(iface).is_some_and(|peers| {
        !keys
            .iter()
            .any(|k| peers.iter().any(|p| &p.public_key == k))
    })
}

/// Polls `cond` every `every` until it holds or `timeout` passes; the Unix millisecond time
/// of the first poll at which it held, or `None`.
pub fn first_time(
    timeout: Duration,
    every: Duration,
    mut cond: impl FnMut() -> bool,
) -> Option<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        let at = super::now_ms();
        if cond() {
            return Some(at);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// Waits until `node` no longer lists `gone` as a peer, polling its UAPI every 20 ms; the
/// Unix ms time it was first seen gone. Fails the test after 10 s.
pub fn wait_removed(node: &super::GatedNode, gone: &super::GatedNode) -> u64 {
    first_time(Duration::from_secs(10), Duration::from_millis(20), || {
        peers_absent(&node.iface, &[gone.public_key()])
    })
    .unwrap_or_else(|| panic!("{} still lists {} as a peer after 10 s", node.id, gone.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
2025-01-01T00:00:00.000001Z  INFO meshtun::gate: MEMBERSHIP=ALLOWED epoch=4 peers=2
2025-01-01T00:00:01.000000Z  INFO gate{iface=mt0}: meshtun::gate: CUTOFF peer=d epoch=5 decision_to_cutoff_ms=137
2025-01-01T00:00:02.000000Z  INFO meshtun::gate: MEMBERSHIP=DENIED epoch=6 reason=\"below\"
";

    #[test]
    fn the_helpers_select_from_the_parsed_lines() {
        assert_eq!(cutoffs(LOG, "d"), [Some(137)]);
        assert_eq!(membership_epochs(LOG, "DENIED"), [6]);
        assert!(has_membership(LOG, "ALLOWED") && !has_membership(LOG, "LOST"));
    }

    #[test]
    fn uapi_peers_are_parsed() {
        let a = PublicKey::from_bytes([1; 32]);
        let b = PublicKey::from_bytes([2; 32]);
        let reply = format!(
            "private_key={}\nlisten_port=51820\npublic_key={}\npreshared_key={}\n\
             last_handshake_time_sec=1700000000\nrx_bytes=532\npublic_key={}\n\
             preshared_key={}\nlast_handshake_time_sec=0\nerrno=0\n\n",
            "11".repeat(32),
            a.to_hex(),
            "ab".repeat(32),
            b.to_hex(),
            "00".repeat(32)
        );
        let peers = parse_uapi_peers(&reply);
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[0].public_key, a);
        assert_eq!(
            peers[0].preshared_key_hex.as_deref(),
            Some(&*"ab".repeat(32))
        );
        assert_eq!(
            (peers[0].last_handshake_sec, peers[0].rx_bytes),
            (1_700_000_000, 532)
        );
        assert_eq!(peers[1].preshared_key_hex, None);
        assert_eq!(peers[1].last_handshake_sec, 0);
    }

    #[test]
    fn first_time_reports_when_the_condition_held() {
        let start = super::super::now_ms();
        let mut n = 0;
        let at = first_time(Duration::from_secs(2), Duration::from_millis(10), || {
            n += 1;
            n == 3
        });
        assert!(at.is_some_and(|t| t >= start + 20), "{at:?}");
        assert_eq!(
            first_time(Duration::from_millis(50), Duration::from_millis(10), || {
                false
            }),
            None
        );
    }
}
