//! Controller high availability: the leader of two instances on one PostgreSQL is killed with
//! SIGKILL 20 times, each time at a random point around the moment it is due to publish the
//! next epoch (from 1.5 s before to 0.3 s after, so also in the middle of a publication),
//! and restarted. Three nodes with both URLs ping each other at 50/s throughout:
//!
//! - no ping is lost;
//! - the epochs published, in the order they were written, have strictly increasing ids;
//! - every epoch id was inserted once (the harness's trigger on `epochs`), by an instance
//!   that led, and has one rotation in the audit log;
//! - the failover time (leader killed → the next epoch published by the other instance),
//!   median and worst over the kills that came before the leader's publication, is printed,
//!   with how late those publications were on their schedule.
//!
//! The kill offsets come from a seeded generator: `MESHTUN_HA_SEED=N` repeats a run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use meshtun_e2e::gating::ha::{takeover_bound, HA_TIMING, LEASE, TWO_INSTANCES};
use meshtun_e2e::gating::{now_ms, ControllerProc, Mesh};
use meshtun_e2e::require_root;

const KILLS: u32 = 20;
/// The whole kill loop must end within this.
const TIME_LIMIT: Duration = Duration::from_secs(240);
const NODES: [&str; 3] = ["a", "b", "c"];

/// One kill and what followed it.
struct Failover {
    killed: String,
    /// Kill offset from the publication's due time, ms (negative: before).
    offset_ms: i64,
    /// Leader killed → next epoch published by the other instance, ms.
    failover_ms: u64,
    /// That publication's lateness on its schedule (due time), ms (negative: early).
    late_ms: i64,
    /// The killed leader had committed the due epoch before the kill: the next one is an
    /// epoch later on schedule, so this kill measures no failover.
    published_first: bool,
}

fn seed() -> u64 {
    match std::env::var("MESHTUN_HA_SEED") {
        Ok(s) => s.parse().expect("MESHTUN_HA_SEED must be a number"),
        Err(_) => now_ms(),
    }
}

/// Sleeps until Unix time `at_ms` (no-op if it has passed).
fn sleep_until(at_ms: u64) {
    std::thread::sleep(Duration::from_millis(at_ms.saturating_sub(now_ms())));
}

/// Kills the leader at `offset_ms` from the next publication's due time, waits for the
/// other instance's next publication, restarts the killed one.
fn kill_once(mesh: &Mesh, ctls: &mut [ControllerProc<'_>], offset_ms: i64) -> Failover {
    let leader = mesh.wait_leader(takeover_bound(LEASE) * 2);
    let mut due = mesh.next_publication_due();
    while (due as i64 + offset_ms) < now_ms() as i64 + 50 {
        due += HA_TIMING.epoch * 1000;
    }
    sleep_until((due as i64 + offset_ms) as u64);
    let killed_ms = now_ms();
    ctls[leader].kill();
    let killed = ctls[leader].name().to_owned();
    let db = mesh.database();
    let published_first = db
        .publications()
        .iter()
        .any(|p| p.instance == killed && p.at_ms + 1000 >= due && p.at_ms <= killed_ms);
    let mut next = None;
    // A kill after the leader's publication committed waits for the epoch after.
    let limit = takeover_bound(LEASE) + HA_TIMING.epoch_len() * 2;
    meshtun_e2e::wait_until(limit, || {
        next = db
            .publications()
            .into_iter()
            .find(|p| p.at_ms > killed_ms && p.instance != killed);
        next.is_some()
    });
    let next = next.unwrap_or_else(|| {
        panic!(
            "no epoch published by another instance within {limit:?} of killing {killed}; \
             lease: {:?}",
            db.lease()
        )
    });
    ctls[leader].restart();
    Failover {
        killed,
        offset_ms,
        failover_ms: next.at_ms - killed_ms,
        late_ms: next.at_ms as i64 - due as i64,
        published_first,
    }
}

/// Epoch ids strictly increasing in the order of writing, each inserted once, each with one
/// audit rotation.
fn check_epochs(mesh: &Mesh, ctl: &ControllerProc<'_>) -> usize {
    let publications = mesh.database().publications();
    let ids: Vec<u64> = publications.iter().map(|p| p.epoch).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "epoch ids, in the order they were written, are not strictly increasing: {publications:?}"
    );
    let stored: Vec<u64> = mesh.database().epochs().iter().map(|e| e.id).collect();
    assert_eq!(
        stored, ids,
        "the epochs table and the recorded inserts differ"
    );
    let mut rotations: BTreeMap<u64, u32> = BTreeMap::new();
    for r in ctl.rotations() {
        *rotations.entry(r.epoch).or_default() += 1;
    }
    let doubled: Vec<_> = rotations.iter().filter(|(_, &n)| n != 1).collect();
    assert!(
        doubled.is_empty(),
        "epochs with several audit rotations: {doubled:?}"
    );
    ids.len()
}

