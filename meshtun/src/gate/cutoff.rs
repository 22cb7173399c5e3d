//! Cut-off notices from the controller ([`meshtun_proto::cutoff`]), the node's side.
//!
//! A long-poll may be answered, before the bundle of a new epoch, with a signed notice that
//! the epoch denies some nodes. [`verify_cutoff`] accepts it only if its signature verifies
//! with a pinned controller key under the notice's own label, its format is known and it
//! names at most [`MAX_DENIED`](meshtun_proto::cutoff::MAX_DENIED) nodes. The scheduler then
//! checks it is current on the controller's clock and newer than every bundle known
//! ([`GateState::cut_off`](super::state::GateState::cut_off)); a notice only ever removes
//! gated peers (all of them when it names this node), never adds one or changes a key.

use std::collections::BTreeSet;

use meshtun_proto::cutoff::{CutOffError, SignedCutOff};
use meshtun_proto::{EpochId, IdentityPublic, KeySet, PublicKey};

use super::bundle::VerifiedBundle;

/// A notice that passed [`verify_cutoff`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCutOff {
    /// The epoch that denies them.
    pub epoch: EpochId,
    /// When the controller decided it (the controller's Unix milliseconds).
    pub decided_ms: u64,
    /// The epoch's end (the controller's Unix milliseconds).
    pub not_after_ms: u64,
    /// When the controller signed it.
    pub issued_ms: u64,
    /// The WireGuard keys of the denied nodes.
    pub denied: BTreeSet<PublicKey>,
    /// Whether it names this node (by id or key): then every gated peer goes.
    pub names_me: bool,
    /// The pinned key that signed it.
    pub signer: IdentityPublic,
}

/// What a bundle request brought.
#[derive(Debug, Clone)]
pub enum Fetched {
    /// A verified bundle newer than the one asked after.
    Bundle(VerifiedBundle),
    /// A verified cut-off notice.
    CutOff(VerifiedCutOff),
}

/// Parses and checks the notice served as `body` for node `node_id` with WireGuard key
/// `own_key`, against the `pinned` controller keys.
pub fn verify_cutoff(
    body: &[u8],
    pinned: &KeySet,
    node_id: &str,
    own_key: &PublicKey,
) -> Result<VerifiedCutOff, CutOffError> {
    let (notice, signer) = SignedCutOff::from_json(body)?.open(pinned)?;
    let names_me = notice
        .denied
        .iter()
        .any(|d| d.node_id == node_id || d.public_key == *own_key);
    Ok(VerifiedCutOff {
        epoch: notice.epoch,
        decided_ms: notice.decided_ms,
        not_after_ms: notice.not_after_ms,
        issued_ms: notice.issued_ms,
        denied: notice.denied.iter().map(|d| d.public_key).collect(),
        names_me,
        signer,
    })
}

/// Why a verified notice is not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CutOffIgnored {
    /// Its epoch has ended.
    #[error(transparent)]
    Expired(CutOffError),
    /// Not newer than the bundles and notices already known: a replay, or late.
    #[error("the cut-off notice is for epoch {got}, but epoch {have} is already known")]
    Stale {
        /// The notice's epoch.
        got: EpochId,
        /// The newest epoch known.
        have: EpochId,
    },
}

impl From<VerifiedBundle> for Fetched {
    fn from(bundle: VerifiedBundle) -> Self {
        Fetched::Bundle(bundle)
    }
}

#[cfg(test)]
mod tests {
    use meshtun_proto::bundle::{Bundle, Membership, SignedBundle, BUNDLE_VERSION};
    use meshtun_proto::cutoff::{CutOff, DeniedNode, CUTOFF_FORMAT, MAX_CUTOFF_BYTES};
    use meshtun_proto::{IdentityKey, PrivateKey};

    use super::*;

    fn notice(denied: Vec<DeniedNode>) -> CutOff {
        CutOff {
            format: CUTOFF_FORMAT,
            epoch: 7,
            issued_ms: 1_000,
            decided_ms: 990,
            not_after_ms: 61_000,
            denied,
        }
    }

    fn body(notice: &CutOff, key: &IdentityKey) -> Vec<u8> {
        serde_json::to_vec(&SignedCutOff::sign(notice, key)).unwrap()
    }

    #[test]
    fn a_genuine_notice_names_its_keys_and_whether_it_names_this_node() {
        let controller = IdentityKey::generate();
        let pinned = KeySet::one(controller.public());
        let me = PrivateKey::generate().public_key();
        let other = PrivateKey::generate().public_key();
        let entry = |id: &str, key| DeniedNode {
            node_id: id.into(),
            public_key: key,
        };
        let about_other = body(&notice(vec![entry("node-b", other)]), &controller);
        let got = verify_cutoff(&about_other, &pinned, "node-a", &me).unwrap();
        assert_eq!((got.epoch, got.names_me), (7, false));
        assert_eq!(got.denied, BTreeSet::from([other]));
        for named in [entry("node-a", other), entry("node-x", me)] {
            let about_me = body(&notice(vec![named]), &controller);
            assert!(
                verify_cutoff(&about_me, &pinned, "node-a", &me)
                    .unwrap()
                    .names_me
            );
        }
    }

    #[test]
    fn forged_relabelled_and_oversized_notices_are_refused() {
        let controller = IdentityKey::generate();
        let pinned = KeySet::one(controller.public());
        let me = PrivateKey::generate().public_key();
        let forged = body(&notice(Vec::new()), &IdentityKey::generate());
        assert_eq!(
            verify_cutoff(&forged, &pinned, "node-a", &me),
            Err(CutOffError::BadSignature)
        );
        // A genuine bundle, served as a notice: neither its form nor its signature pass.
        let bundle = Bundle {
            version: BUNDLE_VERSION,
            node_id: "node-a".into(),
            recipient: me,
            epoch: 7,
            activation_ms: 1_000,
            not_after_ms: 61_000,
            issued_ms: 1_000,
            decided_ms: 990,
            membership: Membership::Denied { reason: "x".into() },
            seal_key: None,
            peers: Vec::new(),
            forward: false,
            relay: None,
        };
        let signed = SignedBundle::sign(&bundle, &controller);
        let as_body = serde_json::to_vec(&signed).unwrap();
        assert!(verify_cutoff(&as_body, &pinned, "node-a", &me).is_err());
        let rewrapped = serde_json::to_vec(&SignedCutOff {
            notice: signed.payload,
            signature: signed.signature,
        })
        .unwrap();
        assert_eq!(
            verify_cutoff(&rewrapped, &pinned, "node-a", &me),
            Err(CutOffError::BadSignature)
        );
        let huge = vec![b'{'; MAX_CUTOFF_BYTES + 2048];
        assert_eq!(
            verify_cutoff(&huge, &pinned, "node-a", &me),
            Err(CutOffError::TooLarge(huge.len()))
        );
    }
}
