//! Two engines on one store, as two instances on one database: the follower never decides,
//! loads what the leader publishes when woken, and a new leader starts from its
//! predecessor's epochs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use meshtun_proto::{IdentityKey, PrivateKey};

use super::super::{Engine, EngineSettings};
use crate::clock::Clock;
use crate::ha::{Leadership, LeaseTiming, Wake};
use crate::model::{NodeRecord, Policy};
use crate::schedule::Schedule;
use crate::store::Store;

fn store_with_a_node() -> Arc<Store> {
    let store = Arc::new(Store::open_in_memory().unwrap());
    let identity = IdentityKey::generate();
    store
        .add_node(&NodeRecord {
            id: "node-a".into(),
            wg_public_key: PrivateKey::generate().public_key(),
            identity_key: identity.public(),
            addresses: vec!["100.64.0.1/24".parse().unwrap()],
            endpoint: Some("192.0.2.1:51820".into()),
            pin: None,
            enrolled_ms: 0,
            membership_sig: None,
        })
        .unwrap();
    store
}

/// An instance of name `name` on `store`, leading only once granted (on a fake clock).
fn instance(store: &Arc<Store>, key: &IdentityKey, name: &str) -> (Arc<Engine>, Leadership) {
    let ms = Arc::new(AtomicU64::new(1_000));
    let clock = Arc::new(move || Duration::from_millis(ms.load(Ordering::SeqCst)));
    let leadership =
        Leadership::with_clock(name, LeaseTiming::new(Duration::from_secs(3_600)), clock);
    let settings = EngineSettings {
        policy: Policy::default(),
        schedule: Schedule::new(60_000, 10_000).unwrap(),
        rotate_on_deny: true,
        relay: None,
    };
    let engine = Engine::open(store.clone(), key.clone(), settings, Clock::system())
        .unwrap()
        .with_leadership(leadership.clone());
    (Arc::new(engine), leadership)
}

fn lead(l: &Leadership, term: u64) {
    let attempt = l.attempt().unwrap();
    l.granted(attempt, term);
    assert!(l.is_leader());
}

fn epochs_in(store: &Store) -> Vec<u64> {
    store
        .latest_epochs(10)
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect()
}

