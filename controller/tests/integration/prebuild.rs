//! Bundles are built ahead, on every core, once an epoch is published: nodes are then
//! served the prebuilt bundle, and bundles of epochs no node can be given are dropped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use meshtun_controller::clock::Clock;
use meshtun_controller::engine::{Engine, EngineSettings};
use meshtun_controller::model::Policy;
use meshtun_controller::schedule::Schedule;
use meshtun_controller::store::Store;
use meshtun_controller::testing;
use meshtun_proto::bundle::{Membership, SignedBundle};
use meshtun_proto::IdentityKey;

const START_MS: u64 = 1_800_000_000_000;
const NODES: usize = 5;

fn engine(clock: Clock) -> (Arc<Engine>, IdentityKey) {
    engine_with(clock, NODES)
}

fn engine_with(clock: Clock, nodes: usize) -> (Arc<Engine>, IdentityKey) {
    let store = Arc::new(Store::open_in_memory().unwrap());
    let ids: Vec<String> = (0..nodes).map(|i| format!("node-{i}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    testing::enroll(&store, &ids);
    let settings = EngineSettings {
        policy: Policy::default(),
        schedule: Schedule::new(60_000, 10_000).unwrap(),
        rotate_on_deny: false,
        relay: None,
    };
    let key = IdentityKey::generate();
    let engine = Engine::open(store, key.clone(), settings, clock).unwrap();
    (Arc::new(engine), key)
}

fn issued_ms(engine: &Engine, key: &IdentityKey, node: &str) -> (u64, u64) {
    let (epoch, json) = engine.bundle(node, None).unwrap();
    let signed: SignedBundle = serde_json::from_slice(&json).unwrap();
    let bundle = signed.verify(&key.public()).unwrap();
    assert_eq!(bundle.epoch, epoch);
    (epoch, bundle.issued_ms)
}

/// Waits (up to 20 s of real time) until `count` bundles are built and the first epoch is
/// announced (served).
async fn wait_announced(engine: &Engine, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while engine.cached_bundles() < count || engine.epoch_info().is_none() {
        assert!(Instant::now() < deadline, "bundles were not prebuilt");
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(5));
    }
    while engine.bundle("node-0", None).is_none() {
        assert!(
            Instant::now() < deadline,
            "the first epoch was not announced"
        );
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[tokio::test(start_paused = true)]
async fn prebuilt_bundles_are_served_and_old_epochs_dropped() {
    let clock = Clock::starting_at(START_MS);
    let (engine, key) = engine(clock.clone());
    assert_eq!(engine.prebuild_bundles(), 0, "no epoch yet");
    let first = engine.rotate_now("test").unwrap();
    assert_eq!(engine.prebuild_bundles(), NODES);
    assert_eq!(engine.prebuild_bundles(), 0, "everything is cached");
    assert_eq!(engine.cached_bundles(), NODES);

    // Served later, the bundle is still the one built at publication.
    tokio::time::advance(Duration::from_secs(5)).await;
    for i in 0..NODES {
        let (epoch, issued) = issued_ms(&engine, &key, &format!("node-{i}"));
        assert_eq!(epoch, first);
        assert!(
            issued < START_MS + 1_000,
            "issued at {issued}, not prebuilt"
        );
    }

    // An immediate rotation supersedes the first epoch: its bundles go.
    let second = engine.rotate_now("test").unwrap();
    assert_eq!(engine.prebuild_bundles(), NODES);
    assert_eq!(engine.cached_bundles(), NODES);
    let (epoch, issued) = issued_ms(&engine, &key, "node-0");
    assert_eq!(epoch, second);
    assert!(
        issued >= START_MS + 5_000,
        "issued at {issued}, before the rotation"
    );
}

#[tokio::test(start_paused = true)]
async fn a_denied_node_gets_a_prebuilt_denial() {
    let (engine, key) = engine(Clock::starting_at(START_MS));
    // Nobody has a benchmark: every node is denied, and told why.
    engine.rotate_now("test").unwrap();
    assert_eq!(engine.prebuild_bundles(), NODES);
    let (_, json) = engine.bundle("node-3", None).unwrap();
    let signed: SignedBundle = serde_json::from_slice(&json).unwrap();
    let bundle = signed.verify(&key.public()).unwrap();
    assert!(bundle.peers.is_empty());
    assert!(matches!(bundle.membership, Membership::Denied { .. }));
}

#[tokio::test(start_paused = true)]
async fn the_running_engine_prebuilds_each_published_epoch() {
    let (engine, key) = engine(Clock::starting_at(START_MS));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(engine.clone().run(async {
        let _ = stopped.await;
    }));
    // The first epoch is published at once; its bundles are built on blocking threads, then
    // it is announced.
    wait_announced(&engine, NODES).await;
    let (epoch, issued) = issued_ms(&engine, &key, "node-1");
    let stored: Vec<u64> = engine
        .store()
        .latest_epochs(4)
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(vec![epoch], stored, "the first epoch");
    assert!(issued < START_MS + 1_000, "built at publication: {issued}");
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn long_pollers_wake_once_every_bundle_is_built() {
    const MANY: usize = 60;
    let (engine, _) = engine_with(Clock::starting_at(START_MS), MANY);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(engine.clone().run(async {
        let _ = stopped.await;
    }));
    wait_announced(&engine, MANY).await;
    let first = engine.epoch_info().unwrap().current.epoch;
    let waiter = tokio::spawn({
        let engine = engine.clone();
        async move {
            let found = engine
                .wait_bundle("node-7", Some(first), Duration::from_secs(60))
                .await;
            (found.map(|(epoch, _)| epoch), engine.cached_bundles())
        }
    });
    tokio::task::yield_now().await;
    let second = engine.rotate_now("test").unwrap();
    // Woken only after the new epoch's bundles were all built and the superseded epoch's
    // dropped: exactly one bundle per node is held.
    let (epoch, cached) = waiter.await.unwrap();
    assert_eq!(epoch, Some(second));
    assert_eq!(cached, MANY);
    stop.send(()).unwrap();
    task.await.unwrap();
}
