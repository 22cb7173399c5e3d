//! NAT traversal (issue 15, item 2): nodes a and b each behind its own masquerading router
//! ([`meshtun_e2e::nat`]), enrolled with no endpoint. Each learns its reflexive address from
//! the controller's STUN server and reports its candidates; each bundle lists the other's;
//! both send their initiations to them (a simultaneous open through two
//! endpoint-independent NATs) and the first authenticated answer becomes the endpoint.
//!
//! Asserted: a and b ping each other through the tunnel; each shows the other's *router*
//! (public address and mapped port) as its endpoint, and each router's connection tracking
//! holds the flow to the other router, so no third party carries the traffic (there is no
//! relay in this mesh); 0 pings lost at 50/s across an admin rotation; once b's score
//! fails, a drops it within 1 s of the controller's decision. Printed: the time from the
//! admitting rotation's request to pings through the tunnel.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use meshtun_e2e::gating::observe::{self, wait_removed};
use meshtun_e2e::gating::{now_ms, Mesh, Timing, FAILING};
use meshtun_e2e::nat::{Mapping, Router};
use meshtun_e2e::{require_root, wait_until};

/// The controller's address on the mesh's bridge, and its STUN port.
const CONTROLLER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 250);
const STUN_PORT: u16 = 3478;

/// How long after the decision a denied node must be cut off.
const CUTOFF_LIMIT_MS: u64 = 1000;

/// How long the nodes may take to learn and report their candidates.
const REPORTED: Duration = Duration::from_secs(15);

/// The endpoint node `id` shows for node `other`.
fn endpoint_of(mesh: &Mesh, id: &str, other: &str) -> Option<SocketAddr> {
    let node = mesh.node(id);
    let view = observe::peer_view(&node.ns, &node.iface, &mesh.node(other).public_b64());
    view["endpoint"].as_str()?.parse().ok()
}

#[test]
fn two_nodes_behind_two_nats_reach_each_other_directly() {
    if !require_root("two_nodes_behind_two_nats_reach_each_other_directly") {
        return;
    }
    let timing = Timing::default();
    let mesh = Mesh::without_endpoints("nat_direct", timing, &["a", "b"]);
    mesh.add_controller_settings(0, &format!("[stun]\nlisten = \"{CONTROLLER}:{STUN_PORT}\""));
    let (a, b) = (mesh.node("a"), mesh.node("b"));
    let ra = Router::insert("nat_direct", &a.ns, a.outer(), Mapping::EndpointIndependent);
    let rb = Router::insert("nat_direct", &b.ns, b.outer(), Mapping::EndpointIndependent);
    let ctl = mesh.start_controller();
    let daemons = mesh.start_nodes();
    let reported = wait_until(REPORTED, || {
        mesh.home().open_db().row_count("node_candidates") == 2
    });
    assert!(
        reported,
        "the nodes did not report their candidates within {REPORTED:?}"
    );

    let started = Instant::now();
    mesh.admit_all(&ctl, &daemons);
    eprintln!(
        "behind two NATs: admitted and pinging each other {:?} after the admitting rotation was asked for",
        started.elapsed()
    );

    for (id, other, router, theirs) in [("a", "b", &ra, &rb), ("b", "a", &rb, &ra)] {
        let endpoint = endpoint_of(&mesh, id, other)
            .unwrap_or_else(|| panic!("{id} shows no endpoint for {other}"));
        assert_eq!(
            endpoint.ip(),
            theirs.public,
            "{id} reaches {other} at its router's public address, directly"
        );
        let flows = router.udp_mappings(endpoint.port());
        assert!(
            flows.iter().any(|(dst, _)| *dst == theirs.public),
            "{id}'s router tracks no flow to {other}'s router {endpoint}: {flows:?}"
        );
    }

    let pings = mesh.ping_pairs(&["a", "b"], timing.epoch_len() * 2);
    std::thread::sleep(timing.epoch_len() / 2);
    ctl.rotate();
    for run in pings {
        run.finish().assert_no_loss();
    }

    // Denied, b loses its direct path through both NATs within a second of the decision.
    let failed_at = now_ms();
    mesh.set_score("b", FAILING);
    let removed = wait_removed(a, b);
    let mut denial = None;
    wait_until(Duration::from_secs(5), || {
        denial = ctl.denial("b", failed_at);
        denial.is_some()
    });
    let decided = denial
        .unwrap_or_else(|| panic!("no epoch denies b after its score failed"))
        .created_ms;
    eprintln!(
        "a removed b {} ms after the decision",
        removed as i64 - decided as i64
    );
    assert!(
        removed <= decided + CUTOFF_LIMIT_MS,
        "a removed b {} ms after the decision",
        removed - decided
    );
}
