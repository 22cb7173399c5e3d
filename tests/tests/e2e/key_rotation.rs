//! Rotating the controller key (README "Rotating the controller key"): nodes a and b pin
//! the old and the new key, node c only the old one. The controller is stopped, given the
//! new key with the old one in `previous_keys`, and started again.
//!
//! Asserted:
//! - a and b accept the new key's bundles (`meshtun show` names it) within an epoch, its
//!   lead and slack of the restart, and a <-> b lose no ping through the rotation;
//! - their requests, which still name the old key, are answered: benchmarks from both are
//!   recorded after the restart, naming the old key, and `audit verify` passes;
//! - c, which does not pin the new key, refuses every bundle it signs (as it would a rogue
//!   controller's) and fails closed once its last bundle and grace run out.

use std::time::Duration;

use meshtun_e2e::gating::observe::{show_gate, shown_membership};
use meshtun_e2e::gating::{now_ms, Mesh, Timing};
use meshtun_e2e::{require_root, wait_until};
use meshtun_proto::IdentityKey;
use meshtun_testbed::controller::parse_audit;

/// Slack on top of an epoch and its lead.
const SLACK: Duration = Duration::from_secs(2);

/// The controller key node `id` shows as the signer of its last bundle.
fn shown_key(mesh: &Mesh, id: &str) -> String {
    let node = mesh.node(id);
    show_gate(&node.ns, &node.iface)["controller_key"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// The controller keys named by the benchmarks of `id` recorded after `since_ms`.
fn benchmark_keys_since(mesh: &Mesh, id: &str, since_ms: u64) -> Vec<String> {
    let out = mesh.controller_run_ok(0, &["audit", "show", "--from", "1", "--limit", "100000"]);
    parse_audit(&out)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter(|line| line.kind == "benchmark" && line.at_ms > since_ms)
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(&line.entry).ok())
        .filter(|entry| entry["node_id"] == id)
        .map(|entry| entry["controller_key"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[test]
fn the_controller_key_rotates_without_a_gap_for_nodes_pinning_both() {
    if !require_root("the_controller_key_rotates_without_a_gap_for_nodes_pinning_both") {
        return;
    }
    let timing = Timing::default();
    let mesh = Mesh::new("key_rotation", timing, &["a", "b", "c"]);
    let old = mesh.controller_key().to_owned();
    let new = IdentityKey::generate();
    let new_public = new.public().to_base64();
    let mut ctl = mesh.start_controller();
    let daemons = vec![
        mesh.start_node_pinning("a", &[&old, &new_public]),
        mesh.start_node_pinning("b", &[&old, &new_public]),
        mesh.start_node_pinning("c", &[&old]),
    ];
    mesh.admit_all(&ctl, &daemons);
    assert_eq!(shown_key(&mesh, "a"), old, "before the rotation");

    let pings = mesh.ping_pairs(&["a", "b"], timing.epoch_len() * 4);
    ctl.kill();
    assert_eq!(mesh.roll_controller_key(&new), new_public);
    let restarted_ms = now_ms();
    ctl.restart();

    let bound = timing.epoch_len() + Duration::from_secs(timing.lead) + SLACK;
    for id in ["a", "b"] {
        let moved = wait_until(bound, || shown_key(&mesh, id) == new_public);
        assert!(
            moved,
            "{id} does not show bundles signed by the new key within {bound:?} of the \
             restart: it shows {:?}; controller status:\n{}",
            shown_key(&mesh, id),
            ctl.status_text()
        );
        assert_eq!(
            shown_membership(&mesh.node(id).ns, &mesh.node(id).iface),
            "ALLOWED"
        );
    }

    // c pins only the old key: it refuses the new one's bundles and, its last bundle and
    // grace gone, fails closed.
    let lost_bound = timing.epoch_len() * 2 + Duration::from_secs(timing.grace) + SLACK;
    let c = mesh.node("c");
    let lost = wait_until(lost_bound, || shown_membership(&c.ns, &c.iface) == "LOST");
    assert!(
        lost,
        "c, which does not pin the new key, is {} {lost_bound:?} after the restart",
        shown_membership(&c.ns, &c.iface)
    );
    let c_log = daemons[2].log();
    assert!(
        c_log.contains("does not verify with any pinned controller key"),
        "c does not say why it refuses the new bundles:\n{c_log}"
    );
    assert_eq!(
        shown_key(&mesh, "c"),
        old,
        "c never accepted a bundle of the new key"
    );

    for run in pings {
        run.finish().assert_no_loss();
    }
    for id in ["a", "b"] {
        let keys = benchmark_keys_since(&mesh, id, restarted_ms);
        assert!(
            !keys.is_empty() && keys.iter().all(|k| *k == old),
            "{id}'s benchmarks after the restart should be recorded naming the old key \
             (answered through previous_keys): {keys:?}"
        );
    }
    let verified = mesh.controller_run_ok(0, &["audit", "verify"]);
    eprintln!("audit verify after the rotation: {}", verified.trim());
}