/// The follower neither publishes on schedule nor rotates on a deny; the leader does. The
/// follower's long-poll is answered as soon as a wake says the leader published (well
/// before its periodic reread).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_never_decides_and_serves_the_leaders_epoch_once_woken() {
    let store = store_with_a_node();
    let key = IdentityKey::generate();
    let (leader, l_lead) = instance(&store, &key, "a");
    let (follower, l_follow) = instance(&store, &key, "b");
    lead(&l_lead, 1);
    follower.step().unwrap();
    assert_eq!(follower.check_deny().unwrap(), None);
    assert!(epochs_in(&store).is_empty(), "the follower published");
    let following = tokio::spawn(follower.clone().follow_published(l_follow.wakes().unwrap()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let waiter = follower.clone();
    let poll = tokio::spawn(async move {
        waiter
            .wait_bundle("node-a", None, Duration::from_secs(4))
            .await
    });
    let l = leader.clone();
    tokio::task::spawn_blocking(move || l.step().unwrap())
        .await
        .unwrap();
    let published = epochs_in(&store);
    assert_eq!(published.len(), 1);
    let started = tokio::time::Instant::now();
    l_follow
        .wake_sender()
        .unwrap()
        .send_replace(Wake::Epoch(published[0]));
    let (epoch, _bundle) = poll.await.unwrap().expect("the follower served no bundle");
    assert_eq!(epoch, published[0]);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(follower.current().unwrap().record.id, published[0]);
    following.abort();
}

/// An instance that was a follower and never woke becomes leader: before deciding it loads
/// the epoch in force, so it does not publish a needless (or conflicting) epoch at once.
#[test]
fn a_new_leader_loads_its_predecessors_epochs_before_deciding() {
    let store = store_with_a_node();
    let key = IdentityKey::generate();
    let (old, l_old) = instance(&store, &key, "a");
    let (new, l_new) = instance(&store, &key, "b");
    lead(&l_old, 1);
    old.step().unwrap();
    let first = epochs_in(&store);
    assert_eq!(first.len(), 1);
    assert!(new.current().is_none());
    l_old.refused();
    assert!(!l_old.is_leader());
    old.step().unwrap();
    lead(&l_new, 2);
    new.step().unwrap();
    assert_eq!(epochs_in(&store), first, "the new leader published again");
    assert_eq!(new.current().unwrap().record.id, first[0]);
    // And a rotation it decides follows the loaded epoch.
    let next = new.rotate_now("admin").unwrap();
    assert!(next > first[0]);
}

/// A follower refuses an admin rotation (409, naming why) instead of publishing; the
/// leader accepts it. The status of the sole (SQLite) instance has no cluster section.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_an_admin_rotation_sent_to_a_follower_publishes_nothing() {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt as _;

    use crate::api::{router, Api, ApiSettings};

    let store = store_with_a_node();
    let key = IdentityKey::generate();
    let (follower, _) = instance(&store, &key, "b");
    let (leader, l_lead) = instance(&store, &key, "a");
    lead(&l_lead, 1);
    let rotate = |engine: Arc<Engine>| async move {
        let api = Api::new(
            engine,
            ApiSettings {
                admin_token: "admin-token".to_owned().into(),
                read_token: None,
                clock_skew: Duration::from_secs(30),
                long_poll: Duration::from_secs(1),
                limits: crate::config::Limits::default(),
            },
        );
        let request = Request::post("/v1/rotate")
            .header("authorization", "Bearer admin-token")
            .body(Body::empty())
            .unwrap();
        let answer = router(Arc::new(api)).oneshot(request).await.unwrap();
        let status = answer.status();
        let body = axum::body::to_bytes(answer.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    let (status, body) = rotate(follower).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("does not lead"), "{body}");
    assert!(epochs_in(&store).is_empty(), "the follower published");
    let (status, body) = rotate(leader).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(epochs_in(&store).len(), 1);

    let sole = Engine::open(
        store.clone(),
        key,
        EngineSettings {
            policy: Policy::default(),
            schedule: Schedule::new(60_000, 10_000).unwrap(),
            rotate_on_deny: true,
            relay: None,
        },
        Clock::system(),
    )
    .unwrap();
    let report = serde_json::to_value(crate::status::status_report(&sole)).unwrap();
    assert!(report.get("cluster").is_none(), "{report}");
}

/// The end of the newest epoch is in `/metrics` on the instance that published it, on a
/// follower once it loads it, and on an instance started later on the same database; 0
/// before any epoch.
#[test]
fn every_instance_reports_the_end_of_the_newest_epoch() {
    let end_in = |engine: &Engine| -> u64 {
        let text = engine.metrics.render();
        let line = text
            .lines()
            .find(|l| l.starts_with("meshtun_controller_epoch_end_timestamp_seconds "))
            .unwrap_or_else(|| panic!("no epoch end in:\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let store = store_with_a_node();
    let key = IdentityKey::generate();
    let (leader, l_leader) = instance(&store, &key, "a");
    let (follower, _) = instance(&store, &key, "b");
    assert_eq!(end_in(&leader), 0);
    lead(&l_leader, 1);
    leader.step().unwrap();
    let record = leader.current().unwrap().record.clone();
    let end = record.not_after_ms / 1000;
    assert!(end > 0);
    assert_eq!(end_in(&leader), end);
    assert_eq!(end_in(&follower), 0, "before it loads the epoch");
    follower.load_published().unwrap();
    assert_eq!(end_in(&follower), end);
    let (later, _) = instance(&store, &key, "c");
    assert_eq!(end_in(&later), end);
}
