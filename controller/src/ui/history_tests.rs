//! The dashboard's history, read through the store on both backends: benchmark series
//! oldest first, and the decisions log naming a denial with its reason.

use std::sync::Arc;

use meshtun_proto::auth::RequestSignature;
use meshtun_proto::wire::{Benchmark, Scores};
use meshtun_proto::{IdentityKey, PrivateKey};

use super::data::dashboard;
use crate::clock::Clock;
use crate::engine::{Engine, EngineSettings};
use crate::model::{BenchmarkRecord, NodeRecord, Policy};
use crate::schedule::Schedule;
use crate::store::{Database, Store, BENCHMARK_METHOD};

fn node(id: &str, seed: u8) -> (NodeRecord, IdentityKey) {
    let key = IdentityKey::from_bytes([seed; 32]);
    let record = NodeRecord {
        id: id.to_owned(),
        wg_public_key: PrivateKey::from_bytes([seed; 32]).public_key(),
        identity_key: key.public(),
        addresses: vec![format!("100.64.0.{seed}/24").parse().unwrap()],
        endpoint: Some(format!("192.0.2.{seed}:51820")),
        pin: None,
        enrolled_ms: 0,
        membership_sig: None,
    };
    (record, key)
}

fn submit(engine: &Engine, key: &IdentityKey, node: &str, seq: u64, overall: f64) {
    let now = engine.clock().now_ms();
    let wire = Benchmark {
        suite_version: "s1".to_owned(),
        scores: Scores {
            overall,
            refusal: 0.9,
            honesty: 0.9,
            policy: 0.9,
        },
        measured_at_ms: now,
        seq,
    };
    let body = serde_json::to_vec(&wire).unwrap();
    let path = format!("/v1/benchmarks/{node}");
    let controller = engine.public_key();
    let sig = RequestSignature::sign(key, &controller, node, BENCHMARK_METHOD, &path, &body, now);
    let record = BenchmarkRecord {
        node_id: node.to_owned(),
        suite_version: wire.suite_version,
        scores: wire.scores,
        measured_at_ms: now,
        seq,
        received_ms: now + seq,
    };
    engine
        .submit_benchmark(&controller, &record, &body, &sig, &path)
        .unwrap();
}

fn engine_with(store: Store, policy: Policy) -> (Engine, Vec<IdentityKey>) {
    let store = Arc::new(store);
    let mut keys = Vec::new();
    for (i, id) in ["a", "b"].iter().enumerate() {
        let (record, key) = node(id, u8::try_from(i + 1).unwrap());
        store.add_node(&record).unwrap();
        keys.push(key);
    }
    let settings = EngineSettings {
        policy,
        schedule: Schedule::new(60_000, 10_000).unwrap(),
        rotate_on_deny: true,
        relay: None,
    };
    let engine = Engine::open(store, IdentityKey::generate(), settings, Clock::system()).unwrap();
    (engine, keys)
}

fn history_of_a_denial(store: Store) {
    let (engine, keys) = engine_with(store, Policy::default());
    submit(&engine, &keys[0], "a", 1, 0.9);
    submit(&engine, &keys[1], "b", 1, 0.9);
    engine.rotate_now("admin").unwrap();
    submit(&engine, &keys[1], "b", 2, 0.3);
    submit(&engine, &keys[1], "b", 3, 0.2);
    engine.rotate_now("admin").unwrap();
    // Past the live window: the epochs of the denial have their secrets erased, and are read
    // all the same.
    for _ in 0..crate::store::LIVE_EPOCHS + 2 {
        engine.rotate_now("admin").unwrap();
    }
    let oldest = engine.store().epoch_ids().unwrap().pop().unwrap();
    assert!(
        engine.store().epoch(oldest).is_err(),
        "the secret was not erased"
    );

    let data = dashboard(&engine, &crate::ui::UiState::default()).unwrap();
    let b = data.history.series.iter().find(|s| s.node == "b").unwrap();
    let overall: Vec<f64> = b.points.iter().map(|p| p.overall).collect();
    assert_eq!(overall, vec![0.9, 0.3, 0.2], "oldest first");
    let log = &data.history.log;
    let denial = log
        .iter()
        .find(|r| r.change == Some("denied"))
        .unwrap_or_else(|| panic!("no denial in {log:?}"));
    assert_eq!(denial.node, "b", "{log:?}");
    assert!(denial.reason.contains("0.20"), "{:?}", denial.reason);
    assert!(
        log.iter().all(|r| r.node == "b"),
        "only b was denied: {log:?}"
    );
    assert!(
        log.iter().all(|r| r.node != "a"),
        "a was never denied: {log:?}"
    );
    let b = data.nodes.iter().find(|n| n.id == "b").unwrap();
    assert_eq!(b.membership, "DENIED");
    assert_eq!(b.last_benchmark.as_ref().map(|p| p.overall), Some(0.2));
    assert!(
        data.pairs.is_empty(),
        "a alone holds no pair: {:?}",
        data.pairs
    );
}

#[test]
fn sqlite_history_of_a_denial() {
    history_of_a_denial(Store::open_in_memory().unwrap());
}

#[test]
fn postgres_history_of_a_denial() {
    let test = "postgres_history_of_a_denial";
    let Some(cluster) = crate::temp_cluster::shared_or_skip(test) else {
        return;
    };
    let db = cluster.create_database("ui").unwrap();
    let database = Database::parse(&cluster.url(&db), std::path::Path::new("/"), None).unwrap();
    history_of_a_denial(Store::connect(&database).unwrap());
}

/// A dimension the policy sources (here: honesty from the node's own benchmark, with a bar
/// above what b reports) shows its value, its minimum and how many sources it rests on.
#[test]
fn a_sourced_dimension_shows_against_its_minimum() {
    use crate::model::{Combine, Dimension, Source, SourceRule, Sources};

    let policy = Policy {
        sources: Sources {
            honesty: Some(SourceRule {
                from: vec![Source::SelfReported],
                k: 1,
                combine: Combine::Minimum,
                max_age_ms: 600_000,
                minimum: Some(0.95),
            }),
            ..Sources::default()
        },
        ..Policy::default()
    };
    let (engine, keys) = engine_with(Store::open_in_memory().unwrap(), policy);
    submit(&engine, &keys[1], "b", 1, 0.9);
    engine.rotate_now("admin").unwrap();
    let data = dashboard(&engine, &crate::ui::UiState::default()).unwrap();
    let b = data.nodes.iter().find(|n| n.id == "b").unwrap();
    assert_eq!(b.membership, "DENIED", "{:?}", b.reason);
    let honesty = b
        .sourced
        .iter()
        .find(|s| s.dimension == Dimension::Honesty)
        .unwrap_or_else(|| panic!("no sourced honesty: {:?}", b.sourced));
    assert_eq!(honesty.value, Some(0.9));
    assert_eq!(honesty.minimum, Some(0.95));
    assert_eq!((honesty.k, honesty.sources), (1, 1));
}
