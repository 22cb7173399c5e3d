//! Membership signatures on the node: with `[controller] membership_key`, a gated peer is
//! taken from a bundle only if the bundle carries the operator's signature over exactly its
//! node id, WireGuard key and identity key ([`meshtun_proto::membership`]). A peer without
//! one is left out of what the node applies, and named with the reason; the rest of the
//! bundle applies. This bounds a compromised controller: it can still leave peers out (deny),
//! but can no longer add a peer of its own, nor give a known node's id another WireGuard key.
//!
//! The check runs when a bundle is verified ([`super::bundle::verify_bundle`]), so every
//! path a peer takes into the device passes it: bundles fetched, the cached bundle read at
//! start, and a hub's forwarding, which only ever forwards to peers of its own bundle.
//! Pure: no I/O, no clock.

use meshtun_proto::bundle::BundlePeer;
use meshtun_proto::membership::MembershipPublic;
use meshtun_proto::PublicKey;

use super::bundle::GatedPeer;

/// A peer a bundle lists that this node refused for its membership signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedPeer {
    /// The peer's node id, as the bundle names it.
    pub node_id: String,
    /// Its WireGuard public key, as the bundle gives it.
    pub public_key: PublicKey,
    /// Why: [`NO_SIGNATURE`] or [`BAD_SIGNATURE`].
    pub reason: &'static str,
}

/// The reason for a peer the bundle gives no membership signature.
pub const NO_SIGNATURE: &str = "no membership signature";

/// The reason for a peer whose membership signature does not verify for its node id,
/// WireGuard key and identity key with the configured membership key.
pub const BAD_SIGNATURE: &str = "membership signature does not verify";

/// Splits `opened` (the bundle's `listed` peers with their keys opened, in the same order)
/// into the peers `key` admits and the ones it refuses. Without a key every peer is kept.
pub fn admit(
    key: Option<&MembershipPublic>,
    listed: &[BundlePeer],
    opened: Vec<GatedPeer>,
) -> (Vec<GatedPeer>, Vec<RefusedPeer>) {
    let Some(key) = key else {
        return (opened, Vec::new());
    };
    let mut admitted = Vec::with_capacity(opened.len());
    let mut refused = Vec::new();
    for (peer, listing) in opened.into_iter().zip(listed) {
        match refusal(key, listing) {
            None => admitted.push(peer),
            Some(reason) => refused.push(RefusedPeer {
                node_id: listing.node_id.clone(),
                public_key: listing.public_key,
                reason,
            }),
        }
    }
    (admitted, refused)
}

/// Why `peer` is refused under `key`, if it is.
fn refusal(key: &MembershipPublic, peer: &BundlePeer) -> Option<&'static str> {
    let Some(enrollment) = &peer.enrollment else {
        return Some(NO_SIGNATURE);
    };
    key.verify(
        &peer.node_id,
        &peer.public_key,
        &enrollment.identity,
        &enrollment.signature,
    )
    .err()
    .map(|_| BAD_SIGNATURE)
}

#[cfg(test)]
mod tests {
    use meshtun_proto::bundle::Bundle;
    use meshtun_proto::membership::{MembershipKey, PeerEnrollment};
    use meshtun_proto::{IdentityKey, IdentityPublic, KeySet};

    use super::*;
    use crate::gate::bundle::tests::{Fixture, NOW};
    use crate::gate::bundle::{verify_bundle, Trust, VerifiedBundle};

    /// `f`'s bundle with node-b (listed first) unsigned and node-c signed by `key`.
    fn bundle(f: &Fixture, key: &MembershipKey) -> (Bundle, IdentityPublic) {
        let mut bundle = f.bundle(5, NOW + 60_000);
        let identity = IdentityKey::generate().public();
        let c = &mut bundle.peers[1];
        assert_eq!(c.node_id, "node-c");
        c.enrollment = Some(PeerEnrollment {
            identity,
            signature: key.sign("node-c", &c.public_key, &identity).unwrap(),
        });
        (bundle, identity)
    }

    fn verify(f: &Fixture, bundle: &Bundle, key: Option<&MembershipPublic>) -> VerifiedBundle {
        let pinned = KeySet::one(f.controller.public());
        let trust = Trust {
            controller: &pinned,
            members: key,
        };
        verify_bundle(&f.sign(bundle), &trust, "node-a", &f.wg).unwrap()
    }

