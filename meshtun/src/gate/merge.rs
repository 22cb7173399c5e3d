//! Static and gated peers together: the device configuration and routes a gated daemon
//! applies. Static peers from the configuration file always win; a gated peer may not take
//! a static peer's key or networks, nor a default route.

use ipnet::IpNet;

use super::runner::GatedPeerConfig;
use crate::wgcfg::DeviceSettings;

/// The device settings and routes for static plus gated peers, and what was left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// Static peers first, in configuration order, then the gated ones.
    pub settings: DeviceSettings,
    /// The static routes, then the gated peers' allowed IPs, each once.
    pub routes: Vec<IpNet>,
    /// What was refused from the gated peers, one sentence each.
    pub refused: Vec<String>,
}

/// Merges `gated` peers into the static `settings` and `routes`.
pub fn merge(settings: &DeviceSettings, routes: &[IpNet], gated: &[GatedPeerConfig]) -> Merged {
    let own = settings.private_key.public_key();
    let static_nets: Vec<IpNet> = settings
        .peers
        .iter()
        .flat_map(|p| p.allowed_ips.iter().copied())
        .collect();
    let mut merged = Merged {
        settings: settings.clone(),
        routes: routes.to_vec(),
        refused: Vec::new(),
    };
    for peer in gated {
        let key = peer.settings.public_key;
        if key == own {
            merged.refused.push(format!(
                "gated peer `{}` has this interface's own public key; ignored",
                peer.node_id
            ));
            continue;
        }
        if settings.peers.iter().any(|p| p.public_key == key) {
            merged.refused.push(format!(
                "gated peer `{}` has the public key of a static peer ({key}); the static peer is kept",
                peer.node_id
            ));
            continue;
        }
        let mut settings = peer.settings.clone();
        settings.allowed_ips.retain(|net| {
            let refusal = refuse_net(net, &static_nets);
            if let Some(why) = &refusal {
                merged.refused.push(format!(
                    "allowed IP {net} of gated peer `{}` refused: {why}",
                    peer.node_id
                ));
            }
            refusal.is_none()
        });
        for net in &settings.allowed_ips {
            if !merged.routes.contains(net) {
                merged.routes.push(*net);
            }
        }
        merged.settings.peers.push(settings);
    }
    merged
}

/// Why a gated peer may not have `net`, if it may not.
fn refuse_net(net: &IpNet, static_nets: &[IpNet]) -> Option<String> {
    if net.prefix_len() == 0 {
        return Some("a default route can only come from the configuration file".into());
    }
    static_nets
        .iter()
        .find(|s| net.contains(*s))
        .map(|s| format!("it covers {s}, which a static peer routes"))
}

#[cfg(test)]
mod tests {
    use meshtun_proto::{PresharedKey, PrivateKey};

    use super::*;
    use crate::wgcfg::PeerSettings;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn peer(key: &PrivateKey, nets: &[&str]) -> PeerSettings {
        PeerSettings {
            public_key: key.public_key(),
            preshared_key: None,
            endpoint: None,
            allowed_ips: nets.iter().map(|n| net(n)).collect(),
            persistent_keepalive: None,
        }
    }

    fn gated(name: &str, key: &PrivateKey, nets: &[&str]) -> GatedPeerConfig {
        let mut settings = peer(key, nets);
        settings.preshared_key = Some(PresharedKey::generate());
        GatedPeerConfig {
            node_id: name.into(),
            settings,
        }
    }

    fn base(statics: Vec<PeerSettings>) -> (DeviceSettings, PrivateKey) {
        let own = PrivateKey::generate();
        let settings = DeviceSettings {
            private_key: own.clone(),
            listen_port: Some(51820),
            fwmark: None,
            peers: statics,
        };
        (settings, own)
    }

    #[test]
    fn gated_peers_follow_the_static_ones_and_add_their_routes() {
        let exit = PrivateKey::generate();
        let (settings, _) = base(vec![peer(&exit, &["0.0.0.0/0"])]);
        let b = PrivateKey::generate();
        let m = merge(
            &settings,
            &[net("0.0.0.0/0")],
            &[gated("node-b", &b, &["100.64.0.2/32", "fd00::2/128"])],
        );
        assert!(m.refused.is_empty(), "{:?}", m.refused);
        assert_eq!(m.settings.peers.len(), 2);
        assert_eq!(m.settings.peers[0], settings.peers[0]);
        assert_eq!(m.settings.peers[1].public_key, b.public_key());
        assert!(m.settings.peers[1].preshared_key.is_some());
        assert_eq!(
            m.routes,
            vec![net("0.0.0.0/0"), net("100.64.0.2/32"), net("fd00::2/128")]
        );
    }

    #[test]
    fn a_gated_peer_cannot_take_a_static_key_or_network_or_a_default_route() {
        let stat = PrivateKey::generate();
        let (settings, own) = base(vec![peer(&stat, &["100.64.0.9/32", "10.1.0.0/16"])]);
        let b = PrivateKey::generate();
        let m = merge(
            &settings,
            &[],
            &[
                gated("copycat", &stat, &["100.64.0.7/32"]),
                gated("myself", &own, &["100.64.0.8/32"]),
                gated(
                    "node-b",
                    &b,
                    &[
                        "100.64.0.2/32",
                        "0.0.0.0/0",
                        "10.0.0.0/8",
                        "100.64.0.9/32",
                        "::/0",
                    ],
                ),
            ],
        );
        assert_eq!(m.settings.peers.len(), 2);
        assert_eq!(m.settings.peers[1].allowed_ips, vec![net("100.64.0.2/32")]);
        assert_eq!(m.routes, vec![net("100.64.0.2/32")]);
        assert_eq!(m.refused.len(), 6, "{:?}", m.refused);
        assert!(m.refused[0].contains("copycat") && m.refused[0].contains("static peer"));
        assert!(m.refused[1].contains("own public key"));
        assert!(m
            .refused
            .iter()
            .any(|r| r.contains("10.0.0.0/8") && r.contains("10.1.0.0/16")));
        assert!(m
            .refused
            .iter()
            .any(|r| r.contains("::/0") && r.contains("default route")));
    }

    #[test]
    fn no_gated_peer_leaves_the_static_configuration_as_it_is() {
        let stat = PrivateKey::generate();
        let (settings, _) = base(vec![peer(&stat, &["100.64.0.9/32"])]);
        let m = merge(&settings, &[net("100.64.0.9/32")], &[]);
        assert_eq!(m.settings, settings);
        assert_eq!(m.routes, vec![net("100.64.0.9/32")]);
    }
}
