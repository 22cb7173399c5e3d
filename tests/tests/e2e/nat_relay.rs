//! The blind relay on the data path (issue 15, item 4b): nodes a, b and c, each behind its
//! own symmetric NAT (`masquerade random,fully-random`), enrolled with no endpoint, with
//! the controller's STUN server and Debian's coturn as the relay. No candidate a node
//! learns by STUN passes the other NATs, so every pair falls back to the relay.
//!
//! Asserted:
//! - every pair's path is `relayed` (via the coturn address) on both sides, and pings pass
//!   at 50/s without loss across a rotation;
//! - the relay is blind: nftables counters in the relay's namespace count every datagram
//!   coturn receives, and every one that carries a peer's data (ChannelData to the TURN
//!   port, or plain datagrams to the relayed ports) holds a WireGuard message, never an
//!   IP packet;
//! - b's NAT is made a full cone (its node's port forwarded; its STUN mapping renewed):
//!   a↔b move back to direct within [`BACK_TO_DIRECT`], with b's router's public address as
//!   the endpoint, and their traffic no longer passes the relay, while c stays relayed;
//! - c is denied: a and b drop it within 1 s of the decision, its relayed paths with it,
//!   and c drops its allocation.
//!
//! Printed: the time to the first relayed ping, the time back to direct, and iperf3's rate
//! a→b through the relay and directly.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use meshtun_e2e::coturn::Coturn;
use meshtun_e2e::gating::observe::{self, has_membership, show_gate, wait_removed};
use meshtun_e2e::gating::{now_ms, Mesh, Timing, FAILING};
use meshtun_e2e::nat::{Mapping, Router};
use meshtun_e2e::{require_root, traffic, wait_until, Netns};

const CONTROLLER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 250);
const STUN_PORT: u16 = 3478;
const RELAY_HOST: u8 = 251;
const RELAY: Ipv4Addr = Ipv4Addr::new(192, 0, 2, RELAY_HOST);

/// How long the relayed paths may take: admission, the allocation, the relayed address
/// reported and carried by the next epoch's bundle, the handshake through the relay.
const RELAYED_WITHIN: Duration = Duration::from_secs(30);

/// How long the move back to direct may take: STUN asks again at once (the host's
/// addresses changed), the new candidate travels in the next epoch's bundle, and the peer
/// probes it at its next tick.
const BACK_TO_DIRECT: Duration = Duration::from_secs(30);

/// How long after the decision a denied node must be cut off.
const CUTOFF_LIMIT_MS: u64 = 1000;

/// The view `meshtun show --json` gives node `id` of its peer `other`.
fn peer_view(mesh: &Mesh, id: &str, other: &str) -> serde_json::Value {
    let node = mesh.node(id);
    observe::peer_view(&node.ns, &node.iface, &mesh.node(other).public_b64())
}

/// Waits until every ordered pair of `pairs` shows `path`; panics naming the last view.
fn wait_path(mesh: &Mesh, pairs: &[(&str, &str)], path: &str, within: Duration) {
    let mut last = (String::new(), serde_json::Value::Null);
    let ok = wait_until(within, || {
        pairs.iter().all(|(id, other)| {
            let view = peer_view(mesh, id, other);
            let ok = view["path"] == path;
            if !ok {
                last = (format!("{id} -> {other}"), view);
            }
            ok
        })
    });
    assert!(ok, "{} never showed path {path}: {}", last.0, last.1);
}

/// Counters of what coturn receives, by what it carries.
struct RelayCounters<'ns> {
    ns: &'ns Netns,
}

/// A WireGuard message's first four bytes (type 1 to 4, three zero bytes).
const WIREGUARD: &str = "{ 0x01000000, 0x02000000, 0x03000000, 0x04000000 }";

