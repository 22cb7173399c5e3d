//! A gated mesh at steady state: the controller in a namespace of its own, gated `meshtun up`
//! daemons in theirs, all joined by a bridge (see `meshtun_e2e::gating`).
//!
//! - `the_nodes_reach_the_controller`: the topology itself: every node reaches the
//!   controller's address, and the controller lists every enrolled node;
//! - `no_ping_is_lost_across_five_rotations`: three allowed nodes ping each other 50 times a
//!   second while the controller rotates the epoch (and so every pair's preshared key) at
//!   least five times; not one ping is lost, every node applies every epoch, and the pairs
//!   end up on new, agreeing preshared keys with fresh handshakes;
//! - `a_static_wireguard_go_peer_keeps_working`: a wireguard-go peer configured statically on
//!   a gated node keeps a lossless tunnel through rotations and the denial of a gated peer.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use meshtun_e2e::config::{Config, Interface, Peer};
use meshtun_e2e::gating::observe::{self, GateEvent};
use meshtun_e2e::gating::{now_ms, Mesh, PingReport, PingRun, Timing, FAILING, NODE_PORT};
use meshtun_e2e::traffic::assert_ping;
use meshtun_e2e::{iface_name, require_root, wait_until, wg, WgGo};

/// How long a daemon may take to write a log line about what it has just done.
const LOG_WAIT: Duration = Duration::from_secs(2);
use meshtun_proto::PrivateKey;

#[test]
fn the_nodes_reach_the_controller() {
    if !require_root("the_nodes_reach_the_controller") {
        return;
    }
    let mesh = Mesh::new("gating_topology", Timing::default(), &["a", "b"]);
    let ctl = mesh.start_controller();
    for node in mesh.nodes() {
        assert_ping(&node.ns, Ipv4Addr::new(192, 0, 2, 250).into());
    }
    assert_ping(&mesh.node("a").ns, mesh.node("b").outer().into());
    let status = ctl.status();
    for node in mesh.nodes() {
        assert_eq!(
            status["nodes"][&node.id]["wg_public_key"].as_str(),
            Some(node.public_b64().as_str()),
            "node {} is not enrolled as expected: {status}",
            node.id
        );
    }
}

/// The preshared key each node holds for each of its peers: (node, peer) → hex.
fn psks(mesh: &Mesh) -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    for node in mesh.nodes() {
        let peers = observe::uapi_peers(&node.iface)
            .unwrap_or_else(|| panic!("the UAPI of {} does not answer", node.iface));
        for peer in peers {
            let other = mesh
                .nodes()
                .iter()
                .find(|n| n.public_key() == peer.public_key)
                .unwrap_or_else(|| panic!("{} has an unknown peer {peer:?}", node.id));
            let psk = peer
                .preshared_key_hex
                .unwrap_or_else(|| panic!("{} has no preshared key for {}", node.id, other.id));
            out.insert((node.id.clone(), other.id.clone()), psk);
        }
    }
    out
}

#[test]
fn no_ping_is_lost_across_five_rotations() {
    if !require_root("no_ping_is_lost_across_five_rotations") {
        return;
    }
    let timing = Timing::default();
    let ids = ["a", "b", "c"];
    let mesh = Mesh::new("gating_rotations", timing, &ids);
    let ctl = mesh.start_controller();
    let daemons = mesh.start_nodes();
    mesh.admit_all(&ctl, &daemons);
    let before = psks(&mesh);

    let start = now_ms();
    let window = timing.epoch_len() * 5 + Duration::from_secs(3);
    let reports: Vec<PingReport> = mesh
        .ping_pairs(&ids, window)
        .into_iter()
        .map(PingRun::finish)
        .collect();
    let end = now_ms();

    let activated: Vec<_> = ctl
        .rotations()
        .into_iter()
        .filter(|r| r.activation_ms > start && r.activation_ms <= end)
        .collect();
    let epochs: Vec<u64> = activated.iter().map(|r| r.epoch).collect();
    eprintln!("epochs activated while pinging: {epochs:?}");
    for report in &reports {
        eprintln!(
            "{}: {} sent, {} received",
            report.label, report.transmitted, report.received
        );
    }
    assert!(
        activated.len() >= 5,
        "only {} epochs activated in {window:?}: {activated:?}",
        activated.len()
    );
    for r in &activated {
        assert_eq!(
            r.allowed.len(),
            ids.len(),
            "epoch {} left a node out: {r:?}",
            r.epoch
        );
    }
    for report in &reports {
        report.assert_no_loss();
    }

    // Every node applied every epoch to every peer.
    for (node, daemon) in mesh.nodes().iter().zip(&daemons) {
        let missing = || {
            let events = observe::events(&daemon.log());
            let mut missing = Vec::new();
            for epoch in &epochs {
                for other in ids.iter().filter(|o| **o != node.id) {
                    if !events.iter().any(|e| {
                        matches!(e,
                        GateEvent::Applied { epoch: Some(x), peer } if x == epoch && peer == other)
                    }) {
                        missing.push(format!("APPLIED epoch={epoch} peer={other}"));
                    }
                }
            }
            missing
        };
        wait_until(LOG_WAIT, || missing().is_empty());
        let missing = missing();
        assert!(
            missing.is_empty(),
            "node {} did not log {missing:?}",
            node.id
        );
    }

    // The keys did change, both ends of each pair agree, and the handshakes are fresh.
    let after = psks(&mesh);
    let settled = now_ms().saturating_sub(1500);
    let last = activated
        .iter()
        .rev()
        .find(|r| r.activation_ms <= settled)
        .expect("an epoch activated more than 1.5 s ago");
    for ((node, peer), psk) in &after {
        assert_ne!(
            before.get(&(node.clone(), peer.clone())),
            Some(psk),
            "{node}'s preshared key for {peer} did not change over {} epochs",
            epochs.len()
        );
        assert_eq!(
            after.get(&(peer.clone(), node.clone())),
            Some(psk),
            "{node} and {peer} hold different preshared keys"
        );
    }
    for node in mesh.nodes() {
        assert_eq!(observe::shown_membership(&node.ns, &node.iface), "ALLOWED");
        let dump = wg::dump(&node.ns, &node.iface);
        assert_eq!(dump.peers.len(), ids.len() - 1, "{}: {dump:?}", node.id);
        for peer in &dump.peers {
            assert!(
                peer.latest_handshake
                    .is_some_and(|t| t * 1000 + 1000 >= last.activation_ms),
                "{}: no handshake since epoch {} activated ({} ms): {peer:?}",
                node.id,
                last.epoch,
                last.activation_ms
            );
        }
    }
    for mut daemon in daemons {
        daemon.assert_running();
    }
}

