use super::*;
use crate::PrivateKey;

#[derive(Clone, Copy)]
struct Node {
    id: &'static str,
    wg: PublicKey,
    identity: IdentityPublic,
}

fn node(id: &'static str) -> Node {
    Node {
        id,
        wg: PrivateKey::generate().public_key(),
        identity: IdentityKey::generate().public(),
    }
}

fn sign(key: &MembershipKey, n: &Node) -> MembershipSig {
    key.sign(n.id, &n.wg, &n.identity).unwrap()
}

fn verify(key: &MembershipPublic, n: &Node, sig: &MembershipSig) -> Result<(), MembershipError> {
    key.verify(n.id, &n.wg, &n.identity, sig)
}

#[test]
fn a_signed_enrollment_verifies_and_round_trips_as_text() {
    let key = MembershipKey::generate();
    let a = node("node-a");
    let sig = sign(&key, &a);
    assert_eq!(verify(&key.public(), &a, &sig), Ok(()));
    let text = sig.to_base64();
    assert_eq!(text.len(), 88);
    let again = MembershipSig::from_base64(&format!(" {text}\n")).unwrap();
    assert_eq!(verify(&key.public(), &a, &again), Ok(()));
    let public = MembershipPublic::from_base64(&key.public().to_base64()).unwrap();
    assert_eq!(public, key.public());
    let reloaded = MembershipKey::from_base64(&key.to_base64()).unwrap();
    assert_eq!(reloaded.public(), key.public());
    assert!(!format!("{key:?}").contains(&key.to_base64()));
}

#[test]
fn another_node_id_wg_key_or_identity_is_refused() {
    let key = MembershipKey::generate();
    let a = node("node-a");
    let sig = sign(&key, &a);
    let other = node("node-b");
    let cases = [
        Node { id: "node-b", ..a },
        Node { id: "node-a2", ..a },
        Node { wg: other.wg, ..a },
        Node {
            identity: other.identity,
            ..a
        },
    ];
    for case in &cases {
        assert_eq!(
            verify(&key.public(), case, &sig),
            Err(MembershipError::BadSignature),
            "{}",
            case.id
        );
    }
}

#[test]
fn the_length_prefix_keeps_id_and_keys_apart() {
    // Without the prefix, moving the id's last byte into the key would give one message.
    let a = node("node-a");
    let m1 = message("node-a", &a.wg, &a.identity).unwrap();
    let m2 = message("node-", &a.wg, &a.identity).unwrap();
    assert_ne!(m1[SIGNATURE_LABEL.len()], m2[SIGNATURE_LABEL.len()]);
    assert!(m1.starts_with(SIGNATURE_LABEL));
}

#[test]
fn a_signature_by_another_key_or_under_another_label_is_refused() {
    let key = MembershipKey::generate();
    let a = node("node-a");
    let sig = sign(&key, &a);
    let other = MembershipKey::generate();
    assert_eq!(
        verify(&other.public(), &a, &sig),
        Err(MembershipError::BadSignature)
    );
    // The same key signing the bare triple (no label) is no membership signature.
    let unlabelled = message(a.id, &a.wg, &a.identity).unwrap()[SIGNATURE_LABEL.len()..].to_vec();
    let bare = MembershipSig(key.0.sign(&unlabelled));
    assert_eq!(
        verify(&key.public(), &a, &bare),
        Err(MembershipError::BadSignature)
    );
}

#[test]
fn a_malleated_signature_is_refused() {
    // s + L is the same signature to a lax verifier; verify_strict refuses it.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let key = MembershipKey::generate();
    let a = node("node-a");
    let mut bytes = *sign(&key, &a).as_bytes();
    let mut carry = 0u16;
    for (s, l) in bytes[32..].iter_mut().zip(L) {
        let sum = u16::from(*s) + u16::from(l) + carry;
        *s = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0);
    assert_eq!(
        verify(&key.public(), &a, &MembershipSig(bytes)),
        Err(MembershipError::BadSignature)
    );
}

#[test]
fn malformed_text_is_refused_without_panicking() {
    let good = sign(&MembershipKey::generate(), &node("node-a")).to_base64();
    let long = "A".repeat(200);
    for text in [
        "",
        "not base64!",
        &good[..87],
        &good[..84],
        long.as_str(),
        "AAAA",
    ] {
        assert!(MembershipSig::from_base64(text).is_err(), "{text:?}");
        assert!(MembershipPublic::from_base64(text).is_err(), "{text:?}");
    }
    assert_eq!(
        MembershipSig::from_base64(&STANDARD.encode([0u8; 63])),
        Err(MembershipError::Length { got: 63, want: 64 })
    );
    assert!(serde_json::from_str::<MembershipSig>("\"AAAA\"").is_err());
    let bad_id = MembershipKey::generate();
    let a = node("node-a");
    let too_long = "a".repeat(65);
    for id in ["", "Node-A", "a/b", too_long.as_str()] {
        assert!(matches!(
            bad_id.sign(id, &a.wg, &a.identity),
            Err(MembershipError::NodeId(_))
        ));
        let sig = sign(&bad_id, &a);
        assert!(bad_id
            .public()
            .verify(id, &a.wg, &a.identity, &sig)
            .is_err());
    }
}

#[test]
fn small_order_and_non_canonical_public_keys_are_refused() {
    let mut identity = [0u8; 32];
    identity[0] = 1;
    // y = -1: the point of order 2; all zero: a point of order 4.
    let mut minus_one = [0xffu8; 32];
    minus_one[0] = 0xec;
    minus_one[31] = 0x7f;
    for bytes in [identity, [0u8; 32], minus_one] {
        assert_eq!(
            MembershipPublic::from_bytes(bytes),
            Err(MembershipError::WeakKey)
        );
        assert!(MembershipPublic::from_base64(&STANDARD.encode(bytes)).is_err());
    }
    // p + k spells the same y as k: refused whenever k itself is a usable key.
    let mut found = 0;
    for k in 2u8..19 {
        let mut canonical = [0u8; 32];
        canonical[0] = k;
        if MembershipPublic::from_bytes(canonical).is_err() {
            continue;
        }
        let mut alias = [0xffu8; 32];
        alias[0] = 0xed + k;
        alias[31] = 0x7f;
        assert_eq!(
            MembershipPublic::from_bytes(alias),
            Err(MembershipError::WeakKey),
            "y = p + {k}"
        );
        found += 1;
    }
    assert!(found > 0, "no usable key among y = 2..18");
    assert!(MembershipPublic::from_bytes(
        MembershipKey::generate().public().0.as_bytes().to_owned()
    )
    .is_ok());
}

#[test]
fn a_peer_enrollment_serializes_as_base64_strings() {
    let key = MembershipKey::generate();
    let a = node("node-a");
    let entry = PeerEnrollment {
        identity: a.identity,
        signature: sign(&key, &a),
    };
    let json = serde_json::to_string(&entry).unwrap();
    assert!(json.contains(&entry.signature.to_base64()), "{json}");
    let back: PeerEnrollment = serde_json::from_str(&json).unwrap();
    assert_eq!(back, entry);
}
