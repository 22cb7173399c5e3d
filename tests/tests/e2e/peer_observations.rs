//! Peer observations (README "Peer observations"): four nodes observe each other through
//! the tunnel every 5 s and sign what they see; the policy wants every node reachable from
//! at least two thirds of at least 2 observing peers.
//!
//! `a_node_its_peers_cannot_reach_is_denied_and_cut_off`: while everything answers, every
//! node's reason reads "reachable 1.00 (mean of 3 peers: …)". Then d stops answering
//! echoes on its tunnel (an nftables rule in its namespace; d still reaches the controller
//! and sends its own benchmarks and observations). a, b and c report d unreachable at their
//! next round, the controller denies d with a reason naming them, and a, b and c drop d
//! within 1 s of the decision while they lose no ping among themselves.

use std::time::Duration;

use meshtun_e2e::gating::observe::wait_removed;
use meshtun_e2e::gating::{now_ms, ControllerProc, Mesh, Timing};
use meshtun_e2e::{require_root, wait_until};

/// How long after the decision the denied node must be cut off everywhere.
const CUTOFF_LIMIT_MS: u64 = 1000;

/// Reachable from two thirds of at least 2 peers, each observation fresh within 20 s.
const SOURCES: &str = "[policy.sources.reachable]\nfrom = [\"peers\"]\nk = 2\n\
                       combine = \"mean\"\nmax_age = 20\nminimum = 0.66\n";

/// What every node adds to its `[controller]` section.
const OBSERVE: &str = "observe = true\nobserve_interval = \"5s\"\n";

/// Node `id`'s reason in the controller's status.
fn reason(ctl: &ControllerProc<'_>, id: &str) -> String {
    ctl.status()["nodes"][id]["reason"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

#[test]
fn a_node_its_peers_cannot_reach_is_denied_and_cut_off() {
    if !require_root("a_node_its_peers_cannot_reach_is_denied_and_cut_off") {
        return;
    }
    let mesh = Mesh::new("peerobs", Timing::default(), &["a", "b", "c", "d"]);
    mesh.add_controller_settings(0, SOURCES);
    let ctl = mesh.start_controller();
    let daemons: Vec<_> = ["a", "b", "c", "d"]
        .iter()
        .map(|id| mesh.start_node_with_keys(id, Vec::new(), &[], OBSERVE))
        .collect();
    mesh.admit_all(&ctl, &daemons);
    let (a, b, c, d) = (
        mesh.node("a"),
        mesh.node("b"),
        mesh.node("c"),
        mesh.node("d"),
    );

    // --- Everyone reaches everyone: the reasons say so, naming the observers ---
    let mut last = String::new();
    let observed = wait_until(Duration::from_secs(30), || {
        last = reason(&ctl, "d");
        last.contains("reachable 1.00 (mean of 3 peers: a 1.00, b 1.00, c 1.00) meets 0.66")
    });
    assert!(
        observed,
        "d was never judged reachable by its 3 peers: {last:?}"
    );
    let allowed = mesh.ping_pairs(&["a", "b", "c"], Duration::from_secs(25));

    // --- d stops answering its peers' echoes ---
    let iface = d.iface.clone();
    for args in [
        vec!["nft", "add", "table", "inet", "peerobs"],
        vec![
            "nft",
            "add chain inet peerobs input { type filter hook input priority 0 ; }",
        ],
        vec![
            "nft",
            "add rule inet peerobs input iifname",
            &iface,
            "icmp type echo-request drop",
        ],
    ] {
        let out = d.ns.run(&args);
        assert!(out.status.success(), "{args:?}: {}", out.stderr);
    }
    let silenced_at = now_ms();
    let removed = [
        ("a", wait_removed(a, d)),
        ("b", wait_removed(b, d)),
        ("c", wait_removed(c, d)),
    ];
    let denial = ctl
        .denial("d", silenced_at)
        .unwrap_or_else(|| panic!("no epoch denying d in the audit log: {:?}", ctl.rotations()));
    eprintln!(
        "d denied {} ms after it stopped answering",
        denial.created_ms as i64 - silenced_at as i64
    );
    for (id, at) in removed {
        eprintln!(
            "{id} removed d {} ms after the decision",
            at as i64 - denial.created_ms as i64
        );
        assert!(
            at <= denial.created_ms + CUTOFF_LIMIT_MS,
            "{id} still listed d {} ms after the controller denied it",
            at - denial.created_ms
        );
    }
    let why = reason(&ctl, "d");
    assert!(
        why.starts_with("reachable 0.")
            && why.contains("(mean of 3 peers: a ")
            && why.ends_with("needs 0.66")
            && why.matches(" 0.00").count() >= 2,
        "d's reason: {why:?}"
    );
    assert_eq!(ctl.membership("d"), "DENIED");
    for run in allowed {
        run.stop().assert_no_loss();
    }
    for id in ["a", "b", "c"] {
        assert_eq!(ctl.membership(id), "ALLOWED", "{id}: {}", reason(&ctl, id));
    }
}
