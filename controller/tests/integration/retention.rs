//! The running controller prunes its database to the retention windows (#5), erases past
//! epoch secrets (#20), and its audit log still verifies, with tokio's paused time.

use std::sync::Arc;
use std::time::Duration;

use meshtun_controller::clock::Clock;
use meshtun_controller::engine::{Engine, EngineSettings};
use meshtun_controller::model::Policy;
use meshtun_controller::schedule::Schedule;
use meshtun_controller::store::{AuditKind, Retention, Store, StoreError, LIVE_EPOCHS};
use meshtun_controller::testing;
use meshtun_proto::IdentityKey;

const START_MS: u64 = 1_800_000_000_000;
const LENGTH_MS: u64 = 10_000;
const LEAD_MS: u64 = 3_000;

fn store_with_a_node() -> Arc<Store> {
    let store = Arc::new(Store::open_in_memory().unwrap());
    testing::enroll(&store, &["node-a"]);
    store
}

/// Moves time forward in steps of at most 500 ms, letting the engine's tasks run at each.
async fn advance_to(engine: &Engine, clock: &Clock, ms: u64) {
    loop {
        for _ in 0..10 {
            tokio::task::yield_now().await;
            // The engine's rounds run on a blocking thread: wait for them in real time.
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
async fn attack_5_a_running_controller_keeps_only_its_windows() {
    let clock = Clock::starting_at(START_MS);
    let store = Arc::new(
        Arc::try_unwrap(store_with_a_node())
            .unwrap()
            .with_clock(clock.clone()),
    );
    let key = IdentityKey::generate();
    let settings = EngineSettings {
        policy: Policy::default(),
        schedule: Schedule::new(LENGTH_MS, LEAD_MS).unwrap(),
        rotate_on_deny: true,
        relay: None,
    };
    let retention = Retention {
        benchmarks: Duration::from_secs(60),
        decisions: Duration::from_secs(60),
        audit: Duration::from_secs(120),
    };
    let engine = Arc::new(
        Engine::open(store.clone(), key.clone(), settings, clock.clone())
            .unwrap()
            .with_retention(retention),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(engine.clone().run(async {
        let _ = stopped.await;
    }));
    // Ten minutes: sixty epochs, twenty prunings at most.
    advance_to(&engine, &clock, START_MS + 600_000).await;
    let _ = stop.send(());
    task.await.unwrap();

    let report = store
        .verify_audit(&meshtun_proto::KeySet::one(key.public()))
        .unwrap();
    let published = report.counts[&AuditKind::Rotation];
    assert!(published >= 59, "{published} epochs published");
    // Only the epochs that ended within the last minute (and a pruning interval) are kept,
    // with their decisions; the live ones keep their secrets, the others lost theirs.
    let ids = store.epoch_ids().unwrap();
    assert!(
        (LIVE_EPOCHS + 1..=14).contains(&ids.len()),
        "{} of {published} epochs stored",
        ids.len()
    );
    for (age, id) in ids.iter().enumerate() {
        let epoch = store.epoch(*id);
        if age < LIVE_EPOCHS {
            assert!(epoch.unwrap().is_some(), "live epoch {id}");
        } else {
            assert!(
                matches!(epoch, Err(StoreError::SecretErased(e)) if e == *id),
                "epoch {id}, {age} older than the newest: {epoch:?}"
            );
        }
        assert!(!store.decisions(*id).unwrap().is_empty());
    }
    let pruned = report.pruned_through.expect("the audit log was pruned");
    assert!(store.audit_entries(1, 1).unwrap()[0].seq > pruned);
    // The audit log now holds about three minutes (the window and a pruning interval) of
    // one rotation and one decision per epoch, not ten.
    assert!(report.entries - pruned < 60, "{report:?}");
    let metrics = engine.metrics.render();
    assert!(
        metrics.contains("meshtun_controller_pruned_total{kind=\"epochs\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("meshtun_controller_database_bytes "),
        "{metrics}"
    );
}
