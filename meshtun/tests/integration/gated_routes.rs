//! #12: a controller that signs hostile routes cannot make a node route them. A bundle signed
//! with the pinned controller key is verified as the node does, then merged with the static
//! configuration as the daemon does before it configures the device and the routes.

use ipnet::IpNet;
use meshtun::gate::{merge, verify_bundle, GatedLimits, GatedPeerConfig};
use meshtun::wgcfg::{DeviceSettings, PeerSettings};
use meshtun_proto::bundle::{Bundle, BundlePeer, Membership, Sealer, SignedBundle, BUNDLE_VERSION};
use meshtun_proto::{IdentityKey, PresharedKey, PrivateKey, PublicKey};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// A bundle for `recipient`, signed with `controller`, listing `peers` (id, key, nets).
fn signed_bundle(
    controller: &IdentityKey,
    recipient: &PrivateKey,
    peers: &[(&str, PublicKey, Vec<IpNet>)],
) -> SignedBundle {
    let sealer = Sealer::new(&recipient.public_key()).unwrap();
    let bundle = Bundle {
        forward: false,
        relay: None,
        version: BUNDLE_VERSION,
        node_id: "node-a".into(),
        recipient: recipient.public_key(),
        epoch: 7,
        activation_ms: 1_000,
        not_after_ms: 61_000,
        issued_ms: 500,
        decided_ms: 400,
        membership: Membership::Allowed,
        seal_key: Some(sealer.ephemeral()),
        peers: peers
            .iter()
            .enumerate()
            .map(|(i, (id, key, nets))| BundlePeer {
                forwards_to: Vec::new(),
                enrollment: None,
                candidates: Vec::new(),
                node_id: (*id).into(),
                public_key: *key,
                endpoint: None,
                allowed_ips: nets.clone(),
                sealed_psk: sealer.seal(i as u32, 7, key, &PresharedKey::generate()),
            })
            .collect(),
    };
    SignedBundle::sign(&bundle, controller)
}

#[test]
fn a_signed_hostile_bundle_cannot_make_the_node_route_what_it_must_not() {
    let controller = IdentityKey::generate();
    let own = PrivateKey::generate();
    let exit = PrivateKey::generate();
    // A static peer routes a LAN behind it; the interface is 100.64.0.1/24.
    let settings = DeviceSettings {
        private_key: own.clone(),
        listen_port: Some(51820),
        fwmark: None,
        peers: vec![PeerSettings {
            probes: Vec::new(),
            public_key: exit.public_key(),
            preshared_key: None,
            endpoint: None,
            allowed_ips: vec![net("10.1.0.0/16")],
            persistent_keepalive: None,
            forward: false,
        }],
    };
    let (b, c, d) = (
        PrivateKey::generate().public_key(),
        PrivateKey::generate().public_key(),
        PrivateKey::generate().public_key(),
    );
    let signed = signed_bundle(
        &controller,
        &own,
        &[
            (
                "node-b",
                b,
                vec![net("100.64.0.2/32"), net("fd00:64::2/128")],
            ),
            (
                "node-c",
                c,
                vec![
                    net("100.64.0.3/32"),
                    // node-b's address: neither of the two may have it.
                    net("100.64.0.2/32"),
                    // Half of IPv4 and of IPv6 each: a default route in two halves.
                    net("0.0.0.0/1"),
                    net("128.0.0.0/1"),
                    net("::/1"),
                    net("8000::/1"),
                    // A DNS server outside the overlay.
                    net("198.51.100.53/32"),
                    // Inside the static peer's LAN: would win longest-prefix match.
                    net("10.1.2.0/24"),
                    // This interface's own address.
                    net("100.64.0.1/32"),
                ],
            ),
            ("node-d", d, vec![net("100.64.0.4/32")]),
        ],
    );
    let verified = verify_bundle(
        &signed,
        &meshtun::gate::Trust::controller(&meshtun_proto::KeySet::one(controller.public())),
        "node-a",
        &own,
    )
    .unwrap();
    let gated: Vec<GatedPeerConfig> = verified
        .peers
        .iter()
        .map(|p| GatedPeerConfig {
            forwards_to: Vec::new(),
            node_id: p.node_id.clone(),
            settings: PeerSettings {
                probes: Vec::new(),
                public_key: p.public_key,
                preshared_key: Some(p.psk.clone()),
                endpoint: None,
                allowed_ips: p.allowed_ips.clone(),
                persistent_keepalive: None,
                forward: false,
            },
            endpoint_name: None,
        })
        .collect();
    let routes = vec![net("10.1.0.0/16")];
    // What `meshtun join` pins from the controller's [network].
    let limits = GatedLimits {
        allowed_prefixes: vec![net("100.64.0.0/24"), net("fd00:64::/64")],
        own_addresses: vec!["100.64.0.1".parse().unwrap()],
    };
    let merged = merge(&settings, &routes, &gated, &limits);

    let of = |key: PublicKey| {
        merged
            .settings
            .peers
            .iter()
            .find(|p| p.public_key == key)
            .map(|p| p.allowed_ips.clone())
            .unwrap_or_default()
    };
    assert_eq!(of(b), vec![net("fd00:64::2/128")], "{:?}", merged.refused);
    assert_eq!(of(c), vec![net("100.64.0.3/32")], "{:?}", merged.refused);
    assert_eq!(of(d), vec![net("100.64.0.4/32")], "{:?}", merged.refused);
    assert_eq!(of(exit.public_key()), vec![net("10.1.0.0/16")]);
    assert_eq!(
        merged.routes,
        vec![
            net("10.1.0.0/16"),
            net("fd00:64::2/128"),
            net("100.64.0.3/32"),
            net("100.64.0.4/32"),
        ]
    );
    // Every refusal is explained, naming the peer and the network.
    for hostile in [
        "100.64.0.2/32",
        "0.0.0.0/1",
        "128.0.0.0/1",
        "::/1",
        "8000::/1",
        "198.51.100.53/32",
        "10.1.2.0/24",
        "100.64.0.1/32",
    ] {
        assert!(
            merged.refused.iter().any(|r| r.contains(hostile)),
            "{hostile} not reported in {:?}",
            merged.refused
        );
    }
}
