//! Checkpoints: how the audit log loses its oldest entries and stays verifiable.
//!
//! A [`Checkpoint`] is the state of a [`ChainVerifier`](super::ChainVerifier) after the last
//! entry it covers: that entry's number and hash, the counts so far, and the identity key of
//! every node enrolled at that point (which later benchmark signatures are checked against).
//! The controller signs it with its key, as `Ed25519(key, "meshtun-audit-checkpoint-v1\n" ‖
//! body_json)`, and only then deletes the entries it covers. A verifier starts from the
//! newest checkpoint, after checking its signature with the controller's public key, and
//! goes on through the entries that follow.
//!
//! So whoever can write the database file but does not hold the controller key can still
//! neither change nor delete an entry unseen: a forged checkpoint does not verify, and entries
//! removed without one break the numbering.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use meshtun_proto::{IdentityKey, IdentityPublic, KeySet};
use serde::{Deserialize, Serialize};

use super::{AuditError, AuditKind};

/// The label that starts every signed checkpoint.
pub const CHECKPOINT_LABEL: &str = "meshtun-audit-checkpoint-v1\n";

/// The verifier's state after entry `seq`. See the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The last entry it covers; entries up to it may be gone.
    pub seq: u64,
    /// That entry's hash.
    pub hash: String,
    /// When it was made, Unix milliseconds.
    pub at_ms: u64,
    /// Entries of each kind up to `seq`.
    pub counts: BTreeMap<AuditKind, u64>,
    /// Benchmark signatures verified up to `seq`.
    pub signatures_verified: u64,
    /// Every node enrolled at `seq`: node id → (identity key, audit seq of its `enroll`).
    pub keys: BTreeMap<String, (IdentityPublic, u64)>,
    /// Every evaluator added up to `seq`, removed ones too (absent from checkpoints made
    /// before evaluators existed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub evaluators: BTreeMap<String, super::EvaluatorKey>,
    /// Statement signatures verified up to `seq`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub statement_signatures: u64,
    /// The highest statement or observation id recorded up to `seq`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub last_statement_id: u64,
    /// Peer observation signatures verified up to `seq`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub observation_signatures: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A checkpoint as stored: its JSON body and the controller's signature over it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The [`Checkpoint`] as JSON, exactly as signed.
    pub body: String,
    /// Base64 Ed25519 signature over [`CHECKPOINT_LABEL`] followed by `body`.
    pub signature: String,
}

fn signed_bytes(body: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(CHECKPOINT_LABEL.len() + body.len());
    bytes.extend_from_slice(CHECKPOINT_LABEL.as_bytes());
    bytes.extend_from_slice(body.as_bytes());
    bytes
}

impl SignedCheckpoint {
    /// Serializes and signs `checkpoint` with the controller key.
    pub fn sign(checkpoint: &Checkpoint, key: &IdentityKey) -> Self {
        // Plain data with string keys always serializes.
        let body = serde_json::to_string(checkpoint).unwrap_or_default();
        let signature = STANDARD.encode(key.sign(&signed_bytes(&body)));
        Self { body, signature }
    }

    /// The body, unverified: for the writer, which extends the chain from its own newest
    /// checkpoint once pruning has removed every entry.
    pub fn body(&self) -> Result<Checkpoint, String> {
        serde_json::from_str(&self.body).map_err(|e| format!("unreadable body: {e}"))
    }

    /// Checks the signature with the controller's keys (its own and, after a key rotation,
    /// its previous ones), then parses the body; the error names the checkpoint's row and
    /// what is wrong.
    pub fn verify(&self, row: u64, controller: &KeySet) -> Result<Checkpoint, AuditError> {
        let bad = |reason: String| AuditError::Checkpoint { seq: row, reason };
        let signature = STANDARD
            .decode(&self.signature)
            .map_err(|e| bad(format!("its signature is not base64: {e}")))?;
        controller
            .verify(&signed_bytes(&self.body), &signature)
            .map_err(|_| {
                bad(format!(
                    "its signature does not verify with the controller key(s) {controller}: \
                     it was not made by this controller"
                ))
            })?;
        let checkpoint: Checkpoint =
            serde_json::from_str(&self.body).map_err(|e| bad(format!("unreadable body: {e}")))?;
        if checkpoint.seq != row {
            return Err(bad(format!(
                "it is stored as covering entry {row} but says {}",
                checkpoint.seq
            )));
        }
        Ok(checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint() -> Checkpoint {
        let node = IdentityKey::from_bytes([7; 32]).public();
        Checkpoint {
            seq: 42,
            hash: "ab".repeat(32),
            at_ms: 1_000,
            counts: BTreeMap::from([(AuditKind::Enroll, 1), (AuditKind::Benchmark, 41)]),
            signatures_verified: 41,
            keys: BTreeMap::from([("node-a".to_owned(), (node, 1))]),
            evaluators: BTreeMap::new(),
            statement_signatures: 0,
            last_statement_id: 0,
            observation_signatures: 0,
        }
    }

    #[test]
    fn a_signed_checkpoint_round_trips() {
        let key = IdentityKey::from_bytes([1; 32]);
        let signed = SignedCheckpoint::sign(&checkpoint(), &key);
        assert_eq!(
            signed.verify(42, &KeySet::one(key.public())).unwrap(),
            checkpoint()
        );
    }

    #[test]
    fn a_checkpoint_signed_by_another_key_is_refused() {
        let key = IdentityKey::from_bytes([1; 32]);
        let forger = IdentityKey::from_bytes([2; 32]);
        let err = SignedCheckpoint::sign(&checkpoint(), &forger)
            .verify(42, &KeySet::one(key.public()))
            .unwrap_err();
        assert!(
            matches!(err, AuditError::Checkpoint { seq: 42, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("does not verify"), "{err}");
    }

    #[test]
    fn an_edited_body_is_refused() {
        // Whoever writes the file swaps a node's identity key, so that benchmarks they forge
        // for it would verify: the controller never signed that.
        let key = IdentityKey::from_bytes([1; 32]);
        let mut signed = SignedCheckpoint::sign(&checkpoint(), &key);
        let theirs = IdentityKey::from_bytes([9; 32]).public().to_base64();
        let ours = IdentityKey::from_bytes([7; 32]).public().to_base64();
        signed.body = signed.body.replace(&ours, &theirs);
        assert!(signed.verify(42, &KeySet::one(key.public())).is_err());
    }

    #[test]
    fn a_checkpoint_moved_to_another_row_is_refused() {
        let key = IdentityKey::from_bytes([1; 32]);
        let signed = SignedCheckpoint::sign(&checkpoint(), &key);
        let err = signed.verify(50, &KeySet::one(key.public())).unwrap_err();
        assert!(err.to_string().contains("says 42"), "{err}");
    }
}
