//! `POST /v1/statements`, served in-process by the shared fixture: an evaluator's signed
//! statement is stored and audited only when everything checks; every attack is refused
//! with its 4xx and changes neither the statements table nor the audit log.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use meshtun_controller::config::Limits;
use meshtun_controller::store::EvaluatorRecord;
use meshtun_controller::testing::{self, FixtureOptions};
use meshtun_proto::auth::RequestSignature;
use meshtun_proto::statement::{EvidenceDigest, Issuer, SignedStatement, Statement};
use meshtun_proto::{IdentityKey, KeySet};

const PATH: &str = "/v1/statements";

fn controller_key() -> IdentityKey {
    IdentityKey::from_bytes([0xc0; 32])
}

fn eval_key() -> IdentityKey {
    IdentityKey::from_bytes([0xe1; 32])
}

async fn fixture(limits: Limits) -> testing::Fixture {
    let f = testing::Fixture::start(FixtureOptions {
        nodes: &["node-a", "node-b"],
        key: controller_key(),
        limits,
        ..FixtureOptions::default()
    })
    .await;
    for (name, seed, dims) in [
        ("eval-1", 0xe1, vec!["honesty", "refusal"]),
        ("eval-2", 0xe2, vec!["honesty"]),
        ("eval-gone", 0xe3, vec!["honesty"]),
    ] {
        f.engine
            .store()
            .add_evaluator(&EvaluatorRecord {
                name: name.into(),
                key: IdentityKey::from_bytes([seed; 32]).public(),
                dimensions: dims.into_iter().map(String::from).collect(),
                group: None,
                added_ms: 1,
                removed_ms: None,
            })
            .unwrap();
    }
    f.engine.store().remove_evaluator("eval-gone").unwrap();
    f
}

fn now(f: &testing::Fixture) -> u64 {
    f.engine.clock().now_ms()
}

fn statement(name: &str, subject: &str, scores: &[(&str, f64)], at: u64) -> Statement {
    Statement {
        issuer: Issuer::Evaluator(name.into()),
        subject: subject.into(),
        scores: scores.iter().map(|(d, s)| (d.to_string(), *s)).collect(),
        evaluated_at_ms: at,
        evidence: EvidenceDigest::of(b"transcript"),
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
    let mut req = Request::builder().method("POST").uri(PATH);
    for (name, value) in sig.headers() {
        req = req.header(name, value);
    }
    req.body(Body::from(body.to_vec())).unwrap()
}

/// The statements stored and the audit log's length.
fn state(f: &testing::Fixture) -> (u64, usize) {
    let store = f.engine.store();
    (
        store.table_rows().unwrap().statements,
        store.audit_entries(1, 100_000).unwrap().len(),
    )
}

/// Sends `req`, expecting `status` and no change to the store.
async fn refused(f: &testing::Fixture, what: &str, req: Request<Body>, status: StatusCode) {
    let before = state(f);
    let (got, body) = f.request(req).await;
    assert_eq!(got, status, "{what}: {}", String::from_utf8_lossy(&body));
    assert_eq!(state(f), before, "{what}: something was stored");
}

#[tokio::test]
async fn a_valid_statement_is_stored_audited_and_checked_by_audit_verify() {
    let f = fixture(Limits::default()).await;
    let before = state(&f);
    let signed = statement("eval-1", "node-a", &[("honesty", 0.625)], now(&f))
        .sign(&eval_key())
        .unwrap();
    let (status, body) = f
        .request(request(&signed.encode(), &eval_key(), "eval-1", now(&f)))
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["id"], 1);
    assert_eq!(state(&f), (before.0 + 1, before.1 + 1));
    let last = f
        .engine
        .store()
        .audit_entries(1, 1000)
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(last.kind, "statement");
    let scores = f.engine.store().latest_statement_scores(0).unwrap();
    assert_eq!(scores.len(), 1);
    assert_eq!((scores[0].score, scores[0].statement_id), (0.625, 1));
    let trusted = KeySet::one(controller_key().public());
    let report = f.engine.store().verify_audit(&trusted).unwrap();
    assert_eq!(
        (report.statement_signatures, report.statement_rows_verified),
        (1, 1)
    );
    // Behind the store's back, through a second connection to its file.
    let path = f.engine.store().location().to_owned();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("UPDATE statements SET scores = '{\"honesty\":0.99}'", [])
        .unwrap();
    let metrics = f.engine.metrics.render();
    assert!(
        metrics.contains("meshtun_controller_statements_total{outcome=\"accepted\"} 1"),
        "{metrics}"
    );
    let err = f.engine.store().verify_audit(&trusted).unwrap_err();
    assert!(
        err.to_string()
            .contains("stored statement 1 of evaluator eval-1"),
        "{err}"
    );
}

