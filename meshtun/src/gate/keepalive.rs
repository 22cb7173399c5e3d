//! The persistent keepalive of gated peers, decided without I/O: `[controller] keepalive`
//! when set, else [`NAT_KEEPALIVE_SECS`] while STUN shows this node behind a NAT (so that
//! the NAT's mapping, which is all a peer with no endpoint for this node can reach it
//! through, does not expire while the tunnel is idle), else off.
//!
//! Behind a NAT means: a STUN server saw the WireGuard socket at an address that is not
//! one of the host's own, or at another port than the one it listens on, or two servers
//! saw different mappings (an endpoint-dependent NAT). With no answer at all (no STUN
//! server, or none answering), the last decision stands: an unreachable STUN server does
//! not switch the keepalive off under a node that needs it.

use std::collections::HashSet;
use std::net::IpAddr;

use crate::config::{GatedKeepalive, NAT_KEEPALIVE_SECS};
use crate::wgcfg::{NatKind, NatStatus};

/// Whether STUN's answers show a NAT in front of the WireGuard socket; `None` without an
/// answer. `own` are the host's addresses, `listen_port` the socket's port.
pub fn behind_nat(nat: &NatStatus, own: &HashSet<IpAddr>, listen_port: u16) -> Option<bool> {
    if nat.reflexive.is_empty() {
        return None;
    }
    let mapped = nat.reflexive.iter().any(|r| {
        let ip = r.address.ip().to_canonical();
        !own.contains(&ip) || r.address.port() != listen_port
    });
    Some(mapped || nat.kind == NatKind::EndpointDependent)
}

/// The keepalive interval of gated peers: the setting, or for [`GatedKeepalive::Auto`]
/// [`NAT_KEEPALIVE_SECS`] when `behind_nat`, else none.
pub fn interval(setting: GatedKeepalive, behind_nat: bool) -> Option<u16> {
    match setting {
        GatedKeepalive::Off => None,
        GatedKeepalive::Every(seconds) => Some(seconds).filter(|s| *s > 0),
        GatedKeepalive::Auto => behind_nat.then_some(NAT_KEEPALIVE_SECS),
    }
}

/// The NAT decision in force, changed only by an answer (see the module's documentation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NatDecision {
    behind: bool,
}

impl NatDecision {
    /// True if the node is taken to be behind a NAT.
    pub fn behind(self) -> bool {
        self.behind
    }

    /// Takes STUN's current answers into account; true if the decision changed.
    pub fn update(&mut self, nat: &NatStatus, own: &HashSet<IpAddr>, listen_port: u16) -> bool {
        match behind_nat(nat, own, listen_port) {
            Some(behind) if behind != self.behind => {
                self.behind = behind;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::wgcfg::Reflexive;

    const PORT: u16 = 51820;

    fn own(addrs: &[&str]) -> HashSet<IpAddr> {
        addrs.iter().map(|a| a.parse().unwrap()).collect()
    }

    fn seen(addrs: &[&str], kind: NatKind) -> NatStatus {
        NatStatus {
            reflexive: addrs
                .iter()
                .enumerate()
                .map(|(i, a)| Reflexive {
                    server: format!("192.0.2.{}:3478", 250 + i),
                    address: a.parse::<SocketAddr>().unwrap(),
                    at_ms: 1,
                })
                .collect(),
            kind,
        }
    }

    #[test]
    fn a_mapping_to_another_address_or_port_is_a_nat() {
        let host = own(&["198.51.100.2", "100.64.0.1", "2001:db8::2"]);
        let cases = [
            (&["192.0.2.1:51820"][..], NatKind::Unknown, true),
            (&["198.51.100.2:40123"], NatKind::Unknown, true),
            (&["198.51.100.2:51820"], NatKind::Unknown, false),
            (&["[2001:db8::2]:51820"], NatKind::Unknown, false),
            // An IPv4-mapped answer is the same host address.
            (&["[::ffff:198.51.100.2]:51820"], NatKind::Unknown, false),
            (
                &["198.51.100.2:51820", "198.51.100.2:51820"],
                NatKind::EndpointIndependent,
                false,
            ),
            (
                &["192.0.2.1:51820", "192.0.2.1:51820"],
                NatKind::EndpointIndependent,
                true,
            ),
            (
                &["198.51.100.2:51820", "198.51.100.2:40000"],
                NatKind::EndpointDependent,
                true,
            ),
        ];
        for (answers, kind, wanted) in cases {
            assert_eq!(
                behind_nat(&seen(answers, kind), &host, PORT),
                Some(wanted),
                "{answers:?} {kind:?}"
            );
        }
        assert_eq!(behind_nat(&seen(&[], NatKind::Unknown), &host, PORT), None);
    }

    #[test]
    fn the_setting_wins_and_auto_follows_the_nat() {
        assert_eq!(
            interval(GatedKeepalive::Auto, true),
            Some(NAT_KEEPALIVE_SECS)
        );
        assert_eq!(interval(GatedKeepalive::Auto, false), None);
        assert_eq!(interval(GatedKeepalive::Off, true), None);
        assert_eq!(interval(GatedKeepalive::Every(2), false), Some(2));
        assert_eq!(interval(GatedKeepalive::Every(0), true), None);
    }

    #[test]
    fn a_laptop_moving_networks_changes_the_decision_and_silence_keeps_it() {
        let mut decision = NatDecision::default();
        let home = own(&["198.51.100.2"]);
        assert!(!decision.behind());
        // Behind the home router.
        assert!(decision.update(&seen(&["192.0.2.1:1024"], NatKind::Unknown), &home, PORT));
        assert!(decision.behind());
        assert!(!decision.update(&seen(&["192.0.2.1:1024"], NatKind::Unknown), &home, PORT));
        // The STUN server stops answering: the keepalive stays on.
        assert!(!decision.update(&seen(&[], NatKind::Unknown), &home, PORT));
        assert!(decision.behind());
        // On a network with a public address: off.
        let public = own(&["203.0.113.7"]);
        assert!(decision.update(
            &seen(&["203.0.113.7:51820"], NatKind::Unknown),
            &public,
            PORT
        ));
        assert!(!decision.behind());
        assert_eq!(interval(GatedKeepalive::Auto, decision.behind()), None);
    }
}
