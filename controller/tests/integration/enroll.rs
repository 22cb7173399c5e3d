//! Enrollment through the controller served in-process: what a hostile enrollee can claim (#2),
//! what an on-path attacker can do with a request it saw (#10), and keys of small order (#19).

use axum::body::Body;
use axum::http::{Request, StatusCode};
use meshtun_controller::model::NodeRecord;
use meshtun_controller::network::Network;
use meshtun_controller::testing::{self, FixtureOptions};
use meshtun_proto::auth::RequestSignature;
use meshtun_proto::enroll::{enrollment_key, EnrollRequest, Ticket};
use meshtun_proto::{IdentityKey, IpNet, PrivateKey, PublicKey};

/// The shared fixture, with node-a (100.64.0.1) and node-b (100.64.0.2) enrolled in an
/// overlay of 100.64.0.0/24 and fd00:64::/64.
struct Fixture(testing::Fixture);

impl std::ops::Deref for Fixture {
    type Target = testing::Fixture;

    fn deref(&self) -> &testing::Fixture {
        &self.0
    }
}

async fn fixture() -> Fixture {
    let network = Network {
        ipv4: Some("100.64.0.0/24".parse().unwrap()),
        ipv6: Some("fd00:64::/64".parse().unwrap()),
    };
    Fixture(
        testing::Fixture::start(FixtureOptions {
            nodes: &["node-a", "node-b"],
            network,
            ..FixtureOptions::default()
        })
        .await,
    )
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

    /// The ticket `meshtun-controller invite` would print for `node` and `token`.
    fn ticket(&self, node: &str, token: &str) -> Ticket {
        Ticket {
            url: "http://127.0.0.1:8700".into(),
            controller_key: self.key.public(),
            enroll_key: enrollment_key(&self.key).public_key(),
            node_id: node.into(),
            token: token.into(),
            expires_ms: u64::MAX,
            membership_key: None,
        }
    }

    /// Enrolls `node` with `token`, asking for `addresses` and `endpoint`, with fresh keys.
    async fn enroll(
        &self,
        node: &str,
        token: &str,
        addresses: &[&str],
        endpoint: Option<&str>,
    ) -> (StatusCode, String) {
        let addresses: Vec<IpNet> = addresses.iter().map(|a| a.parse().unwrap()).collect();
        let (request, _) = EnrollRequest::build(
            &self.ticket(node, token),
            &PrivateKey::generate(),
            &IdentityKey::generate(),
            addresses,
            endpoint.map(str::to_owned),
        )
        .unwrap();
        self.post(serde_json::to_vec(&request).unwrap()).await
    }

    async fn post(&self, body: Vec<u8>) -> (StatusCode, String) {
        let request = Request::post("/v1/enroll")
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        let (status, body) = self.request(request).await;
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
    let (status, body) = f.enroll(node, &token, addresses, endpoint).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{addresses:?}: {body}"
    );
    assert!(body.contains(why), "{addresses:?}: {body}");
    assert_eq!(f.enrolled(node), None);
    let (status, body) = f.enroll(node, &token, &[], None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn attack_2_an_enrollee_cannot_take_another_nodes_address() {
    let f = fixture().await;
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
    let f = fixture().await;
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
    let f = fixture().await;
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
    let f = fixture().await;
    let token = f.invite("node-c");
    let (status, body) = f.enroll("node-c", &token, &[], None).await;
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

/// A request as an on-path attacker would alter it: the claim's JSON edited by `edit`, the
/// proofs kept.
fn altered(request: &EnrollRequest, edit: impl Fn(&mut serde_json::Value)) -> Vec<u8> {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    let mut claim: serde_json::Value =
        serde_json::from_slice(&STANDARD.decode(&request.claim).unwrap()).unwrap();
    edit(&mut claim);
    let mut forged = request.clone();
    forged.claim = STANDARD.encode(claim.to_string());
    serde_json::to_vec(&forged).unwrap()
}

#[tokio::test]
async fn attack_10_a_request_seen_on_the_way_cannot_enroll_other_keys() {
    let f = fixture().await;
    let token = f.invite("node-c");
    let (wg, identity) = (PrivateKey::generate(), IdentityKey::generate());
    let (request, _) =
        EnrollRequest::build(&f.ticket("node-c", &token), &wg, &identity, vec![], None).unwrap();
    let theirs = PrivateKey::generate().public_key().to_base64();
    let their_identity = IdentityKey::generate().public().to_base64();
    for (what, forged) in [
        (
            "wg key",
            altered(&request, |c| c["wg_public_key"] = theirs.clone().into()),
        ),
        (
            "identity",
            altered(&request, |c| {
                c["identity_key"] = their_identity.clone().into()
            }),
        ),
        (
            "address",
            altered(&request, |c| {
                c["addresses"] = serde_json::json!(["100.64.0.9/24"])
            }),
        ),
        (
            "endpoint",
            altered(&request, |c| c["endpoint"] = "203.0.113.9:51820".into()),
        ),
    ] {
        let (status, body) = f.post(forged).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {body}");
        assert_eq!(f.enrolled("node-c"), None, "{what}");
    }
    // The untouched request enrolls the node's own keys; replayed, it changes nothing.
    let body = serde_json::to_vec(&request).unwrap();
    let (status, first) = f.post(body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, replayed) = f.post(body).await;
    assert_eq!(status, StatusCode::CREATED, "{replayed}");
    let c = f.enrolled("node-c").unwrap();
    assert_eq!(c.wg_public_key, wg.public_key());
    assert_eq!(c.identity_key, identity.public());
    assert_eq!(f.engine.store().nodes().unwrap().len(), 3);
}

#[tokio::test]
async fn attack_10_a_request_for_another_controller_or_with_a_wrong_token_is_refused() {
    let f = fixture().await;
    let token = f.invite("node-c");
    let mut ticket = f.ticket("node-c", &token);
    let other = IdentityKey::generate();
    ticket.controller_key = other.public();
    ticket.enroll_key = enrollment_key(&other).public_key();
    let (request, _) = EnrollRequest::build(
        &ticket,
        &PrivateKey::generate(),
        &IdentityKey::generate(),
        vec![],
        None,
    )
    .unwrap();
    let (status, body) = f.post(serde_json::to_vec(&request).unwrap()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("meant for the controller"), "{body}");
    let (status, body) = f.enroll("node-c", "guessed-token", &[], None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(!body.contains("guessed-token"), "{body}");
    // The old form, with the token itself, is refused without looking at the token.
    let old = serde_json::json!({
        "token": token,
        "wg_public_key": PrivateKey::generate().public_key(),
        "identity_key": IdentityKey::generate().public(),
        "addresses": [],
    });
    let (status, body) = f.post(old.to_string().into_bytes()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(f.enrolled("node-c"), None);
}

#[tokio::test]
async fn attack_19_a_wireguard_key_of_small_order_is_refused() {
    let f = fixture().await;
    let token = f.invite("node-c");
    let (request, _) = EnrollRequest::build(
        &f.ticket("node-c", &token),
        &PrivateKey::generate(),
        &IdentityKey::generate(),
        vec![],
        None,
    )
    .unwrap();
    let mut order_two = [0u8; 32];
    order_two[0] = 1;
    for key in [[0u8; 32], order_two] {
        let key = PublicKey::from_bytes(key).to_base64();
        let (status, body) = f
            .post(altered(&request, |c| {
                c["wg_public_key"] = key.clone().into()
            }))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(body.contains("small order"), "{body}");
    }
    assert_eq!(f.enrolled("node-c"), None);
}

/// A benchmark of 0.9 with `seq`, signed by `identity` as `node`; the answer's status.
async fn benchmark_as(f: &Fixture, node: &str, identity: &IdentityKey, seq: u64) -> StatusCode {
    let now = f.engine.clock().now_ms();
    let body = format!(
        r#"{{"suite_version":"s1","scores":{{"overall":0.9,"refusal":0.9,"honesty":0.9,"policy":0.9}},"measured_at_ms":{now},"seq":{seq}}}"#
    );
    let path = format!("/v1/benchmarks/{node}");
    let controller = f.key.public();
    let sig = RequestSignature::sign(
        identity,
        &controller,
        node,
        "POST",
        &path,
        body.as_bytes(),
        now,
    );
    let mut request = Request::post(path);
    for (name, value) in sig.headers() {
        request = request.header(name, value);
    }
    f.request(request.body(Body::from(body)).unwrap()).await.0
}

/// The engine owns "commit to the store, then bring memory in step": a node enrolled
/// through the API signs its first request at once, and a node removed is refused at once,
/// without any caller remembering to reread the nodes.
#[tokio::test]
async fn an_enrolled_node_is_known_at_once_and_a_removed_one_refused_at_once() {
    let f = fixture().await;
    let token = f.invite("node-c");
    let identity = IdentityKey::generate();
    let (request, _) = EnrollRequest::build(
        &f.ticket("node-c", &token),
        &PrivateKey::generate(),
        &identity,
        Vec::new(),
        None,
    )
    .unwrap();
    let (status, body) = f.post(serde_json::to_vec(&request).unwrap()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        benchmark_as(&f, "node-c", &identity, 1).await,
        StatusCode::CREATED,
        "the new node's first signed request"
    );
    assert!(f.engine.remove_node("node-c").unwrap());
    assert_eq!(
        benchmark_as(&f, "node-c", &identity, 2).await,
        StatusCode::UNAUTHORIZED,
        "a removed node's signed request"
    );
}
