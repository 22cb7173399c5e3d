//! The harness itself, checked with two wireguard-go nodes: namespaces, veth, configuration,
//! ping, TCP transfers, iperf3, `wg show dump` parsing, and cleanup after a panic.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::Duration;

use meshtun_e2e::config::{genpsk, Node};
use meshtun_e2e::traffic::{assert_no_ping, assert_ping, iperf3, tcp_transfer};
use meshtun_e2e::{require_root, uapi_socket, wg, Family, Netns, Veth, WgGo};

/// Two wireguard-go nodes with a PSK; A knows B's endpoint in `family`.
fn pair_exchanges_traffic(test: &str, family: Family) {
    let (ns_a, ns_b) = (Netns::new(test), Netns::new(test));
    let veth = Veth::connect(&ns_a, &ns_b, 0);
    let (a, b) = (Node::new("a", 1), Node::new("b", 2));
    let psk = genpsk();
    let mut ca = a.config();
    ca.peers
        .push(b.as_peer().psk(&psk).endpoint(veth.b_addr(family), b.port));
    let mut cb = b.config();
    cb.peers.push(a.as_peer().psk(&psk));
    let _wa = WgGo::start(&ns_a, &ca);
    let wb = WgGo::start(&ns_b, &cb);

    assert_ping(&ns_a, b.v4.into());
    assert_ping(&ns_b, a.v4.into());
    assert_ping(&ns_a, b.v6.into());
    assert_ping(&ns_b, a.v6.into());
    tcp_transfer(&ns_b, b.v4.into(), &ns_a, 1 << 20).expect("TCP A→B server on B");
    tcp_transfer(&ns_a, a.v6.into(), &ns_b, 1 << 20).expect("TCP B→A server on A");
    for reverse in [false, true] {
        let r = iperf3(&ns_b, b.v4.into(), &ns_a, 2, reverse);
        assert!(r.sent_bytes > 0 && r.received_bytes > 0, "{r:?}");
    }

    let dump = wg::dump(&ns_b, wb.name());
    assert_eq!(dump.interface.public_key, b.keys.public);
    assert_eq!(dump.interface.listen_port, b.port);
    let peer = dump.peer(&a.keys.public);
    assert_eq!(
        peer.endpoint,
        Some((veth.a_addr(family), a.port).into()),
        "B learned A's endpoint from A's packets"
    );
    assert_eq!(peer.preshared_key.as_deref(), Some(psk.as_str()));
    assert!(peer.handshake_within(Duration::from_secs(60)), "{peer:?}");
    assert!(
        peer.rx_bytes > 1 << 20 && peer.tx_bytes > 1 << 20,
        "{peer:?}"
    );
    // Cryptokey routing drops traffic for an address no peer owns.
    assert_no_ping(&ns_a, "100.64.0.9".parse().unwrap());
}

#[test]
fn wireguard_go_pair_over_ipv4() {
    if !require_root("wireguard_go_pair_over_ipv4") {
        return;
    }
    pair_exchanges_traffic("wggo_v4", Family::V4);
}

#[test]
fn wireguard_go_pair_over_ipv6() {
    if !require_root("wireguard_go_pair_over_ipv6") {
        return;
    }
    pair_exchanges_traffic("wggo_v6", Family::V6);
}

/// The harness notices a broken tunnel: different preshared keys mean no handshake.
#[test]
fn mismatched_preshared_keys_block_traffic() {
    if !require_root("mismatched_preshared_keys_block_traffic") {
        return;
    }
    let (ns_a, ns_b) = (Netns::new("wggo_psk"), Netns::new("wggo_psk"));
    let veth = Veth::connect(&ns_a, &ns_b, 1);
    let (a, b) = (Node::new("a", 1), Node::new("b", 2));
    let mut ca = a.config();
    ca.peers.push(
        b.as_peer()
            .psk(&genpsk())
            .endpoint(veth.b_v4.into(), b.port),
    );
    let mut cb = b.config();
    cb.peers.push(a.as_peer().psk(&genpsk()));
    let _wa = WgGo::start(&ns_a, &ca);
    let wb = WgGo::start(&ns_b, &cb);
    assert_no_ping(&ns_a, b.v4.into());
    let dump = wg::dump(&ns_b, wb.name());
    assert_eq!(dump.peer(&a.keys.public).latest_handshake, None);
}

/// A panicking test still deletes its namespace, stops its processes and removes sockets.
#[test]
fn cleanup_happens_when_a_test_panics() {
    if !require_root("cleanup_happens_when_a_test_panics") {
        return;
    }
    let mut seen = None;
    let result = catch_unwind(AssertUnwindSafe(|| {
        let ns = Netns::new("wggo_panic");
        let node = Node::new("p", 1);
        let wg = WgGo::start(&ns, &node.config());
        seen = Some((ns.name().to_owned(), wg.name().to_owned(), wg.pid()));
        panic!("deliberate panic to exercise cleanup");
    }));
    assert!(result.is_err());
    let (ns_name, iface, pid) = seen.expect("the closure ran up to its panic");
    let pid = pid.expect("wireguard-go was running");
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(!list.contains(&ns_name), "namespace {ns_name} left behind");
    assert!(
        !uapi_socket(&iface).exists(),
        "socket of {iface} left behind"
    );
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "wireguard-go (pid {pid}) still running"
    );
}