impl<'ns> RelayCounters<'ns> {
    /// Counters in `ns` (the relay's): ChannelData to the TURN port, and datagrams to the
    /// relayed ports, each in all and holding a WireGuard message.
    fn install(ns: &'ns Netns) -> Self {
        ns.ok(&["nft", "add", "table", "inet", "blind"]);
        let chain = "{ type filter hook input priority 0 ; policy accept ; }";
        let mut args = vec!["nft", "add", "chain", "inet", "blind", "input"];
        args.extend(chain.split(' '));
        ns.ok(&args);
        // ChannelData: the first two bits of the UDP payload are 01; the payload inside
        // starts 4 bytes in.
        let rules = [
            ("channel_all", "udp dport 3478 @th,64,2 1"),
            (
                "channel_wg",
                &format!("udp dport 3478 @th,64,2 1 @th,96,32 {WIREGUARD}"),
            ),
            ("relayed_all", "udp dport 49152-49407"),
            (
                "relayed_wg",
                &format!("udp dport 49152-49407 @th,64,32 {WIREGUARD}"),
            ),
        ];
        for (name, rule) in rules {
            let text = format!("add rule inet blind input {rule} counter comment \"{name}\"");
            let mut args = vec!["nft"];
            args.extend(text.split(' ').map(|w| w.trim_matches('"')));
            ns.ok(&args);
        }
        Self { ns }
    }

    /// The packets each counter counted: (channel all, channel WireGuard, relayed all,
    /// relayed WireGuard).
    fn read(&self) -> [u64; 4] {
        let out = self.ns.ok(&["nft", "list", "table", "inet", "blind"]);
        let count = |name: &str| -> u64 {
            out.lines()
                .find(|l| l.contains(&format!("comment \"{name}\"")))
                .and_then(|l| l.split("packets ").nth(1))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no counter {name} in:\n{out}"))
        };
        ["channel_all", "channel_wg", "relayed_all", "relayed_wg"].map(count)
    }
}

/// iperf3's rate from `from` to `to` over 2 s, Mbit/s.
fn rate(mesh: &Mesh, from: &str, to: &str) -> f64 {
    let (src, dst) = (mesh.node(from), mesh.node(to));
    let result = traffic::iperf3(&dst.ns, IpAddr::V4(dst.tunnel()), &src.ns, 2, false);
    result.received_bytes as f64 * 8.0 / 2.0 / 1e6
}

