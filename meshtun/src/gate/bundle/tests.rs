//! Bundle checks: a good bundle opens, and each way a bundle can be wrong is refused with its
//! own error.

use meshtun_proto::bundle::{Bundle, BundlePeer, Sealer, BUNDLE_VERSION};
use meshtun_proto::{IdentityKey, KeySet};

use super::*;

pub(crate) const NOW: u64 = 1_700_000_000_000;

/// A controller, a node (`node-a`) and two peers with their pair keys.
pub(crate) struct Fixture {
    pub(crate) controller: IdentityKey,
    pub(crate) wg: PrivateKey,
    pub(crate) peers: Vec<(String, PublicKey, PresharedKey)>,
}

impl Fixture {
    pub(crate) fn new() -> Self {
        Self {
            controller: IdentityKey::generate(),
            wg: PrivateKey::generate(),
            peers: ["node-b", "node-c"]
                .iter()
                .map(|id| {
                    let key = PrivateKey::generate().public_key();
                    (id.to_string(), key, PresharedKey::generate())
                })
                .collect(),
        }
    }

    /// node-a's allowed bundle for `epoch`, valid from a minute before `NOW` to `not_after_ms`.
    pub(crate) fn bundle(&self, epoch: EpochId, not_after_ms: u64) -> Bundle {
        let recipient = self.wg.public_key();
        let sealer = Sealer::new(&recipient).unwrap();
        Bundle {
            forward: false,
            relay: None,
            version: BUNDLE_VERSION,
            node_id: "node-a".into(),
            recipient,
            epoch,
            activation_ms: NOW - 60_000,
            not_after_ms,
            issued_ms: NOW - 70_000,
            decided_ms: NOW - 70_000,
            membership: Membership::Allowed,
            seal_key: Some(sealer.ephemeral()),
            peers: self
                .peers
                .iter()
                .enumerate()
                .map(|(i, (id, key, psk))| BundlePeer {
                    forwards_to: Vec::new(),
                    enrollment: None,
                    candidates: Vec::new(),
                    node_id: id.clone(),
                    public_key: *key,
                    endpoint: Some(format!("192.0.2.{}:51820", i + 2)),
                    allowed_ips: vec![format!("100.64.0.{}/32", i + 2).parse().unwrap()],
                    sealed_psk: sealer.seal(i as u32, epoch, key, psk),
                })
                .collect(),
        }
    }

    pub(crate) fn sign(&self, bundle: &Bundle) -> SignedBundle {
        SignedBundle::sign(bundle, &self.controller)
    }

    pub(crate) fn verify(&self, signed: &SignedBundle) -> Result<VerifiedBundle, BundleCheckError> {
        verify_bundle(
            signed,
            &Trust::controller(&KeySet::one(self.controller.public())),
            "node-a",
            &self.wg,
        )
    }
}

#[test]
fn a_good_bundle_opens_with_every_key() {
    let f = Fixture::new();
    let signed = f.sign(&f.bundle(5, NOW + 60_000));
    let v = f.verify(&signed).unwrap();
    assert_eq!((v.epoch, v.not_after_ms), (5, NOW + 60_000));
    assert_eq!(v.activation_ms, NOW - 60_000);
    assert!(v.is_allowed());
    assert_eq!(v.signed, signed);
    assert_eq!(v.peers.len(), 2);
    for (peer, (id, key, psk)) in v.peers.iter().zip(&f.peers) {
        assert_eq!(&peer.node_id, id);
        assert_eq!(&peer.public_key, key);
        assert_eq!(&peer.psk, psk);
    }
    assert_eq!(
        v.peers[0].candidates,
        ["192.0.2.2:51820"],
        "format 1's endpoint"
    );
    assert_eq!(
        v.peers[1].allowed_ips,
        vec!["100.64.0.3/32".parse().unwrap()]
    );
    v.check_fresh(Some(4), NOW).unwrap();
    v.check_fresh(None, NOW).unwrap();
}

