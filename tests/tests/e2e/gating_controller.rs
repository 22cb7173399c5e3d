//! A gated mesh of two (see `meshtun_e2e::gating`) whose controller goes away.
//!
//! - `a_stopped_controller_is_survived_for_the_grace_then_fails_closed`: the controller is
//!   frozen with SIGSTOP, first for less than the nodes' grace, across the end of their
//!   bundle's epoch: no ping is lost and no node reports the controller lost. Then for longer:
//!   each node removes its gated peer by `not_after + grace + 1 s` (and not before
//!   `not_after + grace`), logs `MEMBERSHIP=LOST`, and the tunnel stops. After SIGCONT the
//!   nodes are back in the mesh within a few seconds and lose nothing over the next epoch.
//! - `a_controller_killed_and_restarted_mid_epoch_changes_nothing`: the controller is killed
//!   with SIGKILL just before it publishes the next epoch and restarted a second later: no
//!   ping is lost, the epochs follow each other without a gap or an extra rotation, the
//!   nodes apply the epochs published after the restart and complete their handshakes.

use std::time::Duration;

use meshtun_e2e::gating::observe::{self, first_time};
use meshtun_e2e::gating::{now_ms, Mesh, Timing};
use meshtun_e2e::traffic::assert_no_ping;
use meshtun_e2e::{require_root, wait_until, wg};

const POLL: Duration = Duration::from_millis(20);

/// How long a daemon may take to write a log line about what it has just done.
const LOG_WAIT: Duration = Duration::from_secs(2);

