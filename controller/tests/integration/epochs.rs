//! Epoch rollover with tokio's paused time: the next epoch is published `lead` before it
//! activates, activates exactly when the previous one ends, and a restart resumes the same
//! epoch and secret.

use std::sync::Arc;
use std::time::Duration;

use meshtun_controller::clock::Clock;
use meshtun_controller::engine::{Engine, EngineSettings};
use meshtun_controller::model::Policy;
use meshtun_controller::schedule::Schedule;
use meshtun_controller::store::Store;
use meshtun_controller::testing;
use meshtun_proto::IdentityKey;

const START_MS: u64 = 1_800_000_000_000;
const LENGTH_MS: u64 = 10_000;
const LEAD_MS: u64 = 3_000;

fn engine(store: Arc<Store>, key: &IdentityKey, clock: Clock) -> Arc<Engine> {
    let settings = EngineSettings {
        policy: Policy::default(),
        schedule: Schedule::new(LENGTH_MS, LEAD_MS).unwrap(),
        rotate_on_deny: true,
        relay: None,
    };
    Arc::new(Engine::open(store, key.clone(), settings, clock).unwrap())
}

fn store_with_a_node() -> Arc<Store> {
    let store = Arc::new(Store::open_in_memory().unwrap());
    testing::enroll(&store, &["node-a"]);
    store
}

