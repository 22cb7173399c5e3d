//! The HTTP API, served in-process on 127.0.0.1 by the shared fixture: signed requests,
//! refusals that change nothing, bundles, the long-poll, admin rotation, and no secret in
//! status or metrics.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use meshtun_controller::testing::{self, FixtureOptions};
use meshtun_proto::auth::RequestSignature;
use meshtun_proto::bundle::{Membership, Opener, SignedBundle};
use meshtun_proto::IdentityKey;

const TOKEN: &str = "admin-token-for-tests";
const READ_TOKEN: &str = "read-token-for-tests";

/// The shared fixture, with node-a, node-b and node-c enrolled and no engine task.
struct Fixture(testing::Fixture);

impl std::ops::Deref for Fixture {
    type Target = testing::Fixture;

    fn deref(&self) -> &testing::Fixture {
        &self.0
    }
}

async fn fixture() -> Fixture {
    Fixture(
        testing::Fixture::start(FixtureOptions {
            nodes: &["node-a", "node-b", "node-c"],
            key: controller_key(),
            admin_token: TOKEN,
            read_token: Some(READ_TOKEN),
            ..FixtureOptions::default()
        })
        .await,
    )
}

fn bench_body(overall: &str, seq: u64, at: u64) -> String {
    format!(
        r#"{{"suite_version":"s1","scores":{{"overall":{overall},"refusal":0.9,"honesty":0.9,"policy":0.9}},"measured_at_ms":{at},"seq":{seq}}}"#
    )
}

/// The controller key of the fixture (every fixture uses this one).
fn controller_key() -> IdentityKey {
    IdentityKey::from_bytes([0xc0; 32])
}

fn signed(
    method: &str,
    path: &str,
    body: &str,
    signer: &IdentityKey,
    as_node: &str,
    at_ms: u64,
) -> Request<Body> {
    let controller = controller_key().public();
    let sig = RequestSignature::sign(
        signer,
        &controller,
        as_node,
        method,
        path,
        body.as_bytes(),
        at_ms,
    );
    let mut req = Request::builder().method(method).uri(path);
    for (name, value) in sig.headers() {
        req = req.header(name, value);
    }
    req.body(Body::from(body.to_owned())).unwrap()
}

impl Fixture {
    fn now(&self) -> u64 {
        self.engine.clock().now_ms()
    }

    /// The ids of the stored epochs newer than `id`, ascending (ids follow the clock, so
    /// tests compare them instead of expecting `id + 1`).
    fn epochs_after(&self, id: u64) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .engine
            .store()
            .latest_epochs(16)
            .unwrap()
            .iter()
            .map(|e| e.id)
            .filter(|e| *e > id)
            .collect();
        ids.sort_unstable();
        ids
    }

    async fn submit(&self, n: usize, overall: &str, seq: u64) -> StatusCode {
        let node = &self.nodes[n];
        let path = format!("/v1/benchmarks/{}", &node.id);
        let req = signed(
            "POST",
            &path,
            &bench_body(overall, seq, self.now()),
            &node.identity,
            &node.id,
            self.now(),
        );
        self.request(req).await.0
    }

    fn stored_seqs(&self, n: usize) -> Vec<u64> {
        let store = self.engine.store();
        store
            .benchmarks(&self.nodes[n].id, 100)
            .unwrap()
            .iter()
            .map(|b| b.seq)
            .collect()
    }
}

