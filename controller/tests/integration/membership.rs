//! Enrollment with an invite at a controller with a membership key (`[membership]
//! public_key`): only a claim carrying the key's signature over exactly its node id and
//! keys enrolls; the signature is stored and handed to the node's peers in their bundles.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use meshtun_controller::testing::{self, FixtureOptions};
use meshtun_proto::enroll::{enrollment_key, EnrollRequest, Ticket};
use meshtun_proto::membership::{MembershipKey, MembershipSig};
use meshtun_proto::{IdentityKey, PrivateKey};

async fn post(f: &testing::Fixture, request: &EnrollRequest) -> (StatusCode, String) {
    let request = Request::post("/v1/enroll")
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(request).unwrap()))
        .unwrap();
    let (status, body) = f.request(request).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn ticket(f: &testing::Fixture, node: &str, token: &str, key: &MembershipKey) -> Ticket {
    Ticket {
        url: "http://127.0.0.1:8700".into(),
        controller_key: f.key.public(),
        enroll_key: enrollment_key(&f.key).public_key(),
        node_id: node.into(),
        token: token.into(),
        expires_ms: u64::MAX,
        membership_key: Some(key.public()),
    }
}

#[tokio::test]
async fn only_an_enrollment_signed_for_its_own_id_and_keys_is_accepted() {
    let key = MembershipKey::generate();
    let f = testing::Fixture::start(FixtureOptions {
        membership_key: Some(key.public()),
        ..FixtureOptions::default()
    })
    .await;
    let expires = f.engine.clock().now_ms() + 600_000;
    f.engine
        .store()
        .create_invite("node-x", "tok-x", expires, None, None)
        .unwrap();
    let ticket = ticket(&f, "node-x", "tok-x", &key);
    let (wg, identity) = (PrivateKey::generate(), IdentityKey::generate());
    let build = |sig: Option<MembershipSig>| {
        EnrollRequest::build_signed(&ticket, (&wg, &identity), vec![], None, sig)
            .unwrap()
            .0
    };
    let good = key
        .sign("node-x", &wg.public_key(), &identity.public())
        .unwrap();
    let other_wg = PrivateKey::generate().public_key();
    let refusals = [
        (None, "requires a membership signature"),
        (
            Some(
                key.sign("node-y", &wg.public_key(), &identity.public())
                    .unwrap(),
            ),
            "does not verify",
        ),
        (
            Some(key.sign("node-x", &other_wg, &identity.public()).unwrap()),
            "does not verify",
        ),
        (
            Some(
                MembershipKey::generate()
                    .sign("node-x", &wg.public_key(), &identity.public())
                    .unwrap(),
            ),
            "does not verify",
        ),
    ];
    for (sig, why) in refusals {
        let (status, body) = post(&f, &build(sig)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(body.contains(why) && body.contains("node-x"), "{body}");
        assert_eq!(f.engine.store().node("node-x").unwrap(), None);
    }
    // The invite is still good for the signed enrollment, which stores the signature.
    let (status, body) = post(&f, &build(Some(good))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let node = f.engine.store().node("node-x").unwrap().unwrap();
    assert_eq!(node.membership_sig, Some(good));
}
