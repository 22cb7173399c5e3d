//! The cut-off notice is built when an epoch denies nodes allowed before, served to
//! long-polls that ask for notices before the epoch's bundles are built, never to others,
//! never twice, and by a follower too.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshtun_proto::bundle::SignedBundle;
use meshtun_proto::cutoff::{CutOff, SignedCutOff};
use meshtun_proto::{IdentityKey, KeySet, PublicKey};

use super::Served;
use crate::clock::Clock;
use crate::engine::{Engine, EngineSettings};
use crate::model::{Pin, Policy};
use crate::schedule::Schedule;
use crate::store::Store;
use crate::testing::{self, TestNode};

fn settings() -> EngineSettings {
    EngineSettings {
        policy: Policy::default(),
        schedule: Schedule::new(60_000, 10_000).unwrap(),
        rotate_on_deny: true,
        relay: None,
    }
}

/// `count` enrolled nodes, all pinned allowed, on a fresh store.
fn allowed_nodes(count: usize) -> (Arc<Store>, Vec<TestNode>) {
    let store = Arc::new(Store::open_in_memory().unwrap());
    let ids: Vec<String> = (0..count).map(|i| format!("node-{i}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let nodes = testing::enroll(&store, &ids);
    for node in &nodes {
        store.set_pin(&node.id, Some(Pin::Allow)).unwrap();
    }
    (store, nodes)
}

fn open(store: &Arc<Store>, key: &IdentityKey) -> Arc<Engine> {
    Arc::new(Engine::open(store.clone(), key.clone(), settings(), Clock::system()).unwrap())
}

fn notice(json: &[u8], key: &IdentityKey) -> CutOff {
    SignedCutOff::from_json(json)
        .unwrap()
        .open(&KeySet::one(key.public()))
        .unwrap()
        .0
}

fn denied_keys(notice: &CutOff) -> Vec<PublicKey> {
    notice.denied.iter().map(|d| d.public_key).collect()
}

/// What was served, without the bytes.
fn kind(served: &Served) -> &'static str {
    match served {
        Served::Bundle(..) => "bundle",
        Served::CutOff(..) => "notice",
    }
}

/// Serves as if `Engine::run`'s prebuilder were running (epochs decided but not announced).
fn hold_announcements(engine: &Engine) {
    engine.prebuilding.store(true, Ordering::Release);
}

#[test]
fn a_deny_is_noticed_once_to_nodes_that_ask_and_never_to_others() {
    let (store, nodes) = allowed_nodes(4);
    let key = IdentityKey::generate();
    let engine = open(&store, &key);
    let first = engine.rotate_now("test").unwrap();
    assert!(
        engine.epochs().last().unwrap().cutoff.is_none(),
        "nobody denied"
    );
    hold_announcements(&engine);
    store.set_pin("node-2", Some(Pin::Deny)).unwrap();
    let second = engine.rotate_now("deny").unwrap();
    // Asking for notices (seen 0), the node gets the deny's notice, naming node-2 alone.
    let Some(Served::CutOff(epoch, json)) = engine.serve("node-0", Some(first), Some(0)) else {
        panic!("no notice served");
    };
    assert_eq!(epoch, second);
    let n = notice(&json, &key);
    assert_eq!(
        (n.epoch, denied_keys(&n)),
        (second, vec![nodes[2].wg.public_key()])
    );
    // Seen already: nothing newer is announced yet, so nothing.
    assert_eq!(engine.serve("node-0", Some(first), Some(second)), None);
    // A node that does not read notices never gets one.
    assert_eq!(engine.serve("node-0", Some(first), None), None);
    // Once announced, the bundle is served, not the notice.
    engine.published.send_replace(second);
    assert!(matches!(
        engine.serve("node-0", Some(first), Some(0)),
        Some(Served::Bundle(e, _)) if e == second
    ));
}

#[test]
fn a_readmission_epoch_names_nobody_readmitted() {
    let (store, _) = allowed_nodes(3);
    let key = IdentityKey::generate();
    let engine = open(&store, &key);
    engine.rotate_now("test").unwrap();
    store.set_pin("node-1", Some(Pin::Deny)).unwrap();
    engine.rotate_now("deny").unwrap();
    store.set_pin("node-1", Some(Pin::Allow)).unwrap();
    engine.rotate_now("readmit").unwrap();
    assert!(
        engine.epochs().last().unwrap().cutoff.is_none(),
        "a readmission is not a cut-off"
    );
}

/// An instance that loads the leader's deny epoch from the store builds and serves the same
/// notice (signed with the shared key).
#[test]
fn a_follower_serves_the_notice_of_a_loaded_deny() {
    let (store, nodes) = allowed_nodes(3);
    let key = IdentityKey::generate();
    let leader = open(&store, &key);
    let follower = open(&store, &key);
    let first = leader.rotate_now("test").unwrap();
    assert_eq!(follower.load_published().unwrap(), Some(first));
    hold_announcements(&follower);
    store.set_pin("node-0", Some(Pin::Deny)).unwrap();
    let second = leader.rotate_now("deny").unwrap();
    assert_eq!(follower.load_published().unwrap(), Some(second));
    let Some(Served::CutOff(epoch, json)) = follower.serve("node-1", Some(first), Some(0)) else {
        panic!("the follower served no notice");
    };
    assert_eq!(epoch, second);
    assert_eq!(
        denied_keys(&notice(&json, &key)),
        vec![nodes[0].wg.public_key()]
    );
}

/// The point of the notice: with the engine running (bundles prebuilt before an epoch is
/// announced), a long-poll gets the deny's notice well before the epoch's bundles are built.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notice_is_served_before_the_bundles_are_built() {
    const NODES: usize = 160;
    let (store, nodes) = allowed_nodes(NODES);
    let key = IdentityKey::generate();
    let engine = open(&store, &key);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(engine.clone().run(async {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        if let Some((epoch, _)) = engine.bundle("node-0", None) {
            break epoch;
        }
        assert!(
            Instant::now() < deadline,
            "the first epoch was not announced"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let poll = |seen| {
        let engine = engine.clone();
        tokio::spawn(async move {
            let served = engine
                .wait_served("node-1", Some(first), Some(seen), Duration::from_secs(60))
                .await;
            (served, Instant::now())
        })
    };
    let notice_poll = poll(0);
    tokio::time::sleep(Duration::from_millis(50)).await;
    store.set_pin("node-7", Some(Pin::Deny)).unwrap();
    let e = engine.clone();
    let decided_at = Instant::now();
    let second = tokio::task::spawn_blocking(move || e.rotate_now("deny").unwrap())
        .await
        .unwrap();
    let bundle_poll = poll(second);
    let (served, noticed_at) = notice_poll.await.unwrap();
    let Some(Served::CutOff(epoch, json)) = served else {
        panic!(
            "the long-poll got no notice: {:?}",
            served.map(|s| kind(&s))
        );
    };
    assert_eq!(epoch, second);
    assert_eq!(
        denied_keys(&notice(&json, &key)),
        vec![nodes[7].wg.public_key()]
    );
    let (served, bundled_at) = bundle_poll.await.unwrap();
    let Some(Served::Bundle(epoch, json)) = served else {
        panic!("no bundle after the notice: {:?}", served.map(|s| kind(&s)));
    };
    assert_eq!(epoch, second);
    let bundle = serde_json::from_slice::<SignedBundle>(&json).unwrap();
    assert!(bundle.verify(&key.public()).unwrap().peers.len() == NODES - 2);
    let to_notice = noticed_at.saturating_duration_since(decided_at);
    let to_bundle = bundled_at.saturating_duration_since(decided_at);
    println!("{NODES} nodes: decision → notice {to_notice:?}, → bundles built {to_bundle:?}");
    assert!(
        to_notice * 2 < to_bundle,
        "notice after {to_notice:?}, bundles after {to_bundle:?}"
    );
    stop.send(()).unwrap();
    task.await.unwrap();
}