#[tokio::test]
async fn benchmarks_are_accepted_once_and_bad_ones_store_nothing() {
    let f = fixture().await;
    assert_eq!(f.submit(0, "0.9", 1).await, StatusCode::CREATED);
    assert_eq!(f.stored_seqs(0), vec![1]);

    // The same request again (same nonce): a replay.
    let node = &f.nodes[0];
    let body = bench_body("0.9", 2, f.now());
    let req = signed(
        "POST",
        "/v1/benchmarks/node-a",
        &body,
        &node.identity,
        &node.id,
        f.now(),
    );
    let (parts, b) = req.into_parts();
    let again = Request::from_parts(parts.clone(), Body::from(body.clone()));
    assert_eq!(
        f.request(Request::from_parts(parts, b)).await.0,
        StatusCode::CREATED
    );
    assert_eq!(f.request(again).await.0, StatusCode::UNAUTHORIZED);
    // A fresh signature with an old sequence number: refused by the store.
    assert_eq!(f.submit(0, "0.9", 2).await, StatusCode::CONFLICT);
    // Bad values: NaN is not JSON, out of range, future-dated, oversized.
    assert_eq!(
        f.submit(0, "NaN", 3).await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        f.submit(0, "1.5", 3).await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let future = bench_body("0.9", 3, f.now() + 3_600_000);
    let req = signed(
        "POST",
        "/v1/benchmarks/node-a",
        &future,
        &node.identity,
        &node.id,
        f.now(),
    );
    assert_eq!(f.request(req).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    let huge = format!("{}{}", bench_body("0.9", 3, f.now()), " ".repeat(10_000));
    let req = signed(
        "POST",
        "/v1/benchmarks/node-a",
        &huge,
        &node.identity,
        &node.id,
        f.now(),
    );
    assert_eq!(f.request(req).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        f.stored_seqs(0),
        vec![2, 1],
        "nothing stored by a refused request"
    );
}

#[tokio::test]
async fn forged_stale_unsigned_and_foreign_requests_are_refused() {
    let f = fixture().await;
    let a = &f.nodes[0];
    let body = bench_body("0.9", 1, f.now());
    let path = "/v1/benchmarks/node-a";
    // Signed by a key that is not node-a's.
    let forged = signed(
        "POST",
        path,
        &body,
        &IdentityKey::generate(),
        "node-a",
        f.now(),
    );
    assert_eq!(f.request(forged).await.0, StatusCode::UNAUTHORIZED);
    // Signed too long ago (clock skew beyond the window).
    let stale = signed(
        "POST",
        path,
        &body,
        &a.identity,
        "node-a",
        f.now() - 120_000,
    );
    assert_eq!(f.request(stale).await.0, StatusCode::UNAUTHORIZED);
    // No signature at all.
    let bare = Request::post(path).body(Body::from(body.clone())).unwrap();
    assert_eq!(f.request(bare).await.0, StatusCode::UNAUTHORIZED);
    // An unknown node.
    let stranger = signed(
        "POST",
        "/v1/benchmarks/node-x",
        &body,
        &IdentityKey::generate(),
        "node-x",
        f.now(),
    );
    assert_eq!(f.request(stranger).await.0, StatusCode::UNAUTHORIZED);
    // node-b, correctly signed, acting for node-a.
    let b = &f.nodes[1];
    let foreign = signed("POST", path, &body, &b.identity, "node-b", f.now());
    assert_eq!(f.request(foreign).await.0, StatusCode::FORBIDDEN);
    // node-b asking for node-a's bundle.
    let fetch = signed(
        "GET",
        "/v1/config/node-a",
        "",
        &b.identity,
        "node-b",
        f.now(),
    );
    assert_eq!(f.request(fetch).await.0, StatusCode::FORBIDDEN);
    assert!(f.stored_seqs(0).is_empty());
}

#[tokio::test]
async fn nodes_get_their_own_bundles_and_the_pair_keys_agree() {
    let f = fixture().await;
    for (n, score) in [(0, "0.90"), (1, "0.85"), (2, "0.40")] {
        assert_eq!(f.submit(n, score, 1).await, StatusCode::CREATED);
    }
    f.engine.step().unwrap();
    let mut bundles = Vec::new();
    for node in &f.nodes {
        let path = format!("/v1/config/{}", &node.id);
        let req = signed("GET", &path, "", &node.identity, &node.id, f.now());
        let (status, body) = f.request(req).await;
        assert_eq!(status, StatusCode::OK);
        let signed: SignedBundle = serde_json::from_slice(&body).unwrap();
        bundles.push(signed.verify(&f.key.public()).unwrap());
    }
    let (a, b, c) = (&bundles[0], &bundles[1], &bundles[2]);
    assert_eq!(a.membership, Membership::Allowed);
    assert_eq!(a.peers.len(), 1);
    assert_eq!(a.peers[0].node_id, "node-b");
    assert!(matches!(&c.membership, Membership::Denied { reason } if reason.contains("0.40")));
    assert!(c.peers.is_empty());
    let psk_ab = Opener::new(&f.nodes[0].wg, &a.seal_key.unwrap())
        .open(0, a.epoch, &a.peers[0])
        .unwrap();
    let psk_ba = Opener::new(&f.nodes[1].wg, &b.seal_key.unwrap())
        .open(0, b.epoch, &b.peers[0])
        .unwrap();
    assert_eq!(psk_ab, psk_ba);

    // Long-poll: nothing newer than the current epoch yet.
    let path = format!("/v1/config/node-a?after={}", a.epoch);
    let req = signed("GET", &path, "", &f.nodes[0].identity, "node-a", f.now());
    assert_eq!(f.request(req).await.0, StatusCode::NOT_MODIFIED);
    // Admin rotation needs the token, then the long-poll answers at once.
    let bad = Request::post("/v1/rotate")
        .header("authorization", "Bearer wrong")
        .body(Body::empty())
        .unwrap();
    assert_eq!(f.request(bad).await.0, StatusCode::UNAUTHORIZED);
    let good = Request::post("/v1/rotate")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(f.request(good).await.0, StatusCode::OK);
    let req = signed("GET", &path, "", &f.nodes[0].identity, "node-a", f.now());
    let (status, body) = f.request(req).await;
    assert_eq!(status, StatusCode::OK);
    let newer = serde_json::from_slice::<SignedBundle>(&body)
        .unwrap()
        .verify(&f.key.public())
        .unwrap();
    assert_eq!(
        vec![newer.epoch],
        f.epochs_after(a.epoch),
        "the rotated epoch"
    );
}

#[tokio::test]
async fn a_failing_node_is_removed_by_an_immediate_rotation() {
    let f = fixture().await;
    for n in 0..3 {
        assert_eq!(f.submit(n, "0.9", 1).await, StatusCode::CREATED);
    }
    f.engine.step().unwrap();
    let first = f.engine.epoch_info().unwrap().current.epoch;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(f.engine.clone().run(async move {
        let _ = stopped.await;
    }));
    assert_eq!(f.submit(2, "0.3", 2).await, StatusCode::CREATED);
    // The engine checks within its debounce interval of the benchmark.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while f.engine.epoch_info().unwrap().current.epoch == first
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    running.await.unwrap();
    let info = f.engine.epoch_info().unwrap();
    assert_eq!(
        vec![info.current.epoch],
        f.epochs_after(first),
        "rotate_on_deny published one new epoch within 2 s"
    );
    let decisions = f.engine.current_decisions();
    let c = decisions.iter().find(|d| d.node_id == "node-c").unwrap();
    assert!(!c.allowed);
}

#[tokio::test]
async fn status_and_metrics_hold_no_secret() {
    let f = fixture().await;
    f.submit(0, "0.9", 1).await;
    f.engine.step().unwrap();
    let epoch = f.engine.store().latest_epochs(1).unwrap().remove(0);
    let secret_hex = epoch.secret.to_hex();
    for path in ["/v1/status", "/metrics", "/v1/epoch", "/health"] {
        let request = Request::get(path).body(Body::empty()).unwrap();
        let (status, body) = if path.starts_with("/v1/epoch") {
            f.request(request).await
        } else {
            f.status_request(request).await
        };
        assert_eq!(status, StatusCode::OK, "{path}");
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains(&secret_hex), "{path} leaks the epoch secret");
        assert!(
            !text.contains(&f.key.to_base64()),
            "{path} leaks the controller key"
        );
    }
    let (_, body) = f
        .status_request(Request::get("/v1/status").body(Body::empty()).unwrap())
        .await;
    let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status["nodes"]["node-a"]["membership"], "ALLOWED");
    assert_eq!(status["nodes"]["node-b"]["membership"], "DENIED");
}

