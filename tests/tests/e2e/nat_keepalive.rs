//! Keepalive for gated peers behind a NAT (issue 15, item 3). Node a sits behind a
//! masquerading router ([`meshtun_e2e::nat::Router`]) whose UDP conntrack entries expire
//! after [`UDP_TIMEOUT`]; node b is on the public side. a is enrolled without an endpoint,
//! so b can reach a only through the mapping a's own packets opened in a's NAT.
//!
//! `gated_keepalive_holds_the_nat_mapping_and_recovers_after_a_flush`:
//! - the default: a learns from STUN (the controller's `[stun]`) that it is behind a NAT,
//!   and its gated peer b gets a 25 s keepalive; b, not behind a NAT, keeps none for a;
//! - `keepalive = 2` on a: idle three times the conntrack timeout, then b still pings a;
//! - `conntrack -F` on the router (NAT rebinding): b's pings come back within a's
//!   keepalive plus one handshake, and the test prints how long it took;
//! - `keepalive = 0` on a: the same idle, and b's pings to a are lost (the test can fail).
//!
//! The epoch is long (60 s) so that no preshared-key handshake at an epoch change opens the
//! mapping again during the idle times.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use meshtun_e2e::gating::PingRun;
use meshtun_e2e::gating::{Mesh, Timing};
use meshtun_e2e::nat::{Mapping, Router};
use meshtun_e2e::traffic::{assert_ping, ping};
use meshtun_e2e::{require_root, wait_until};

/// The controller's address on the mesh's bridge, and its STUN port.
const CONTROLLER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 250);
const STUN_PORT: u16 = 3478;

/// How long the router keeps an idle UDP mapping, seconds.
const UDP_TIMEOUT: u32 = 3;

/// Idle time: three conntrack timeouts.
const IDLE: Duration = Duration::from_secs(3 * UDP_TIMEOUT as u64);

/// a's keepalive in the timed cases, seconds.
const KEEPALIVE: u64 = 2;

/// The persistent keepalive `meshtun show --json` reports on `node`'s interface for the
/// peer with public key `peer` (base64).
fn shown_keepalive(mesh: &Mesh, node: &str, peer: &str) -> Option<u64> {
    let node = mesh.node(node);
    let out = meshtun_e2e::meshtun_in(
        &node.ns,
        &["show", &node.iface, "--json", "--no-probe"],
        Duration::from_secs(30),
    )
    .expect_success();
    let views: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("`meshtun show --json` is not JSON ({e}):\n{out}"));
    let peers = views[0]["peers"]
        .as_array()
        .unwrap_or_else(|| panic!("no peers in `meshtun show --json`:\n{out}"));
    let found = peers
        .iter()
        .find(|p| p["public_key"] == peer)
        .unwrap_or_else(|| panic!("no peer {peer} in `meshtun show --json`:\n{out}"));
    found["persistent_keepalive"].as_u64()
}

/// Enrolls a again, without an endpoint: nobody is told where it is.
fn enroll_without_endpoint(mesh: &Mesh, id: &str) {
    let keys = &mesh.node(id).keys;
    let wg = keys.wg.public_key().to_base64();
    let identity = keys.identity.public().to_base64();
    mesh.controller_run_ok(0, &["node", "remove", id]);
    mesh.controller_run_ok(
        0,
        &[
            "node",
            "add",
            id,
            "--wg-key",
            &wg,
            "--identity-key",
            &identity,
            "--address",
            &keys.address,
        ],
    );
}

