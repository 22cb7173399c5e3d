//! The peers as the device gets them: the static settings and the scheduler's gated peers,
//! with the keepalive in force for gated peers ([`crate::gate::keepalive`]) and any endpoint
//! a re-resolution moved ([`super::reresolve`]).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use meshtun_proto::candidates::unusable;
use meshtun_proto::PublicKey;

use crate::config::ControllerSettings;
use crate::gate::keepalive;
use crate::gate::GatedPeerConfig;
use crate::wgcfg::DeviceSettings;

/// `applied` with the persistent keepalive `controller`'s `keepalive` and the NAT decision
/// give, and the endpoints `moved` gives for their endpoint names.
pub(super) fn gated_in_force(
    applied: &[GatedPeerConfig],
    controller: Option<&ControllerSettings>,
    behind_nat: bool,
    moved: impl Fn(&str) -> Option<SocketAddr>,
) -> Vec<GatedPeerConfig> {
    let interval = controller.and_then(|c| keepalive::interval(c.keepalive, behind_nat));
    applied
        .iter()
        .cloned()
        .map(|mut peer| {
            peer.settings.persistent_keepalive = interval;
            if let Some(address) = peer.endpoint_name.as_deref().and_then(&moved) {
                peer.settings.endpoint = Some(address);
            }
            peer
        })
        .collect()
}

/// `peers` without the candidates that are one of this host's own addresses (`own`): two
/// nodes on two private networks numbered alike report the same host address, and an
/// initiation sent there would come back to this node. The first candidate left is the
/// endpoint.
pub(super) fn not_to_self(
    peers: Vec<GatedPeerConfig>,
    own: &HashSet<IpAddr>,
) -> Vec<GatedPeerConfig> {
    peers
        .into_iter()
        .map(|mut peer| {
            let settings = &mut peer.settings;
            let mut all: Vec<SocketAddr> = settings.endpoint.into_iter().collect();
            all.append(&mut settings.probes);
            // And none a node could not reach (a compromised controller's port 0, or an
            // address of the prefix that names relayed endpoints).
            all.retain(|a| !own.contains(&a.ip()) && unusable(a).is_none());
            let mut rest = all.into_iter();
            settings.endpoint = rest.next();
            settings.probes = rest.collect();
            peer
        })
        .collect()
}

/// The IP addresses of `peers`' candidates, which the relay lets send to this node's relayed
/// address (a peer behind a symmetric NAT sends from its candidate's IP address, on a port
/// no one knows in advance).
pub(super) fn candidate_ips(peers: &[GatedPeerConfig]) -> std::collections::BTreeSet<IpAddr> {
    peers
        .iter()
        .flat_map(|p| p.settings.endpoint.iter().chain(&p.settings.probes))
        .map(SocketAddr::ip)
        .collect()
}

/// `settings` with the endpoints `moved` gives for the static peers' endpoint `names`.
pub(super) fn statics_in_force(
    settings: &DeviceSettings,
    names: &HashMap<PublicKey, String>,
    moved: impl Fn(&str) -> Option<SocketAddr>,
) -> DeviceSettings {
    let mut settings = settings.clone();
    for peer in &mut settings.peers {
        if let Some(address) = names.get(&peer.public_key).and_then(|n| moved(n)) {
            peer.endpoint = Some(address);
        }
    }
    settings
}

#[cfg(test)]
mod tests {
    use meshtun_proto::{PresharedKey, PrivateKey};

    use super::*;
    use crate::config::GatedKeepalive;
    use crate::wgcfg::PeerSettings;

    fn gated(name: Option<&str>) -> GatedPeerConfig {
        GatedPeerConfig {
            forwards_to: Vec::new(),
            node_id: "node-b".into(),
            settings: PeerSettings {
                forward: false,
                probes: Vec::new(),
                public_key: PrivateKey::generate().public_key(),
                preshared_key: Some(PresharedKey::generate()),
                endpoint: Some("192.0.2.2:51820".parse().unwrap()),
                allowed_ips: Vec::new(),
                persistent_keepalive: None,
            },
            endpoint_name: name.map(str::to_owned),
        }
    }

