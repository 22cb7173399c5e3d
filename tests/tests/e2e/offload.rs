//! The offload data path between two meshtun nodes: TCP super-packets split on the way in,
//! segments coalesced on the way out, several tun queues. Large verified transfers both ways
//! over IPv4 and IPv6 inside the tunnel at the same time, and a peer behind a smaller MTU
//! (its tunnel MTU and the outer path's both below the usual), and a peer on the plain
//! batched I/O that kernels and platforms without offload get.
//!
//! Each transfer checks every byte it receives, and each namespace's kernel counts no TCP
//! or UDP checksum error: the checksums of split and coalesced packets were right.

use std::net::IpAddr;

use meshtun_e2e::config::{pair, Node};
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

/// How node B's daemon runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BPath {
    /// Offload and one lane per core, as A.
    Offload,
    /// `MESHTUN_NO_OFFLOAD=1`, one lane: plain batched I/O, as on a kernel or platform
    /// without offload.
    Plain,
}

/// Asserts how the daemon's tun device came up: offload or not, multi-queue or not.
fn assert_tun(daemon: &Daemon, ns: &Netns, offload: bool, lanes: usize) {
    let log = daemon.log();
    assert!(
        log.contains(&format!("offload={offload}")),
        "the tun device in {} should have come up with offload={offload}:\n{log}",
        ns.name()
    );
    let link = ns.ip(&["-d", "link", "show", daemon.name()]);
    assert_eq!(
        link.contains("multi_queue"),
        lanes > 1,
        "{lanes} lanes, so the tun device should {}be multi-queue:\n{link}",
        if lanes > 1 { "" } else { "not " }
    );
}

fn mesh_pair(test: &str, a_mtu: u16, b_mtu: u16, outer_mtu: Option<u16>, b_path: BPath) {
    let (ns_a, ns_b) = (Netns::new(test), Netns::new(test));
    let veth = Veth::connect(&ns_a, &ns_b, 1);
    if let Some(mtu) = outer_mtu {
        veth.set_mtu(&ns_a, &ns_b, mtu);
    }
    let (a, b) = (Node::new("a", 1), Node::new("b", 2));
    let (mut ca, mut cb) = pair(&a, veth.a_addr(Family::V4), &b, veth.b_addr(Family::V4));
    ca.interface.mtu = Some(a_mtu);
    cb.interface.mtu = Some(b_mtu);
    let mut da = Daemon::start(&ns_a, &ca);
    let mut db = match b_path {
        BPath::Offload => Daemon::start(&ns_b, &cb),
        BPath::Plain => Daemon::start_env(
            &ns_b,
            &cb,
            &[("MESHTUN_NO_OFFLOAD", "1"), ("MESHTUN_LANES", "1")],
        ),
    };
    let lanes = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    assert_tun(&da, &ns_a, true, lanes);
    match b_path {
        BPath::Offload => assert_tun(&db, &ns_b, true, lanes),
        BPath::Plain => assert_tun(&db, &ns_b, false, 1),
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
    let _exclusive = meshtun_e2e::exclusive();
    mesh_pair("offload_large", 1420, 1420, None, BPath::Offload);
}

#[test]
fn a_peer_behind_a_smaller_mtu() {
    if !require_root("a_peer_behind_a_smaller_mtu") {
        return;
    }
    let _exclusive = meshtun_e2e::exclusive();
    // B's tunnel carries at most 1280 bytes, and the outer path only 1380: A's full-sized
    // tunnel packets (1420 + 60 bytes of WireGuard and UDP) travel as IP fragments, and TCP
    // settles on B's smaller segment size.
    mesh_pair("offload_mtu", 1420, 1280, Some(1380), BPath::Offload);
}

#[test]
fn a_peer_on_plain_batched_io() {
    if !require_root("a_peer_on_plain_batched_io") {
        return;
    }
    let _exclusive = meshtun_e2e::exclusive();
    // B reads and writes one packet per system call on one lane, as on a kernel or platform
    // without offload, while A splits and coalesces: the same transfers hold.
    mesh_pair("offload_plain", 1420, 1420, None, BPath::Plain);
}

/// `examples/udp_gso_flood`, built beside this test (`cargo test --examples`, or
/// `cargo build -p meshtun --example udp_gso_flood`).
fn gso_flood_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let bin = exe
        .parent()
        .and_then(std::path::Path::parent)
        .map(|profile| profile.join("examples/udp_gso_flood"))
        .expect("the test runs from target/<profile>/deps");
    assert!(
        bin.is_file(),
        "{} is missing: build it first with cargo build -p meshtun --example udp_gso_flood",
        bin.display()
    );
    bin
}