#[test]
fn a_static_wireguard_go_peer_keeps_working() {
    if !require_root("a_static_wireguard_go_peer_keeps_working") {
        return;
    }
    let timing = Timing::default();
    let mesh = Mesh::new("gating_static", timing, &["a", "b"]);
    let (a, b) = (mesh.node("a"), mesh.node("b"));

    let w_host = 20;
    let w_ns = mesh.attach(w_host);
    let w_key = PrivateKey::generate();
    let w_tunnel = Ipv4Addr::new(100, 64, 0, w_host);
    let w_config = Config {
        interface: Interface {
            name: iface_name("w"),
            private_key: w_key.to_base64(),
            address: vec![format!("{w_tunnel}/24")],
            listen_port: Some(NODE_PORT),
            mtu: Some(1420),
            scheduling: None,
        },
        peers: vec![a.as_static_peer()],
        metrics: None,
    };
    let w_as_peer = Peer {
        public_key: w_key.public_key().to_base64(),
        preshared_key: None,
        allowed_ips: vec![format!("{w_tunnel}/32")],
        endpoint: Some(format!("192.0.2.{w_host}:{NODE_PORT}")),
        persistent_keepalive: None,
    };

    let ctl = mesh.start_controller();
    let daemons = vec![
        mesh.start_node("a", vec![w_as_peer]),
        mesh.start_node("b", Vec::new()),
    ];
    let _w = WgGo::start(&w_ns, &w_config);
    mesh.admit_all(&ctl, &daemons);
    assert_ping(&a.ns, w_tunnel.into());
    assert_ping(&w_ns, a.tunnel().into());

    // Two rotations, then b is denied and cut off; a <-> w must not notice.
    let start = now_ms();
    let window = timing.epoch_len() * 3;
    let to_w = PingRun::at_rate(&a.ns, "ping a -> w", w_tunnel.into(), 50, window);
    let from_w = PingRun::at_rate(&w_ns, "ping w -> a", a.tunnel().into(), 50, window);
    // The sleep is the test: two rotations pass under the pings.
    std::thread::sleep(timing.epoch_len() * 2);
    let denied_at = now_ms();
    mesh.set_score("b", FAILING);
    let gone = observe::first_time(Duration::from_secs(10), Duration::from_millis(50), || {
        observe::peers_absent(&a.iface, &[b.public_key()])
    });
    assert!(
        gone.is_some(),
        "b was not removed from a's peers within 10 s of failing"
    );
    let reports = [to_w.finish(), from_w.finish()];
    let rotations: Vec<_> = ctl
        .rotations()
        .into_iter()
        .filter(|r| r.activation_ms > start)
        .collect();
    eprintln!(
        "b removed {} ms after its score failed; epochs while pinging: {:?}",
        gone.unwrap_or(0).saturating_sub(denied_at),
        rotations.iter().map(|r| r.epoch).collect::<Vec<_>>()
    );
    for report in &reports {
        report.assert_no_loss();
    }
    assert!(
        rotations.len() >= 2,
        "fewer than two epochs while pinging: {rotations:?}"
    );

    // The static peer is untouched: no preshared key, a fresh handshake; b is gone.
    let dump = wg::dump(&a.ns, &a.iface);
    let w_peer = dump.peer(&w_key.public_key().to_base64());
    assert_eq!(w_peer.preshared_key, None, "{w_peer:?}");
    assert!(
        w_peer.handshake_within(Duration::from_secs(30)),
        "{w_peer:?}"
    );
    assert!(
        !dump.peers.iter().any(|p| p.public_key == b.public_b64()),
        "the denied gated peer b is still configured on a: {dump:?}"
    );
    assert_eq!(dump.peers.len(), 1, "{dump:?}");
}