/// Moves time forward in steps of at most 500 ms, letting the engine task run at each
/// (its rounds run on a blocking thread: waited for in real time), as it would while running
/// continuously.
async fn advance_to(engine: &Engine, clock: &Clock, ms: u64) {
    loop {
        for _ in 0..10 {
            tokio::task::yield_now().await;
            while engine.round_in_progress() {
                std::thread::sleep(Duration::from_millis(1));
                tokio::task::yield_now().await;
            }
        }
        if clock.now_ms() >= ms {
            return;
        }
        let step = (ms - clock.now_ms()).min(500);
        tokio::time::advance(Duration::from_millis(step)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn epochs_roll_over_on_schedule_and_survive_a_restart() {
    let store = store_with_a_node();
    let key = IdentityKey::generate();
    let clock = Clock::starting_at(START_MS);
    let e = engine(store.clone(), &key, clock.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(e.clone().run(async {
        let _ = stopped.await;
    }));
    advance_to(&e, &clock, START_MS).await;

    let first = e.epoch_info().expect("an epoch at start");
    assert_eq!(first.current.epoch, START_MS, "ids follow the clock");
    assert_eq!(first.current.activation_ms, START_MS);
    assert_eq!(first.current.not_after_ms, START_MS + LENGTH_MS);
    assert_eq!(first.next, None);

    // Just before the publish time nothing new; at it, the second epoch is published ahead.
    advance_to(&e, &clock, START_MS + LENGTH_MS - LEAD_MS - 1).await;
    assert_eq!(e.epoch_info().unwrap().next, None);
    advance_to(&e, &clock, START_MS + LENGTH_MS - LEAD_MS + 10).await;
    let info = e.epoch_info().unwrap();
    let next = info
        .next
        .expect("next epoch published lead before activation");
    assert!(next.epoch > first.current.epoch, "{next:?}");
    assert_eq!(next.activation_ms, START_MS + LENGTH_MS);
    assert_eq!(info.current.epoch, first.current.epoch);

    // At the end of the first epoch, the second is in force.
    advance_to(&e, &clock, START_MS + LENGTH_MS).await;
    assert_eq!(e.epoch_info().unwrap().current.epoch, next.epoch);

    // Several more rollovers: the fifth epoch is in force, and the newest stored.
    advance_to(&e, &clock, START_MS + 4 * LENGTH_MS + 1).await;
    let now = e.epoch_info().unwrap().current;
    let stored = store.epoch_ids().unwrap();
    assert_eq!(stored.len(), 5);
    assert_eq!(now.epoch, stored[0]);
    assert_eq!(now.activation_ms, START_MS + 4 * LENGTH_MS);

    // Stop and restart on the same store: same epoch, same secret, no new epoch.
    let _ = stop.send(());
    task.await.unwrap();
    let secret_before = store.epoch(now.epoch).unwrap().unwrap().secret;
    drop(e);
    let restarted = engine(store.clone(), &key, clock.clone());
    restarted.step().unwrap();
    let info = restarted.epoch_info().unwrap();
    assert_eq!(
        info.current.epoch, now.epoch,
        "restart resumes the epoch in force"
    );
    assert_eq!(
        store.epoch(now.epoch).unwrap().unwrap().secret,
        secret_before
    );
    assert_eq!(
        store.latest_epochs(1).unwrap()[0].id,
        now.epoch,
        "no extra epoch after a restart"
    );
    // Decisions of every epoch are on record, and the chain verifies.
    assert!(!store.decisions(now.epoch).unwrap().is_empty());
    store
        .verify_audit(&meshtun_proto::KeySet::one(key.public()))
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_long_outage_starts_a_fresh_epoch_now_never_in_the_past() {
    let store = store_with_a_node();
    let key = IdentityKey::generate();
    let clock = Clock::starting_at(START_MS);
    let e = engine(store.clone(), &key, clock.clone());
    e.step().unwrap();
    let before = e.epoch_info().unwrap().current.epoch;
    drop(e);
    // Down for three epochs.
    tokio::time::advance(Duration::from_millis(3 * LENGTH_MS + 500)).await;
    let e = engine(store.clone(), &key, clock.clone());
    e.step().unwrap();
    let info = e.epoch_info().unwrap();
    assert!(info.current.epoch > before, "{info:?}");
    assert_eq!(store.latest_epochs(10).unwrap().len(), 2, "one new epoch");
    assert_eq!(info.current.activation_ms, clock.now_ms());
}

/// #8: the running engine follows a step of the wall clock (NTP correcting it after boot, a
/// VM resumed): within a second it has an epoch in force at the new time, without a restart.
#[tokio::test(start_paused = true)]
async fn the_running_engine_follows_a_wall_clock_step_8() {
    let store = store_with_a_node();
    let key = IdentityKey::generate();
    let clock = Clock::starting_at(START_MS);
    let e = engine(store.clone(), &key, clock.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(e.clone().run(async {
        let _ = stopped.await;
    }));
    advance_to(&e, &clock, START_MS + 1).await;
    assert!(e.epoch_info().is_some());
    for step_ms in [2 * 3_600_000, -3_600_000] {
        clock.step(step_ms);
        let stepped = clock.now_ms();
        // At most a second of monotonic time passes.
        advance_to(&e, &clock, stepped + 1_000).await;
        let current = e
            .epoch_info()
            .expect("an epoch in force after the step")
            .current;
        let now = clock.now_ms();
        assert!(
            current.activation_ms <= now && now < current.not_after_ms,
            "after a step of {step_ms} ms the epoch in force is {current:?} at {now}"
        );
    }
    let _ = stop.send(());
    task.await.unwrap();
}

/// A store in `dir/controller.db` holding one enrolled node.
fn file_store_with_a_node(dir: &std::path::Path) -> Arc<Store> {
    let store = Arc::new(Store::open(dir.join("controller.db")).unwrap());
    testing::enroll(&store, &["node-a"]);
    store
}

/// An online backup of the database of `store` (SQLite's `VACUUM INTO`, as an operator takes
/// one), written to `dir/NAME`.
fn backup(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let copy = dir.join(name);
    let conn = rusqlite::Connection::open(dir.join("controller.db")).unwrap();
    conn.execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
        .unwrap();
    copy
}

fn stored_ids(store: &Store) -> Vec<u64> {
    store.epoch_ids().unwrap()
}

/// #9: the database is restored from a backup a day old. Nodes hold the original's newest id
/// and accept only higher ones; the restored controller's first epoch is above every id the
/// original ever published (with sequential ids it would be one above the backup's, which
/// the nodes passed long ago). Until it publishes, a node's `after=` above its newest epoch
/// is counted and reported.
#[tokio::test(start_paused = true)]
async fn a_store_restored_from_a_day_old_backup_publishes_above_every_id_9() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store_with_a_node(dir.path());
    let key = IdentityKey::generate();
    let clock = Clock::starting_at(START_MS);
    let e = engine(store.clone(), &key, clock.clone());
    e.step().unwrap();
    let copy = backup(dir.path(), "backup.db");
    // The original goes on: scheduled epochs, and immediate rotations that push ids ahead.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(e.clone().run(async {
        let _ = stopped.await;
    }));
    advance_to(&e, &clock, START_MS + 6 * LENGTH_MS).await;
    for _ in 0..5 {
        e.rotate_now("admin").unwrap();
    }
    let _ = stop.send(());
    task.await.unwrap();
    let original = stored_ids(&store);
    assert!(original.len() >= 11, "{original:?}");
    let highest = original[0];
    drop((e, store));

    let restored = Arc::new(Store::open(&copy).unwrap());
    assert_eq!(stored_ids(&restored).len(), 1, "the backup holds one epoch");
    let day_later = Clock::starting_at(START_MS + 86_400_000);
    let r = engine(restored.clone(), &key, day_later.clone());
    assert!(r.check_after("node-a", Some(highest)), "ahead of the copy");
    assert!(r
        .metrics
        .render()
        .contains("meshtun_controller_epoch_ahead_of_database_total 1"));
    r.step().unwrap();
    let info = r.epoch_info().unwrap();
    assert!(
        info.current.epoch > highest,
        "the restored controller published epoch {} after the original published {highest}",
        info.current.epoch
    );
    assert_eq!(info.current.activation_ms, day_later.now_ms());
    assert!(!r.check_after("node-a", Some(highest)));
    restored
        .verify_audit(&meshtun_proto::KeySet::one(key.public()))
        .unwrap();
}

/// #9: a copy restored while its newest epoch is still in force schedules the successor the
/// original already published (same activation time), and the original rotated at once a
/// few times since: the restored successor's id is still above all of them, so nodes
/// take it and no id is ever given two secrets.
#[tokio::test(start_paused = true)]
async fn a_copy_restored_within_its_epoch_never_repeats_an_id_9() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store_with_a_node(dir.path());
    let key = IdentityKey::generate();
    let clock = Clock::starting_at(START_MS);
    let e = engine(store.clone(), &key, clock.clone());
    e.step().unwrap();
    let copy = backup(dir.path(), "backup.db");
    let first = e.epoch_info().unwrap().current;
    // The successor is published lead before the first epoch ends; then three immediate
    // rotations in the same millisecond.
    advance_to(&e, &clock, START_MS + LENGTH_MS - LEAD_MS).await;
    e.step().unwrap();
    for _ in 0..3 {
        e.rotate_now("admin").unwrap();
    }
    let original = stored_ids(&store);
    assert_eq!(original.len(), 5, "{original:?}");
    drop((e, store));

    // Restored a second later: the copy's first epoch is still in force.
    tokio::time::advance(Duration::from_millis(1_000)).await;
    let restored = Arc::new(Store::open(&copy).unwrap());
    let r = engine(restored.clone(), &key, clock.clone());
    assert_eq!(r.epoch_info().unwrap().current.epoch, first.epoch);
    r.step().unwrap();
    let next = r
        .epoch_info()
        .unwrap()
        .next
        .expect("the successor, published at once");
    assert_eq!(next.activation_ms, first.not_after_ms);
    assert!(
        next.epoch > original[0],
        "the restored successor is epoch {}, the original published {original:?}",
        next.epoch
    );
}

/// Publications race from three places (the schedule, `POST /v1/rotate`, the deny check):
/// eight threads rotating at once must each get a new epoch, the ids strictly ascending in
/// the store and in memory, and none refused with "not newer" (a 500 to an admin, a lost
/// deny rotation).
#[test]
fn concurrent_publications_are_serialised() {
    const THREADS: usize = 8;
    const EACH: usize = 25;
    let store = store_with_a_node();
    let engine = engine(store.clone(), &IdentityKey::generate(), Clock::system());
    let barrier = std::sync::Barrier::new(THREADS);
    let results: Vec<Result<u64, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let (engine, barrier) = (&engine, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    (0..EACH)
                        .map(|_| engine.rotate_now("race").map_err(|e| e.to_string()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let refused: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(refused.is_empty(), "publications refused: {refused:?}");
    let mut ids = stored_ids(&store);
    ids.reverse();
    assert_eq!(
        ids.len(),
        THREADS * EACH,
        "one stored epoch per publication"
    );
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids not ascending");
    // The newest epoch in memory is the newest stored one (pushed in order).
    let current = engine.current().unwrap().record.id;
    assert_eq!(Some(&current), ids.last(), "memory and store disagree");
}
