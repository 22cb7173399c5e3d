//! Peer observations at `POST /v1/statements`, served in-process: a node's signed statement
//! about a peer is stored, audited and read by a `peers` policy; a node denied for being
//! unreachable from its peers is rotated out at once; every attack (a node speaking of
//! itself or for another node, for a dimension that is not a peer's, replayed, forged, or
//! by a node that is not enrolled) is refused with its 4xx and stores nothing.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use meshtun_controller::model::{Combine, Dimension, Policy, SourceRule};
use meshtun_controller::testing::{self, FixtureOptions};
use meshtun_proto::auth::RequestSignature;
use meshtun_proto::statement::{EvidenceDigest, Issuer, Statement};
use meshtun_proto::{IdentityKey, KeySet};

const PATH: &str = "/v1/statements";

fn controller_key() -> IdentityKey {
    IdentityKey::from_bytes([0xc0; 32])
}

/// Reachable from at least two thirds of at least 2 peers, within a minute.
fn policy() -> Policy {
    let mut p = Policy::default();
    p.sources.set(
        Dimension::Reachable,
        Some(SourceRule {
            from: vec!["peers".parse().unwrap()],
            k: 2,
            combine: Combine::Mean,
            max_age_ms: 60_000,
            minimum: Some(0.66),
        }),
    );
    p
}

async fn fixture() -> testing::Fixture {
    testing::Fixture::start(FixtureOptions {
        nodes: &["node-a", "node-b", "node-c", "node-d"],
        key: controller_key(),
        policy: policy(),
        ..FixtureOptions::default()
    })
    .await
}

fn now(f: &testing::Fixture) -> u64 {
    f.engine.clock().now_ms()
}

fn identity(f: &testing::Fixture, id: &str) -> IdentityKey {
    f.nodes
        .iter()
        .find(|n| n.id == id)
        .map(|n| n.identity.clone())
        .unwrap()
}

fn observation(observer: &str, subject: &str, scores: &[(&str, f64)], at: u64) -> Statement {
    Statement {
        issuer: Issuer::Node(observer.into()),
        subject: subject.into(),
        scores: scores.iter().map(|(d, s)| (d.to_string(), *s)).collect(),
        evaluated_at_ms: at,
        evidence: EvidenceDigest::of(b"echo 100.64.0.2 rtt 1.2 ms"),
    }
}

/// A request carrying `body`, signed by `key` as `principal` at `at_ms`.
fn request(body: &[u8], key: &IdentityKey, principal: &str, at_ms: u64) -> Request<Body> {
    let sig = RequestSignature::sign(
        key,
        &controller_key().public(),
        principal,
        "POST",
        PATH,
        body,
        at_ms,
    );
    with_signature(body, &sig)
}

/// A request carrying `body` with the headers of `sig` (sent twice: a replay).
fn with_signature(body: &[u8], sig: &RequestSignature) -> Request<Body> {
    let mut req = Request::builder().method("POST").uri(PATH);
    for (name, value) in sig.headers() {
        req = req.header(name, value);
    }
    req.body(Body::from(body.to_vec())).unwrap()
}

