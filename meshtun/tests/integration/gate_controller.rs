//! The node's controller client against the real controller, served in-process on
//! 127.0.0.1, and against small fake servers for answers a correct controller never gives
//! (another node's bundle, an expired one, failures).

use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use meshtun::gate::{
    enroll, load_cache, save_cache, BundleCheckError, ClientError, ControllerClient,
};
use meshtun_proto::bundle::{Bundle, Membership, Sealer, SignedBundle, BUNDLE_VERSION};
use meshtun_proto::enroll::enrollment_key;
use meshtun_proto::wire::Ticket;
use meshtun_proto::{IdentityKey, KeySet, PresharedKey, PrivateKey};

/// The controller's long-poll in these tests.
const LONG_POLL: Duration = Duration::from_millis(300);

use crate::common;

use common::{benchmark, now_ms, Clients as _, Controller};

/// Serves `app` on an ephemeral loopback port; its base URL.
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// A controller with nodes a, b and c enrolled, serving its real API.
async fn controller() -> Controller {
    common::start(common::Options {
        nodes: &["node-a", "node-b", "node-c"],
        ..common::Options::default()
    })
    .await
}

fn stored_seqs(c: &Controller, node: &str) -> Vec<u64> {
    let store = c.engine.store();
    store
        .benchmarks(node, 100)
        .unwrap()
        .iter()
        .map(|b| b.seq)
        .collect()
}

#[tokio::test]
async fn benchmarks_are_stored_once_and_refusals_carry_the_controller_reason() {
    let c = controller().await;
    let a = c.client(0);
    a.submit_benchmark(&benchmark(0.9, 1)).await.unwrap();
    assert_eq!(stored_seqs(&c, "node-a"), vec![1]);

    let err = a.submit_benchmark(&benchmark(0.9, 1)).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Conflict { reason, .. } if reason.contains("not newer than 1 (replay)")),
        "{err}"
    );
    // The refusal says which seq the controller holds, so that a node whose clock went back
    // can continue above it.
    assert_eq!(err.latest_seq(), Some(1));
    let err = a.submit_benchmark(&benchmark(1.5, 2)).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Rejected { reason, .. } if reason.contains("overall is 1.5")),
        "{err}"
    );

    // Signed with a key the controller does not know for node-a.
    let impostor = ControllerClient::new(
        &c.url,
        KeySet::one(c.key.public()),
        "node-a",
        IdentityKey::generate(),
        c.nodes[0].wg.clone(),
    )
    .unwrap();
    let err = impostor
        .submit_benchmark(&benchmark(0.9, 3))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains("401"), "{err}");
    assert_eq!(
        stored_seqs(&c, "node-a"),
        vec![1],
        "refusals stored nothing"
    );

    a.submit_benchmark(&benchmark(0.8, 2)).await.unwrap();
    assert_eq!(stored_seqs(&c, "node-a"), vec![2, 1]);
}

