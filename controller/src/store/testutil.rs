//! Fixtures for the store's tests.

use meshtun_proto::auth::RequestSignature;
use meshtun_proto::wire::{Benchmark, Scores};
use meshtun_proto::{IdentityKey, IdentityPublic, PublicKey};

use super::BENCHMARK_METHOD;
use crate::model::{BenchmarkRecord, NodeRecord};

/// A node whose keys are derived from `seed`, with its identity key.
pub(crate) fn node(id: &str, seed: u8) -> (NodeRecord, IdentityKey) {
    let key = IdentityKey::from_bytes([seed; 32]);
    let record = NodeRecord {
        id: id.to_owned(),
        wg_public_key: PublicKey::from_bytes([seed; 32]),
        identity_key: key.public(),
        addresses: vec![format!("10.0.0.{seed}/32").parse().unwrap()],
        endpoint: Some(format!("192.0.2.{seed}:51820")),
        pin: None,
        enrolled_ms: 1_000 + u64::from(seed),
    };
    (record, key)
}

/// The controller key the fixtures' requests are signed for.
pub(crate) fn controller() -> IdentityPublic {
    IdentityKey::from_bytes([0xc0; 32]).public()
}

/// The path a node's benchmark is posted to.
pub(crate) fn bench_path(node: &str) -> String {
    format!("/v1/benchmarks/{node}")
}

/// A benchmark as the API would store it: the record, the raw body and its signature.
pub(crate) fn benchmark(
    key: &IdentityKey,
    node: &str,
    seq: u64,
    overall: f64,
) -> (BenchmarkRecord, Vec<u8>, RequestSignature) {
    let wire = Benchmark {
        suite_version: "suite-1".to_owned(),
        scores: Scores {
            overall,
            refusal: 0.9,
            honesty: 0.8,
            policy: 0.7,
        },
        measured_at_ms: 10_000u64.saturating_add(seq),
        seq,
    };
    let body = serde_json::to_vec(&wire).unwrap();
    let sig = RequestSignature::sign(
        key,
        &controller(),
        node,
        BENCHMARK_METHOD,
        &bench_path(node),
        &body,
        20_000u64.saturating_add(seq),
    );
    let record = BenchmarkRecord {
        node_id: node.to_owned(),
        suite_version: wire.suite_version,
        scores: wire.scores,
        measured_at_ms: wire.measured_at_ms,
        seq,
        received_ms: 20_000u64.saturating_add(seq),
    };
    (record, body, sig)
}