    fn refused(v: &VerifiedBundle) -> Vec<(&str, &str)> {
        v.refused
            .iter()
            .map(|r| (r.node_id.as_str(), r.reason))
            .collect()
    }

    #[test]
    fn only_the_signed_peer_is_applied_with_its_own_key_and_the_other_is_named() {
        let f = Fixture::new();
        let key = MembershipKey::generate();
        let (bundle, _) = bundle(&f, &key);
        let v = verify(&f, &bundle, Some(&key.public()));
        assert_eq!(v.peers.len(), 1);
        assert_eq!(v.peers[0].node_id, "node-c");
        // Its sealed key was opened at its own position, before node-b was left out.
        assert_eq!(v.peers[0].psk, f.peers[1].2);
        assert_eq!(refused(&v), [("node-b", NO_SIGNATURE)]);
        assert_eq!(v.refused[0].public_key, f.peers[0].1);
        assert!(v.is_allowed());
    }

    #[test]
    fn without_a_membership_key_every_peer_is_kept() {
        let f = Fixture::new();
        let (bundle, _) = bundle(&f, &MembershipKey::generate());
        let v = verify(&f, &bundle, None);
        assert_eq!(v.peers.len(), 2);
        assert!(v.refused.is_empty());
    }

    #[test]
    fn a_swapped_key_a_moved_signature_or_another_signer_is_refused() {
        let f = Fixture::new();
        let key = MembershipKey::generate();
        let (good, identity) = bundle(&f, &key);
        let signed_c = good.peers[1].enrollment.unwrap();
        let mut cases = Vec::new();
        // The controller gives node-c's id and signature to a WireGuard key of its own.
        // (Sealed anew: a sealed key is bound to the peer's WireGuard key.)
        let mut attacker = Fixture {
            controller: f.controller.clone(),
            wg: f.wg.clone(),
            peers: f.peers.clone(),
        };
        attacker.peers[1].1 = meshtun_proto::PrivateKey::generate().public_key();
        let mut swapped = attacker.bundle(5, NOW + 60_000);
        swapped.peers[1].enrollment = Some(signed_c);
        cases.push(("wg key swapped", swapped));
        // node-c's signature copied onto node-b.
        let mut moved = good.clone();
        moved.peers[0].enrollment = Some(signed_c);
        cases.push(("signature moved", moved));
        // Another identity key beside node-c's signature.
        let mut other_identity = good.clone();
        other_identity.peers[1].enrollment = Some(PeerEnrollment {
            identity: IdentityKey::generate().public(),
            ..signed_c
        });
        cases.push(("identity swapped", other_identity));
        // Signed by a key that is not the configured one.
        let mut foreign = good.clone();
        let c = &foreign.peers[1];
        let by_other = MembershipKey::generate()
            .sign("node-c", &c.public_key, &identity)
            .unwrap();
        foreign.peers[1].enrollment = Some(PeerEnrollment {
            identity,
            signature: by_other,
        });
        cases.push(("other signer", foreign));
        for (what, bundle) in cases {
            let v = verify(&f, &bundle, Some(&key.public()));
            assert!(
                v.refused.iter().any(|r| r.reason == BAD_SIGNATURE),
                "{what}: {:?}",
                v.refused
            );
            assert!(
                v.peers.iter().all(|p| p.node_id != "node-b"),
                "{what}: node-b is never signed"
            );
            let kept_c = v.peers.iter().any(|p| p.node_id == "node-c");
            assert_eq!(kept_c, what == "signature moved", "{what}");
        }
    }

    #[test]
    fn the_cached_bundle_is_checked_too() {
        let f = Fixture::new();
        let key = MembershipKey::generate();
        let (bundle, _) = bundle(&f, &key);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg0.bundle");
        crate::gate::save_cache(&path, &f.sign(&bundle)).unwrap();
        let pinned = KeySet::one(f.controller.public());
        let public = key.public();
        let trust = Trust {
            controller: &pinned,
            members: Some(&public),
        };
        let cached = crate::gate::load_cache(&path, &trust, "node-a", &f.wg, NOW)
            .unwrap()
            .unwrap();
        assert_eq!(cached.bundle.peers.len(), 1);
        assert_eq!(refused(&cached.bundle), [("node-b", NO_SIGNATURE)]);
    }
}