fn median_and_worst(mut values: Vec<u64>) -> (u64, u64) {
    values.sort_unstable();
    (values[values.len() / 2], *values.last().unwrap_or(&0))
}

#[test]
fn the_leader_killed_20_times_loses_no_ping_and_no_epoch() {
    if !require_root("the_leader_killed_20_times_loses_no_ping_and_no_epoch") {
        return;
    }
    let mesh = Mesh::with_backend("ha_kill", HA_TIMING, &NODES, TWO_INSTANCES);
    let mut ctls = mesh.start_cluster();
    let daemons = mesh.start_nodes();
    mesh.admit_all(&ctls[0], &daemons);
    let seed = seed();
    eprintln!("ha failover test: seed {seed} (MESHTUN_HA_SEED={seed} repeats it)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let pings = mesh.ping_pairs(&NODES, TIME_LIMIT);
    let started = Instant::now();
    let mut failovers = Vec::new();
    for k in 1..=KILLS {
        assert!(
            started.elapsed() < TIME_LIMIT - HA_TIMING.epoch_len() * 2,
            "kill {k} would start too late ({:?} in)",
            started.elapsed()
        );
        let f = kill_once(&mesh, &mut ctls, rng.i64(-1500..=300));
        eprintln!(
            "kill {k}: {} at {:+} ms from due{}; next epoch by the other instance {} ms later \
             ({:+} ms on schedule)",
            f.killed,
            f.offset_ms,
            if f.published_first {
                " (after its publication)"
            } else {
                ""
            },
            f.failover_ms,
            f.late_ms
        );
        failovers.push(f);
    }
    let elapsed = started.elapsed();
    for run in pings {
        let report = run.stop();
        report.assert_no_loss();
    }
    let leader = mesh.wait_leader(takeover_bound(LEASE) * 2);
    let epochs = check_epochs(&mesh, &ctls[leader]);
    let before: Vec<&Failover> = failovers.iter().filter(|f| !f.published_first).collect();
    assert!(
        !before.is_empty(),
        "every kill came after the leader's publication: no failover was measured"
    );
    let (median, worst) = median_and_worst(before.iter().map(|f| f.failover_ms).collect());
    let (late_median, late_worst) = median_and_worst(
        before
            .iter()
            .map(|f| f.late_ms.max(0).unsigned_abs())
            .collect(),
    );
    eprintln!(
        "ha failover: {KILLS} SIGKILLs of the leader in {:.1} s, {epochs} epochs, 0 pings lost; \
         over the {} kills before the leader's publication: failover (killed -> next epoch \
         by the other instance) median {median} ms, worst {worst} ms; publication late on \
         schedule: median {late_median} ms, worst {late_worst} ms (lease {LEASE} s, epoch {} \
         s, lead {} s)",
        elapsed.as_secs_f64(),
        before.len(),
        HA_TIMING.epoch,
        HA_TIMING.lead
    );
}
