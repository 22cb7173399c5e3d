//! The harness itself, checked with wireguard-go nodes, for what no test of meshtun shows: that
//! `assert_no_ping` and `wg show dump` see a tunnel that cannot come up (mismatched preshared
//! keys), and that a panicking test still cleans up. (A working wireguard-go pair is not run
//! here: `interop_wireguard_go.rs` runs the same ping, TCP and `wg show dump` checks with
//! wireguard-go on one side over IPv4 and IPv6, `two_nodes.rs` the iperf3 helper and the
//! transfer counters, `wg_tool.rs` the listen port.)

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use meshtun_e2e::config::{genpsk, Node};
use meshtun_e2e::traffic::assert_no_ping;
use meshtun_e2e::{require_root, uapi_socket, wg, Netns, Veth, WgGo};

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