#[test]
fn freshness_is_checked_against_the_known_epoch_and_the_clock() {
    let f = Fixture::new();
    let v = f.verify(&f.sign(&f.bundle(5, NOW + 1))).unwrap();
    assert_eq!(
        v.check_fresh(Some(5), NOW),
        Err(BundleCheckError::StaleEpoch { got: 5, have: 5 })
    );
    assert_eq!(
        v.check_fresh(Some(6), NOW),
        Err(BundleCheckError::StaleEpoch { got: 5, have: 6 })
    );
    let expired = v.check_fresh(None, NOW + 1).unwrap_err();
    assert_eq!(
        expired,
        BundleCheckError::Expired {
            epoch: 5,
            not_after_ms: NOW + 1,
            now_ms: NOW + 1
        }
    );
    assert!(expired.to_string().contains("expired"), "{expired}");
    assert!(!v.is_expired(NOW) && v.is_expired(NOW + 1));
}

#[test]
fn a_forged_or_altered_bundle_is_refused() {
    let f = Fixture::new();
    let bundle = f.bundle(5, NOW + 60_000);
    let forged = SignedBundle::sign(&bundle, &IdentityKey::generate());
    assert_eq!(
        f.verify(&forged),
        Err(BundleCheckError::Signed(BundleError::BadSignature))
    );
    let mut altered = bundle.clone();
    altered.not_after_ms += 3_600_000;
    let tampered = SignedBundle {
        payload: f.sign(&altered).payload,
        signature: f.sign(&bundle).signature,
    };
    assert_eq!(
        f.verify(&tampered),
        Err(BundleCheckError::Signed(BundleError::BadSignature))
    );
    let mut future = bundle;
    future.version = BUNDLE_VERSION + 1;
    assert_eq!(
        f.verify(&f.sign(&future)),
        Err(BundleCheckError::Signed(BundleError::Version(
            BUNDLE_VERSION + 1
        )))
    );
}

#[test]
fn a_bundle_for_another_node_or_key_is_refused() {
    let f = Fixture::new();
    let mut other = f.bundle(5, NOW + 60_000);
    other.node_id = "node-b".into();
    let err = f.verify(&f.sign(&other)).unwrap_err();
    assert!(
        matches!(&err, BundleCheckError::BundleForAnotherNode { theirs, .. } if theirs == "node-b"),
        "{err}"
    );
    let stranger = PrivateKey::generate();
    let err = verify_bundle(
        &f.sign(&f.bundle(5, NOW + 60_000)),
        &Trust::controller(&KeySet::one(f.controller.public())),
        "node-a",
        &stranger,
    )
    .unwrap_err();
    assert!(
        matches!(err, BundleCheckError::WrongRecipient { .. }),
        "{err}"
    );
}

#[test]
fn a_key_sealed_to_someone_else_does_not_open() {
    let f = Fixture::new();
    let mut bundle = f.bundle(5, NOW + 60_000);
    // Reseal the second peer's key to another recipient, keeping the bundle's seal key.
    let elsewhere = Sealer::new(&PrivateKey::generate().public_key()).unwrap();
    let (_, key, psk) = &f.peers[1];
    bundle.peers[1].sealed_psk = elsewhere.seal(1, 5, key, psk);
    assert_eq!(
        f.verify(&f.sign(&bundle)),
        Err(BundleCheckError::Seal {
            epoch: 5,
            peer: "node-c".into()
        })
    );
    // Keys swapped between positions are bound to their position.
    let mut swapped = f.bundle(5, NOW + 60_000);
    swapped.peers.swap(0, 1);
    assert!(matches!(
        f.verify(&f.sign(&swapped)),
        Err(BundleCheckError::Seal { .. })
    ));
}

