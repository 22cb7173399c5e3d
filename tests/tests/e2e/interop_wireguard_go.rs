//! meshtun ↔ wireguard-go with a preshared key: each side in turn is the only one that knows
//! the other's endpoint, so it must initiate the handshake; then traffic flows both ways.

use std::time::Duration;

use meshtun_e2e::config::{genpsk, Node};
use meshtun_e2e::traffic::{assert_ping, tcp_transfer};
use meshtun_e2e::{require_root, wg, Daemon, Family, Netns, Veth, WgGo};

/// Who knows the other's endpoint and so sends the first handshake initiation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Initiator {
    Meshtun,
    WireguardGo,
}

fn interop(test: &str, initiator: Initiator, family: Family) {
    let (ns_m, ns_g) = (Netns::new(test), Netns::new(test));
    let veth = Veth::connect(&ns_m, &ns_g, 0);
    let (m, g) = (Node::new("m", 1), Node::new("g", 2));
    let psk = genpsk();
    let (mut peer_g, mut peer_m) = (g.as_peer().psk(&psk), m.as_peer().psk(&psk));
    match initiator {
        Initiator::Meshtun => peer_g = peer_g.endpoint(veth.b_addr(family), g.port),
        Initiator::WireguardGo => peer_m = peer_m.endpoint(veth.a_addr(family), m.port),
    }
    let mut cm = m.config();
    cm.peers.push(peer_g);
    let mut cg = g.config();
    cg.peers.push(peer_m);
    let mut daemon = Daemon::start(&ns_m, &cm);
    let wggo = WgGo::start(&ns_g, &cg);

    // The initiator pings first; the responder only learns its endpoint from the handshake.
    let (first, first_to, second, second_to) = match initiator {
        Initiator::Meshtun => (&ns_m, &g, &ns_g, &m),
        Initiator::WireguardGo => (&ns_g, &m, &ns_m, &g),
    };
    assert_ping(first, first_to.v4.into());
    assert_ping(first, first_to.v6.into());
    assert_ping(second, second_to.v4.into());
    assert_ping(second, second_to.v6.into());
    tcp_transfer(&ns_g, g.v4.into(), &ns_m, 2 << 20).expect("TCP, server on wireguard-go");
    tcp_transfer(&ns_m, m.v6.into(), &ns_g, 2 << 20).expect("TCP, server on meshtun");

    // wireguard-go's view: a recent handshake with meshtun, using the PSK, from meshtun's
    // outer address.
    let dump = wg::dump(&ns_g, wggo.name());
    let peer = dump.peer(&m.keys.public);
    assert!(peer.handshake_within(Duration::from_secs(60)), "{peer:?}");
    assert_eq!(peer.preshared_key.as_deref(), Some(psk.as_str()));
    assert_eq!(peer.endpoint, Some((veth.a_addr(family), m.port).into()));
    daemon.assert_running();
}

#[test]
fn meshtun_initiates() {
    if !require_root("meshtun_initiates") {
        return;
    }
    interop("interop_mt_init", Initiator::Meshtun, Family::V4);
}

#[test]
fn wireguard_go_initiates() {
    if !require_root("wireguard_go_initiates") {
        return;
    }
    interop("interop_wg_init", Initiator::WireguardGo, Family::V4);
}

#[test]
fn meshtun_initiates_over_ipv6() {
    if !require_root("meshtun_initiates_over_ipv6") {
        return;
    }
    interop("interop_mt_init6", Initiator::Meshtun, Family::V6);
}

#[test]
fn wireguard_go_initiates_over_ipv6() {
    if !require_root("wireguard_go_initiates_over_ipv6") {
        return;
    }
    interop("interop_wg_init6", Initiator::WireguardGo, Family::V6);
}
