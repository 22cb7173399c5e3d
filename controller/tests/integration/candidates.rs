//! Candidate endpoints over the API: a node's signed report reaches its peers' bundles
//! (pinned endpoint first, then the report, then where it came from); a report for another
//! node, a forged or replayed one, and hostile candidates are refused and change nothing.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use meshtun_controller::testing::{self, FixtureOptions};
use meshtun_proto::auth::RequestSignature;
use meshtun_proto::bundle::SignedBundle;
use meshtun_proto::IdentityKey;

fn controller_key() -> IdentityKey {
    IdentityKey::from_bytes([0xc0; 32])
}

fn signed(
    method: &str,
    path: &str,
    body: &str,
    signer: &IdentityKey,
    node: &str,
    at: u64,
) -> Request<Body> {
    let sig = RequestSignature::sign(
        signer,
        &controller_key().public(),
        node,
        method,
        path,
        body.as_bytes(),
        at,
    );
    let mut req = Request::builder().method(method).uri(path);
    for (name, value) in sig.headers() {
        req = req.header(name, value);
    }
    req.body(Body::from(body.to_owned())).unwrap()
}

async fn fixture() -> testing::Fixture {
    testing::Fixture::start(FixtureOptions {
        nodes: &["node-a", "node-b"],
        key: controller_key(),
        admin_token: "admin-token-for-tests",
        ..FixtureOptions::default()
    })
    .await
}

fn report(candidates: &[&str]) -> String {
    let list: Vec<String> = candidates.iter().map(|c| format!("\"{c}\"")).collect();
    format!(
        "{{\"candidates\":[{}],\"listen_port\":51820}}",
        list.join(",")
    )
}

/// A report `body` for `as_node`, signed by `signer`; the answer's status.
async fn put(f: &testing::Fixture, as_node: &str, signer: &IdentityKey, body: &str) -> StatusCode {
    let path = format!("/v1/candidates/{as_node}");
    let now = f.engine.clock().now_ms();
    f.request(signed("PUT", &path, body, signer, as_node, now))
        .await
        .0
}

/// node-b's view of node-a's candidates in its bundle for the newest epoch.
async fn candidates_of_a_seen_by_b(f: &testing::Fixture) -> Vec<String> {
    let b = &f.nodes[1];
    for n in 0..2 {
        let node = &f.nodes[n];
        let body = format!(
            r#"{{"suite_version":"s1","scores":{{"overall":0.9,"refusal":0.9,"honesty":0.9,"policy":0.9}},"measured_at_ms":{},"seq":{}}}"#,
            f.engine.clock().now_ms(),
            f.engine.clock().now_ms()
        );
        let path = format!("/v1/benchmarks/{}", node.id);
        let req = signed(
            "POST",
            &path,
            &body,
            &node.identity,
            &node.id,
            f.engine.clock().now_ms(),
        );
        assert_eq!(f.request(req).await.0, StatusCode::CREATED);
    }
    f.engine.step().unwrap();
    let rotate = Request::post("/v1/rotate")
        .header("authorization", "Bearer admin-token-for-tests")
        .body(Body::empty())
        .unwrap();
    assert_eq!(f.request(rotate).await.0, StatusCode::OK);
    let path = format!("/v1/config/{}", b.id);
    let req = signed(
        "GET",
        &path,
        "",
        &b.identity,
        &b.id,
        f.engine.clock().now_ms(),
    );
    let (status, body) = f.request(req).await;
    assert_eq!(status, StatusCode::OK);
    let bundle = serde_json::from_slice::<SignedBundle>(&body)
        .unwrap()
        .verify(&controller_key().public())
        .unwrap();
    let a = bundle
        .peers
        .iter()
        .find(|p| p.node_id == "node-a")
        .expect("node-a is b's peer");
    a.candidates.clone()
}

#[tokio::test]
async fn a_report_reaches_the_peers_bundles_after_the_pinned_endpoint() {
    let f = fixture().await;
    let a = f.nodes[0].clone();
    let body = report(&["198.51.100.1:40001", "[2001:db8::1]:51820"]);
    assert_eq!(
        put(&f, "node-a", &a.identity, &body).await,
        StatusCode::NO_CONTENT
    );
    let listed = candidates_of_a_seen_by_b(&f).await;
    // The fixture pins node-a at 192.0.2.1:51820; the report comes from 127.0.0.1, which
    // no peer could use, so no observed candidate is added.
    assert_eq!(
        listed,
        [
            "192.0.2.1:51820",
            "198.51.100.1:40001",
            "[2001:db8::1]:51820"
        ]
    );
    let stored = f.engine.store().candidates().unwrap();
    assert_eq!(
        stored["node-a"].observed, "",
        "loopback is never a candidate"
    );
}

/// What a hostile member or an outsider might send: each refused, nothing stored.
#[tokio::test]
async fn attack_foreign_forged_replayed_and_hostile_reports_change_nothing() {
    let f = fixture().await;
    let (a, b) = (f.nodes[0].clone(), f.nodes[1].clone());
    let good = report(&["198.51.100.1:40001"]);
    // node-b signing a report for node-a.
    assert_eq!(
        put(&f, "node-a", &b.identity, &good).await,
        StatusCode::UNAUTHORIZED
    );
    // A request for node-a's path signed as node-b.
    let now = f.engine.clock().now_ms();
    let cross = signed(
        "PUT",
        "/v1/candidates/node-a",
        &good,
        &b.identity,
        "node-b",
        now,
    );
    assert_eq!(f.request(cross).await.0, StatusCode::FORBIDDEN);
    // Hostile candidates: loopback (the peers themselves), broadcast, too many, names.
    for body in [
        report(&["127.0.0.1:51820"]),
        report(&["255.255.255.255:51820"]),
        report(&[
            "192.0.2.1:1",
            "192.0.2.2:1",
            "192.0.2.3:1",
            "192.0.2.4:1",
            "192.0.2.5:1",
            "192.0.2.6:1",
            "192.0.2.7:1",
        ]),
        r#"{"candidates":["victim.example:51820"],"listen_port":51820}"#.to_owned(),
    ] {
        assert_eq!(
            put(&f, "node-a", &a.identity, &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}"
        );
    }
    assert!(f.engine.store().candidates().unwrap().is_empty());
    // A good report, then the same request replayed byte for byte.
    let sig = RequestSignature::sign(
        &a.identity,
        &controller_key().public(),
        "node-a",
        "PUT",
        "/v1/candidates/node-a",
        good.as_bytes(),
        now,
    );
    let req = || {
        let mut req = Request::builder()
            .method("PUT")
            .uri("/v1/candidates/node-a");
        for (name, value) in sig.headers() {
            req = req.header(name, value);
        }
        req.body(Body::from(good.clone())).unwrap()
    };
    assert_eq!(f.request(req()).await.0, StatusCode::NO_CONTENT);
    let replay = f.request(req()).await;
    assert_eq!(
        replay.0,
        StatusCode::UNAUTHORIZED,
        "{:?}",
        String::from_utf8_lossy(&replay.1)
    );
}
