//! Nodes whose clocks are off: in a gated mesh, `b` runs 20 s ahead of the controller and
//! `c` 20 s behind (debug builds skew a daemon's clock with `MESHTUN_CLOCK_OFFSET_MS`), `a`
//! and `d` on time. Bundle times are the controller's; each node estimates its offset from
//! the bundles' signed `issued_ms` and schedules by the controller's time. Without that, `b`
//! would refuse every bundle as expired on arrival and `c` would switch keys, and apply
//! cut-offs, 20 s late.
//!
//! Asserted: all four are admitted; `a`, `b` and `c` ping each other 50 times a second across
//! three rotations without losing one; once `d` fails its benchmark, the skewed `b` and `c`
//! remove it within 1 s of the controller's decision, as `a` does.

use std::time::Duration;

use meshtun_e2e::gating::observe::wait_removed;
use meshtun_e2e::gating::{now_ms, Mesh, PingRun, Timing, FAILING};
use meshtun_e2e::require_root;

/// How long after the decision the denied node must be cut off everywhere.
const CUTOFF_LIMIT_MS: u64 = 1000;

#[test]
fn nodes_twenty_seconds_off_rotate_without_loss_and_cut_off_within_a_second() {
    if !require_root("nodes_twenty_seconds_off_rotate_without_loss_and_cut_off_within_a_second") {
        return;
    }
    let timing = Timing::default();
    let mesh = Mesh::new("gating_skew", timing, &["a", "b", "c", "d"]);
    let ctl = mesh.start_controller();
    let daemons = vec![
        mesh.start_node("a", Vec::new()),
        mesh.start_node_with_env("b", Vec::new(), &[("MESHTUN_CLOCK_OFFSET_MS", "20000")]),
        mesh.start_node_with_env("c", Vec::new(), &[("MESHTUN_CLOCK_OFFSET_MS", "-20000")]),
        mesh.start_node("d", Vec::new()),
    ];
    mesh.admit_all(&ctl, &daemons);

    let start = now_ms();
    let window = timing.epoch_len() * 3 + Duration::from_secs(2);
    let reports: Vec<_> = mesh
        .ping_pairs(&["a", "b", "c"], window)
        .into_iter()
        .map(PingRun::finish)
        .collect();
    let rotations = ctl
        .rotations()
        .into_iter()
        .filter(|r| r.activation_ms > start && r.activation_ms <= now_ms())
        .count();
    assert!(
        rotations >= 3,
        "only {rotations} epochs activated while pinging"
    );
    for report in &reports {
        eprintln!(
            "{}: {} sent, {} received",
            report.label, report.transmitted, report.received
        );
        report.assert_no_loss();
    }
    for (node, daemon) in [("b", &daemons[1]), ("c", &daemons[2])] {
        assert!(
            daemon.log().contains("clock is 20."),
            "{node} did not report its clock offset:\n{}",
            daemon.log()
        );
    }

    let failed_at = now_ms();
    mesh.set_score("d", FAILING);
    let d = mesh.node("d");
    let removed: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|id| (*id, wait_removed(mesh.node(id), d)))
        .collect();
    let denial = ctl
        .denial("d", failed_at)
        .unwrap_or_else(|| panic!("no epoch denying d in the audit log: {:?}", ctl.rotations()));
    for (id, at) in removed {
        let after = at as i64 - denial.created_ms as i64;
        eprintln!("{id} removed d {after} ms after the decision");
        assert!(
            after <= CUTOFF_LIMIT_MS as i64,
            "{id} still listed d {after} ms after the controller denied it"
        );
    }
}

/// A node's benchmark sequence numbers are its clock in milliseconds. One whose clock ran
/// 25 s ahead (inside the controller's 30 s skew window), then was stepped back and the
/// daemon restarted, had every benchmark refused as a replay for those 25 s (up to 300 s
/// with `clock_skew = 300`, long enough to be denied for a stale benchmark). The
/// controller's 409 names the sequence number it holds, and the node continues above it.
#[test]
fn a_node_whose_clock_was_stepped_back_keeps_its_benchmarks_accepted() {
    if !require_root("a_node_whose_clock_was_stepped_back_keeps_its_benchmarks_accepted") {
        return;
    }
    let mesh = Mesh::new("gating_seq", Timing::default(), &["a"]);
    let _ctl = mesh.start_controller();
    let ahead = mesh.start_node_with_env("a", Vec::new(), &[("MESHTUN_CLOCK_OFFSET_MS", "25000")]);
    let newest = || {
        let stored = mesh.home().open_db().benchmarks();
        stored.keys().map(|(_, seq)| *seq).max().unwrap_or(0)
    };
    assert!(
        meshtun_e2e::wait_until(Duration::from_secs(20), || newest() > now_ms() + 20_000),
        "no benchmark from the node 25 s ahead:\n{}",
        ahead.log()
    );
    drop(ahead);
    let held = newest();
    let corrected = mesh.start_node("a", Vec::new());
    let accepted = meshtun_e2e::wait_until(Duration::from_secs(8), || newest() > held);
    assert!(
        accepted,
        "no benchmark accepted after the clock went back (controller holds seq {held}):\n{}",
        corrected.log()
    );
    assert!(
        corrected.log().contains("continuing from"),
        "{}",
        corrected.log()
    );
}
