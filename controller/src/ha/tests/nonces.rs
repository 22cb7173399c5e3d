//! The shared nonce table: a request replayed to another instance is refused.

use meshtun_proto::auth::{RequestSignature, NONCE_LEN};
use meshtun_proto::{IdentityKey, IdentityPublic};

use super::Db;
use crate::auth::{authenticate, NonceStore, Refusal, SignedRequest};
use crate::ha::PgNonces;
use crate::quota::NodeQuota;

const NOW: u64 = 1_800_000_000_000;
const WINDOW: u64 = 30_000;
const PATH: &str = "/v1/benchmarks/node-a";

fn controller() -> IdentityPublic {
    IdentityKey::from_bytes([0xc0; 32]).public()
}

fn sign(key: &IdentityKey, at: u64) -> RequestSignature {
    RequestSignature::sign(key, &controller(), "node-a", "POST", PATH, b"{}", at)
}

/// One instance's check of a signed request: its own quota, the given nonce store.
fn check(
    key: &IdentityKey,
    sig: &RequestSignature,
    nonces: &dyn NonceStore,
    now: u64,
) -> Result<(), Refusal> {
    let controller = meshtun_proto::KeySet::one(controller());
    let request = SignedRequest {
        controller: &controller,
        method: "POST",
        path_and_query: PATH,
        body: b"{}",
        path_node: "node-a",
    };
    let quota = NodeQuota::new(100, 100);
    authenticate(sig, &request, |_| Some(key.public()), &quota, nonces, now).map(|_| ())
}

/// A signed request accepted by instance A, replayed byte for byte to instance B (its own
/// pool, its own quota), is refused there, and on A too; a new request passes on both.
#[test]
fn attack_a_request_replayed_to_another_instance_is_refused() {
    let Some(db) = Db::new("attack_a_request_replayed_to_another_instance") else {
        return;
    };
    let a = PgNonces::new(db.pool(), WINDOW);
    let b = PgNonces::new(db.pool(), WINDOW);
    let key = IdentityKey::generate();
    let sig = sign(&key, NOW);
    assert_eq!(check(&key, &sig, &a, NOW), Ok(()));
    let instances: [(&str, &dyn NonceStore); 2] = [("B", &b), ("A", &a)];
    for (instance, nonces) in instances {
        let replay = check(&key, &sig, nonces, NOW + 5);
        assert!(
            matches!(&replay, Err(Refusal::Unauthenticated(m)) if m.contains("replayed")),
            "replay to {instance}: {replay:?}"
        );
    }
    let fresh = sign(&key, NOW + 10);
    assert_eq!(check(&key, &fresh, &b, NOW + 10), Ok(()));
    // At the very edge of the window the nonce is still known (#23's rule, shared).
    let edge = check(&key, &sig, &b, NOW + WINDOW);
    assert!(matches!(&edge, Err(Refusal::Unauthenticated(m)) if m.contains("replayed")));
}

/// Two instances recording the same nonce at the same instant: exactly one accepts it.
#[test]
fn attack_a_replay_racing_the_original_on_two_instances_passes_once() {
    let Some(db) = Db::new("attack_a_replay_racing_the_original") else {
        return;
    };
    let stores = [
        std::sync::Arc::new(PgNonces::new(db.pool(), WINDOW)),
        std::sync::Arc::new(PgNonces::new(db.pool(), WINDOW)),
    ];
    for round in 0..20u8 {
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let handles: Vec<_> = stores
            .iter()
            .map(|s| {
                let (s, barrier) = (s.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    s.record("node-a", [round; NONCE_LEN], NOW, NOW).unwrap()
                })
            })
            .collect();
        let accepted = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|&ok| ok)
            .count();
        assert_eq!(accepted, 1, "round {round}");
    }
}

/// Expired nonces are pruned one window after they went stale (so an instance whose clock
/// lags by up to a window still finds them), and a full table refuses as busy.
#[test]
fn nonces_are_pruned_a_window_late_and_a_full_table_refuses() {
    let Some(db) = Db::new("nonces_are_pruned") else {
        return;
    };
    let a = PgNonces::new(db.pool(), WINDOW).with_max_rows(3);
    assert!(a.record("node-a", [1; NONCE_LEN], NOW, NOW).unwrap());
    assert!(a.record("node-b", [1; NONCE_LEN], NOW, NOW).unwrap());
    // Stale one window later: still kept.
    assert_eq!(a.prune(NOW + WINDOW + 1).unwrap(), 0);
    assert_eq!(db.int("SELECT count(*) FROM request_nonces"), 2);
    assert_eq!(a.prune(NOW + 2 * WINDOW + 1).unwrap(), 2);
    assert_eq!(db.int("SELECT count(*) FROM request_nonces"), 0);
    for i in 0..3u8 {
        assert!(a.record("node-a", [10 + i; NONCE_LEN], NOW, NOW).unwrap());
    }
    a.prune(NOW).unwrap();
    assert_eq!(
        a.record("node-a", [20; NONCE_LEN], NOW, NOW),
        Err(Refusal::Busy)
    );
    assert_eq!(db.int("SELECT count(*) FROM request_nonces"), 3);
}

/// Without the database, requests are refused as unavailable (503), never accepted.
#[test]
fn a_lost_database_refuses_requests_instead_of_accepting_replays() {
    let Some(db) = Db::new("a_lost_database_refuses_requests") else {
        return;
    };
    let pool = r2d2::Pool::builder()
        .max_size(1)
        .connection_timeout(std::time::Duration::from_millis(500))
        .build_unchecked(r2d2_postgres::PostgresConnectionManager::new(
            {
                let mut c = db.config();
                c.dbname("no_such_database");
                c
            },
            postgres::NoTls,
        ));
    let a = PgNonces::new(pool, WINDOW);
    let refused = a.record("node-a", [1; NONCE_LEN], NOW, NOW).unwrap_err();
    assert!(matches!(refused, Refusal::Unavailable(_)), "{refused:?}");
    assert_eq!(refused.status(), 503);
}