#[test]
fn nodes_behind_symmetric_nats_talk_blind_through_the_relay_then_directly() {
    if !require_root("nodes_behind_symmetric_nats_talk_blind_through_the_relay_then_directly") {
        return;
    }
    let timing = Timing::default();
    let mesh = Mesh::without_endpoints("nat_relay", timing, &["a", "b", "c"]);
    let secret = format!("relay-secret-{}", meshtun_e2e::unique_suffix());
    meshtun_e2e::write_0600(&mesh.home().root().join("relay.secret"), &secret);
    mesh.add_controller_settings(
        0,
        &format!(
            "[stun]\nlisten = \"{CONTROLLER}:{STUN_PORT}\"\n\
             [relay]\nurls = [\"turn:{RELAY}:3478\"]\nsecret_file = \"relay.secret\"\n"
        ),
    );
    let relay_ns = mesh.attach(RELAY_HOST);
    let dir = mesh.dir().join("coturn");
    std::fs::create_dir(&dir).unwrap();
    let _coturn = Coturn::start(&relay_ns, &dir, IpAddr::V4(RELAY), &secret);
    let counters = RelayCounters::install(&relay_ns);
    let routers: Vec<Router> = ["a", "b", "c"]
        .iter()
        .map(|id| {
            let node = mesh.node(id);
            Router::insert("nat_relay", &node.ns, node.outer(), Mapping::FullyRandom)
        })
        .collect();
    let ctl = mesh.start_controller();
    let daemons = mesh.start_nodes();

    let started = Instant::now();
    ctl.wait_benchmarks(&["a", "b", "c"], Duration::from_secs(20));
    ctl.rotate();
    for daemon in &daemons {
        let allowed = wait_until(Duration::from_secs(20), || {
            has_membership(&daemon.log(), "ALLOWED")
        });
        assert!(allowed, "a node was not admitted:\n{}", daemon.log());
    }
    let all = [
        ("a", "b"),
        ("b", "a"),
        ("a", "c"),
        ("c", "a"),
        ("b", "c"),
        ("c", "b"),
    ];
    wait_path(&mesh, &all, "relayed", RELAYED_WITHIN);
    for (id, other) in all {
        traffic::assert_ping(&mesh.node(id).ns, mesh.node(other).tunnel().into());
    }
    eprintln!(
        "behind three symmetric NATs: every pair pings through the relay {:?} after the admitting rotation was asked for",
        started.elapsed()
    );
    let view = peer_view(&mesh, "a", "b");
    assert_eq!(view["relayed"], true, "{view}");

    // 0 pings lost at 50/s across a rotation, and the relay sees only WireGuard.
    let pings = mesh.ping_pairs(&["a", "b", "c"], timing.epoch_len());
    std::thread::sleep(timing.epoch_len() / 2);
    ctl.rotate();
    for run in pings {
        run.finish().assert_no_loss();
    }
    let relayed_rate = rate(&mesh, "a", "b");
    let [channel, channel_wg, relayed, relayed_wg] = counters.read();
    eprintln!("the relay received {channel} ChannelData ({channel_wg} WireGuard) and {relayed} datagrams at relayed ports ({relayed_wg} WireGuard)");
    assert!(channel + relayed > 1000, "the pings passed the relay");
    assert_eq!(
        channel, channel_wg,
        "ChannelData that is not WireGuard reached the relay"
    );
    assert_eq!(
        relayed, relayed_wg,
        "a datagram that is not WireGuard reached a relayed port"
    );

    // b's NAT becomes a full cone: its port is forwarded, its STUN mapping renewed (the
    // node's addresses change, as on a new lease, so STUN asks again at once).
    let (b, rb) = (mesh.node("b"), &routers[1]);
    rb.forward_port(51820);
    rb.set_mapping(Mapping::EndpointIndependent);
    b.ns.ip(&["addr", "add", "198.51.100.99/32", "dev", &rb.node_link]);
    let moved = Instant::now();
    wait_path(&mesh, &[("a", "b"), ("b", "a")], "direct", BACK_TO_DIRECT);
    eprintln!(
        "a and b moved back to direct {:?} after b's NAT became a full cone",
        moved.elapsed()
    );
    let view = peer_view(&mesh, "a", "b");
    assert_eq!(view["endpoint"], format!("{}:51820", rb.public), "{view}");
    assert_eq!(
        peer_view(&mesh, "a", "c")["path"],
        "relayed",
        "c stays relayed"
    );
    let before = counters.read();
    let direct_rate = rate(&mesh, "a", "b");
    let after = counters.read();
    let through_relay = after.iter().sum::<u64>() - before.iter().sum::<u64>();
    assert!(
        through_relay < 100,
        "{through_relay} datagrams of a direct transfer passed the relay"
    );
    eprintln!("a -> b: {relayed_rate:.0} Mbit/s through the relay, {direct_rate:.0} Mbit/s direct");

    // c denied: a and b drop it within a second of the decision, relayed paths and all.
    let failed_at = now_ms();
    mesh.set_score("c", FAILING);
    let c = mesh.node("c");
    let removed = [wait_removed(mesh.node("a"), c), wait_removed(b, c)];
    let mut denial = None;
    wait_until(Duration::from_secs(5), || {
        denial = ctl.denial("c", failed_at);
        denial.is_some()
    });
    let decided = denial.expect("no epoch denies c").created_ms;
    for at in removed {
        eprintln!(
            "c removed {} ms after the decision",
            at as i64 - decided as i64
        );
        assert!(
            at <= decided + CUTOFF_LIMIT_MS,
            "removed {} ms after",
            at - decided
        );
    }
    let dropped = wait_until(Duration::from_secs(5), || {
        show_gate(&c.ns, &c.iface)["relay"].is_null()
    });
    assert!(dropped, "denied, c still holds its allocation");
}
