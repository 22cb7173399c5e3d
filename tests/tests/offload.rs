//! The offload data path between two meshtun nodes: TCP super-packets split on the way in,
//! segments coalesced on the way out, several tun queues. Large verified transfers both ways
//! over IPv4 and IPv6 inside the tunnel at the same time, and a peer behind a smaller MTU
//! (its tunnel MTU and the outer path's both below the usual).
//!
//! Each transfer checks every byte it receives, and each namespace's kernel counts no TCP
//! or UDP checksum error: the checksums of split and coalesced packets were right.

use std::net::IpAddr;

use meshtun_e2e::config::Node;
use meshtun_e2e::traffic::{assert_ping, tcp_duplex};
use meshtun_e2e::{require_root, Daemon, Family, Netns, Veth};

/// Bytes each way per transfer.
const BYTES: u64 = 48 << 20;

/// The kernel's checksum error counters in `ns` (TCP and UDP, both families), by name.
fn checksum_errors(ns: &Netns) -> Vec<(String, u64)> {
    let out = ns.ok(&[
        "nstat",
        "-a",
        "-s",
        "-z",
        "TcpInCsumErrors",
        "UdpInCsumErrors",
        "Udp6InCsumErrors",
    ]);
    out.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let name = fields.next()?;
            let value = fields.next()?.parse().ok()?;
            name.contains("CsumErrors")
                .then(|| (name.to_owned(), value))
        })
        .collect()
}

fn assert_no_checksum_errors(ns: &Netns) {
    let counters = checksum_errors(ns);
    assert_eq!(
        counters.len(),
        3,
        "nstat did not report the counters: {counters:?}"
    );
    assert!(
        counters.iter().all(|(_, v)| *v == 0),
        "checksum errors in {}: {counters:?}",
        ns.name()
    );
}

/// Both directions of `BYTES` over `a_addr`/`b_addr` in parallel threads: server on B with a
/// client on A, and server on A with a client on B; each stream is itself full duplex.
fn transfers(ns_a: &Netns, ns_b: &Netns, a_addr: IpAddr, b_addr: IpAddr) -> Result<(), String> {
    std::thread::scope(|s| {
        let one = s.spawn(|| tcp_duplex(ns_b, b_addr, ns_a, BYTES));
        let two = tcp_duplex(ns_a, a_addr, ns_b, BYTES);
        let one = one.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        one.and(two).map(|_| ())
    })
}

fn mesh_pair(test: &str, a_mtu: u16, b_mtu: u16, outer_mtu: Option<u16>) {
    let (ns_a, ns_b) = (Netns::new(test), Netns::new(test));
    let veth = Veth::connect(&ns_a, &ns_b, 1);
    if let Some(mtu) = outer_mtu {
        veth.set_mtu(&ns_a, &ns_b, mtu);
    }
    let (a, b) = (Node::new("a", 1), Node::new("b", 2));
    let mut ca = a.config();
    ca.interface.mtu = Some(a_mtu);
    ca.peers
        .push(b.as_peer().endpoint(veth.b_addr(Family::V4), b.port));
    let mut cb = b.config();
    cb.interface.mtu = Some(b_mtu);
    cb.peers
        .push(a.as_peer().endpoint(veth.a_addr(Family::V4), a.port));
    let mut da = Daemon::start(&ns_a, &ca);
    let mut db = Daemon::start(&ns_b, &cb);
    for (daemon, ns) in [(&da, &ns_a), (&db, &ns_b)] {
        assert!(
            daemon.log().contains("offload=true"),
            "the tun device in {} came up without offload:\n{}",
            ns.name(),
            daemon.log()
        );
        let link = ns.ip(&["-d", "link", "show", daemon.name()]);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(
            link.contains("multi_queue"),
            cores > 1,
            "{cores} cores, so the tun device should {}be multi-queue:\n{link}",
            if cores > 1 { "" } else { "not " }
        );
    }
    assert_ping(&ns_a, b.v4.into());
    assert_ping(&ns_a, b.v6.into());

    // IPv4 and IPv6 through the tunnel at the same time, each both ways.
    std::thread::scope(|s| {
        let v6 = s.spawn(|| transfers(&ns_a, &ns_b, a.v6.into(), b.v6.into()));
        transfers(&ns_a, &ns_b, a.v4.into(), b.v4.into()).expect("TCP over IPv4 in the tunnel");
        v6.join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
            .expect("TCP over IPv6 in the tunnel");
    });
    assert_no_checksum_errors(&ns_a);
    assert_no_checksum_errors(&ns_b);

    da.assert_running();
    db.assert_running();
    da.stop_cleanly();
    db.stop_cleanly();
}

#[test]
fn large_transfers_both_ways_over_ipv4_and_ipv6_at_once() {
    if !require_root("large_transfers_both_ways_over_ipv4_and_ipv6_at_once") {
        return;
    }
    mesh_pair("offload_large", 1420, 1420, None);
}

#[test]
fn a_peer_behind_a_smaller_mtu() {
    if !require_root("a_peer_behind_a_smaller_mtu") {
        return;
    }
    // B's tunnel carries at most 1280 bytes, and the outer path only 1380: A's full-sized
    // tunnel packets (1420 + 60 bytes of WireGuard and UDP) travel as IP fragments, and TCP
    // settles on B's smaller segment size.
    mesh_pair("offload_mtu", 1420, 1280, Some(1380));
}
