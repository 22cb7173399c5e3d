//! The dashboard (`/ui`): refused without the read token on the API listener (with a Basic
//! challenge a browser answers), served without one on the loopback status listener, strict
//! headers on every answer, and no secret in what it serves.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use meshtun_controller::testing::{self, FixtureOptions};
use meshtun_proto::auth::RequestSignature;
use meshtun_proto::IdentityKey;

const TOKEN: &str = "admin-token-for-ui-tests";
const READ_TOKEN: &str = "read-token-for-ui-tests";
const PATHS: [&str; 5] = ["/ui", "/ui/", "/ui/app.js", "/ui/app.css", "/ui/data"];

fn controller_key() -> IdentityKey {
    IdentityKey::from_bytes([0xc1; 32])
}

async fn fixture() -> testing::Fixture {
    testing::Fixture::start(FixtureOptions {
        nodes: &["node-a", "node-b", "node-c"],
        key: controller_key(),
        admin_token: TOKEN,
        read_token: Some(READ_TOKEN),
        ..FixtureOptions::default()
    })
    .await
}

/// Node `n` submits a benchmark with overall score `overall`.
async fn submit(f: &testing::Fixture, n: usize, overall: f64, seq: u64) {
    let node = &f.nodes[n];
    let now = f.engine.clock().now_ms();
    let path = format!("/v1/benchmarks/{}", node.id);
    let body = format!(
        r#"{{"suite_version":"s1","scores":{{"overall":{overall},"refusal":0.9,"honesty":0.9,"policy":0.9}},"measured_at_ms":{now},"seq":{seq}}}"#
    );
    let controller = controller_key().public();
    let sig = RequestSignature::sign(
        &node.identity,
        &controller,
        &node.id,
        "POST",
        &path,
        body.as_bytes(),
        now,
    );
    let mut req = Request::post(&path);
    for (name, value) in sig.headers() {
        req = req.header(name, value);
    }
    let (status, answer) = f.request(req.body(Body::from(body)).unwrap()).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

async fn get(
    base: &str,
    path: &str,
    auth: Option<String>,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut req = reqwest::Client::new().get(format!("{base}{path}"));
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    let answer = req.send().await.unwrap();
    let status = answer.status();
    let headers = answer.headers().clone();
    (status, headers, answer.text().await.unwrap())
}

fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

#[tokio::test]
async fn attack_the_dashboard_without_the_read_token_is_refused_on_the_api_listener() {
    let f = fixture().await;
    let wrong = [
        None,
        Some("Bearer wrong".to_owned()),
        Some("Bearer ".to_owned()),
        Some(basic("admin", "wrong")),
        Some(format!("Basic {READ_TOKEN}")),
        Some("Basic !!!not-base64".to_owned()),
        Some(format!("Token {READ_TOKEN}")),
    ];
    for path in PATHS {
        for auth in &wrong {
            let (status, headers, body) = get(&f.url, path, auth.clone()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} with {auth:?}");
            let challenge = headers["www-authenticate"].to_str().unwrap();
            assert!(challenge.starts_with("Basic "), "{challenge}");
            assert!(!body.contains("<html"), "{path} served its page: {body}");
            assert!(!body.contains("node-a"), "{path} leaked a node: {body}");
        }
        for auth in [
            format!("Bearer {READ_TOKEN}"),
            format!("Bearer {TOKEN}"),
            basic("anyone", READ_TOKEN),
            basic("", TOKEN),
        ] {
            let (status, _, body) = get(&f.url, path, Some(auth.clone())).await;
            assert_eq!(status, StatusCode::OK, "{path} with {auth}: {body}");
        }
    }
}

#[tokio::test]
async fn the_loopback_status_listener_serves_the_dashboard_without_a_token() {
    let f = fixture().await;
    for path in PATHS {
        let (status, headers, body) = get(&f.status_url, path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["cache-control"], "no-store", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
    }
    let (_, headers, page) = get(&f.status_url, "/ui", None).await;
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    // No inline script or style: the policy would block it anyway.
    assert!(!page.contains("<script>"), "{page}");
    assert!(!page.contains("style="), "{page}");
    assert!(page.contains(r#"<script src="/ui/app.js""#), "{page}");
}

#[tokio::test]
async fn the_data_shows_decisions_pairs_and_scores_and_no_secret() {
    let f = fixture().await;
    submit(&f, 0, 0.9, 1).await;
    submit(&f, 1, 0.2, 1).await;
    submit(&f, 2, 0.95, 1).await;
    f.engine.step().unwrap();
    let (status, _, body) = get(&f.status_url, "/ui/data", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let data: serde_json::Value = serde_json::from_str(&body).unwrap();
    let node = |id: &str| {
        data["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no {id} in {data}"))
    };
    assert_eq!(node("node-a")["membership"], "ALLOWED");
    let b = node("node-b");
    assert_eq!(b["membership"], "DENIED");
    assert!(
        b["reason"].as_str().unwrap().contains("0.20"),
        "the reason names the score: {b}"
    );
    assert_eq!(b["last_benchmark"]["overall"], 0.2);
    assert_eq!(data["policy"]["threshold"], 0.7);
    assert_eq!(
        data["pairs"],
        serde_json::json!([["node-a", "node-c"]]),
        "{data}"
    );
    let series = data["history"]["series"].as_array().unwrap();
    assert_eq!(series.len(), 3, "{data}");
    let log = data["history"]["log"].as_array().unwrap();
    assert!(
        log.iter()
            .any(|r| r["node"] == "node-b" && r["allowed"] == false),
        "{data}"
    );
    let epoch = f.engine.store().latest_epochs(1).unwrap().remove(0);
    let mut secrets = vec![
        epoch.secret.to_hex(),
        f.key.to_base64(),
        TOKEN.to_owned(),
        READ_TOKEN.to_owned(),
    ];
    for n in &f.nodes {
        secrets.push(n.wg.to_base64());
        secrets.push(n.identity.to_base64());
    }
    for path in PATHS {
        let (_, _, body) = get(&f.status_url, path, None).await;
        for secret in &secrets {
            assert!(!body.contains(secret.as_str()), "{path} leaks a secret");
        }
    }
}

/// However many nodes are enrolled, the snapshot lists at most `MAX_NODES` and plots at most
/// `MAX_PLOTTED`, and says how many there are.
#[tokio::test]
async fn the_data_is_bounded_whatever_the_mesh_size() {
    use meshtun_controller::model::NodeRecord;
    use meshtun_controller::ui::data::{MAX_NODES, MAX_PLOTTED};
    use meshtun_proto::PrivateKey;

    let f = fixture().await;
    let extra = MAX_NODES + 20;
    for i in 0..extra {
        let record = NodeRecord {
            id: format!("bulk-{i:04}"),
            wg_public_key: PrivateKey::generate().public_key(),
            identity_key: IdentityKey::generate().public(),
            addresses: vec![format!("100.65.{}.{}/10", i / 250, i % 250 + 1)
                .parse()
                .unwrap()],
            endpoint: None,
            pin: None,
            enrolled_ms: 0,
            membership_sig: None,
        };
        f.engine.store().add_node(&record).unwrap();
    }
    f.engine.refresh_nodes().unwrap();
    f.engine.step().unwrap();
    let (status, _, body) = get(&f.status_url, "/ui/data", None).await;
    assert_eq!(status, StatusCode::OK);
    let data: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(data["nodes"].as_array().unwrap().len(), MAX_NODES);
    assert_eq!(data["nodes_total"], extra + 3);
    assert!(data["history"]["series"].as_array().unwrap().len() <= MAX_PLOTTED);
    assert!(
        body.len() < 1 << 20,
        "{} bytes for {} nodes",
        body.len(),
        extra + 3
    );
}

/// DNS rebinding: a page whose name an attacker points at 127.0.0.1 reaches the loopback
/// status listener with that name as `Host`; the dashboard refuses it there.
#[tokio::test]
async fn attack_a_rebound_host_name_is_refused_on_the_status_listener() {
    let f = fixture().await;
    let port = f.status_url.rsplit(':').next().unwrap().to_owned();
    for path in PATHS {
        let answer = reqwest::Client::new()
            .get(format!("{}{path}", f.status_url))
            .header("host", format!("rebound.example:{port}"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{path}");
        let body = answer.text().await.unwrap();
        assert!(!body.contains("node-a"), "{path}: {body}");
        let answer = reqwest::Client::new()
            .get(format!("{}{path}", f.status_url))
            .header("host", format!("localhost:{port}"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{path}");
    }
}
