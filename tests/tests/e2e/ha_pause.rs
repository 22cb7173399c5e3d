//! Controller high availability: the leader of two instances on one PostgreSQL is frozen
//! with SIGSTOP just as it is due to publish the next epoch, for a whole epoch (longer than
//! its lease). The other instance takes over within the lease (plus its poll and slack) and
//! publishes; on SIGCONT the stopped one publishes nothing: no epoch is written by it after
//! it was stopped (the harness's trigger records each epoch's writer), and it does not
//! take the lease back. Three nodes with both URLs lose no ping throughout.

use std::time::Duration;

use meshtun_e2e::gating::ha::{takeover_bound, HA_TIMING, LEASE, TWO_INSTANCES};
use meshtun_e2e::gating::observe::first_time;
use meshtun_e2e::gating::{now_ms, Mesh};
use meshtun_e2e::require_root;

const NODES: [&str; 3] = ["a", "b", "c"];

#[test]
fn a_leader_paused_past_its_lease_is_replaced_and_publishes_nothing_stale() {
    if !require_root("a_leader_paused_past_its_lease_is_replaced_and_publishes_nothing_stale") {
        return;
    }
    let mesh = Mesh::with_backend("ha_pause", HA_TIMING, &NODES, TWO_INSTANCES);
    let db = mesh.database();
    let mut ctls = mesh.start_cluster();
    let daemons = mesh.start_nodes();
    mesh.admit_all(&ctls[0], &daemons);
    let pings = mesh.ping_pairs(&NODES, HA_TIMING.epoch_len() * 4);
    let mut due = mesh.next_publication_due();
    if due < now_ms() + 500 {
        due += HA_TIMING.epoch * 1000;
    }
    // Just after the due time: the leader has decided, or is publishing, or just has.
    let offset = fastrand::u64(0..=40);
    std::thread::sleep(Duration::from_millis(
        (due + offset).saturating_sub(now_ms()),
    ));
    let stopped_ms = now_ms();
    ctls[0].stop();
    let took_over = mesh
        .wait_lease_holder("ctl-1", takeover_bound(LEASE) * 3)
        .unwrap_or_else(|| panic!("ctl-1 never took over; lease: {:?}", db.lease()));
    let takeover_ms = took_over - stopped_ms;
    let by_other = first_time(HA_TIMING.epoch_len() * 2, Duration::from_millis(50), || {
        db.publications()
            .iter()
            .any(|p| p.instance == "ctl-1" && p.at_ms > stopped_ms)
    });
    assert!(
        by_other.is_some(),
        "ctl-1 published no epoch within two epochs of the stop: {:?}",
        db.publications()
    );
    // The sleep is the test: stopped for a whole epoch from the stop.
    std::thread::sleep(Duration::from_millis(
        (stopped_ms + HA_TIMING.epoch * 1000).saturating_sub(now_ms()),
    ));
    ctls[0].cont();
    // Long enough for a stale publication to land and for the next epoch to pass.
    std::thread::sleep(HA_TIMING.epoch_len() + Duration::from_secs(LEASE));
    let stale: Vec<_> = db
        .publications()
        .into_iter()
        .filter(|p| p.instance == "ctl-0" && p.at_ms > stopped_ms)
        .collect();
    assert!(
        stale.is_empty(),
        "ctl-0, stopped at {stopped_ms} and replaced at {took_over}, wrote epochs after \
         its SIGCONT: {stale:?}"
    );
    let lease = db.lease();
    assert_eq!(
        lease.holder, "ctl-1",
        "ctl-0 took the lease back: {lease:?}"
    );
    for run in pings {
        run.finish().assert_no_loss();
    }
    eprintln!(
        "ha pause: leader stopped {offset} ms after its publication was due; ctl-1 took over \
         {takeover_ms} ms later (lease {LEASE} s, bound {:?}); nothing published by the \
         stopped leader after SIGCONT; 0 pings lost",
        takeover_bound(LEASE)
    );
    assert!(
        Duration::from_millis(takeover_ms) <= takeover_bound(LEASE),
        "ctl-1 took over {takeover_ms} ms after the leader was stopped, more than the lease \
         ({LEASE} s) and its poll allow ({:?})",
        takeover_bound(LEASE)
    );
}
