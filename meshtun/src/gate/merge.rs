//! Static and gated peers together: the device configuration and routes a gated daemon
//! applies. Static peers from the configuration file always win. A gated peer, whatever the
//! signed bundle says, may not have:
//! - a static peer's key, or this interface's own key;
//! - a network outside the prefixes pinned at join ([`GatedLimits::allowed_prefixes`]);
//! - a network shorter than /8 (IPv4) or /16 (IPv6): a default route, or one split into
//!   halves (`0.0.0.0/1` + `128.0.0.0/1`) or smaller pieces;
//! - a network that overlaps a static peer's network in either direction (a static
//!   catch-all shorter than those minimums, such as an exit peer's `0.0.0.0/0`, is the one
//!   exception: more specific mesh routes inside it are the point of a mesh);
//! - a network that covers one of this interface's own addresses;
//! - a network that another gated peer also claims (or one overlapping it): such a network
//!   is refused for every claimant rather than given to one of them.
//!
//! Each refusal is reported in one sentence; the rest of the bundle applies.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use meshtun_proto::PublicKey;

use super::runner::GatedPeerConfig;
use crate::config::{Config, MIN_GATED_PREFIX_V4, MIN_GATED_PREFIX_V6};
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

/// What this node lets gated peers route, from its configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GatedLimits {
    /// Every gated network must lie inside one of these.
    pub allowed_prefixes: Vec<IpNet>,
    /// This interface's own addresses: no gated network may cover one.
    pub own_addresses: Vec<IpAddr>,
}

impl GatedLimits {
    /// The limits of `config`: `[controller] allowed_prefixes`, or, when it is not set, the
    /// prefixes of the interface's own addresses (`100.64.0.4/24` allows `100.64.0.0/24`).
    pub fn from_config(config: &Config) -> Self {
        let addresses = &config.interface.addresses;
        let allowed_prefixes = config
            .controller
            .as_ref()
            .and_then(|c| c.allowed_prefixes.clone())
            .unwrap_or_else(|| addresses.iter().map(IpNet::trunc).collect());
        Self {
            allowed_prefixes,
            own_addresses: addresses.iter().map(IpNet::addr).collect(),
        }
    }
}

/// Merges `gated` peers into the static `settings` and `routes`, within `limits`.
pub fn merge(
    settings: &DeviceSettings,
    routes: &[IpNet],
    gated: &[GatedPeerConfig],
    limits: &GatedLimits,
) -> Merged {
    let own = settings.private_key.public_key();
    let static_nets: Vec<IpNet> = settings
        .peers
        .iter()
        .flat_map(|p| p.allowed_ips.iter().copied())
        .chain(routes.iter().copied())
        .collect();
    let mut merged = Merged {
        settings: settings.clone(),
        routes: routes.to_vec(),
        refused: Vec::new(),
    };
    let static_keys: HashSet<PublicKey> = settings.peers.iter().map(|p| p.public_key).collect();
    let mut eligible: Vec<GatedPeerConfig> = Vec::with_capacity(gated.len());
    for peer in gated {
        let key = peer.settings.public_key;
        if key == own {
            merged.refused.push(format!(
                "gated peer `{}` has this interface's own public key; ignored",
                peer.node_id
            ));
            continue;
        }
        if static_keys.contains(&key) {
            merged.refused.push(format!(
                "gated peer `{}` has the public key of a static peer ({key}); the static peer is kept",
                peer.node_id
            ));
            continue;
        }
        let mut peer = peer.clone();
        peer.settings.allowed_ips.retain(|net| {
            let refusal = refuse_net(net, limits, &static_nets);
            if let Some(why) = &refusal {
                merged.refused.push(refusal_text(net, &peer.node_id, why));
            }
            refusal.is_none()
        });
        eligible.push(peer);
    }
    // Only networks a peer could have on its own compete: a refused one contests nothing.
    let contested = contested(&eligible);
    // Each route once, in order: a set beside the list (a bundle of n peers has some 2n).
    let mut routed: HashSet<IpNet> = merged.routes.iter().copied().collect();
    for (index, mut peer) in eligible.into_iter().enumerate() {
        peer.settings.allowed_ips.retain(|net| {
            let taken = contested.contains(&(index, net.trunc()));
            if taken {
                let why = "another gated peer claims it or a network overlapping it, so no \
                           gated peer gets it (each address must belong to one node)";
                merged.refused.push(refusal_text(net, &peer.node_id, why));
            }
            !taken
        });
        for net in &peer.settings.allowed_ips {
            if routed.insert(*net) {
                merged.routes.push(*net);
            }
        }
        merged.settings.peers.push(peer.settings);
    }
    merged
}

