//! Two meshtun nodes in two namespaces joined by a veth: pings both ways over IPv4 and IPv6
//! inside the tunnel, verified TCP transfers and iperf3 streams both ways, with IPv4 and then
//! IPv6 as the outer transport; then a clean shutdown on SIGTERM.

use std::time::Duration;

use meshtun_e2e::config::Node;
use meshtun_e2e::traffic::{assert_ping, iperf3, tcp_transfer};
use meshtun_e2e::{require_root, wg, Daemon, Family, Netns, Veth};

fn two_meshtun_nodes(test: &str, family: Family) {
    let (ns_a, ns_b) = (Netns::new(test), Netns::new(test));
    let veth = Veth::connect(&ns_a, &ns_b, 0);
    let (a, b) = (Node::new("a", 1), Node::new("b", 2));
    let mut ca = a.config();
    ca.peers
        .push(b.as_peer().endpoint(veth.b_addr(family), b.port));
    let mut cb = b.config();
    cb.peers
        .push(a.as_peer().endpoint(veth.a_addr(family), a.port));
    let mut da = Daemon::start(&ns_a, &ca);
    let mut db = Daemon::start(&ns_b, &cb);

    assert_ping(&ns_a, b.v4.into());
    assert_ping(&ns_b, a.v4.into());
    assert_ping(&ns_a, b.v6.into());
    assert_ping(&ns_b, a.v6.into());

    tcp_transfer(&ns_b, b.v4.into(), &ns_a, 4 << 20).expect("TCP over IPv4, server on B");
    tcp_transfer(&ns_a, a.v6.into(), &ns_b, 4 << 20).expect("TCP over IPv6, server on A");
    for reverse in [false, true] {
        let r = iperf3(&ns_b, b.v4.into(), &ns_a, 3, reverse);
        assert!(
            r.sent_bytes > 0 && r.received_bytes > 0,
            "iperf3 (reverse: {reverse}) moved no data: {r:?}"
        );
    }

    let dump = wg::dump(&ns_a, da.name());
    let peer = dump.peer(&b.keys.public);
    assert_eq!(peer.endpoint, Some((veth.b_addr(family), b.port).into()));
    assert!(peer.handshake_within(Duration::from_secs(60)), "{peer:?}");
    assert!(
        peer.rx_bytes > 4 << 20 && peer.tx_bytes > 4 << 20,
        "{peer:?}"
    );

    da.assert_running();
    db.assert_running();
    da.stop_cleanly();
    db.stop_cleanly();
}

#[test]
fn ipv4_outer_transport() {
    if !require_root("ipv4_outer_transport") {
        return;
    }
    two_meshtun_nodes("two_nodes_v4", Family::V4);
}

#[test]
fn ipv6_outer_transport() {
    if !require_root("ipv6_outer_transport") {
        return;
    }
    two_meshtun_nodes("two_nodes_v6", Family::V6);
}
