//! NAT traversal, attacked (issue 15): member m lists a victim's addresses (a namespace on
//! the same network, not a mesh node) as its candidate endpoints, then stays silent, so
//! that node a keeps trying to reach it. Asserted: the victim receives a's handshake
//! initiations at most once per 5 s per listed address (WireGuard's retry pace for the
//! endpoint, the probe interval for the other candidates), however much traffic a sends
//! m, and nothing else from a.

use std::net::Ipv4Addr;
use std::time::Duration;

use meshtun_e2e::gating::observe::peers_present;
use meshtun_e2e::gating::{Mesh, Timing};
use meshtun_e2e::{require_root, wait_until};

/// The victim's address on the mesh's bridge.
const VICTIM: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 240);

/// The victim's ports m lists.
const PORTS: [u16; 6] = [51820, 51821, 51822, 51823, 51824, 51825];

/// How long a tries to reach m: three probe intervals, 750 pings at 50/s.
const ATTACK: Duration = Duration::from_secs(15);

/// UDP datagrams from a the victim's counter saw.
fn counted(victim: &meshtun_e2e::Netns) -> u64 {
    let out = victim.ok(&["nft", "list", "chain", "ip", "victim", "input"]);
    out.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter in:\n{out}"))
}

#[test]
fn attack_a_member_listing_a_victim_as_its_candidates_gets_it_only_paced_initiations() {
    if !require_root(
        "attack_a_member_listing_a_victim_as_its_candidates_gets_it_only_paced_initiations",
    ) {
        return;
    }
    let timing = Timing::default();
    let mesh = Mesh::without_endpoints("nat_victim", timing, &["a", "m"]);
    let victim = mesh.attach(240);
    victim.ok(&["nft", "add", "table", "ip", "victim"]);
    victim.ok(&[
        "nft", "add", "chain", "ip", "victim", "input", "{", "type", "filter", "hook", "input",
        "priority", "0", ";", "}",
    ]);
    let a_outer = mesh.node("a").outer().to_string();
    victim.ok(&[
        "nft", "add", "rule", "ip", "victim", "input", "ip", "saddr", &a_outer, "counter",
    ]);
    let ctl = mesh.start_controller();
    let _a = mesh.start_node("a", Vec::new());
    // m never runs a daemon: its key signs a report naming the victim, and a pin admits it.
    let m = mesh.node("m");
    let list: Vec<String> = PORTS.iter().map(|p| format!("\"{VICTIM}:{p}\"")).collect();
    let body = format!(
        "{{\"candidates\":[{}],\"listen_port\":51820}}",
        list.join(",")
    );
    let reply = m.ns.enter(|| {
        mesh.home()
            .client()
            .signed(&m.keys, "PUT", "/v1/candidates/m", body.into_bytes())
            .unwrap_or_else(|e| panic!("PUT /v1/candidates/m: {e}"))
    });
    assert_eq!(
        reply.status,
        204,
        "the report is well formed: {}",
        String::from_utf8_lossy(&reply.body)
    );
    mesh.controller_run_ok(0, &["node", "pin", "m", "allow"]);
    ctl.rotate();
    let a = mesh.node("a");
    assert!(
        wait_until(timing.epoch_len() * 2, || peers_present(
            &a.iface,
            &[m.public_key()]
        )),
        "a never got m as a peer"
    );

    let before = counted(&victim);
    // a has traffic for m all along: every packet would start a handshake if nothing paced
    // them.
    let pings = mesh.ping("a", "m", ATTACK);
    let report = pings.finish();
    let got = counted(&victim) - before;
    let per_address = ATTACK.as_secs() / 5 + 2;
    let bound = per_address * PORTS.len() as u64;
    eprintln!(
        "victim received {got} datagrams from a in {ATTACK:?} ({} pings sent to m, {} answered); bound {bound}",
        report.transmitted, report.received
    );
    assert!(
        got >= 1,
        "a never tried the listed candidates: the attack was not staged"
    );
    assert!(
        got <= bound,
        "{got} datagrams reached the victim in {ATTACK:?}, more than {bound}"
    );
}