#[tokio::test]
async fn both_ends_of_a_pair_open_the_same_key_and_a_denied_node_gets_none() {
    let c = controller().await;
    for (n, score) in [(0, 0.90), (1, 0.85), (2, 0.40)] {
        c.client(n)
            .submit_benchmark(&benchmark(score, 1))
            .await
            .unwrap();
    }
    c.engine.step().unwrap();
    let wait = Duration::from_secs(2);
    let a = c.client(0).fetch_bundle(None, wait).await.unwrap().unwrap();
    let b = c.client(1).fetch_bundle(None, wait).await.unwrap().unwrap();
    let denied = c.client(2).fetch_bundle(None, wait).await.unwrap().unwrap();

    assert!(a.is_allowed() && b.is_allowed());
    assert_eq!(a.epoch, b.epoch);
    assert!(a.activation_ms < a.not_after_ms);
    let [to_b] = a.peers.as_slice() else {
        panic!("node-a should have exactly node-b: {:?}", a.peers)
    };
    let [to_a] = b.peers.as_slice() else {
        panic!("node-b should have exactly node-a: {:?}", b.peers)
    };
    assert_eq!(to_b.node_id, "node-b");
    assert_eq!(to_b.public_key, c.nodes[1].wg.public_key());
    assert_eq!(to_b.candidates, ["192.0.2.2:51820"]);
    assert_eq!(to_b.allowed_ips, vec!["100.64.0.2/32".parse().unwrap()]);
    assert_eq!(to_a.public_key, c.nodes[0].wg.public_key());
    assert_eq!(to_b.psk, to_a.psk, "both ends hold the same pair key");
    assert!(!to_b.psk.is_zero());

    assert!(!denied.is_allowed());
    assert!(denied.peers.is_empty());
    assert!(
        matches!(&denied.membership, Membership::Denied { reason } if reason.contains("0.40")),
        "{:?}",
        denied.membership
    );

    // The query is signed as sent.
    let again = c.client(0).fetch_bundle(Some(0), wait).await.unwrap();
    assert_eq!(again.map(|v| v.epoch), Some(a.epoch));
    // Nothing newer than the current epoch: the long-poll ends without a bundle.
    let started = std::time::Instant::now();
    let none = c
        .client(0)
        .fetch_bundle(Some(a.epoch), Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(none, None);
    assert!(started.elapsed() >= LONG_POLL);

    // The cache keeps the bundle and gives it back verified.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wg0.bundle");
    save_cache(&path, &a.signed).unwrap();
    let cached = load_cache(
        &path,
        &meshtun::gate::Trust::controller(&KeySet::one(c.key.public())),
        "node-a",
        &c.nodes[0].wg,
        now_ms(),
    )
    .unwrap()
    .unwrap();
    assert!(!cached.expired);
    assert_eq!(cached.bundle, a);
}

#[tokio::test]
async fn a_bundle_under_another_controller_key_is_refused() {
    let c = controller().await;
    c.client(0)
        .submit_benchmark(&benchmark(0.9, 1))
        .await
        .unwrap();
    c.engine.step().unwrap();
    let node = &c.nodes[0];
    let wrong_pin = ControllerClient::new(
        &c.url,
        KeySet::one(IdentityKey::generate().public()),
        &node.id,
        node.identity.clone(),
        node.wg.clone(),
    )
    .unwrap();
    // Its requests name the key it pins (format v2), so this controller refuses them before
    // any bundle is sent; a bundle signed by another key is refused by `verify_bundle`.
    let err = wrong_pin
        .fetch_bundle(None, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Unauthorized { .. }), "{err}");
}

/// A server answering every bundle request with `status` and `body`.
async fn fake(status: StatusCode, body: String) -> String {
    let app = Router::new().route(
        "/v1/config/{node}",
        get(move || {
            let body = body.clone();
            async move { (status, body) }
        }),
    );
    serve(app).await
}

/// Node `n`'s client for a fake server at `url`, pinning the real controller's key.
fn client_at(c: &Controller, n: usize, url: &str) -> ControllerClient {
    let node = &c.nodes[n];
    ControllerClient::new(
        url,
        KeySet::one(c.key.public()),
        &node.id,
        node.identity.clone(),
        node.wg.clone(),
    )
    .unwrap()
}