    fn controller(keepalive: GatedKeepalive) -> ControllerSettings {
        ControllerSettings {
            urls: vec!["http://192.0.2.250:8700".into()],
            public_keys: meshtun_proto::KeySet::new(vec![meshtun_proto::IdentityKey::from_bytes(
                [7; 32],
            )
            .public()])
            .unwrap(),
            node_id: "node-a".into(),
            identity_key_file: "/nonexistent".into(),
            on_controller_loss: Default::default(),
            grace: std::time::Duration::from_secs(3),
            cache_file: "/nonexistent".into(),
            ca_file: None,
            allowed_prefixes: None,
            stun: None,
            keepalive,
            membership_key: None,
            observe: Default::default(),
        }
    }

    #[test]
    fn gated_peers_get_the_keepalive_in_force_and_their_moved_endpoint() {
        let moved: SocketAddr = "198.51.100.9:51820".parse().unwrap();
        let applied = [gated(Some("b.example:51820")), gated(None)];
        let lookup = |n: &str| (n == "b.example:51820").then_some(moved);
        let auto = controller(GatedKeepalive::Auto);
        let behind = gated_in_force(&applied, Some(&auto), true, lookup);
        assert!(behind
            .iter()
            .all(|p| p.settings.persistent_keepalive == Some(25)));
        assert_eq!(behind[0].settings.endpoint, Some(moved));
        assert_eq!(behind[1].settings.endpoint, applied[1].settings.endpoint);
        let public = gated_in_force(&applied, Some(&auto), false, |_| None);
        assert!(public
            .iter()
            .all(|p| p.settings.persistent_keepalive.is_none()));
        let off = controller(GatedKeepalive::Off);
        let off = gated_in_force(&applied, Some(&off), true, |_| None);
        assert!(off
            .iter()
            .all(|p| p.settings.persistent_keepalive.is_none()));
        assert_eq!(
            gated_in_force(&applied, None, true, |_| None)[0]
                .settings
                .persistent_keepalive,
            None
        );
    }

    /// A candidate that is one of this host's addresses is dropped; the next becomes the
    /// endpoint.
    #[test]
    fn candidates_at_this_hosts_own_addresses_are_dropped() {
        let mut peer = gated(None);
        peer.settings.endpoint = Some("198.51.100.2:51820".parse().unwrap());
        peer.settings.probes = vec![
            "192.0.2.1:51820".parse().unwrap(),
            "198.51.100.2:40000".parse().unwrap(),
        ];
        let own: HashSet<IpAddr> = ["198.51.100.2".parse().unwrap()].into();
        let kept = not_to_self(vec![peer], &own);
        assert_eq!(
            kept[0].settings.endpoint,
            Some("192.0.2.1:51820".parse().unwrap())
        );
        assert!(kept[0].settings.probes.is_empty());
    }

    /// A bundle (from a compromised controller) naming a relayed endpoint's address or
    /// port 0 as a candidate: the node never sends there.
    #[test]
    fn attack_candidates_no_node_could_reach_are_dropped() {
        let mut peer = gated(None);
        peer.settings.endpoint = Some(crate::wgcfg::relayed_endpoint(0));
        peer.settings.probes = vec![
            "192.0.2.1:0".parse().unwrap(),
            "[100::6d74:7265:6c79:1]:51820".parse().unwrap(),
            "192.0.2.1:51820".parse().unwrap(),
        ];
        let kept = not_to_self(vec![peer], &HashSet::new());
        assert_eq!(
            kept[0].settings.endpoint,
            Some("192.0.2.1:51820".parse().unwrap())
        );
        assert!(kept[0].settings.probes.is_empty());
    }
}