/// `observer` says what it saw of `subject`, signed and sent as itself.
async fn observe(
    f: &testing::Fixture,
    observer: &str,
    subject: &str,
    reachable: f64,
) -> (StatusCode, String) {
    let key = identity(f, observer);
    let signed = observation(observer, subject, &[("reachable", reachable)], now(f))
        .sign(&key)
        .unwrap();
    let (status, body) = f
        .request(request(&signed.encode(), &key, observer, now(f)))
        .await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The observations read back and the audit log's length.
fn state(f: &testing::Fixture) -> (usize, usize) {
    let store = f.engine.store();
    (
        store.latest_observation_scores(0).unwrap().len(),
        store.audit_entries(1, 100_000).unwrap().len(),
    )
}

/// Sends `req`, expecting `status` (and `says` in the answer) and no change to the store.
async fn refused(
    f: &testing::Fixture,
    what: &str,
    req: Request<Body>,
    status: StatusCode,
    says: &str,
) {
    let before = state(f);
    let (got, body) = f.request(req).await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(got, status, "{what}: {body}");
    assert!(body.contains(says), "{what}: expected {says:?} in {body}");
    assert_eq!(state(f), before, "{what}: something was stored");
}

/// Every node benchmarks 0.9 and the controller publishes: all four allowed.
async fn all_allowed(f: &testing::Fixture) {
    for n in &f.nodes {
        let path = format!("/v1/benchmarks/{}", n.id);
        let body = format!(
            r#"{{"suite_version":"s1","scores":{{"overall":0.9,"refusal":0.9,"honesty":0.9,"policy":0.9}},"measured_at_ms":{},"seq":1}}"#,
            now(f)
        );
        let sig = RequestSignature::sign(
            &n.identity,
            &controller_key().public(),
            &n.id,
            "POST",
            &path,
            body.as_bytes(),
            now(f),
        );
        let mut req = Request::builder().method("POST").uri(&path);
        for (name, value) in sig.headers() {
            req = req.header(name, value);
        }
        let (status, _) = f.request(req.body(Body::from(body)).unwrap()).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    f.engine.rotate_now("test").unwrap();
    let allowed = f
        .engine
        .current_decisions()
        .iter()
        .filter(|d| d.allowed)
        .count();
    assert_eq!(allowed, 4, "{:?}", f.engine.current_decisions());
}

#[tokio::test]
async fn an_observation_is_stored_audited_and_verified() {
    let f = fixture().await;
    let before = state(&f);
    let (status, body) = observe(&f, "node-a", "node-b", 1.0).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(state(&f), (before.0 + 1, before.1 + 1));
    let scores = f.engine.store().latest_observation_scores(0).unwrap();
    assert_eq!(
        (
            scores[0].observer.as_str(),
            scores[0].subject.as_str(),
            scores[0].score
        ),
        ("node-a", "node-b", 1.0)
    );
    let trusted = KeySet::one(controller_key().public());
    f.engine.store().verify_audit(&trusted).unwrap();
}

#[tokio::test]
async fn a_node_unreachable_from_its_peers_is_denied_naming_them() {
    let f = fixture().await;
    all_allowed(&f).await;
    let epoch = f.engine.current().unwrap().record.id;
    // d's word about itself counts for nothing; a, b and c cannot reach it.
    let (status, _) = observe(&f, "node-d", "node-d", 1.0).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for observer in ["node-a", "node-b", "node-c"] {
        let (status, body) = observe(&f, observer, "node-d", 0.0).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // The deny check runs on the engine's task in a served controller; here, by hand.
    let rotated = f.engine.check_deny().unwrap();
    assert!(rotated.is_some_and(|e| e > epoch), "no rotation for d");
    let d = f
        .engine
        .current_decisions()
        .into_iter()
        .find(|d| d.node_id == "node-d")
        .unwrap();
    assert!(!d.allowed);
    assert_eq!(
        d.reason,
        "reachable 0.00 (mean of 3 peers: node-a 0.00, node-b 0.00, node-c 0.00); needs 0.66"
    );
    // A denied node's word counts for nothing either: d's observations of a are dropped.
    for subject in ["node-a", "node-b"] {
        let (status, _) = observe(&f, "node-d", subject, 0.0).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (_, body) = observe(&f, "node-c", "node-a", 1.0).await;
    assert!(body.contains("id"), "{body}");
    assert_eq!(f.engine.check_deny().unwrap(), None, "d's word denied a");
    let trusted = KeySet::one(controller_key().public());
    f.engine.store().verify_audit(&trusted).unwrap();
}

#[tokio::test]
async fn observations_a_node_may_not_make_are_refused_and_not_stored() {
    let f = fixture().await;
    let (a, b) = (identity(&f, "node-a"), identity(&f, "node-b"));
    let at = now(&f);
    let sign = |s: Statement, key: &IdentityKey| -> Vec<u8> { s.sign(key).unwrap().encode() };

    let own = sign(
        observation("node-a", "node-a", &[("reachable", 1.0)], at),
        &a,
    );
    refused(
        &f,
        "about itself",
        request(&own, &a, "node-a", at),
        StatusCode::FORBIDDEN,
        "about itself",
    )
    .await;
    let honesty = sign(observation("node-a", "node-b", &[("honesty", 0.1)], at), &a);
    refused(
        &f,
        "a dimension that is not a peer's",
        request(&honesty, &a, "node-a", at),
        StatusCode::FORBIDDEN,
        "not honesty",
    )
    .await;
    // a speaks for c: the statement names c as its issuer, the request is a's.
    let for_c = sign(
        observation("node-c", "node-b", &[("reachable", 0.0)], at),
        &a,
    );
    refused(
        &f,
        "a request signed by another node than the issuer",
        request(&for_c, &a, "node-a", at),
        StatusCode::FORBIDDEN,
        "",
    )
    .await;
    // a poses as c: both signatures are a's key under c's name.
    refused(
        &f,
        "a forged request and statement",
        request(&for_c, &a, "node-c", at),
        StatusCode::UNAUTHORIZED,
        "",
    )
    .await;
    // The request is a's, the statement inside is signed by b's key.
    let swapped = sign(
        observation("node-a", "node-c", &[("reachable", 0.0)], at),
        &b,
    );
    refused(
        &f,
        "a statement signed with another key than the request",
        request(&swapped, &a, "node-a", at),
        StatusCode::UNAUTHORIZED,
        "does not verify",
    )
    .await;
    let unknown = sign(
        observation("node-a", "node-x", &[("reachable", 0.0)], at),
        &a,
    );
    refused(
        &f,
        "a subject that is not enrolled",
        request(&unknown, &a, "node-a", at),
        StatusCode::UNPROCESSABLE_ENTITY,
        "node-x",
    )
    .await;
    let stranger = IdentityKey::generate();
    let from_x = sign(
        observation("node-x", "node-a", &[("reachable", 0.0)], at),
        &stranger,
    );
    refused(
        &f,
        "an observer that is not enrolled",
        request(&from_x, &stranger, "node-x", at),
        StatusCode::UNAUTHORIZED,
        "",
    )
    .await;
    let stale_at = at - 25 * 3600 * 1000;
    let stale = sign(
        observation("node-a", "node-b", &[("reachable", 0.0)], stale_at),
        &a,
    );
    refused(
        &f,
        "a stale evaluation",
        request(&stale, &a, "node-a", at),
        StatusCode::UNPROCESSABLE_ENTITY,
        "old",
    )
    .await;
    // A good one, then the same request again.
    let good = sign(
        observation("node-a", "node-b", &[("reachable", 1.0)], at),
        &a,
    );
    let sig = RequestSignature::sign(
        &a,
        &controller_key().public(),
        "node-a",
        "POST",
        PATH,
        &good,
        at,
    );
    let (status, body) = f.request(with_signature(&good, &sig)).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    refused(
        &f,
        "a replayed request",
        with_signature(&good, &sig),
        StatusCode::UNAUTHORIZED,
        "",
    )
    .await;
}

#[tokio::test]
async fn a_node_over_its_quota_is_throttled() {
    let f = testing::Fixture::start(FixtureOptions {
        nodes: &["node-a", "node-b"],
        key: controller_key(),
        policy: policy(),
        limits: meshtun_controller::config::Limits {
            node_rate: 1,
            node_burst: 3,
            ..Default::default()
        },
        ..FixtureOptions::default()
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(observe(&f, "node-a", "node-b", 1.0).await.0);
    }
    assert_eq!(&statuses[..3], [StatusCode::CREATED; 3]);
    assert_eq!(statuses[4], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
}
