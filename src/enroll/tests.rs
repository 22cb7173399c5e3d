//! The enrollment proofs and the signed reply, attacked one part at a time.

use super::*;

struct Setup {
    controller: IdentityKey,
    enroll: PrivateKey,
    ticket: Ticket,
    wg: PrivateKey,
    identity: IdentityKey,
}

fn setup() -> Setup {
    let controller = IdentityKey::generate();
    let enroll = enrollment_key(&controller);
    let ticket = Ticket {
        url: "http://192.0.2.10:8700".into(),
        controller_key: controller.public(),
        enroll_key: enroll.public_key(),
        node_id: "node-d".into(),
        token: "secret-token".into(),
        expires_ms: 42,
        membership_key: None,
    };
    Setup {
        controller,
        enroll,
        ticket,
        wg: PrivateKey::generate(),
        identity: IdentityKey::generate(),
    }
}

fn request(s: &Setup) -> (EnrollRequest, Enrollment) {
    EnrollRequest::build(
        &s.ticket,
        &s.wg,
        &s.identity,
        vec!["100.64.0.4/24".parse().unwrap()],
        Some("192.0.2.4:51820".into()),
    )
    .unwrap()
}

fn body(request: &EnrollRequest) -> Vec<u8> {
    serde_json::to_vec(request).unwrap()
}

/// The request with its claim replaced by `claim` (the proofs kept).
fn with_claim(request: &EnrollRequest, claim: &EnrollClaim) -> Vec<u8> {
    let mut forged = request.clone();
    forged.claim = STANDARD.encode(serde_json::to_vec(claim).unwrap());
    body(&forged)
}

#[test]
fn an_honest_request_verifies_and_never_holds_the_token() {
    let s = setup();
    let (request, built) = request(&s);
    let text = String::from_utf8(body(&request)).unwrap();
    assert!(!text.contains("secret-token"));
    let claim = String::from_utf8(STANDARD.decode(&request.claim).unwrap()).unwrap();
    assert!(!claim.contains("secret-token"));
    let got = EnrollRequest::decode(text.as_bytes()).unwrap();
    assert_eq!(got, built);
    got.verify_possession(&s.controller.public(), &s.enroll)
        .unwrap();
    got.verify_token(&invite_verifier("secret-token")).unwrap();
    assert_eq!(
        got.claim.token_id,
        token_id(&invite_verifier("secret-token"))
    );
}

/// A change an attacker makes to a claim.
type Edit<'a> = Box<dyn Fn(&mut EnrollClaim) + 'a>;

#[test]
fn a_claim_changed_on_the_way_fails_every_proof() {
    let s = setup();
    let (request, built) = request(&s);
    // An attacker substitutes its own WireGuard key, identity key, addresses or endpoint.
    let attacker = PrivateKey::generate().public_key();
    let changes: [Edit<'_>; 4] = [
        Box::new(|c| c.wg_public_key = attacker),
        Box::new(|c| c.identity_key = IdentityKey::generate().public()),
        Box::new(|c| c.addresses = vec!["100.64.0.99/24".parse().unwrap()]),
        Box::new(|c| c.endpoint = Some("203.0.113.66:51820".into())),
    ];
    for change in changes {
        let mut claim = built.claim.clone();
        change(&mut claim);
        let forged = EnrollRequest::decode(&with_claim(&request, &claim)).unwrap();
        assert!(forged
            .verify_token(&invite_verifier("secret-token"))
            .is_err());
        assert!(forged
            .verify_possession(&s.controller.public(), &s.enroll)
            .is_err());
    }
}

#[test]
fn each_proof_is_checked() {
    let s = setup();
    let (request, _) = request(&s);
    let verifier = invite_verifier("secret-token");
    let decode = |r: &EnrollRequest| EnrollRequest::decode(&body(r)).unwrap();
    let mut bad = request.clone();
    bad.token_mac = STANDARD.encode([7u8; 32]);
    assert_eq!(
        decode(&bad).verify_token(&verifier),
        Err(EnrollError::TokenProof)
    );
    assert_eq!(
        decode(&request).verify_token(&invite_verifier("another-token")),
        Err(EnrollError::TokenProof)
    );
    let mut bad = request.clone();
    bad.identity_signature = STANDARD.encode([7u8; 64]);
    assert_eq!(
        decode(&bad).verify_possession(&s.controller.public(), &s.enroll),
        Err(EnrollError::IdentityProof)
    );
    let mut bad = request.clone();
    bad.wg_proof = STANDARD.encode([7u8; 32]);
    assert!(matches!(
        decode(&bad).verify_possession(&s.controller.public(), &s.enroll),
        Err(EnrollError::WireGuardProof(_))
    ));
    // Another controller (another key) accepts none of it.
    let other = IdentityKey::generate();
    assert!(matches!(
        decode(&request).verify_possession(&other.public(), &enrollment_key(&other)),
        Err(EnrollError::OtherController(_))
    ));
}