/// Whether this kernel offers UDP segmentation offload on tun devices (Linux 6.2+).
fn kernel_has_tun_uso() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (6, 2)
}

/// `key=value` of the tally line `udp_gso_flood` prints.
fn tally(out: &str, key: &str) -> u64 {
    out.lines()
        .find(|l| l.starts_with("datagrams="))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|f| f.strip_prefix(&format!("{key}=")).map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {out:?}"))
}

/// One GSO flood of `size`-byte datagrams from A to `dst` in B for two seconds; returns
/// (sent, received) after checking that every datagram received was whole and as sent.
fn gso_flood(ns_a: &Netns, ns_b: &Netns, dst: IpAddr, size: u16) -> (u64, u64) {
    let bin = gso_flood_bin();
    let bin = bin.to_str().expect("a UTF-8 path");
    let to = std::net::SocketAddr::new(dst, 5301).to_string();
    let size = size.to_string();
    let mut recv = ns_b.command(bin, &["recv", "--bind", &to, "--verify", &size]);
    recv.args(["--max-seconds", "20"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let receiver = ns_b.spawn(&mut recv);
    let listening = meshtun_e2e::wait_until(std::time::Duration::from_secs(5), || {
        ns_b.ok(&["ss", "-Huln"]).contains(":5301")
    });
    assert!(listening, "the receiver did not bind {to}");
    let sent = ns_a.run_timeout(
        &[bin, "send", "--to", &to, "--seconds", "2", "--size", &size],
        std::time::Duration::from_secs(30),
    );
    let sent_out = sent.stdout;
    assert!(
        sent.status.success(),
        "the GSO sender failed: {sent_out}{}",
        sent.stderr
    );
    let got = receiver.wait_with_output().expect("the receiver's output");
    let got_out = String::from_utf8_lossy(&got.stdout).into_owned();
    assert!(
        got.status.success(),
        "the receiver failed: {got_out}{}",
        String::from_utf8_lossy(&got.stderr)
    );
    let (n_sent, n_got) = (tally(&sent_out, "datagrams"), tally(&got_out, "datagrams"));
    assert_eq!(
        tally(&got_out, "corrupt"),
        0,
        "datagrams cut, merged or altered on the way to {to}: {got_out}"
    );
    assert!(
        n_got <= n_sent,
        "more received than sent: {got_out} / {sent_out}"
    );
    assert!(
        n_got >= 1000,
        "the flood to {to} hardly passed: {got_out} / {sent_out}"
    );
    (n_sent, n_got)
}

/// A UDP sender that sends as QUIC stacks do (UDP_SEGMENT: up to 64 KiB of equal datagrams
/// per sendmsg) through the tunnel, over IPv4 and IPv6: with USO on the tun device (Linux
/// 6.2+) its super-packets reach meshtun whole and are split there, and the receiver reads
/// them coalesced (GRO). Every datagram that arrives is exactly as sent, each namespace's
/// kernel counts no checksum error, and neither daemon falters.
#[test]
fn a_udp_gso_sender_through_the_tunnel_gets_every_datagram_intact() {
    if !require_root("a_udp_gso_sender_through_the_tunnel_gets_every_datagram_intact") {
        return;
    }
    let _exclusive = meshtun_e2e::exclusive();
    let (ns_a, ns_b) = (Netns::new("offload_uso"), Netns::new("offload_uso"));
    let veth = Veth::connect(&ns_a, &ns_b, 1);
    let (a, b) = (Node::new("a", 1), Node::new("b", 2));
    let (ca, cb) = pair(&a, veth.a_addr(Family::V4), &b, veth.b_addr(Family::V4));
    let mut da = Daemon::start(&ns_a, &ca);
    let mut db = Daemon::start(&ns_b, &cb);
    if kernel_has_tun_uso() {
        for d in [&da, &db] {
            assert!(
                d.log().contains("udp_offload=true"),
                "this kernel has USO for tun devices, but the daemon did not turn it on:\n{}",
                d.log()
            );
        }
    }
    assert_ping(&ns_a, b.v4.into());
    assert_ping(&ns_a, b.v6.into());
    // The largest datagrams the 1420-byte tunnel carries unfragmented, then small ones.
    for (dst, size) in [
        (IpAddr::from(b.v4), 1392),
        (IpAddr::from(b.v6), 1372),
        (IpAddr::from(b.v4), 200),
    ] {
        let (sent, got) = gso_flood(&ns_a, &ns_b, dst, size);
        eprintln!("GSO sender, {size} B to {dst}: {got} of {sent} datagrams delivered intact");
    }
    assert_no_checksum_errors(&ns_a);
    assert_no_checksum_errors(&ns_b);
    da.assert_running();
    db.assert_running();
    da.stop_cleanly();
    db.stop_cleanly();
}