#[tokio::test]
async fn another_nodes_bundle_is_refused() {
    let c = controller().await;
    for n in [0, 1] {
        c.client(n)
            .submit_benchmark(&benchmark(0.9, 1))
            .await
            .unwrap();
    }
    c.engine.step().unwrap();
    let b = c
        .client(1)
        .fetch_bundle(None, Duration::from_secs(2))
        .await
        .unwrap()
        .unwrap();
    let url = fake(StatusCode::OK, serde_json::to_string(&b.signed).unwrap()).await;
    let err = client_at(&c, 0, &url)
        .fetch_bundle(None, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ClientError::Bundle(BundleCheckError::BundleForAnotherNode { ours, theirs, .. })
                if ours == "node-a" && theirs == "node-b"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn an_expired_bundle_is_refused_by_the_scheduler() {
    let c = controller().await;
    let node = &c.nodes[0];
    let peer = &c.nodes[1];
    let now = now_ms();
    let sealer = Sealer::new(&node.wg.public_key()).unwrap();
    let bundle = Bundle {
        forward: false,
        relay: None,
        version: BUNDLE_VERSION,
        node_id: node.id.clone(),
        recipient: node.wg.public_key(),
        epoch: 3,
        activation_ms: now - 120_000,
        not_after_ms: now - 60_000,
        issued_ms: now - 130_000,
        decided_ms: now - 130_000,
        membership: Membership::Allowed,
        seal_key: Some(sealer.ephemeral()),
        peers: vec![meshtun_proto::bundle::BundlePeer {
            forwards_to: Vec::new(),
            enrollment: None,
            candidates: Vec::new(),
            node_id: peer.id.clone(),
            public_key: peer.wg.public_key(),
            endpoint: None,
            allowed_ips: vec![],
            sealed_psk: sealer.seal(0, 3, &peer.wg.public_key(), &PresharedKey::generate()),
        }],
    };
    let signed = SignedBundle::sign(&bundle, &c.key);
    let url = fake(StatusCode::OK, serde_json::to_string(&signed).unwrap()).await;
    // The client hands it over (this node's clock may be off); the scheduler's state, which
    // reads the controller's time, refuses it.
    let fetched = client_at(&c, 0, &url)
        .fetch_bundle(None, Duration::from_secs(2))
        .await
        .unwrap()
        .expect("a bundle");
    let mut state =
        meshtun::gate::state::GateState::new(meshtun::config::LossPolicy::FailClosed, 3_000);
    let err = state.offer(fetched, now).unwrap_err();
    assert!(
        matches!(err, BundleCheckError::Expired { epoch: 3, .. }),
        "{err}"
    );
    // A bundle that is not newer than the epoch in force is refused too.
    let mut fresh = bundle;
    fresh.not_after_ms = now + 60_000;
    let url = fake(
        StatusCode::OK,
        serde_json::to_string(&SignedBundle::sign(&fresh, &c.key)).unwrap(),
    )
    .await;
    let err = client_at(&c, 0, &url)
        .fetch_bundle(Some(3), Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Bundle(BundleCheckError::StaleEpoch { got: 3, have: 3 })
        ),
        "{err}"
    );
}

#[tokio::test]
async fn failures_and_malformed_answers_are_named() {
    let c = controller().await;
    let url = fake(
        StatusCode::INTERNAL_SERVER_ERROR,
        r#"{"error":"database error"}"#.into(),
    )
    .await;
    let err = client_at(&c, 0, &url)
        .fetch_bundle(None, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Server { status: 500, reason, .. } if reason == "database error"),
        "{err}"
    );
    let url = fake(StatusCode::OK, "<html>proxy</html>".into()).await;
    let err = client_at(&c, 0, &url)
        .fetch_bundle(None, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Response { .. }), "{err}");
    assert!(err.to_string().contains("not a signed bundle"), "{err}");

    // Nobody listening.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let err = client_at(&c, 0, &closed)
        .fetch_bundle(None, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Http { .. }), "{err}");
    assert!(err.to_string().contains("fetching the bundle"), "{err}");
}

#[tokio::test]
async fn enrollment_with_a_ticket_works_once() {
    let c = controller().await;
    let expires_ms = now_ms() + 3_600_000;
    let store = c.engine.store();
    store
        .create_invite("node-d", "token-d", expires_ms, None, None)
        .unwrap();
    store
        .create_invite("node-e", "token-e", expires_ms, None, None)
        .unwrap();
    let ticket = Ticket {
        url: c.url.clone(),
        controller_key: c.key.public(),
        enroll_key: enrollment_key(&c.key).public_key(),
        node_id: "node-d".into(),
        token: "token-d".into(),
        expires_ms,
        membership_key: None,
    };
    let wg = PrivateKey::generate();
    let identity = IdentityKey::generate();
    let addresses = vec!["100.64.0.4/24".parse().unwrap()];
    let endpoint = Some("192.0.2.4:51820".to_owned());
    let enrolled = enroll(&ticket, &wg, &identity, addresses.clone(), endpoint.clone())
        .await
        .unwrap();
    assert_eq!(enrolled.node_id, "node-d");
    assert_eq!(enrolled.addresses, addresses);
    assert_eq!(enrolled.endpoint, endpoint);
    assert_eq!(enrolled.wg_public_key, wg.public_key());
    assert_eq!(c.engine.node_identity("node-d"), Some(identity.public()));

    // Other keys with the same ticket: refused; the same keys again: the same answer.
    let err = enroll(
        &ticket,
        &PrivateKey::generate(),
        &identity,
        addresses.clone(),
        endpoint.clone(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, ClientError::Forbidden { reason, .. } if reason.contains("already used")),
        "{err}"
    );
    assert!(!err.to_string().contains("token-d"), "{err}");
    let again = enroll(&ticket, &wg, &identity, addresses.clone(), endpoint.clone())
        .await
        .unwrap();
    assert_eq!(again.addresses, enrolled.addresses);

    // A ticket whose node id does not match its token's invite.
    let mut mismatched = ticket.clone();
    mismatched.node_id = "node-x".into();
    mismatched.token = "token-e".into();
    let err = enroll(
        &mismatched,
        &PrivateKey::generate(),
        &IdentityKey::generate(),
        addresses,
        endpoint,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, ClientError::Forbidden { reason, .. } if reason.contains("not recognised")),
        "{err}"
    );
}