#[test]
fn a_stopped_controller_is_survived_for_the_grace_then_fails_closed() {
    if !require_root("a_stopped_controller_is_survived_for_the_grace_then_fails_closed") {
        return;
    }
    let timing = Timing::default();
    let grace = Duration::from_secs(timing.grace);
    let grace_ms = timing.grace * 1000;
    let mesh = Mesh::new("gating_sigstop", timing, &["a", "b"]);
    let (a, b) = (mesh.node("a"), mesh.node("b"));
    let mut ctl = mesh.start_controller();
    let daemons = mesh.start_nodes();
    mesh.admit_all(&ctl, &daemons);

    // --- Shorter than the grace, from before the next epoch's publication to after the
    // end of the nodes' epoch: they run on their last bundle, in its grace, until the
    // controller is back ---
    let short = grace - Duration::from_millis(200);
    let current =
        ctl.wait_before_publish(Duration::from_secs(timing.lead), Duration::from_millis(600));
    let pings = mesh.ping_pairs(&["a", "b"], short + Duration::from_secs(5));
    // Not a wait for a condition: the pings start just before the stop, which must come
    // within the margin before the next publication, so it cannot wait long.
    std::thread::sleep(Duration::from_millis(100));
    let stopped_at = now_ms();
    ctl.stop();
    let published: Vec<u64> = mesh
        .home()
        .open_db()
        .epochs()
        .iter()
        .map(|e| e.id)
        .filter(|&id| id > current.epoch)
        .collect();
    assert!(
        published.is_empty(),
        "epoch {published:?} was published before the controller was stopped, {} ms before \
         epoch {} ends: the nodes would not need their grace",
        current.not_after_ms - stopped_at,
        current.epoch
    );
    // The sleep is the test: the controller stays stopped for `short`.
    std::thread::sleep(
        short.saturating_sub(Duration::from_millis(now_ms().saturating_sub(stopped_at))),
    );
    ctl.cont();
    eprintln!(
        "short stop: {} ms, from {} ms before to {} ms after epoch {} ended",
        now_ms() - stopped_at,
        current.not_after_ms as i64 - stopped_at as i64,
        now_ms() as i64 - current.not_after_ms as i64,
        current.epoch
    );
    for run in pings {
        run.finish().assert_no_loss();
    }
    for daemon in &daemons {
        assert!(
            !observe::has_membership(&daemon.log(), "LOST"),
            "a node reported the controller lost after a stop shorter than the grace"
        );
    }

    // --- Longer than the grace ---
    // Not a wait for a condition: a one-second gap between the two stops.
    std::thread::sleep(Duration::from_secs(1));
    let stopped_at = now_ms();
    ctl.stop();
    let epochs = mesh.home().open_db().epochs();
    let newest = epochs.iter().max_by_key(|e| e.id).expect("an epoch");
    let in_force = epochs
        .iter()
        .filter(|e| e.activation_ms <= stopped_at && stopped_at < e.not_after_ms)
        .max_by_key(|e| e.id)
        .expect("an epoch in force");
    let deadline = newest.not_after_ms + grace_ms + 1000;
    let earliest = in_force.not_after_ms + grace_ms;
    let wait = Duration::from_millis(deadline.saturating_sub(now_ms()) + 3000);
    let torn_down = [(a, b), (b, a)].map(|(node, other)| {
        let at = first_time(wait, POLL, || {
            observe::peers_absent(&node.iface, &[other.public_key()])
        })
        .unwrap_or_else(|| {
            panic!(
                "{} still had its gated peer {} {} ms after the last epoch ({}) ended",
                node.id,
                other.id,
                now_ms() - newest.not_after_ms,
                newest.id
            )
        });
        (node, at)
    });
    for (node, at) in torn_down {
        eprintln!(
            "{} removed its gated peer {} ms after not_after + grace of epoch {} (in force at \
             the stop: epoch {}, ended {} ms before the removal)",
            node.id,
            at as i64 - (newest.not_after_ms + grace_ms) as i64,
            newest.id,
            in_force.id,
            at as i64 - in_force.not_after_ms as i64
        );
        assert!(
            at <= deadline,
            "{} kept its gated peer until {} ms after not_after + grace (limit 1000 ms)",
            node.id,
            at - (newest.not_after_ms + grace_ms)
        );
        assert!(
            at + 100 >= earliest,
            "{} removed its gated peer {} ms before not_after + grace of the epoch in force",
            node.id,
            earliest - at
        );
    }
    for daemon in &daemons {
        assert!(
            wait_until(LOG_WAIT, || observe::has_membership(&daemon.log(), "LOST")),
            "{} did not log MEMBERSHIP=LOST",
            daemon.name()
        );
    }
    for node in [a, b] {
        assert_eq!(observe::shown_membership(&node.ns, &node.iface), "LOST");
    }
    assert_no_ping(&a.ns, b.tunnel().into());

    // --- SIGCONT: recovery ---
    let resumed_at = now_ms();
    ctl.cont();
    let limit = Duration::from_secs(10);
    let back = mesh.ping("a", "b", limit + Duration::from_secs(2));
    let first = first_time(limit, POLL, || !back.replies_so_far().is_empty());
    let report = back.stop();
    let first = first
        .and(report.first_reply_ms())
        .unwrap_or_else(|| panic!("the mesh did not recover within {limit:?} of SIGCONT"));
    eprintln!(
        "recovered: first ping reply {} ms after SIGCONT (stopped for {} ms)",
        first - resumed_at,
        resumed_at - stopped_at
    );
    for node in [a, b] {
        assert_eq!(observe::shown_membership(&node.ns, &node.iface), "ALLOWED");
    }
    let after = mesh.ping_pairs(&["a", "b"], timing.epoch_len() + Duration::from_secs(1));
    for run in after {
        run.finish().assert_no_loss();
    }
    for mut daemon in daemons {
        daemon.assert_running();
    }
}

