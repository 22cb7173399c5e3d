//! Enrollment through the real router, in-process: what a hostile enrollee can claim (#2).

use std::sync::Arc;
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::http::{Request, StatusCode};
use axum::Router;
use meshtun_controller::api::{router, Api};
use meshtun_controller::auth::NonceCache;
use meshtun_controller::clock::Clock;
use meshtun_controller::engine::{Engine, EngineSettings};
use meshtun_controller::model::{NodeRecord, Policy};
use meshtun_controller::network::Network;
use meshtun_controller::schedule::Schedule;
use meshtun_controller::store::Store;
use meshtun_proto::{IdentityKey, IpNet, PrivateKey};
use tower::ServiceExt;
use zeroize::Zeroizing;

struct Fixture {
    app: Router,
    engine: Arc<Engine>,
}

/// A controller with node-a (100.64.0.1) and node-b (100.64.0.2) enrolled.
fn fixture() -> Fixture {
    let store = Arc::new(Store::open_in_memory().unwrap());
    for (i, id) in ["node-a", "node-b"].iter().enumerate() {
        store
            .add_node(&NodeRecord {
                id: (*id).into(),
                wg_public_key: PrivateKey::generate().public_key(),
                identity_key: IdentityKey::generate().public(),
                addresses: vec![format!("100.64.0.{}/24", i + 1).parse().unwrap()],
                endpoint: Some(format!("192.0.2.{}:51820", i + 1)),
                pin: None,
                enrolled_ms: 0,
            })
            .unwrap();
    }
    let settings = EngineSettings {
        policy: Policy::default(),
        schedule: Schedule::new(60_000, 10_000).unwrap(),
        rotate_on_deny: true,
    };
    let network = Network {
        ipv4: Some("100.64.0.0/24".parse().unwrap()),
        ipv6: Some("fd00:64::/64".parse().unwrap()),
    };
    let engine = Arc::new(
        Engine::open(store, IdentityKey::generate(), settings, Clock::system())
            .unwrap()
            .with_network(network),
    );
    let api = Arc::new(Api {
        engine: engine.clone(),
        nonces: NonceCache::new(30_000),
        admin_token: Zeroizing::new("admin".into()),
        long_poll: Duration::from_millis(300),
    });
    Fixture {
        app: router(api),
        engine,
    }
}

impl Fixture {
    /// An invite for `node` with a fresh token.
    fn invite(&self, node: &str) -> String {
        let token = format!("token-for-{node}");
        let expires = self.engine.clock().now_ms() + 600_000;
        self.engine
            .store()
            .create_invite(node, &token, expires, None, None)
            .unwrap();
        token
    }

    /// Enrolls with `token`, asking for `addresses` and `endpoint`.
    async fn enroll(
        &self,
        token: &str,
        addresses: &[&str],
        endpoint: Option<&str>,
    ) -> (StatusCode, String) {
        let addresses: Vec<IpNet> = addresses.iter().map(|a| a.parse().unwrap()).collect();
        let body = serde_json::json!({
            "token": token,
            "wg_public_key": PrivateKey::generate().public_key(),
            "identity_key": IdentityKey::generate().public(),
            "addresses": addresses,
            "endpoint": endpoint,
        });
        let request = Request::post("/v1/enroll")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn enrolled(&self, node: &str) -> Option<NodeRecord> {
        self.engine.store().node(node).unwrap()
    }
}

/// Each hostile claim is refused with 422 and a reason; nothing is enrolled and the invite
/// stays usable for an honest request.
async fn refused(f: &Fixture, node: &str, addresses: &[&str], endpoint: Option<&str>, why: &str) {
    let token = f.invite(node);
    let (status, body) = f.enroll(&token, addresses, endpoint).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{addresses:?}: {body}"
    );
    assert!(body.contains(why), "{addresses:?}: {body}");
    assert_eq!(f.enrolled(node), None);
    let (status, body) = f.enroll(&token, &[], None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn attack_2_an_enrollee_cannot_take_another_nodes_address() {
    let f = fixture();
    refused(
        &f,
        "node-x",
        &["100.64.0.1/24"],
        None,
        "held by node node-a",
    )
    .await;
    refused(
        &f,
        "node-y",
        &["100.64.0.2/32"],
        None,
        "held by node node-b",
    )
    .await;
    // The victims keep their addresses.
    let a = f.enrolled("node-a").unwrap();
    assert_eq!(a.addresses, vec!["100.64.0.1/24".parse::<IpNet>().unwrap()]);
}

#[tokio::test]
async fn attack_2_an_enrollee_cannot_claim_a_default_route_split_or_a_dns_server() {
    let f = fixture();
    refused(&f, "node-x", &["0.0.0.0/1"], None, "outside the overlay").await;
    refused(&f, "node-y", &["128.0.0.1/1"], None, "outside the overlay").await;
    refused(
        &f,
        "node-z",
        &["198.51.100.53/32"],
        None,
        "outside the overlay",
    )
    .await;
    refused(&f, "node-w", &["100.64.0.9/8"], None, "outside the overlay").await;
}

#[tokio::test]
async fn attack_2_address_lists_and_endpoints_are_bounded() {
    let f = fixture();
    let many: Vec<String> = (10..30).map(|i| format!("100.64.0.{i}/24")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    refused(&f, "node-x", &many, None, "at most").await;
    let long = format!("{}.example:51820", "a".repeat(300));
    refused(&f, "node-y", &["100.64.0.7/24"], Some(&long), "endpoint").await;
    refused(
        &f,
        "node-z",
        &["100.64.0.8/24"],
        Some("192.0.2.8"),
        "endpoint",
    )
    .await;
}

#[tokio::test]
async fn attack_2_an_enrollment_without_addresses_gets_the_next_free_ones() {
    let f = fixture();
    let token = f.invite("node-c");
    let (status, body) = f.enroll(&token, &[], None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let c = f.enrolled("node-c").unwrap();
    assert_eq!(
        c.addresses,
        vec![
            "100.64.0.3/24".parse::<IpNet>().unwrap(),
            "fd00:64::1/64".parse().unwrap()
        ]
    );
}
