//! A node with several controller URLs: it moves to the next instance at once when one is
//! gone, within about one long-poll when one stops answering, and when one serves a bundle
//! that does not verify; it stays on an instance that refuses a request, since that
//! instance is alive.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use meshtun::gate::{ClientError, ControllerClient};
use meshtun_proto::bundle::{Bundle, Membership, Sealer, SignedBundle, BUNDLE_VERSION};
use meshtun_proto::IdentityKey;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::common;

use common::Controller;

async fn controller() -> Controller {
    common::start(common::Options {
        nodes: &["node-a"],
        ..common::Options::default()
    })
    .await
}

/// Node a's client over `urls`, pinning the controller's key.
fn client(c: &Controller, urls: &[String]) -> ControllerClient {
    let node = &c.nodes[0];
    ControllerClient::with_instances(
        urls,
        meshtun_proto::KeySet::one(c.key.public()),
        &node.id,
        node.identity.clone(),
        node.wg.clone(),
    )
    .unwrap()
}

/// A loopback URL where nothing listens (connections are refused).
async fn closed_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// A TCP relay to `target` that can be made to stop answering, as a paused or cut-off
/// instance does: connections stay open, nothing comes back.
struct Relay {
    url: String,
    stall: watch::Sender<bool>,
}

impl Relay {
    async fn start(target: &str) -> Self {
        let target = target.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stall, stalled) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                tokio::spawn(relay(inbound, target.clone(), stalled.clone()));
            }
        });
        Self { url, stall }
    }
}

async fn relay(mut inbound: TcpStream, target: String, mut stalled: watch::Receiver<bool>) {
    if !*stalled.borrow() {
        let Ok(mut outbound) = TcpStream::connect(&target).await else {
            return;
        };
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => return,
            _ = stalled.wait_for(|s| *s) => {}
        }
    }
    // Stalled: read and drop whatever comes, answer nothing, close nothing (for 60 s).
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(60), async {
        while inbound.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    })
    .await;
}

#[tokio::test]
async fn a_dead_instance_is_skipped_at_once() {
    let c = controller().await;
    c.engine.step().unwrap();
    let dead = closed_url().await;
    let node = client(&c, &[dead.clone(), c.url.clone()]);
    assert_eq!(node.url(), dead);

    let err = node
        .fetch_bundle(None, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Http { .. }), "{err}");
    assert!(
        node.take_retry_now(),
        "a second instance is there to try at once"
    );
    assert_eq!(node.url(), c.url);
    let bundle = node
        .fetch_bundle(None, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(bundle.is_some(), "the live instance serves the bundle");
    // Both failed in a row would mean backing off; one success starts afresh.
    assert!(!node.take_retry_now());
}

#[tokio::test]
async fn a_stalled_instance_is_left_within_one_long_poll() {
    let c = controller().await;
    c.engine.step().unwrap();
    let relay = Relay::start(&c.url).await;
    let node = client(&c, &[relay.url.clone(), c.url.clone()]);
    let epoch = node
        .fetch_bundle(None, Duration::from_secs(25))
        .await
        .unwrap()
        .unwrap()
        .epoch;
    // Nothing new: the instance answers 304 after its long-poll (300 ms here), and the node
    // learns it.
    let idle = node
        .fetch_bundle(Some(epoch), Duration::from_secs(25))
        .await;
    assert!(matches!(idle, Ok(None)), "{idle:?}");

    relay.stall.send_replace(true);
    let started = Instant::now();
    let err = node
        .fetch_bundle(Some(epoch), Duration::from_secs(25))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, ClientError::Http { .. }), "{err}");
    // One long-poll (0.3 s) plus the 2 s margin; the first guess would have been 35 s.
    assert!(
        took < Duration::from_secs(4),
        "left the stalled instance after {took:?}"
    );
    assert!(node.take_retry_now());
    assert_eq!(node.url(), c.url);
    let idle = node
        .fetch_bundle(Some(epoch), Duration::from_secs(25))
        .await;
    assert!(matches!(idle, Ok(None)), "{idle:?}");
}

#[tokio::test]
async fn attack_an_instance_serving_a_forged_bundle_is_left() {
    let c = controller().await;
    c.engine.step().unwrap();
    // Node a's bundle, allowing it, but signed by a key the node does not pin: an impostor
    // at the first URL (or a hijacked address).
    let node = &c.nodes[0];
    let now = common::now_ms();
    let sealer = Sealer::new(&node.wg.public_key()).unwrap();
    let forged = Bundle {
        forward: false,
        relay: None,
        version: BUNDLE_VERSION,
        node_id: node.id.clone(),
        recipient: node.wg.public_key(),
        epoch: 9_999_999_999_999,
        activation_ms: now,
        not_after_ms: now + 60_000,
        issued_ms: now,
        decided_ms: now,
        membership: Membership::Allowed,
        seal_key: Some(sealer.ephemeral()),
        peers: Vec::new(),
    };
    let body = serde_json::to_string(&SignedBundle::sign(&forged, &IdentityKey::generate()));
    let body = body.unwrap();
    let impostor = serve(Router::new().route(
        "/v1/config/{node}",
        get(move || async move { (StatusCode::OK, body) }),
    ))
    .await;
    let node = client(&c, &[impostor, c.url.clone()]);
    let err = node
        .fetch_bundle(None, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Bundle(_)), "{err}");
    assert!(node.take_retry_now());
    assert_eq!(node.url(), c.url);
    let bundle = node
        .fetch_bundle(None, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(bundle.is_some_and(|b| b.epoch < 9_999_999_999_999));
}

/// Serves `app` on an ephemeral loopback port; its base URL.
async fn serve(app: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn an_instance_that_refuses_is_alive_and_kept() {
    let c = controller().await;
    let refusing = Router::new().route(
        "/v1/config/{node}",
        get(|| async {
            (
                StatusCode::FORBIDDEN,
                "{\"error\":\"node-a is not enrolled\"}",
            )
        }),
    );
    let url = serve(refusing).await;
    let node = client(&c, &[url.clone(), c.url.clone()]);
    let err = node
        .fetch_bundle(None, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Forbidden { .. }), "{err}");
    assert!(!node.take_retry_now());
    assert_eq!(node.url(), url, "a refusal is an answer: the node stays");
}

#[test]
fn a_list_with_a_bad_url_is_refused_whole() {
    let key = IdentityKey::generate();
    let urls = [
        "http://127.0.0.1:8700".to_owned(),
        "ftp://192.0.2.1".to_owned(),
    ];
    let made = ControllerClient::with_instances(
        &urls,
        meshtun_proto::KeySet::one(key.public()),
        "node-a",
        IdentityKey::generate(),
        meshtun_proto::PrivateKey::generate(),
    );
    assert!(matches!(made, Err(ClientError::Url(_))), "{made:?}");
}