#[test]
fn a_controller_killed_and_restarted_mid_epoch_changes_nothing() {
    if !require_root("a_controller_killed_and_restarted_mid_epoch_changes_nothing") {
        return;
    }
    let timing = Timing::default();
    let mesh = Mesh::new("gating_sigkill", timing, &["a", "b"]);
    let mut ctl = mesh.start_controller();
    let daemons = mesh.start_nodes();
    let admitted = mesh.admit_all(&ctl, &daemons);

    let start = now_ms();
    let pings = mesh.ping_pairs(&["a", "b"], timing.epoch_len() * 4);
    let current =
        ctl.wait_before_publish(Duration::from_secs(timing.lead), Duration::from_millis(500));
    let killed_at = now_ms();
    ctl.kill();
    // The sleep is the test: the controller stays dead for a second.
    std::thread::sleep(Duration::from_secs(1));
    ctl.restart();
    let restarted_at = now_ms();
    eprintln!(
        "killed {} ms before epoch {} was due to publish its successor; serving again {} ms \
         later",
        (current.not_after_ms - timing.lead * 1000) as i64 - killed_at as i64,
        current.epoch,
        restarted_at - killed_at
    );
    let reports: Vec<_> = pings.into_iter().map(|p| p.finish()).collect();
    let end = now_ms();

    // The epochs go on: from the one that admitted the nodes, each starts where the previous
    // ended; none was made by the restart.
    let rotations: Vec<_> = ctl
        .rotations()
        .into_iter()
        .filter(|r| r.epoch >= admitted && r.activation_ms <= end)
        .collect();
    eprintln!(
        "epochs since the admission: {:?}",
        rotations
            .iter()
            .map(|r| (
                r.epoch,
                r.activation_ms as i64 - start as i64,
                r.cause.as_str()
            ))
            .collect::<Vec<_>>()
    );
    for pair in rotations.windows(2) {
        assert_eq!(
            pair[1].activation_ms, pair[0].not_after_ms,
            "epoch {} does not start where epoch {} ended: {pair:?}",
            pair[1].epoch, pair[0].epoch
        );
    }
    let after_restart: Vec<u64> = rotations
        .iter()
        .filter(|r| r.activation_ms > restarted_at)
        .map(|r| r.epoch)
        .collect();
    assert!(
        after_restart.len() >= 2,
        "fewer than two epochs activated after the restart: {rotations:?}"
    );
    for report in &reports {
        eprintln!(
            "{}: {} sent, {} received",
            report.label, report.transmitted, report.received
        );
        report.assert_no_loss();
    }

    // Every node applied the epochs after the restart and handshook with their keys.
    let settled = now_ms().saturating_sub(1500);
    let last = rotations
        .iter()
        .rev()
        .find(|r| r.activation_ms <= settled)
        .expect("an epoch activated more than 1.5 s ago");
    for (node, daemon) in mesh.nodes().iter().zip(&daemons) {
        wait_until(LOG_WAIT, || {
            let applied = observe::membership_epochs(&daemon.log(), "ALLOWED");
            after_restart.iter().all(|e| applied.contains(e))
        });
        let log = daemon.log();
        let applied = observe::membership_epochs(&log, "ALLOWED");
        for epoch in &after_restart {
            assert!(
                applied.contains(epoch),
                "{} did not log MEMBERSHIP=ALLOWED for epoch {epoch} (it did for {applied:?})",
                node.id
            );
        }
        assert!(
            !observe::has_membership(&log, "LOST"),
            "{} reported the controller lost",
            node.id
        );
        let shown = observe::show_gate(&node.ns, &node.iface);
        assert_eq!(shown["membership"], "ALLOWED", "{}: {shown}", node.id);
        assert!(
            shown["epoch"].as_u64() >= after_restart.last().copied(),
            "{} shows an epoch older than {after_restart:?}: {shown}",
            node.id
        );
        let dump = wg::dump(&node.ns, &node.iface);
        assert_eq!(dump.peers.len(), 1, "{}: {dump:?}", node.id);
        assert!(
            dump.peers[0]
                .latest_handshake
                .is_some_and(|t| t * 1000 + 1000 >= last.activation_ms),
            "{}: no handshake since epoch {} activated: {:?}",
            node.id,
            last.epoch,
            dump.peers[0]
        );
    }
    for mut daemon in daemons {
        daemon.assert_running();
    }
}
