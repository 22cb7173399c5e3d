//! Arbitrary bytes through the controller's enrollment request parser and proof checks, and
//! through the node's check of the signed reply.
//!
//! Beyond "never panics": an accepted request has a valid node id, a token id of 32 hex
//! digits, at most 8 addresses, a `host:port` endpoint and a WireGuard key of full order;
//! no input but the honest request passes every proof (the fuzzer holds none of the keys);
//! and no reply the fuzzer makes is accepted, since it cannot sign with the controller key.

#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use meshtun_proto::enroll::{
    enrollment_key, invite_verifier, EnrollRequest, Enrollment, SignedEnrollReply, Ticket,
    TOKEN_ID_LEN,
};
use meshtun_proto::wire::{check_endpoint, valid_node_id, MAX_NODE_ADDRESSES};
use meshtun_proto::{IdentityKey, PrivateKey};

struct Fixture {
    controller: IdentityKey,
    enroll: PrivateKey,
    request: EnrollRequest,
    honest: Enrollment,
}

fn fixture() -> Fixture {
    let controller = IdentityKey::from_bytes([3; 32]);
    let enroll = enrollment_key(&controller);
    let ticket = Ticket {
        url: "http://192.0.2.10:8700".into(),
        controller_key: controller.public(),
        enroll_key: enroll.public_key(),
        node_id: "node-d".into(),
        token: "the-invite-token".into(),
        expires_ms: 0,
        membership_key: None,
    };
    let (request, honest) = EnrollRequest::build(
        &ticket,
        &PrivateKey::from_bytes([4; 32]),
        &IdentityKey::from_bytes([5; 32]),
        vec!["100.64.0.4/24".parse().expect("a CIDR")],
        Some("192.0.2.4:51820".into()),
    )
    .expect("the honest request builds");
    Fixture {
        controller,
        enroll,
        request,
        honest,
    }
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

/// Checks an enrollment the parser accepted, as the controller would.
fn check(f: &Fixture, enrollment: &Enrollment) {
    let claim = &enrollment.claim;
    assert!(valid_node_id(&claim.node_id));
    assert_eq!(claim.token_id.len(), TOKEN_ID_LEN);
    assert!(claim.addresses.len() <= MAX_NODE_ADDRESSES);
    if let Some(endpoint) = &claim.endpoint {
        assert_eq!(check_endpoint(endpoint), Ok(()));
    }
    assert!(!claim.wg_public_key.is_low_order());
    let proved = enrollment
        .verify_possession(&f.controller.public(), &f.enroll)
        .is_ok()
        && enrollment
            .verify_token(&invite_verifier("the-invite-token"))
            .is_ok();
    if proved {
        assert_eq!(enrollment.digest(), f.honest.digest(), "a forged claim passed");
    }
}

fuzz_target!(|data: &[u8]| {
    let f = FIXTURE.get_or_init(fixture);
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        // Any body.
        0 => {
            if let Ok(enrollment) = EnrollRequest::decode(rest) {
                check(f, &enrollment);
            }
        }
        // Any claim, with the honest request's proofs.
        1 => {
            let mut request = f.request.clone();
            request.claim = STANDARD.encode(rest);
            let body = serde_json::to_vec(&request).expect("a request serializes");
            if let Ok(enrollment) = EnrollRequest::decode(&body) {
                check(f, &enrollment);
            }
        }
        // Any reply to the honest request: never accepted.
        _ => {
            if let Ok(reply) = serde_json::from_slice::<SignedEnrollReply>(rest) {
                assert!(reply.verify(&f.controller.public(), &f.honest).is_err());
            }
        }
    }
});