fn refusal_text(net: &IpNet, node_id: &str, why: &str) -> String {
    format!("allowed IP {net} of gated peer `{node_id}` refused: {why}")
}

/// The `(peer index, network)` pairs whose network overlaps a network of another peer.
/// Sorting puts every network right after the networks that contain it, so one pass with a
/// stack of the enclosing networks finds every overlap: O(n log n) for n networks.
fn contested(peers: &[GatedPeerConfig]) -> HashSet<(usize, IpNet)> {
    let mut nets: Vec<(IpNet, usize)> = peers
        .iter()
        .enumerate()
        .flat_map(|(i, p)| p.settings.allowed_ips.iter().map(move |n| (n.trunc(), i)))
        .collect();
    nets.sort_by(|(a, i), (b, j)| net_order(a, b).then(i.cmp(j)));
    nets.dedup();
    let mut out = HashSet::new();
    let mut enclosing: Vec<(IpNet, usize)> = Vec::new();
    for &(net, owner) in &nets {
        while enclosing
            .last()
            .is_some_and(|(outer, _)| !outer.contains(&net))
        {
            enclosing.pop();
        }
        for &(outer, outer_owner) in &enclosing {
            if outer_owner != owner {
                out.insert((outer_owner, outer));
                out.insert((owner, net));
            }
        }
        enclosing.push((net, owner));
    }
    out
}

/// IPv4 before IPv6, then by network address, then the shorter prefix first.
fn net_order(a: &IpNet, b: &IpNet) -> Ordering {
    let family = |n: &IpNet| matches!(n, IpNet::V6(_));
    family(a)
        .cmp(&family(b))
        .then_with(|| a.network().cmp(&b.network()))
        .then_with(|| a.prefix_len().cmp(&b.prefix_len()))
}

/// The shortest prefix a gated peer may route in `net`'s family.
fn min_prefix(net: &IpNet) -> u8 {
    match net {
        IpNet::V4(_) => MIN_GATED_PREFIX_V4,
        IpNet::V6(_) => MIN_GATED_PREFIX_V6,
    }
}

