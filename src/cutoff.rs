//! Cut-off notices: what the controller tells every node, at once, when an epoch denies nodes
//! that were allowed before, while it is still building that epoch's bundles.
//!
//! A notice names the epoch and the denied nodes with their WireGuard keys. It is one object
//! for all nodes (O(1) to build), signed with the controller key over
//! `"meshtun-cutoff-v1\0" ‖ payload`: a label no bundle or enrollment reply carries, so a
//! notice is never taken for a bundle nor a bundle, or anything else the key signs, for a
//! notice. A node acts on a notice only to REMOVE gated peers (or all of them when it is
//! itself listed); it never adds a peer or changes a key, and ignores a notice for an epoch
//! it already holds, so a replayed notice cannot cut off a node readmitted since.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::identity::{IdentityKey, IdentityPublic};
use crate::key::PublicKey;
use crate::keyset::KeySet;
use crate::psk::EpochId;

/// Format version of a notice.
pub const CUTOFF_FORMAT: u32 = 1;

/// The most nodes one notice names: past this the controller sends no notice and the
/// epoch's bundles carry the cut-off.
pub const MAX_DENIED: usize = 10_000;

/// Largest encoded notice a node reads (base64 payload): [`MAX_DENIED`] entries of a
/// 64-character node id and a key fit well within it.
pub const MAX_CUTOFF_BYTES: usize = 4 << 20;

/// The context label the notice signature covers before the payload.
pub const CUTOFF_LABEL: &[u8] = b"meshtun-cutoff-v1\0";

/// The content type the controller serves a notice with (a bundle is `application/json`).
pub const CUTOFF_CONTENT_TYPE: &str = "application/vnd.meshtun.cutoff+json";

/// One node the epoch denies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeniedNode {
    /// Its node id.
    pub node_id: String,
    /// Its WireGuard public key: what a node removes.
    pub public_key: PublicKey,
}

/// The notice: the nodes allowed before and denied in `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CutOff {
    /// [`CUTOFF_FORMAT`].
    pub format: u32,
    /// The epoch that denies them.
    pub epoch: EpochId,
    /// When the controller signed the notice (Unix milliseconds).
    pub issued_ms: u64,
    /// When the controller decided the epoch (Unix milliseconds): the start of the
    /// decision-to-cut-off time a node measures.
    pub decided_ms: u64,
    /// The epoch's end: past it, the notice is refused as stale.
    pub not_after_ms: u64,
    /// The denied nodes (at most [`MAX_DENIED`]).
    pub denied: Vec<DeniedNode>,
}

/// A notice with the controller's signature. Its fields differ from a signed bundle's, so
/// that neither parses as the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedCutOff {
    /// The notice's JSON, base64.
    pub notice: String,
    /// Ed25519 over `CUTOFF_LABEL ‖ notice bytes`, base64.
    pub signature: String,
}

/// Why a notice was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CutOffError {
    /// Bigger than [`MAX_CUTOFF_BYTES`].
    #[error("the cut-off notice is too large ({0} bytes, at most {MAX_CUTOFF_BYTES})")]
    TooLarge(usize),
    /// Not base64, or not JSON of a signed notice.
    #[error("the cut-off notice is not properly encoded: {0}")]
    Encoding(String),
    /// The signature does not verify, with the notice's label, under any pinned key.
    #[error("the cut-off notice's signature does not verify with any pinned controller key")]
    BadSignature,
    /// The signed payload is not a notice.
    #[error("the signed cut-off notice does not parse: {0}")]
    Parse(String),
    /// A format this node does not read.
    #[error("unsupported cut-off notice format {0}")]
    Format(u32),
    /// More than [`MAX_DENIED`] nodes.
    #[error("the cut-off notice names {0} nodes, more than {MAX_DENIED}")]
    TooMany(usize),
    /// Past its epoch's end.
    #[error("the cut-off notice for epoch {epoch} ended at {not_after_ms}, before now ({now_ms})")]
    Expired {
        /// Its epoch.
        epoch: EpochId,
        /// Its end.
        not_after_ms: u64,
        /// The time it was checked at (the controller's, as the node estimates it).
        now_ms: u64,
    },
}

impl SignedCutOff {
    /// Serializes and signs `notice`.
    pub fn sign(notice: &CutOff, key: &IdentityKey) -> Self {
        // Serializing plain data with string keys cannot fail.
        let bytes = serde_json::to_vec(notice).unwrap_or_default();
        Self {
            signature: STANDARD.encode(key.sign(&labelled(&bytes))),
            notice: STANDARD.encode(bytes),
        }
    }

    /// Parses the JSON of a signed notice as served (`body`), bounded by
    /// [`MAX_CUTOFF_BYTES`].
    pub fn from_json(body: &[u8]) -> Result<Self, CutOffError> {
        if body.len() > MAX_CUTOFF_BYTES + 1024 {
            return Err(CutOffError::TooLarge(body.len()));
        }
        serde_json::from_slice(body).map_err(|e| CutOffError::Encoding(e.to_string()))
    }

    /// Checks the signature against the `pinned` controller keys, then the format and the
    /// number of nodes named. Returns the notice and the key that signed it; whether it is
    /// still current is [`CutOff::check_current`]'s to say, on the controller's clock.
    pub fn open(&self, pinned: &KeySet) -> Result<(CutOff, IdentityPublic), CutOffError> {
        if self.notice.len() > MAX_CUTOFF_BYTES {
            return Err(CutOffError::TooLarge(self.notice.len()));
        }
        let bytes = STANDARD
            .decode(&self.notice)
            .map_err(|e| CutOffError::Encoding(format!("notice: {e}")))?;
        let signature = STANDARD
            .decode(&self.signature)
            .map_err(|e| CutOffError::Encoding(format!("signature: {e}")))?;
        let signer = *pinned
            .verify(&labelled(&bytes), &signature)
            .map_err(|_| CutOffError::BadSignature)?;
        let notice: CutOff =
            serde_json::from_slice(&bytes).map_err(|e| CutOffError::Parse(e.to_string()))?;
        if notice.format != CUTOFF_FORMAT {
            return Err(CutOffError::Format(notice.format));
        }
        if notice.denied.len() > MAX_DENIED {
            return Err(CutOffError::TooMany(notice.denied.len()));
        }
        Ok((notice, signer))
    }
}

impl CutOff {
    /// Refuses the notice once its epoch has ended at `now_ms` (the controller's time).
    pub fn check_current(&self, now_ms: u64) -> Result<(), CutOffError> {
        check_current(self.epoch, self.not_after_ms, now_ms)
    }
}

/// Refuses a notice of `epoch`, which ends at `not_after_ms`, once that has passed at
/// `now_ms` (the controller's time): [`CutOffError::Expired`].
pub fn check_current(epoch: EpochId, not_after_ms: u64, now_ms: u64) -> Result<(), CutOffError> {
    if now_ms >= not_after_ms {
        return Err(CutOffError::Expired {
            epoch,
            not_after_ms,
            now_ms,
        });
    }
    Ok(())
}

/// `CUTOFF_LABEL ‖ payload`: what the signature covers.
fn labelled(payload: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(CUTOFF_LABEL.len() + payload.len());
    message.extend_from_slice(CUTOFF_LABEL);
    message.extend_from_slice(payload);
    message
}

#[cfg(test)]
#[path = "cutoff_tests.rs"]
mod tests;
