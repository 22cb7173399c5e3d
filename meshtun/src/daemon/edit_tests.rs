use meshtun_proto::{PresharedKey, PrivateKey, PublicKey};

use super::*;

fn key() -> PublicKey {
    PrivateKey::generate().public_key()
}

fn peer(public_key: PublicKey, nets: &[&str]) -> PeerSettings {
    PeerSettings {
        probes: Vec::new(),
        public_key,
        preshared_key: None,
        endpoint: None,
        allowed_ips: nets.iter().map(|n| n.parse().unwrap()).collect(),
        persistent_keepalive: None,
        forward: false,
    }
}

fn settings(peers: Vec<PeerSettings>) -> DeviceSettings {
    DeviceSettings {
        private_key: PrivateKey::generate(),
        listen_port: Some(51820),
        fwmark: None,
        peers,
    }
}

fn gated(public_key: PublicKey) -> GatedPeerConfig {
    GatedPeerConfig {
        forwards_to: Vec::new(),
        node_id: "node-b".into(),
        settings: PeerSettings {
            preshared_key: Some(PresharedKey::generate()),
            ..peer(public_key, &["100.64.0.2/32"])
        },
        endpoint_name: None,
    }
}

const UNGATED: EditRules<'static> = EditRules {
    gated: false,
    controller_peers: &[],
    managed_fwmark: None,
};

#[test]
fn a_static_peer_edit_changes_that_peer_only() {
    let (a, b) = (key(), key());
    let before = settings(vec![
        peer(a, &["100.64.0.2/32"]),
        peer(b, &["100.64.0.3/32"]),
    ]);
    let mut edit = PeerUpdate::new(a);
    edit.endpoint = Some("192.0.2.9:51820".parse().unwrap());
    edit.persistent_keepalive = Some(25);
    edit.allowed_ips = vec![AllowedIpChange::Add("100.64.1.0/24".parse().unwrap())];
    let update = DeviceUpdate {
        peers: vec![edit],
        ..DeviceUpdate::default()
    };
    let after = apply_edit(&before, &update, &UNGATED).unwrap();
    assert_eq!(
        after.peers[0].endpoint,
        Some("192.0.2.9:51820".parse().unwrap())
    );
    assert_eq!(after.peers[0].persistent_keepalive, Some(25));
    let nets: Vec<String> = after.peers[0]
        .allowed_ips
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(nets, ["100.64.0.2/32", "100.64.1.0/24"]);
    assert_eq!(after.peers[1], before.peers[1]);
    assert_eq!(after.private_key, before.private_key);
}

#[test]
fn an_added_network_moves_from_its_old_peer_as_in_wireguard() {
    let (a, b) = (key(), key());
    let before = settings(vec![
        peer(a, &["100.64.0.2/32"]),
        peer(b, &["100.64.0.3/32"]),
    ]);
    let mut edit = PeerUpdate::new(b);
    edit.allowed_ips = vec![AllowedIpChange::Add("100.64.0.2/32".parse().unwrap())];
    let update = DeviceUpdate {
        peers: vec![edit],
        ..DeviceUpdate::default()
    };
    let after = apply_edit(&before, &update, &UNGATED).unwrap();
    assert!(after.peers[0].allowed_ips.is_empty());
    assert_eq!(after.peers[1].allowed_ips.len(), 2);
}

#[test]
fn peers_are_added_removed_and_update_only_creates_nothing() {
    let (a, b, c) = (key(), key(), key());
    let before = settings(vec![peer(a, &[])]);
    let mut only = PeerUpdate::new(c);
    only.update_only = true;
    let mut remove = PeerUpdate::new(a);
    remove.remove = true;
    let update = DeviceUpdate {
        peers: vec![PeerUpdate::new(b), only, remove],
        ..DeviceUpdate::default()
    };
    let after = apply_edit(&before, &update, &UNGATED).unwrap();
    let keys: Vec<PublicKey> = after.peers.iter().map(|p| p.public_key).collect();
    assert_eq!(keys, [b]);
}