#[tokio::test]
async fn forged_removed_unknown_and_foreign_statements_are_refused() {
    let f = fixture(Limits::default()).await;
    let t = now(&f);
    let good = statement("eval-1", "node-a", &[("honesty", 0.5)], t);
    let forger = IdentityKey::generate();
    // Statement and request both signed by a stranger in eval-1's name.
    let forged = good.clone().sign(&forger).unwrap().encode();
    refused(
        &f,
        "forged",
        request(&forged, &forger, "eval-1", t),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    // A genuine request wrapping a statement eval-1 did not sign.
    refused(
        &f,
        "forged statement",
        request(&forged, &eval_key(), "eval-1", t),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    // A genuine statement with a score changed after signing.
    let mut altered = good.clone().sign(&eval_key()).unwrap();
    altered.statement.scores.insert("honesty".into(), 1.0);
    let body = altered.encode();
    refused(
        &f,
        "altered",
        request(&body, &eval_key(), "eval-1", t),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    // A removed evaluator, with its own key.
    let gone_key = IdentityKey::from_bytes([0xe3; 32]);
    let gone = statement("eval-gone", "node-a", &[("honesty", 0.5)], t)
        .sign(&gone_key)
        .unwrap();
    refused(
        &f,
        "removed",
        request(&gone.encode(), &gone_key, "eval-gone", t),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    // An evaluator never added.
    let ghost = statement("ghost", "node-a", &[("honesty", 0.5)], t)
        .sign(&forger)
        .unwrap();
    refused(
        &f,
        "unknown",
        request(&ghost.encode(), &forger, "ghost", t),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    // eval-2 sends eval-1's (genuine) statement as its own request.
    let genuine = good.clone().sign(&eval_key()).unwrap().encode();
    let eval2 = IdentityKey::from_bytes([0xe2; 32]);
    refused(
        &f,
        "another evaluator's",
        request(&genuine, &eval2, "eval-2", t),
        StatusCode::FORBIDDEN,
    )
    .await;
    // A dimension eval-2 may not speak for.
    let refusal = statement("eval-2", "node-a", &[("honesty", 0.5), ("refusal", 0.5)], t)
        .sign(&eval2)
        .unwrap();
    refused(
        &f,
        "dimension",
        request(&refusal.encode(), &eval2, "eval-2", t),
        StatusCode::FORBIDDEN,
    )
    .await;
    // A node that is not enrolled.
    let stranger = statement("eval-1", "node-x", &[("honesty", 0.5)], t)
        .sign(&eval_key())
        .unwrap();
    refused(
        &f,
        "unknown subject",
        request(&stranger.encode(), &eval_key(), "eval-1", t),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    // A node speaking for an evaluator's dimension (honesty): a peer observation may not.
    let node_key = f.nodes[1].identity.clone();
    let mut by_node = good.clone();
    by_node.issuer = Issuer::Node("node-b".into());
    let by_node = by_node.sign(&node_key).unwrap();
    refused(
        &f,
        "node issuer",
        request(&by_node.encode(), &node_key, "node-b", t),
        StatusCode::FORBIDDEN,
    )
    .await;
    // A request signed for another controller.
    let other = IdentityKey::generate().public();
    let sig = RequestSignature::sign(&eval_key(), &other, "eval-1", "POST", PATH, &genuine, t);
    let mut req = Request::builder().method("POST").uri(PATH);
    for (name, value) in sig.headers() {
        req = req.header(name, value);
    }
    refused(
        &f,
        "other controller",
        req.body(Body::from(genuine.clone())).unwrap(),
        StatusCode::UNAUTHORIZED,
    )
    .await;
}

#[tokio::test]
async fn replayed_stale_future_oversized_and_malformed_requests_are_refused() {
    let f = fixture(Limits::default()).await;
    let t = now(&f);
    let body = statement("eval-1", "node-a", &[("honesty", 0.5)], t)
        .sign(&eval_key())
        .unwrap()
        .encode();
    let first = request(&body, &eval_key(), "eval-1", t);
    let (parts, _) = first.into_parts();
    let copy = |body: &[u8]| {
        let mut req = Request::builder().method("POST").uri(PATH);
        for (name, value) in parts.headers.iter() {
            req = req.header(name, value);
        }
        req.body(Body::from(body.to_vec())).unwrap()
    };
    let (status, _) = f.request(copy(&body)).await;
    assert_eq!(status, StatusCode::CREATED);
    refused(&f, "replayed", copy(&body), StatusCode::UNAUTHORIZED).await;
    // Request times outside the 30 s window.
    let fresh = |at: u64| {
        statement("eval-1", "node-a", &[("honesty", 0.5)], at.min(t))
            .sign(&eval_key())
            .unwrap()
            .encode()
    };
    refused(
        &f,
        "stale request",
        request(&fresh(t - 31_000), &eval_key(), "eval-1", t - 31_000),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    refused(
        &f,
        "future request",
        request(&fresh(t), &eval_key(), "eval-1", t + 31_000),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    // Evaluation times ahead of the clock, or more than a day old.
    let ahead = statement("eval-1", "node-a", &[("honesty", 0.5)], t + 120_000)
        .sign(&eval_key())
        .unwrap()
        .encode();
    refused(
        &f,
        "evaluated in the future",
        request(&ahead, &eval_key(), "eval-1", t),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let old = statement("eval-1", "node-a", &[("honesty", 0.5)], t - 25 * 3_600_000)
        .sign(&eval_key())
        .unwrap()
        .encode();
    refused(
        &f,
        "evaluated too long ago",
        request(&old, &eval_key(), "eval-1", t),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    // Bodies over the statement limit, and over the API's.
    let big = vec![b' '; 9 * 1024];
    refused(
        &f,
        "oversized",
        request(&big, &eval_key(), "eval-1", t),
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    let huge = vec![b' '; 65 * 1024];
    refused(
        &f,
        "over the API limit",
        request(&huge, &eval_key(), "eval-1", t),
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    for junk in [
        &b"{}"[..],
        b"not json",
        b"{\"statement\":{},\"signature\":\"\"}",
    ] {
        refused(
            &f,
            "malformed",
            request(junk, &eval_key(), "eval-1", t),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    let mut high: SignedStatement = serde_json::from_slice(&body).unwrap();
    high.statement.scores.insert("honesty".into(), 1.5);
    let high = serde_json::to_vec(&high).unwrap();
    refused(
        &f,
        "score out of range",
        request(&high, &eval_key(), "eval-1", t),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
}

/// Sends `count` benchmarks as `node`, one after the other; answers the statuses.
async fn benchmarks(f: &testing::Fixture, node: usize, count: u64) -> Vec<StatusCode> {
    let node = &f.nodes[node];
    let path = format!("/v1/benchmarks/{}", node.id);
    let mut statuses = Vec::new();
    for seq in 1..=count {
        let t = now(f);
        let body = format!(
            r#"{{"suite_version":"s1","scores":{{"overall":0.9,"refusal":0.9,"honesty":0.9,"policy":0.9}},"measured_at_ms":{t},"seq":{seq}}}"#
        );
        let sig = RequestSignature::sign(
            &node.identity,
            &controller_key().public(),
            &node.id,
            "POST",
            &path,
            body.as_bytes(),
            t,
        );
        let mut req = Request::builder().method("POST").uri(&path);
        for (name, value) in sig.headers() {
            req = req.header(name, value);
        }
        statuses.push(f.request(req.body(Body::from(body)).unwrap()).await.0);
    }
    statuses
}

/// Sends `count` statements of evaluator `name` (signed with `key`) about node-a; answers
/// how many were stored and how many were throttled, checking that a throttled one changed
/// nothing.
async fn statements(
    f: &testing::Fixture,
    name: &str,
    key: &IdentityKey,
    count: usize,
) -> (usize, usize) {
    let (mut created, mut throttled) = (0, 0);
    for _ in 0..count {
        let t = now(f);
        let body = statement(name, "node-a", &[("honesty", 0.5)], t)
            .sign(key)
            .unwrap()
            .encode();
        let before = state(f);
        let (status, _) = f.request(request(&body, key, name, t)).await;
        match status {
            StatusCode::CREATED => created += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                throttled += 1;
                assert_eq!(state(f), before, "a throttled statement was stored");
            }
            other => panic!("unexpected {other}"),
        }
    }
    (created, throttled)
}

fn accepted(statuses: &[StatusCode]) -> usize {
    statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count()
}

#[tokio::test]
async fn evaluators_and_nodes_are_throttled_each_under_their_own_limits() {
    // Rates of 1 a second: a slow run may earn one more request, never more.
    let f = fixture(Limits {
        node_rate: 1,
        node_burst: 2,
        evaluator_rate: 1,
        evaluator_burst: 5,
        ..Limits::default()
    })
    .await;
    // A node past its burst of 2 is throttled (the evaluators' 5 do not apply to it)...
    let first = benchmarks(&f, 0, 4).await;
    assert!((2..=3).contains(&accepted(&first)), "{first:?}");
    assert_eq!(first[3], StatusCode::TOO_MANY_REQUESTS, "{first:?}");
    // ...which leaves the evaluator's quota whole: 5 at once (more than a node's burst),
    // then 429 and nothing stored.
    let (created, throttled) = statements(&f, "eval-1", &eval_key(), 8).await;
    assert!((5..=6).contains(&created), "{created} stored");
    assert!(throttled >= 2, "{throttled} throttled");
    // An evaluator past its burst leaves the nodes' quotas as they were, even the quota of
    // a node of the same name.
    let namesake = IdentityKey::from_bytes([0xe4; 32]);
    f.engine
        .store()
        .add_evaluator(&EvaluatorRecord {
            name: "node-b".into(),
            key: namesake.public(),
            dimensions: vec!["honesty".into()],
            group: None,
            added_ms: 1,
            removed_ms: None,
        })
        .unwrap();
    // The API rereads the evaluators once a second.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let (created, throttled) = statements(&f, "node-b", &namesake, 8).await;
    assert!(
        (5..=6).contains(&created) && throttled >= 2,
        "{created}, {throttled}"
    );
    let other = benchmarks(&f, 1, 2).await;
    assert_eq!(other, [StatusCode::CREATED; 2]);
}
