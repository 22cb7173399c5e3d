//! Path reports over the API: a node's signed counts of its peers by path are shown on the
//! dashboard's data; an unsigned, foreign, replayed, oversized or malformed report is
//! refused and changes nothing shown.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use meshtun_controller::testing::{self, FixtureOptions};
use meshtun_proto::auth::RequestSignature;
use meshtun_proto::IdentityKey;

const TOKEN: &str = "admin-token-for-path-tests";

fn controller_key() -> IdentityKey {
    IdentityKey::from_bytes([0xc2; 32])
}

async fn fixture() -> testing::Fixture {
    testing::Fixture::start(FixtureOptions {
        nodes: &["node-a", "node-b"],
        key: controller_key(),
        admin_token: TOKEN,
        ..FixtureOptions::default()
    })
    .await
}

/// `PUT path` with `body`, signed by `signer` as `node`.
fn signed(path: &str, body: &str, signer: &IdentityKey, node: &str, at: u64) -> Request<Body> {
    let sig = RequestSignature::sign(
        signer,
        &controller_key().public(),
        node,
        "PUT",
        path,
        body.as_bytes(),
        at,
    );
    with_signature(path, body, &sig)
}

fn with_signature(path: &str, body: &str, sig: &RequestSignature) -> Request<Body> {
    let mut req = Request::put(path);
    for (name, value) in sig.headers() {
        req = req.header(name, value);
    }
    req.body(Body::from(body.to_owned())).unwrap()
}

/// `/ui/data`, with the admin token.
async fn ui_data(f: &testing::Fixture) -> serde_json::Value {
    let req = Request::get("/ui/data")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let (status, body) = f.request(req).await;
    assert_eq!(status, StatusCode::OK);
    serde_json::from_slice(&body).unwrap()
}

