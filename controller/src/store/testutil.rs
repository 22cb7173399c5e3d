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
        membership_sig: None,
    };
    (record, key)
}

/// The controller key the fixtures' requests are signed for.
pub(crate) fn controller() -> IdentityPublic {
    IdentityKey::from_bytes([0xc0; 32]).public()
}

/// [`controller`] as the only key a checkpoint or request may name.
pub(crate) fn trusted() -> meshtun_proto::KeySet {
    meshtun_proto::KeySet::one(controller())
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

/// A fresh in-memory SQLite store.
pub(crate) fn sqlite() -> crate::store::Store {
    crate::store::Store::open_in_memory().unwrap()
}

/// A store on a fresh database of the shared temporary PostgreSQL cluster; `None` (the test
/// is skipped, saying so) when there is no PostgreSQL outside CI. Under `CI=true` a missing
/// PostgreSQL fails the test.
pub(crate) fn postgres(test: &str) -> Option<crate::store::Store> {
    let cluster = crate::temp_cluster::shared_or_skip(test)?;
    let db = cluster.create_database("store").unwrap();
    let target = crate::store::pg::PgTarget {
        url: cluster.url(&db),
        password_file: None,
    };
    Some(crate::store::Store::connect_postgres(&target).unwrap())
}

/// Runs raw SQL behind the store's back (as whoever can write the database could), on
/// either backend; the error is the database's message.
pub(crate) fn execute(store: &crate::store::Store, sql: &str) -> Result<u64, String> {
    match (store.sqlite(), store.postgres()) {
        (Some(s), _) => {
            let conn = s.lock();
            conn.execute_batch(sql).map_err(|e| e.to_string())?;
            Ok(conn.changes())
        }
        (_, Some(p)) => p.execute_raw(sql),
        _ => unreachable!("a store is one of the two backends"),
    }
}

/// Runs a query that returns one integer, on either backend.
pub(crate) fn query_i64(store: &crate::store::Store, sql: &str) -> i64 {
    match (store.sqlite(), store.postgres()) {
        (Some(s), _) => s.lock().query_row(sql, [], |r| r.get(0)).unwrap(),
        (_, Some(p)) => p.query_i64(sql),
        _ => unreachable!("a store is one of the two backends"),
    }
}

/// Disables the audit log's triggers, as someone with write access to the database could.
pub(crate) fn drop_audit_triggers(store: &crate::store::Store) {
    let sql = if store.is_postgres() {
        "ALTER TABLE audit DISABLE TRIGGER USER"
    } else {
        "DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;"
    };
    execute(store, sql).unwrap();
}

/// Makes every test named a function taking a [`crate::store::Store`], run once on each
/// backend: `sqlite::NAME` and `postgres::NAME`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name(crate::store::testutil::sqlite())
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    if let Some(store) = crate::store::testutil::postgres(stringify!($name)) {
                        super::$name(store)
                    }
                }
            )*
        }
    };
}
pub(crate) use on_both_backends;

/// Runs a query that returns one text column, on either backend.
pub(crate) fn query_strings(store: &crate::store::Store, sql: &str) -> Vec<String> {
    match (store.sqlite(), store.postgres()) {
        (Some(s), _) => {
            let conn = s.lock();
            let mut stmt = conn.prepare(sql).unwrap();
            let rows = stmt.query_map([], |r| r.get(0)).unwrap();
            rows.collect::<Result<_, _>>().unwrap()
        }
        (_, Some(p)) => p.query_strings(sql),
        _ => unreachable!("a store is one of the two backends"),
    }
}