/// Why a gated peer may not have `net`, if it may not.
fn refuse_net(net: &IpNet, limits: &GatedLimits, static_nets: &[IpNet]) -> Option<String> {
    if net.prefix_len() == 0 {
        return Some("a default route can only come from the configuration file".into());
    }
    let min = min_prefix(net);
    if net.prefix_len() < min {
        return Some(format!(
            "it is shorter than /{min}: a gated peer may not take a default route, nor split \
             one into pieces"
        ));
    }
    let net = net.trunc();
    if !limits.allowed_prefixes.iter().any(|p| p.contains(&net)) {
        let allowed: Vec<String> = limits
            .allowed_prefixes
            .iter()
            .map(ToString::to_string)
            .collect();
        return Some(format!(
            "it is outside the prefixes gated peers may use ({}; [controller] allowed_prefixes)",
            if allowed.is_empty() {
                "none".to_owned()
            } else {
                allowed.join(", ")
            }
        ));
    }
    if let Some(s) = static_nets
        .iter()
        .find(|s| net.contains(&s.trunc()) || (s.prefix_len() >= min_prefix(s) && s.contains(&net)))
    {
        return Some(format!("it overlaps {s}, which a static peer routes"));
    }
    if let Some(own) = limits.own_addresses.iter().find(|a| net.contains(*a)) {
        return Some(format!("it covers {own}, this interface's own address"));
    }
    None
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
            probes: Vec::new(),
            public_key: key.public_key(),
            preshared_key: None,
            endpoint: None,
            allowed_ips: nets.iter().map(|n| net(n)).collect(),
            persistent_keepalive: None,
            forward: false,
        }
    }

    fn gated(name: &str, key: &PrivateKey, nets: &[&str]) -> GatedPeerConfig {
        let mut settings = peer(key, nets);
        settings.preshared_key = Some(PresharedKey::generate());
        GatedPeerConfig {
            forwards_to: Vec::new(),
            node_id: name.into(),
            settings,
            endpoint_name: None,
        }
    }

    fn limits(prefixes: &[&str]) -> GatedLimits {
        GatedLimits {
            allowed_prefixes: prefixes.iter().map(|n| net(n)).collect(),
            own_addresses: vec!["100.64.0.1".parse().unwrap()],
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
            &limits(&["100.64.0.0/24", "fd00::/64"]),
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
            &limits(&["100.64.0.0/24", "10.0.0.0/8"]),
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
        let m = merge(
            &settings,
            &[net("100.64.0.9/32")],
            &[],
            &limits(&["100.64.0.0/24"]),
        );
        assert_eq!(m.settings, settings);
        assert_eq!(m.routes, vec![net("100.64.0.9/32")]);
    }

    #[test]
    fn an_address_two_gated_peers_claim_goes_to_neither_and_the_rest_applies() {
        let (settings, _) = base(vec![]);
        let (b, c, d) = (
            PrivateKey::generate(),
            PrivateKey::generate(),
            PrivateKey::generate(),
        );
        let m = merge(
            &settings,
            &[],
            &[
                gated("node-b", &b, &["100.64.0.2/32", "100.64.0.5/32"]),
                gated("node-c", &c, &["100.64.0.3/32", "100.64.0.2/32"]),
                // Covers node-d's own address and nothing else of the others.
                gated("node-d", &d, &["100.64.0.4/32", "100.64.0.4/32"]),
            ],
            &limits(&["100.64.0.0/24"]),
        );
        let nets = |i: usize| m.settings.peers[i].allowed_ips.clone();
        assert_eq!(nets(0), vec![net("100.64.0.5/32")], "{:?}", m.refused);
        assert_eq!(nets(1), vec![net("100.64.0.3/32")], "{:?}", m.refused);
        assert_eq!(nets(2), vec![net("100.64.0.4/32"); 2], "{:?}", m.refused);
        assert_eq!(m.refused.len(), 2, "{:?}", m.refused);
        assert!(m.refused.iter().all(|r| r.contains("100.64.0.2/32")));
    }

    #[test]
    fn a_network_covering_another_peers_address_is_refused_for_both() {
        let (settings, _) = base(vec![]);
        let (b, c) = (PrivateKey::generate(), PrivateKey::generate());
        let m = merge(
            &settings,
            &[],
            &[
                gated("node-b", &b, &["100.64.0.5/32"]),
                gated("node-c", &c, &["100.64.0.6/32", "100.64.0.4/30"]),
            ],
            &limits(&["100.64.0.0/24"]),
        );
        assert!(
            m.settings.peers[0].allowed_ips.is_empty(),
            "{:?}",
            m.refused
        );
        // 100.64.0.6 is inside node-c's own /30 only: that is no conflict.
        assert_eq!(
            m.settings.peers[1].allowed_ips,
            vec![net("100.64.0.6/32")],
            "{:?}",
            m.refused
        );
        assert_eq!(m.refused.len(), 2, "{:?}", m.refused);
    }

    #[test]
    fn default_route_pieces_outside_networks_and_nets_inside_static_ones_are_refused() {
        let stat = PrivateKey::generate();
        let (settings, _) = base(vec![peer(&stat, &["10.1.0.0/16"])]);
        let b = PrivateKey::generate();
        let everything = limits(&["0.0.0.0/0", "::/0"]);
        let m = merge(
            &settings,
            &[],
            &[gated(
                "node-b",
                &b,
                &[
                    "0.0.0.0/1",
                    "128.0.0.0/1",
                    "64.0.0.0/2",
                    "::/1",
                    "10.1.2.0/24",
                    "100.64.0.1/32",
                    "100.64.0.2/32",
                ],
            )],
            &everything,
        );
        assert_eq!(m.settings.peers[1].allowed_ips, vec![net("100.64.0.2/32")]);
        assert_eq!(m.refused.len(), 6, "{:?}", m.refused);
        let outside = merge(
            &settings,
            &[],
            &[gated("node-b", &b, &["192.0.2.53/32"])],
            &limits(&["100.64.0.0/24"]),
        );
        assert!(
            outside.refused[0].contains("outside the prefixes gated peers may use (100.64.0.0/24"),
            "{:?}",
            outside.refused
        );
    }

    #[test]
    fn without_allowed_prefixes_the_interfaces_own_prefixes_are_allowed() {
        let text = "[interface]\nprivate_key = \"yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\"\n\
                    address = [\"100.64.0.4/24\", \"fd00:64::4/64\"]\n\
                    [controller]\nurl = \"http://192.0.2.10:8700\"\n\
                    public_key = \"HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=\"\n\
                    node_id = \"node-d\"\n";
        let config = Config::parse(text, std::path::Path::new("/etc/meshtun/wg0.toml")).unwrap();
        let limits = GatedLimits::from_config(&config);
        assert_eq!(
            limits.allowed_prefixes,
            vec![net("100.64.0.0/24"), net("fd00:64::/64")]
        );
        assert_eq!(
            limits.own_addresses,
            vec![
                "100.64.0.4".parse::<IpAddr>().unwrap(),
                "fd00:64::4".parse().unwrap()
            ]
        );
    }
}