/// Pings from b to a at 20/s for 6 s, the router forgetting every mapping 0.5 s in;
/// returns how long after the flush b's pings were answered again: the first reply to a
/// request sent after both the flush and the last request lost.
fn recovery_after_flush(mesh: &Mesh, router: &Router) -> Duration {
    let (a, b) = (mesh.node("a"), mesh.node("b"));
    let run = PingRun::at_rate(
        &b.ns,
        "b -> a",
        a.tunnel().into(),
        20,
        Duration::from_secs(6),
    );
    std::thread::sleep(Duration::from_millis(500));
    let flushed = meshtun_e2e::gating::now_ms();
    router.flush_conntrack();
    let report = run.finish();
    let sent_after = |seq: u32| report.sent_ms[(seq - 1) as usize] >= flushed;
    let last_lost = report
        .lost_seqs()
        .into_iter()
        .filter(|s| sent_after(*s))
        .max();
    let back = report
        .replies
        .iter()
        .filter(|(seq, _)| sent_after(*seq) && last_lost.is_none_or(|l| *seq > l))
        .map(|(_, at)| *at)
        .min()
        .unwrap_or_else(|| {
            panic!(
                "b's pings to a never came back after the flush (lost: {})",
                report.lost_ranges()
            )
        });
    Duration::from_millis(back.saturating_sub(flushed))
}

#[test]
fn gated_keepalive_holds_the_nat_mapping_and_recovers_after_a_flush() {
    if !require_root("gated_keepalive_holds_the_nat_mapping_and_recovers_after_a_flush") {
        return;
    }
    let timing = Timing {
        epoch: 60,
        ..Timing::default()
    };
    let mesh = Mesh::new("nat_keepalive", timing, &["a", "b"]);
    mesh.add_controller_settings(0, &format!("[stun]\nlisten = \"{CONTROLLER}:{STUN_PORT}\""));
    enroll_without_endpoint(&mesh, "a");
    let (a, b) = (mesh.node("a"), mesh.node("b"));
    let router = Router::insert(
        "nat_keepalive",
        &a.ns,
        a.outer(),
        Mapping::EndpointIndependent,
    );
    router.set_udp_timeout(UDP_TIMEOUT);
    let controller = mesh.start_controller();

    // The default, from STUN: a is behind a NAT, b is not.
    let daemons = vec![
        mesh.start_node("a", Vec::new()),
        mesh.start_node("b", Vec::new()),
    ];
    mesh.admit_all(&controller, &daemons);
    let auto = wait_until(Duration::from_secs(10), || {
        shown_keepalive(&mesh, "a", &b.public_b64()) == Some(25)
    });
    assert!(
        auto,
        "a, behind a NAT, does not show a 25 s keepalive for b"
    );
    assert_eq!(
        shown_keepalive(&mesh, "b", &a.public_b64()),
        None,
        "b is not behind a NAT"
    );
    let mut daemons = daemons;
    let _db = daemons.pop();
    daemons.pop().expect("a's daemon").stop_cleanly();

    // keepalive = 2: the mapping outlives idle times longer than its timeout.
    let extra = format!("keepalive = {KEEPALIVE}\n");
    let da = mesh.start_node_with_keys("a", Vec::new(), &[], &extra);
    assert_ping(&a.ns, b.tunnel().into());
    assert_eq!(
        shown_keepalive(&mesh, "a", &b.public_b64()),
        Some(KEEPALIVE)
    );
    std::thread::sleep(IDLE);
    assert!(
        ping(&b.ns, IpAddr::V4(a.tunnel()), 3),
        "with a {KEEPALIVE} s keepalive, b cannot ping a after {IDLE:?} idle"
    );

    // NAT rebinding: the router forgets its mappings.
    let recovery = recovery_after_flush(&mesh, &router);
    println!("recovery after conntrack -F with a {KEEPALIVE} s keepalive: {recovery:?}");
    // A keepalive, and a handshake (5 s retry) should the session need one.
    let bound = Duration::from_secs(KEEPALIVE + 5);
    assert!(
        recovery <= bound,
        "b reached a again {recovery:?} after the flush, over {bound:?}"
    );
    da.stop_cleanly();

    // keepalive = 0: the same idle breaks b -> a.
    let da = mesh.start_node_with_keys("a", Vec::new(), &[], "keepalive = 0\n");
    assert_ping(&a.ns, b.tunnel().into());
    assert_ping(&b.ns, a.tunnel().into());
    assert_eq!(shown_keepalive(&mesh, "a", &b.public_b64()), None);
    std::thread::sleep(IDLE);
    assert!(
        !ping(&b.ns, IpAddr::V4(a.tunnel()), 3),
        "without keepalive, b still pings a after {IDLE:?} idle: the router kept the mapping"
    );
    da.stop_cleanly();
}