#[test]
fn a_wireguard_key_of_small_order_is_refused() {
    let s = setup();
    let (request, built) = request(&s);
    for key in [[0u8; 32], {
        let mut one = [0u8; 32];
        one[0] = 1;
        one
    }] {
        let mut claim = built.claim.clone();
        claim.wg_public_key = PublicKey::from_bytes(key);
        assert_eq!(
            EnrollRequest::decode(&with_claim(&request, &claim)),
            Err(EnrollError::LowOrderKey(claim.wg_public_key))
        );
    }
    // A ticket whose enrollment key is of small order cannot be used either.
    let mut ticket = s.ticket.clone();
    ticket.enroll_key = PublicKey::from_bytes([0; 32]);
    assert!(EnrollRequest::build(&ticket, &s.wg, &s.identity, vec![], None).is_err());
}

#[test]
fn malformed_requests_are_refused_with_the_reason() {
    let s = setup();
    let (request, built) = request(&s);
    let err = |b: &[u8]| EnrollRequest::decode(b).unwrap_err().to_string();
    assert!(err(&vec![b' '; MAX_ENROLL_BYTES + 1]).contains("at most 8192"));
    assert!(err(b"{}").contains("does not parse"));
    let old = br#"{"token":"t","wg_public_key":"x","identity_key":"y","addresses":[]}"#;
    assert!(err(old).contains("does not parse"));
    let mut v1 = request.clone();
    v1.version = 1;
    assert!(err(&body(&v1)).contains("version 1 is not supported"));
    let mut claim = built.claim.clone();
    claim.node_id = "../x".into();
    assert!(err(&with_claim(&request, &claim)).contains("node id"));
    let mut claim = built.claim.clone();
    claim.endpoint = Some("x".repeat(300));
    assert!(err(&with_claim(&request, &claim)).contains("at most 261"));
    let mut claim = built.claim.clone();
    claim.addresses = vec!["100.64.0.4/24".parse().unwrap(); 9];
    assert!(err(&with_claim(&request, &claim)).contains("at most 8"));
    let mut bad = request.clone();
    bad.token_mac = "!!".into();
    assert!(err(&body(&bad)).contains("token_mac"));
}

#[test]
fn the_reply_is_accepted_only_signed_unaltered_and_for_this_request() {
    let s = setup();
    let (_, enrollment) = request(&s);
    let reply = EnrollResponse {
        request_digest: enrollment.digest(),
        node_id: "node-d".into(),
        wg_public_key: s.wg.public_key(),
        identity_key: s.identity.public(),
        addresses: vec!["100.64.0.4/24".parse().unwrap()],
        endpoint: None,
        network: vec!["100.64.0.0/24".parse().unwrap()],
    };
    let signed = SignedEnrollReply::sign(&reply, &s.controller);
    let pinned = s.controller.public();
    assert_eq!(signed.verify(&pinned, &enrollment).unwrap(), reply);
    assert_eq!(
        signed.verify(&IdentityKey::generate().public(), &enrollment),
        Err(EnrollError::ReplySignature)
    );
    let mut altered = reply.clone();
    altered.addresses = vec!["1.0.0.1/1".parse().unwrap()];
    let forged = SignedEnrollReply {
        payload: STANDARD.encode(serde_json::to_vec(&altered).unwrap()),
        signature: signed.signature.clone(),
    };
    assert_eq!(
        forged.verify(&pinned, &enrollment),
        Err(EnrollError::ReplySignature)
    );
    // A signature by the controller over the bare payload (no label) is not a reply.
    let bytes = serde_json::to_vec(&reply).unwrap();
    let unlabelled = SignedEnrollReply {
        payload: STANDARD.encode(&bytes),
        signature: STANDARD.encode(s.controller.sign(&bytes)),
    };
    assert_eq!(
        unlabelled.verify(&pinned, &enrollment),
        Err(EnrollError::ReplySignature)
    );
    // A genuine reply to another request, or for other keys, is refused.
    for change in [
        |r: &mut EnrollResponse| r.request_digest = "00".repeat(32),
        |r: &mut EnrollResponse| r.wg_public_key = PrivateKey::generate().public_key(),
        |r: &mut EnrollResponse| r.node_id = "node-e".into(),
    ] {
        let mut other = reply.clone();
        change(&mut other);
        let signed = SignedEnrollReply::sign(&other, &s.controller);
        assert!(matches!(
            signed.verify(&pinned, &enrollment),
            Err(EnrollError::ReplyMismatch(_))
        ));
    }
}

#[test]
fn tickets_round_trip_hide_the_token_in_debug_and_v1_is_named() {
    let s = setup();
    assert_eq!(Ticket::decode(&s.ticket.encode()).unwrap(), s.ticket);
    assert!(!format!("{:?}", s.ticket).contains("secret-token"));
    assert_eq!(Ticket::decode("hello"), Err(TicketError::Malformed));
    assert_eq!(
        Ticket::decode("meshtun-ticket-v2:!!"),
        Err(TicketError::Malformed)
    );
    assert_eq!(
        Ticket::decode("meshtun-ticket-v1:abc"),
        Err(TicketError::Old)
    );
    let (request, _) = request(&s);
    let shown = format!("{request:?}");
    assert!(!shown.contains(&request.token_mac), "{shown}");
}

#[test]
fn the_enrollment_key_is_stable_and_distinct_from_the_signing_key() {
    let s = setup();
    assert_eq!(enrollment_key(&s.controller), s.enroll);
    assert_ne!(
        enrollment_key(&IdentityKey::generate()).public_key(),
        s.enroll.public_key()
    );
    assert_ne!(s.enroll.as_bytes(), &*s.controller.seed());
}
