//! #10: `meshtun join` over plain http through an on-path proxy that sees, rewrites and
//! replays what passes. The controller is the real one, served in-process on 127.0.0.1; the
//! proxy is an HTTP server in the test that forwards to it.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use meshtun::join::{join, JoinError, JoinOptions};
use meshtun_proto::enroll::enrollment_key;
use meshtun_proto::wire::Ticket;

use crate::common;

use common::{now_ms, Controller};

/// How the proxy changes the controller's answers.
#[derive(Clone, Copy)]
enum Tamper {
    /// Forwards them as they are.
    Nothing,
    /// Gives the node another overlay address, inside the overlay (another node's, say).
    Addresses,
    /// Strips the controller's signature: the answer in the clear.
    Unsigned,
}

/// What the proxy saw.
#[derive(Default)]
struct Seen {
    requests: Vec<(Method, String, Vec<u8>)>,
}

struct Proxy {
    upstream: String,
    tamper: Tamper,
    seen: Mutex<Seen>,
    http: reqwest::Client,
}

/// Rewrites `text` in an answer, inside a signed payload too (re-encoded, with the
/// original signature kept).
fn rewrite(body: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(body).into_owned();
    if let Ok(mut json) = serde_json::from_str::<serde_json::Value>(&text) {
        if let Some(payload) = json.get("payload").and_then(|p| p.as_str()) {
            let inner = STANDARD.decode(payload).unwrap();
            let inner = String::from_utf8(inner).unwrap().replace(from, to);
            json["payload"] = STANDARD.encode(inner).into();
            return json.to_string().into_bytes();
        }
    }
    text.replace(from, to).into_bytes()
}

/// The signed payload alone, if the answer has one.
fn unsigned(body: &[u8]) -> Vec<u8> {
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    match json.get("payload").and_then(|p| p.as_str()) {
        Some(payload) => STANDARD.decode(payload).unwrap(),
        None => body.to_vec(),
    }
}

async fn forward(
    State(proxy): State<Arc<Proxy>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    proxy
        .seen
        .lock()
        .unwrap()
        .requests
        .push((method.clone(), uri.to_string(), body.to_vec()));
    let mut request = proxy
        .http
        .request(method, format!("{}{uri}", proxy.upstream))
        .body(body.to_vec());
    if let Some(kind) = headers.get("content-type") {
        request = request.header("content-type", kind.as_bytes());
    }
    let answer = request.send().await.unwrap();
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
    let body = answer.bytes().await.unwrap().to_vec();
    let body = match proxy.tamper {
        Tamper::Nothing => body,
        Tamper::Addresses => rewrite(&body, "100.64.0.1/10", "100.64.0.77/10"),
        Tamper::Unsigned => unsigned(&body),
    };
    (status, [("content-type", "application/json")], body).into_response()
}

/// Starts a proxy to `upstream`; returns it and its URL.
async fn proxy(upstream: &str, tamper: Tamper) -> (Arc<Proxy>, String) {
    let proxy = Arc::new(Proxy {
        upstream: upstream.to_owned(),
        tamper,
        seen: Mutex::default(),
        http: reqwest::Client::new(),
    });
    let app = Router::new().fallback(forward).with_state(proxy.clone());
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", tcp.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(tcp, app).await });
    (proxy, url)
}

/// An invite for `node` at `c`, as `meshtun-controller invite` makes it, with the URL of
/// the proxy in front of the controller.
fn ticket(c: &Controller, node: &str, url: &str) -> Ticket {
    let token = format!("token-of-{node}-{}", now_ms());
    let expires_ms = now_ms() + 3_600_000;
    c.engine
        .store()
        .create_invite(node, &token, expires_ms, None, None)
        .unwrap();
    Ticket {
        url: url.to_owned(),
        controller_key: c.key.public(),
        enroll_key: enrollment_key(&c.key).public_key(),
        node_id: node.into(),
        token,
        expires_ms,
        membership_key: None,
    }
}

fn options(ticket: Ticket, config: std::path::PathBuf) -> JoinOptions {
    JoinOptions {
        ticket,
        config: Some(config),
        interface: "wg0".into(),
        listen_port: 51820,
        addresses: Vec::new(),
        endpoint: Some("192.0.2.4:51820".into()),
        benchmark: None,
        force: false,
        membership_sig: None,
    }
}

#[tokio::test]
async fn attack_10_the_token_never_crosses_the_wire_and_a_replayed_request_gains_nothing() {
    let c = common::start(common::Options::default()).await;
    let (spy, url) = proxy(&c.url, Tamper::Nothing).await;
    let dir = tempfile::tempdir().unwrap();
    let ticket = ticket(&c, "node-d", &url);
    let joined = join(&options(ticket.clone(), dir.path().join("wg0.toml")))
        .await
        .unwrap();

    let seen = std::mem::take(&mut spy.seen.lock().unwrap().requests);
    let [(method, path, body)] = seen.as_slice() else {
        panic!("one request expected: {seen:?}")
    };
    assert_eq!((method.as_str(), path.as_str()), ("POST", "/v1/enroll"));
    let text = String::from_utf8_lossy(body);
    assert!(
        !text.contains(&ticket.token),
        "the token crossed the wire: {text}"
    );

    // The attacker replays what it saw: the controller enrolls nobody else, and the node
    // keeps the keys it enrolled with.
    let replayed = reqwest::Client::new()
        .post(format!("{}/v1/enroll", c.url))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let status = replayed.status();
    let answer = replayed.text().await.unwrap();
    let nodes = c.engine.store().nodes().unwrap();
    assert_eq!(nodes.len(), 1, "{status}: {answer}");
    assert_eq!(nodes[0].wg_public_key, joined.wg_public_key);
    assert_eq!(nodes[0].identity_key, joined.identity_public);
}

#[tokio::test]
async fn attack_10_a_rewritten_or_unsigned_enrollment_answer_is_refused_and_nothing_is_written() {
    let c = common::start(common::Options::default()).await;
    for (n, tamper) in [Tamper::Addresses, Tamper::Unsigned]
        .into_iter()
        .enumerate()
    {
        let (_spy, url) = proxy(&c.url, tamper).await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg0.toml");
        let node = format!("node-{n}");
        let result = join(&options(ticket(&c, &node, &url), path.clone())).await;
        let err = match result {
            Ok(joined) => panic!("a tampered answer was accepted: {joined:?}"),
            Err(err) => err,
        };
        assert!(matches!(err, JoinError::Enroll { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("not signed by the controller key the ticket pins"),
            "{err}"
        );
        assert!(!path.exists(), "a configuration was written: {err}");
    }
}