/// A deny decided while the epoch's bundles are being built reaches a node that asks for
/// cut-off notices at once, through the real API (`cutoff=` in the signed query, the
/// notice's content type), before that epoch's bundle; a node that does not ask gets the
/// bundle only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_notice_comes_before_the_epochs_bundle() {
    use meshtun::gate::cutoff::Fetched;
    use meshtun_controller::model::Pin;
    use meshtun_controller::Epochs;
    const NODES: usize = 160;
    let ids: Vec<&'static str> = (0..NODES)
        .map(|i| &*Box::leak(format!("node-{i}").into_boxed_str()))
        .collect();
    let c = Controller::start(common::Options {
        nodes: Box::leak(ids.into_boxed_slice()),
        long_poll: Duration::from_secs(20),
        epochs: Epochs::Scheduled,
        // The test's own rotation is the deny: the engine's deny check would otherwise
        // publish one of its own as soon as node-7 is pinned, racing it.
        rotate_on_deny: false,
        ..common::Options::default()
    })
    .await;
    for node in &c.nodes {
        c.engine
            .store()
            .set_pin(&node.id, Some(Pin::Allow))
            .unwrap();
    }
    let rotate = |engine: std::sync::Arc<meshtun_controller::engine::Engine>| {
        tokio::task::spawn_blocking(move || engine.rotate_now("test").unwrap())
    };
    let allowed = rotate(c.engine.clone()).await.unwrap();
    let wait = Duration::from_secs(20);
    let a = c.client(1);
    let mut held = None;
    let first = loop {
        // The epoch at start (all denied) may come first, while the next one's bundles build.
        let Some(Fetched::Bundle(b)) = a.fetch(held, 0, wait).await.unwrap() else {
            panic!("no bundle");
        };
        if b.epoch == allowed {
            break b;
        }
        held = Some(b.epoch);
    };
    assert_eq!(first.peers.len(), NODES - 1);
    let denied_key = c.nodes[7].wg.public_key();
    c.engine.store().set_pin("node-7", Some(Pin::Deny)).unwrap();
    let poll = tokio::spawn(async move { a.fetch(Some(allowed), 0, wait).await });
    let old_style = c.client(2);
    let old_poll = tokio::spawn(async move { old_style.fetch_bundle(Some(allowed), wait).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let deny = rotate(c.engine.clone()).await.unwrap();
    let Some(Fetched::CutOff(notice)) = poll.await.unwrap().unwrap() else {
        panic!("no cut-off notice before the bundle");
    };
    assert_eq!(notice.epoch, deny);
    assert_eq!(notice.denied, [denied_key].into());
    assert!(!notice.names_me);
    let bundle = old_poll.await.unwrap().unwrap().expect("no bundle");
    assert_eq!(bundle.epoch, deny);
    assert!(bundle.peers.iter().all(|p| p.public_key != denied_key));
    // Having seen the notice, the node gets the bundle next.
    let Some(Fetched::Bundle(after)) = c.client(1).fetch(Some(allowed), deny, wait).await.unwrap()
    else {
        panic!("no bundle after the notice");
    };
    assert_eq!(after.epoch, deny);
}
