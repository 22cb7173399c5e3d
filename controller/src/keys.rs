//! The controller's keys: the Ed25519 key it signs with, the keys it signed with before
//! (kept while the key is rotated), and the X25519 key enrollments prove WireGuard key
//! possession to.
//!
//! A node names one controller key in every signed request (the first it pins). The
//! controller answers a request naming its signing key or one of its previous keys, so that
//! nodes still naming the old key are served while the key is rotated
//! ([`meshtun_proto::keyset`] gives the steps).

use meshtun_proto::enroll::enrollment_key;
use meshtun_proto::keyset::KeySetError;
use meshtun_proto::{IdentityKey, IdentityPublic, KeySet, PrivateKey};

/// The controller's signing key, its previous keys and its enrollment key.
pub struct ControllerKeys {
    signing: IdentityKey,
    /// The signing key's public half first, then the previous keys.
    answers_to: KeySet,
    enroll: PrivateKey,
}

impl ControllerKeys {
    /// Keys signing with `signing`, answering requests that name it or one of `previous`.
    /// Refused: more than [`meshtun_proto::keyset::MAX_KEYS`] keys in all, a key listed
    /// twice, or the signing key among the previous ones.
    pub fn new(signing: IdentityKey, previous: &[IdentityPublic]) -> Result<Self, KeySetError> {
        let mut keys = Vec::with_capacity(previous.len() + 1);
        keys.push(signing.public());
        keys.extend_from_slice(previous);
        Ok(Self {
            answers_to: KeySet::new(keys)?,
            enroll: enrollment_key(&signing),
            signing,
        })
    }

    /// Keys signing with `signing` and answering only to it.
    pub fn sole(signing: IdentityKey) -> Self {
        Self {
            answers_to: KeySet::one(signing.public()),
            enroll: enrollment_key(&signing),
            signing,
        }
    }

    /// The key bundles, enrollment replies and audit checkpoints are signed with.
    pub fn signing(&self) -> &IdentityKey {
        &self.signing
    }

    /// The signing key's public half, which nodes pin.
    pub fn public(&self) -> IdentityPublic {
        *self.answers_to.primary()
    }

    /// The keys a node's request may name: the signing key's, then the previous ones.
    pub fn answers_to(&self) -> &KeySet {
        &self.answers_to
    }

    /// The X25519 key tickets name for the proof of WireGuard key possession.
    pub fn enrollment_key(&self) -> &PrivateKey {
        &self.enroll
    }
}

impl From<IdentityKey> for ControllerKeys {
    fn from(signing: IdentityKey) -> Self {
        Self::sole(signing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signing_key_comes_first_and_cannot_also_be_previous() {
        let signing = IdentityKey::generate();
        let old = IdentityKey::generate().public();
        let keys = ControllerKeys::new(signing.clone(), &[old]).unwrap();
        assert_eq!(keys.answers_to().keys(), [signing.public(), old]);
        assert_eq!(keys.public(), signing.public());
        assert_eq!(
            ControllerKeys::new(signing.clone(), &[signing.public()]).err(),
            Some(KeySetError::Duplicate(signing.public()))
        );
        assert_eq!(
            ControllerKeys::sole(signing.clone()).answers_to().keys(),
            [signing.public()]
        );
    }
}
