use super::*;
use crate::bundle::{Bundle, Membership, SignedBundle, BUNDLE_VERSION, SIGNATURE_LABEL};
use crate::PrivateKey;

fn notice(denied: usize) -> CutOff {
    CutOff {
        format: CUTOFF_FORMAT,
        epoch: 9,
        issued_ms: 1_000,
        decided_ms: 990,
        not_after_ms: 61_000,
        denied: (0..denied)
            .map(|i| DeniedNode {
                node_id: format!("node-{i}"),
                public_key: PrivateKey::generate().public_key(),
            })
            .collect(),
    }
}

fn bundle() -> Bundle {
    Bundle {
        version: BUNDLE_VERSION,
        node_id: "node-a".into(),
        recipient: PrivateKey::generate().public_key(),
        epoch: 9,
        activation_ms: 1_000,
        not_after_ms: 61_000,
        issued_ms: 500,
        decided_ms: 400,
        membership: Membership::Denied {
            reason: "failing".into(),
        },
        seal_key: None,
        peers: Vec::new(),
        forward: false,
        relay: None,
    }
}

#[test]
fn a_notice_opens_with_a_pinned_key_and_names_its_signer() {
    let old = IdentityKey::generate();
    let new = IdentityKey::generate();
    let pinned = KeySet::new(vec![old.public(), new.public()]).unwrap();
    let n = notice(2);
    let signed = SignedCutOff::sign(&n, &new);
    let json = serde_json::to_vec(&signed).unwrap();
    let parsed = SignedCutOff::from_json(&json).unwrap();
    assert_eq!(parsed.open(&pinned), Ok((n, new.public())));
}

#[test]
fn a_forged_notice_is_refused() {
    let controller = IdentityKey::generate();
    let pinned = KeySet::one(controller.public());
    let forged = SignedCutOff::sign(&notice(1), &IdentityKey::generate());
    assert_eq!(forged.open(&pinned), Err(CutOffError::BadSignature));
    // The controller's signature over another notice does not cover this one.
    let genuine = SignedCutOff::sign(&notice(1), &controller);
    let mut other = notice(1);
    other.epoch += 1;
    let swapped = SignedCutOff {
        notice: STANDARD.encode(serde_json::to_vec(&other).unwrap()),
        signature: genuine.signature,
    };
    assert_eq!(swapped.open(&pinned), Err(CutOffError::BadSignature));
}

/// Domain separation: the controller key's signature over a bundle, or over a notice's
/// bytes under the bundle label, is never a notice; and a notice is never a bundle.
#[test]
fn a_bundle_signature_is_not_a_notice_and_a_notice_is_not_a_bundle() {
    let controller = IdentityKey::generate();
    let pinned = KeySet::one(controller.public());
    let signed_bundle = SignedBundle::sign(&bundle(), &controller);
    let as_notice = SignedCutOff {
        notice: signed_bundle.payload.clone(),
        signature: signed_bundle.signature.clone(),
    };
    assert_eq!(as_notice.open(&pinned), Err(CutOffError::BadSignature));
    // Notice bytes the controller signed as a bundle (under the bundle label), or bare.
    let bytes = serde_json::to_vec(&notice(1)).unwrap();
    for message in [[SIGNATURE_LABEL, &bytes].concat(), bytes.clone()] {
        let relabelled = SignedCutOff {
            notice: STANDARD.encode(&bytes),
            signature: STANDARD.encode(controller.sign(&message)),
        };
        assert_eq!(relabelled.open(&pinned), Err(CutOffError::BadSignature));
    }
    // The reverse: a notice's signature presented as a bundle's.
    let signed_notice = SignedCutOff::sign(&notice(1), &controller);
    let as_bundle = SignedBundle {
        payload: signed_notice.notice.clone(),
        signature: signed_notice.signature.clone(),
    };
    assert!(as_bundle.verify_pinned(&pinned).is_err());
    // And the wire forms do not parse as each other.
    let notice_json = serde_json::to_vec(&signed_notice).unwrap();
    assert!(serde_json::from_slice::<SignedBundle>(&notice_json).is_err());
    let bundle_json = serde_json::to_vec(&signed_bundle).unwrap();
    assert!(matches!(
        SignedCutOff::from_json(&bundle_json),
        Err(CutOffError::Encoding(_))
    ));
}

#[test]
fn oversized_notices_are_refused_before_any_work() {
    let controller = IdentityKey::generate();
    let pinned = KeySet::one(controller.public());
    let huge = vec![b' '; MAX_CUTOFF_BYTES + 2048];
    assert_eq!(
        SignedCutOff::from_json(&huge),
        Err(CutOffError::TooLarge(huge.len()))
    );
    let padded = SignedCutOff {
        notice: "A".repeat(MAX_CUTOFF_BYTES + 4),
        signature: String::new(),
    };
    assert_eq!(
        padded.open(&pinned),
        Err(CutOffError::TooLarge(MAX_CUTOFF_BYTES + 4))
    );
    // Signed, within the byte bound, but naming more nodes than any notice may.
    let mut crowded = notice(0);
    let key = PrivateKey::generate().public_key();
    crowded.denied = (0..=MAX_DENIED)
        .map(|_| DeniedNode {
            node_id: "n".into(),
            public_key: key,
        })
        .collect();
    let signed = SignedCutOff::sign(&crowded, &controller);
    assert!(signed.notice.len() <= MAX_CUTOFF_BYTES);
    assert_eq!(
        signed.open(&pinned),
        Err(CutOffError::TooMany(MAX_DENIED + 1))
    );
}

#[test]
fn stale_and_unknown_format_notices_are_refused() {
    let controller = IdentityKey::generate();
    let pinned = KeySet::one(controller.public());
    let signed = SignedCutOff::sign(&notice(1), &controller);
    let (opened, _) = signed.open(&pinned).unwrap();
    assert_eq!(opened.check_current(60_999), Ok(()));
    assert_eq!(
        opened.check_current(61_000),
        Err(CutOffError::Expired {
            epoch: 9,
            not_after_ms: 61_000,
            now_ms: 61_000
        })
    );
    let mut future = notice(1);
    future.format = CUTOFF_FORMAT + 1;
    assert_eq!(
        SignedCutOff::sign(&future, &controller).open(&pinned),
        Err(CutOffError::Format(CUTOFF_FORMAT + 1))
    );
    let junk = SignedCutOff {
        notice: "!!".into(),
        signature: signed.signature,
    };
    assert!(matches!(junk.open(&pinned), Err(CutOffError::Encoding(_))));
}
