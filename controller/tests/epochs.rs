//! Epoch rollover with tokio's paused time: the next epoch is published `lead` before it
//! activates, activates exactly when the previous one ends, and a restart resumes the same
//! epoch and secret.

use std::sync::Arc;
use std::time::Duration;

use meshtun_controller::clock::Clock;
use meshtun_controller::engine::{Engine, EngineSettings};
use meshtun_controller::model::{NodeRecord, Policy};
use meshtun_controller::schedule::Schedule;
use meshtun_controller::store::Store;
use meshtun_proto::{IdentityKey, PrivateKey};

const START_MS: u64 = 1_800_000_000_000;
const LENGTH_MS: u64 = 10_000;
const LEAD_MS: u64 = 3_000;

fn engine(store: Arc<Store>, key: &IdentityKey, clock: Clock) -> Arc<Engine> {
    let settings = EngineSettings {
        policy: Policy::default(),
        schedule: Schedule::new(LENGTH_MS, LEAD_MS).unwrap(),
        rotate_on_deny: true,
    };
    Arc::new(Engine::open(store, key.clone(), settings, clock).unwrap())
}

fn store_with_a_node() -> Arc<Store> {
    let store = Arc::new(Store::open_in_memory().unwrap());
    store
        .add_node(&NodeRecord {
            id: "node-a".into(),
            wg_public_key: PrivateKey::generate().public_key(),
            identity_key: IdentityKey::generate().public(),
            addresses: vec!["100.64.0.1/24".parse().unwrap()],
            endpoint: None,
            pin: None,
            enrolled_ms: 0,
        })
        .unwrap();
    store
}

/// Moves time forward in steps of at most 500 ms, letting the engine task run at each, as
/// it would while running continuously.
async fn advance_to(clock: &Clock, ms: u64) {
    loop {
        for _ in 0..10 {
            tokio::task::yield_now().await;
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
    advance_to(&clock, START_MS).await;

    let first = e.epoch_info().expect("an epoch at start");
    assert_eq!(first.current.epoch, 1);
    assert_eq!(first.current.activation_ms, START_MS);
    assert_eq!(first.current.not_after_ms, START_MS + LENGTH_MS);
    assert_eq!(first.next, None);

    // Just before the publish time nothing new; at it, epoch 2 is published ahead.
    advance_to(&clock, START_MS + LENGTH_MS - LEAD_MS - 1).await;
    assert_eq!(e.epoch_info().unwrap().next, None);
    advance_to(&clock, START_MS + LENGTH_MS - LEAD_MS + 10).await;
    let info = e.epoch_info().unwrap();
    let next = info
        .next
        .expect("next epoch published lead before activation");
    assert_eq!(next.epoch, 2);
    assert_eq!(next.activation_ms, START_MS + LENGTH_MS);
    assert_eq!(info.current.epoch, 1);

    // At the end of epoch 1, epoch 2 is in force.
    advance_to(&clock, START_MS + LENGTH_MS).await;
    assert_eq!(e.epoch_info().unwrap().current.epoch, 2);

    // Several more rollovers.
    advance_to(&clock, START_MS + 4 * LENGTH_MS + 1).await;
    let now = e.epoch_info().unwrap().current;
    assert_eq!(now.epoch, 5);
    assert_eq!(now.activation_ms, START_MS + 4 * LENGTH_MS);

    // Stop and restart on the same store: same epoch, same secret, no new epoch.
    let _ = stop.send(());
    task.await.unwrap();
    let secret_before = store.epoch(5).unwrap().unwrap().secret;
    drop(e);
    let restarted = engine(store.clone(), &key, clock.clone());
    restarted.step().unwrap();
    let info = restarted.epoch_info().unwrap();
    assert_eq!(info.current.epoch, 5, "restart resumes the epoch in force");
    assert_eq!(store.epoch(5).unwrap().unwrap().secret, secret_before);
    assert_eq!(
        store.latest_epochs(1).unwrap()[0].id,
        5,
        "no extra epoch after a restart"
    );
    // Decisions of every epoch are on record, and the chain verifies.
    assert!(!store.decisions(5).unwrap().is_empty());
    store.verify_audit(&key.public()).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_long_outage_starts_a_fresh_epoch_now_never_in_the_past() {
    let store = store_with_a_node();
    let key = IdentityKey::generate();
    let clock = Clock::starting_at(START_MS);
    let e = engine(store.clone(), &key, clock.clone());
    e.step().unwrap();
    drop(e);
    // Down for three epochs.
    tokio::time::advance(Duration::from_millis(3 * LENGTH_MS + 500)).await;
    let e = engine(store.clone(), &key, clock.clone());
    e.step().unwrap();
    let info = e.epoch_info().unwrap();
    assert_eq!(info.current.epoch, 2);
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
    advance_to(&clock, START_MS + 1).await;
    assert_eq!(e.epoch_info().unwrap().current.epoch, 1);
    for step_ms in [2 * 3_600_000, -3_600_000] {
        clock.step(step_ms);
        let stepped = clock.now_ms();
        // At most a second of monotonic time passes.
        advance_to(&clock, stepped + 1_000).await;
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