/// #11: the inventory (node ids, WireGuard keys, endpoints) and the metrics are not served
/// to anyone on the API listener: they need the read token (or the admin token) there.
#[tokio::test]
async fn status_and_metrics_need_a_token_on_the_api_listener_11() {
    let f = fixture().await;
    f.submit(0, "0.9", 1).await;
    f.engine.step().unwrap();
    let wg_key = f.nodes[0].wg.public_key().to_base64();
    for path in ["/v1/status", "/metrics"] {
        for bearer in [None, Some("wrong"), Some("")] {
            let mut req = Request::get(path);
            if let Some(token) = bearer {
                req = req.header("authorization", format!("Bearer {token}"));
            }
            let (status, body) = f.request(req.body(Body::empty()).unwrap()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} with {bearer:?}");
            let text = String::from_utf8_lossy(&body);
            assert!(
                !text.contains(&wg_key),
                "{path} leaks a WireGuard key: {text}"
            );
            assert!(!text.contains("node-a"), "{path} leaks a node id: {text}");
        }
        for token in [READ_TOKEN, TOKEN] {
            let req = Request::get(path).header("authorization", format!("Bearer {token}"));
            let (status, _) = f.request(req.body(Body::empty()).unwrap()).await;
            assert_eq!(status, StatusCode::OK, "{path} with a valid token");
        }
    }
}