#[test]
fn inconsistent_bundles_are_refused() {
    let f = Fixture::new();
    let check = |edit: &dyn Fn(&mut Bundle), expected: &str| {
        let mut bundle = f.bundle(5, NOW + 60_000);
        edit(&mut bundle);
        let err = f.verify(&f.sign(&bundle)).unwrap_err();
        assert!(
            matches!(err, BundleCheckError::Inconsistent { .. })
                && err.to_string().contains(expected),
            "{err}"
        );
    };
    check(
        &|b| {
            b.membership = Membership::Denied {
                reason: "low".into(),
            }
        },
        "denies this node but lists peers",
    );
    check(&|b| b.activation_ms = b.not_after_ms, "activates at");
    check(&|b| b.seal_key = None, "no seal key");
    let own = f.wg.public_key();
    check(&move |b| b.peers[0].public_key = own, "own public key");
    check(
        &|b| b.peers[1].public_key = b.peers[0].public_key,
        "listed twice",
    );
    check(
        &|b| b.peers[1].candidates = (1..=9).map(|i| format!("198.51.100.{i}:1")).collect(),
        "more than 8 candidate endpoints",
    );
}

/// Format 2 lists candidates (the endpoint of format 1 is ignored beside them); a format
/// newer than this node knows is refused rather than half understood.
#[test]
fn candidates_of_format_2_are_read_in_order_and_unknown_formats_refused() {
    let f = Fixture::new();
    let mut bundle = f.bundle(5, NOW + 60_000);
    let listed = [
        "192.0.2.9:51820",
        "198.51.100.7:40000",
        "[2001:db8::9]:51820",
    ];
    bundle.peers[1].candidates = listed.iter().map(|c| c.to_string()).collect();
    let v = f.verify(&f.sign(&bundle)).unwrap();
    assert_eq!(v.peers[1].candidates, listed);
    bundle.version = BUNDLE_VERSION + 1;
    let err = f.verify(&f.sign(&bundle)).unwrap_err();
    assert!(
        err.to_string().contains("unsupported bundle version"),
        "{err}"
    );
    bundle.version = 1;
    assert!(f.verify(&f.sign(&bundle)).is_ok(), "format 1 is still read");
}

#[test]
fn a_denied_bundle_carries_the_reason_and_no_peer() {
    let f = Fixture::new();
    let mut bundle = f.bundle(5, NOW + 60_000);
    bundle.membership = Membership::Denied {
        reason: "score 0.40 < threshold 0.70".into(),
    };
    bundle.peers.clear();
    let v = f.verify(&f.sign(&bundle)).unwrap();
    assert!(!v.is_allowed());
    assert!(v.peers.is_empty());
    assert!(matches!(v.membership, Membership::Denied { reason } if reason.contains("0.40")));
}

#[test]
fn errors_and_debug_output_hold_no_key() {
    let f = Fixture::new();
    let v = f.verify(&f.sign(&f.bundle(5, NOW + 60_000))).unwrap();
    let debug = format!("{v:?}");
    for (_, _, psk) in &f.peers {
        assert!(!debug.contains(&psk.to_base64()));
        assert!(!debug.contains(&psk.to_hex()));
    }
}

#[test]
fn relay_credentials_open_when_allowed_and_a_denied_bundle_with_them_is_refused() {
    use meshtun_proto::relay::{BundleRelay, RelaySecret};
    let f = Fixture::new();
    let mut b = f.bundle(5, NOW + 60_000);
    b.peers.clear();
    let sealer = Sealer::new(&f.wg.public_key()).unwrap();
    b.seal_key = Some(sealer.ephemeral());
    let (username, password) =
        RelaySecret::new("north-wind-secret").mint("node-a", NOW / 1000 + 60);
    b.relay = Some(BundleRelay {
        urls: vec!["turn:198.51.100.1:3478".into()],
        sealed_password: sealer.seal_relay(5, &username, &password),
        username: username.clone(),
        expires_s: NOW / 1000 + 60,
    });
    let verified = f.verify(&f.sign(&b)).unwrap();
    let relay = verified.relay.expect("the credentials open");
    assert_eq!(relay.password, password);
    assert_eq!(relay.server, "198.51.100.1:3478");

    let mut other_epoch = b.clone();
    other_epoch.epoch = 6;
    assert!(
        matches!(
            f.verify(&f.sign(&other_epoch)),
            Err(BundleCheckError::Inconsistent { .. })
        ),
        "a password sealed for another epoch does not open"
    );
    b.membership = Membership::Denied {
        reason: "score".into(),
    };
    assert!(matches!(
        f.verify(&f.sign(&b)),
        Err(BundleCheckError::Inconsistent { .. })
    ));
}