#[test]
fn setconf_replaces_the_static_peers_and_ignores_the_own_key() {
    let before = settings(vec![peer(key(), &[]), peer(key(), &[])]);
    let (fresh, own) = (key(), before.private_key.public_key());
    let update = DeviceUpdate {
        replace_peers: true,
        peers: vec![PeerUpdate::new(own), PeerUpdate::new(fresh)],
        ..DeviceUpdate::default()
    };
    let after = apply_edit(&before, &update, &UNGATED).unwrap();
    let keys: Vec<PublicKey> = after.peers.iter().map(|p| p.public_key).collect();
    assert_eq!(keys, [fresh]);
}

#[test]
fn interface_fields_follow_wg_set_and_zero_means_none() {
    let before = settings(Vec::new());
    let new_key = PrivateKey::generate();
    let update = DeviceUpdate {
        private_key: Some(Some(new_key.clone())),
        listen_port: Some(0),
        fwmark: Some(0x51),
        ..DeviceUpdate::default()
    };
    let after = apply_edit(&before, &update, &UNGATED).unwrap();
    assert_eq!(after.private_key, new_key);
    assert_eq!(after.listen_port, None);
    assert_eq!(after.fwmark, Some(0x51));
    let cleared = DeviceUpdate {
        fwmark: Some(0),
        ..DeviceUpdate::default()
    };
    assert_eq!(apply_edit(&after, &cleared, &UNGATED).unwrap().fwmark, None);
}

#[test]
fn attack_an_edit_naming_a_controller_peer_is_refused_whole() {
    let (fixed, member) = (key(), key());
    let before = settings(vec![peer(fixed, &["100.64.9.0/24"])]);
    let bundle = [gated(member)];
    let rules = EditRules {
        gated: true,
        controller_peers: &bundle,
        managed_fwmark: None,
    };
    // A harmless change to a static peer first, then the controller's peer: nothing applies.
    let mut take_over = PeerUpdate::new(member);
    take_over.preshared_key = Some(None);
    take_over.allowed_ips = vec![AllowedIpChange::Add("0.0.0.0/0".parse().unwrap())];
    let mut remove = PeerUpdate::new(member);
    remove.remove = true;
    for hostile in [take_over, remove] {
        let update = DeviceUpdate {
            peers: vec![PeerUpdate::new(key()), hostile],
            ..DeviceUpdate::default()
        };
        let refused = apply_edit(&before, &update, &rules).unwrap_err();
        assert!(
            matches!(&refused, EditRefused::ControllerPeer { node_id, .. } if node_id == "node-b")
        );
        let message = refused.to_string();
        assert!(
            message.contains(&member.to_base64()) && message.contains("controller"),
            "{message}"
        );
    }
}

#[test]
fn attack_a_gated_interface_keeps_its_identity_and_its_default_route_mark() {
    let before = settings(Vec::new());
    let rules = EditRules {
        gated: true,
        controller_peers: &[],
        managed_fwmark: Some(0xca6c),
    };
    let new_key = DeviceUpdate {
        private_key: Some(Some(PrivateKey::generate())),
        ..DeviceUpdate::default()
    };
    assert_eq!(
        apply_edit(&before, &new_key, &rules),
        Err(EditRefused::GatedPrivateKey)
    );
    // Setting the same key again is no change, and is accepted.
    let same_key = DeviceUpdate {
        private_key: Some(Some(before.private_key.clone())),
        ..DeviceUpdate::default()
    };
    assert!(apply_edit(&before, &same_key, &rules).is_ok());
    for mark in [0, 1] {
        let update = DeviceUpdate {
            fwmark: Some(mark),
            ..DeviceUpdate::default()
        };
        let refused = apply_edit(&before, &update, &rules).unwrap_err();
        assert_eq!(
            refused,
            EditRefused::ManagedFwmark {
                asked: mark,
                managed: 0xca6c
            }
        );
    }
    let removal = DeviceUpdate {
        private_key: Some(None),
        ..DeviceUpdate::default()
    };
    assert_eq!(
        apply_edit(&before, &removal, &UNGATED),
        Err(EditRefused::NoPrivateKey)
    );
}
