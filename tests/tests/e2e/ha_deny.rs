//! Controller high availability: the leader (ctl-0, which the nodes use) is killed; ctl-1
//! takes over and the nodes move to it. Then node d's score fails: with T the new leader's
//! decision (the denying epoch's `created_ms` in the audit log), a and b have removed d from
//! their peers by T + 1 s; the denying epoch was written by ctl-1; a <-> b lose no ping
//! through the failover and the denial.

use std::time::Duration;

use meshtun_e2e::gating::ha::{takeover_bound, HA_TIMING, LEASE, TWO_INSTANCES};
use meshtun_e2e::gating::observe::wait_removed;
use meshtun_e2e::gating::{now_ms, Mesh, FAILING};
use meshtun_e2e::{require_root, wait_until};

/// How long after the decision the denied node must be cut off everywhere.
const CUTOFF_LIMIT_MS: u64 = 1000;

#[test]
fn a_node_denied_by_the_new_leader_is_cut_off_within_a_second() {
    if !require_root("a_node_denied_by_the_new_leader_is_cut_off_within_a_second") {
        return;
    }
    let mesh = Mesh::with_backend("ha_deny", HA_TIMING, &["a", "b", "d"], TWO_INSTANCES);
    let (a, b, d) = (mesh.node("a"), mesh.node("b"), mesh.node("d"));
    let mut ctls = mesh.start_cluster();
    let daemons = mesh.start_nodes();
    mesh.admit_all(&ctls[0], &daemons);
    let pings = mesh.ping_pairs(&["a", "b"], HA_TIMING.epoch_len() * 3);
    ctls[0].kill();
    let took_over = mesh.wait_lease_holder("ctl-1", takeover_bound(LEASE) * 2);
    assert!(
        took_over.is_some(),
        "ctl-1 did not take over: {:?}",
        mesh.database().lease()
    );
    let failed_at = now_ms();
    mesh.set_score("d", FAILING);
    let removed = [("a", wait_removed(a, d)), ("b", wait_removed(b, d))];
    let mut denial = None;
    wait_until(Duration::from_secs(5), || {
        denial = ctls[1].denial("d", failed_at);
        denial.is_some()
    });
    let denial = denial.unwrap_or_else(|| panic!("no epoch denies d after its score failed"));
    let t = denial.created_ms;
    let writer = mesh
        .database()
        .publications()
        .into_iter()
        .find(|p| p.epoch == denial.epoch);
    assert!(
        writer.as_ref().is_some_and(|p| p.instance == "ctl-1"),
        "the denying epoch {} was not written by the new leader ctl-1: {writer:?}",
        denial.epoch
    );
    for (id, at) in removed {
        eprintln!(
            "{id} removed d {} ms after ctl-1's decision (epoch {}, cause {:?})",
            at as i64 - t as i64,
            denial.epoch,
            denial.cause
        );
        assert!(
            at <= t + CUTOFF_LIMIT_MS,
            "{id} removed d {} ms after the new leader's decision, more than \
             {CUTOFF_LIMIT_MS} ms",
            at - t
        );
    }
    for run in pings {
        run.finish().assert_no_loss();
    }
}