/// `node`'s `path` object in `/ui/data`.
async fn shown(f: &testing::Fixture, node: &str) -> serde_json::Value {
    let data = ui_data(f).await;
    data["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == node)
        .unwrap_or_else(|| panic!("{node} not in {data}"))["path"]
        .clone()
}

const GOOD: &str = r#"{"direct":3,"relayed":1,"trying":0,"none":0}"#;

#[tokio::test]
async fn a_signed_report_is_shown_with_its_time() {
    let f = fixture().await;
    let a = f.nodes[0].clone();
    assert!(shown(&f, "node-a").await["peers"].is_null());
    let now = f.engine.clock().now_ms();
    let (status, body) = f
        .request(signed("/v1/paths/node-a", GOOD, &a.identity, "node-a", now))
        .await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let peers = &shown(&f, "node-a").await["peers"];
    assert_eq!(peers["direct"], 3);
    assert_eq!(peers["relayed"], 1);
    assert_eq!(peers["trying"], 0);
    assert_eq!(peers["none"], 0);
    assert!(peers["received_ms"].as_u64().unwrap() >= now);
    assert!(
        shown(&f, "node-b").await["peers"].is_null(),
        "node-b reported nothing"
    );
}

/// The `node_cutoffs.listed` of `/ui/data`.
async fn cutoffs(f: &testing::Fixture) -> serde_json::Value {
    ui_data(f).await["node_cutoffs"]["listed"].clone()
}

/// The cut-offs in a node's report are listed under the node that sent them, counted in
/// the nodes' histogram, and replaced (not added to) by its next report.
#[tokio::test]
async fn a_nodes_cut_offs_are_listed_under_its_name_and_counted_once() {
    let f = fixture().await;
    let a = f.nodes[0].clone();
    let now = f.engine.clock().now_ms();
    let body = r#"{"direct":1,"relayed":0,"trying":0,"none":1,"cutoffs":[{"epoch":4,"peer":"node-b","ms":23}]}"#;
    for at in [now, now + 1] {
        let (status, answer) = f
            .request(signed("/v1/paths/node-a", body, &a.identity, "node-a", at))
            .await;
        assert_eq!(
            status,
            StatusCode::NO_CONTENT,
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    assert_eq!(
        cutoffs(&f).await,
        serde_json::json!([{"epoch": 4, "peer": "node-b", "by": "node-a", "ms": 23}])
    );
    let data = ui_data(&f).await;
    let counts = data["node_cutoffs"]["latency"]["counts"]
        .as_array()
        .unwrap();
    let total: u64 = counts.iter().map(|c| c.as_u64().unwrap()).sum();
    assert_eq!(total, 1, "sent twice, counted once: {counts:?}");
    let peers = &shown(&f, "node-a").await["peers"];
    assert_eq!(peers["none"], 1);
    assert!(peers.get("cutoffs").is_none(), "{peers}");
}

/// What an outsider or a hostile member might send: each refused, nothing shown.
#[tokio::test]
async fn attack_unsigned_foreign_replayed_and_oversized_reports_are_refused() {
    let f = fixture().await;
    let (a, b) = (f.nodes[0].clone(), f.nodes[1].clone());
    let now = f.engine.clock().now_ms();
    // Unsigned.
    let unsigned = Request::put("/v1/paths/node-a")
        .body(Body::from(GOOD))
        .unwrap();
    assert_eq!(f.request(unsigned).await.0, StatusCode::UNAUTHORIZED);
    // node-b's key for node-a's report, claiming to be node-a.
    let forged = signed("/v1/paths/node-a", GOOD, &b.identity, "node-a", now);
    assert_eq!(f.request(forged).await.0, StatusCode::UNAUTHORIZED);
    // node-b, signing as itself, for node-a's path.
    let foreign = signed("/v1/paths/node-a", GOOD, &b.identity, "node-b", now);
    assert_eq!(f.request(foreign).await.0, StatusCode::FORBIDDEN);
    // Stale: signed an hour ago.
    let stale = signed(
        "/v1/paths/node-a",
        GOOD,
        &a.identity,
        "node-a",
        now - 3_600_000,
    );
    assert_eq!(f.request(stale).await.0, StatusCode::UNAUTHORIZED);
    // Out of bounds, unknown fields, past the byte cap.
    let padded = format!("{GOOD}{}", " ".repeat(4_096));
    let many = format!(
        r#"{{"direct":1,"relayed":0,"trying":0,"none":0,"cutoffs":[{}]}}"#,
        vec![r#"{"epoch":1,"peer":"node-b","ms":5}"#; 17].join(",")
    );
    for body in [
        r#"{"direct":100001,"relayed":0,"trying":0,"none":0}"#,
        r#"{"direct":1,"relayed":0,"trying":0,"none":0,"peers":["10.0.0.1"]}"#,
        r#"{"direct":1,"relayed":0,"trying":0,"none":0,"cutoffs":[{"epoch":1,"peer":"<b>x</b>","ms":5}]}"#,
        r#"{"direct":1,"relayed":0,"trying":0,"none":0,"cutoffs":[{"epoch":1,"peer":"node-b","ms":86400001}]}"#,
        many.as_str(),
        padded.as_str(),
    ] {
        let (status, answer) = f
            .request(signed("/v1/paths/node-a", body, &a.identity, "node-a", now))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(String::from_utf8_lossy(&answer).contains("node-a"));
    }
    // A body past the API's limit: refused before anything is read.
    let huge = "x".repeat(meshtun_controller::api::MAX_BODY + 1);
    let status = f
        .request(signed(
            "/v1/paths/node-a",
            &huge,
            &a.identity,
            "node-a",
            now,
        ))
        .await
        .0;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(shown(&f, "node-a").await["peers"].is_null());
    assert_eq!(cutoffs(&f).await, serde_json::json!([]));
    // A good report, then the same request replayed byte for byte.
    let sig = RequestSignature::sign(
        &a.identity,
        &controller_key().public(),
        "node-a",
        "PUT",
        "/v1/paths/node-a",
        GOOD.as_bytes(),
        now,
    );
    let first = with_signature("/v1/paths/node-a", GOOD, &sig);
    assert_eq!(f.request(first).await.0, StatusCode::NO_CONTENT);
    let replay = with_signature("/v1/paths/node-a", GOOD, &sig);
    assert_eq!(f.request(replay).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(shown(&f, "node-a").await["peers"]["direct"], 3);
}