/// #24: a benchmark signed over its path and a query string is stored, and the audit log
/// verifies it, instead of failing in the store with a 500 after spending the nonce.
#[tokio::test]
async fn a_benchmark_with_a_query_string_is_stored_and_verifies_24() {
    let f = fixture().await;
    let node = &f.nodes[0];
    let path = "/v1/benchmarks/node-a?via=proxy";
    let req = signed(
        "POST",
        path,
        &bench_body("0.9", 1, f.now()),
        &node.identity,
        &node.id,
        f.now(),
    );
    let (status, body) = f.request(req).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(f.stored_seqs(0), vec![1]);
    f.engine
        .store()
        .verify_audit(f.engine.answers_to())
        .unwrap();
}

/// #17: `node remove` of an allowed node rotates at once (the engine rereads the nodes),
/// so the removed node leaves every bundle within a second, like a deny.
#[tokio::test]
async fn removing_an_allowed_node_rotates_at_once_17() {
    let f = fixture().await;
    for n in 0..3 {
        assert_eq!(f.submit(n, "0.9", 1).await, StatusCode::CREATED);
    }
    f.engine.step().unwrap();
    let first = f.engine.epoch_info().unwrap().current.epoch;
    assert!(f.engine.remove_node("node-c").unwrap());
    let rotated = f.engine.check_deny().unwrap();
    assert_eq!(
        rotated.map(|id| vec![id]),
        Some(f.epochs_after(first)),
        "no immediate epoch after the removal"
    );
    let rotated = rotated.unwrap();
    let decisions = f.engine.current_decisions();
    assert!(decisions.iter().all(|d| d.node_id != "node-c"));
    // node-a's bundle of the new epoch no longer lists node-c.
    let path = format!("/v1/config/node-a?after={first}");
    let a = &f.nodes[0];
    let req = signed("GET", &path, "", &a.identity, &a.id, f.now());
    let (status, body) = f.request(req).await;
    assert_eq!(status, StatusCode::OK);
    let bundle: SignedBundle = serde_json::from_slice(&body).unwrap();
    let bundle = bundle.verify(&f.key.public()).unwrap();
    assert_eq!(bundle.epoch, rotated);
    assert_eq!(bundle.peers.len(), 1, "only node-b is left");
}
