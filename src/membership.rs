//! Membership signatures: the operator's offline Ed25519 key (the *membership key*) signs
//! each node's enrollment, so that a node can refuse a peer the controller adds on its own.
//!
//! **What is signed.** `"meshtun-membership-v1\0" ‖ len(node id) (one byte) ‖ node id ‖
//! WireGuard public key (32 bytes) ‖ identity public key (32 bytes)`. The label keeps the
//! signature from being taken for anything else an Ed25519 key signs (bundles, cut-off
//! notices and enrollment replies have labels of their own, and the membership key should
//! sign nothing else anyway). The node id is length-prefixed, so no two (id, keys) triples
//! share a message; node ids are at most 64 bytes ([`crate::wire::valid_node_id`]).
//!
//! **Why these three.** The WireGuard key is what a peer is on the wire: a signature that
//! covers it keeps a controller from adding a key of its own, or from swapping a known node's
//! key for its own under the node's id. The node id is what the peer is called in logs and
//! in `meshtun show`, and the identity key is what the controller authenticates the node's
//! requests (its benchmarks) with: a controller cannot move one node's signature onto another
//! node's name or identity.
//!
//! **No expiry.** A signature stays valid until the membership key changes. An expiry would
//! need every node re-signed offline at every expiry, and each node's clock to be trusted to
//! judge it; removing a node is the controller's job (it stops listing it), and the
//! membership key only bounds what the controller can add. To revoke signatures (a node
//! whose keys leaked), make a new membership key and sign the remaining nodes again.
//!
//! **Verification** is strict (`verify_strict`: no malleable signature, no small-order
//! key); a membership public key of small order or not on the curve is refused when it is
//! parsed ([`MembershipPublic::from_base64`]).
//!
//! The text forms are standard base64: the key files hold the 32-byte seed like the other
//! Ed25519 key files, and a signature is its 64 bytes (88 characters).

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};

use crate::identity::{IdentityKey, IdentityPublic, SIGNATURE_LEN};
use crate::key::{KeyError, PublicKey, KEY_LEN};
use crate::wire::valid_node_id;

/// The context label the signature covers first.
pub const SIGNATURE_LABEL: &[u8] = b"meshtun-membership-v1\0";

/// The longest base64 text any decoder here looks at (a signature is 88 characters): longer
/// input is refused before it is decoded.
const MAX_TEXT: usize = 128;

/// Why a membership key or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// Not base64, or too long to be one of these.
    #[error("not valid base64 (or longer than {MAX_TEXT} characters)")]
    Base64,
    /// Decoded to the wrong number of bytes.
    #[error("{got} bytes where {want} are needed")]
    Length {
        /// The number of bytes decoded.
        got: usize,
        /// The number expected.
        want: usize,
    },
    /// A public key that is not a point of the curve, or of small order (it would accept
    /// forged signatures).
    #[error(
        "not a usable Ed25519 public key (not on the curve, of small order, or not canonically \
         encoded)"
    )]
    WeakKey,
    /// The node id could never be enrolled ([`valid_node_id`]).
    #[error("`{0}` is not a valid node id")]
    NodeId(String),
    /// The signature does not verify for this node id, WireGuard key and identity key.
    #[error("membership signature does not verify")]
    BadSignature,
}

/// The operator's membership signing key. Zeroized on drop; `Debug` never shows it.
#[derive(Clone)]
pub struct MembershipKey(IdentityKey);

impl MembershipKey {
    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Self {
        Self(IdentityKey::generate())
    }

    /// Decodes the base64 seed, as the key file holds it.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        IdentityKey::from_base64(text).map(Self)
    }

    /// The base64 seed, for writing a 0600 key file.
    pub fn to_base64(&self) -> String {
        self.0.to_base64()
    }

    /// The public half, which nodes and the controller are configured with.
    pub fn public(&self) -> MembershipPublic {
        MembershipPublic(self.0.public())
    }

    /// Signs the enrollment of `node_id` with WireGuard key `wg_key` and identity key
    /// `identity`. Refuses a node id that could never be enrolled.
    pub fn sign(
        &self,
        node_id: &str,
        wg_key: &PublicKey,
        identity: &IdentityPublic,
    ) -> Result<MembershipSig, MembershipError> {
        let message = message(node_id, wg_key, identity)?;
        Ok(MembershipSig(self.0.sign(&message)))
    }
}

impl fmt::Debug for MembershipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MembershipKey(<redacted>, public {})", self.public())
    }
}

/// The public half of the membership key: a valid curve point of large order (checked when
/// made from text or bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MembershipPublic(IdentityPublic);

impl MembershipPublic {
    /// Checks and wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Result<Self, MembershipError> {
        let point = VerifyingKey::from_bytes(&bytes).map_err(|_| MembershipError::WeakKey)?;
        // A small-order key would accept forged signatures; a non-canonical encoding is a
        // second spelling of a point, which no honest key generator writes.
        if point.is_weak() || point.to_edwards().compress().to_bytes() != bytes {
            return Err(MembershipError::WeakKey);
        }
        Ok(Self(IdentityPublic::from_bytes(bytes)))
    }

    /// Decodes and checks the base64 form.
    pub fn from_base64(text: &str) -> Result<Self, MembershipError> {
        Self::from_bytes(decode_exact(text)?)
    }

    /// The base64 form.
    pub fn to_base64(&self) -> String {
        self.0.to_base64()
    }

    /// Checks `signature` over the enrollment of `node_id` with `wg_key` and `identity`.
    pub fn verify(
        &self,
        node_id: &str,
        wg_key: &PublicKey,
        identity: &IdentityPublic,
        signature: &MembershipSig,
    ) -> Result<(), MembershipError> {
        let message = message(node_id, wg_key, identity)?;
        let key =
            VerifyingKey::from_bytes(self.0.as_bytes()).map_err(|_| MembershipError::WeakKey)?;
        key.verify_strict(&message, &Signature::from_bytes(&signature.0))
            .map_err(|_| MembershipError::BadSignature)
    }
}

impl fmt::Display for MembershipPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for MembershipPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MembershipPublic({})", self.to_base64())
    }
}

impl FromStr for MembershipPublic {
    type Err = MembershipError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_base64(s)
    }
}

impl serde::Serialize for MembershipPublic {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> serde::Deserialize<'de> for MembershipPublic {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::from_base64(&text).map_err(serde::de::Error::custom)
    }
}

/// A membership signature over one node's enrollment (64 bytes; base64 as text).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MembershipSig([u8; SIGNATURE_LEN]);

impl MembershipSig {
    /// Decodes the base64 form (exactly 64 bytes).
    pub fn from_base64(text: &str) -> Result<Self, MembershipError> {
        decode_exact(text).map(Self)
    }

    /// The base64 form.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// The raw signature bytes.
    pub const fn as_bytes(&self) -> &[u8; SIGNATURE_LEN] {
        &self.0
    }
}

impl fmt::Display for MembershipSig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for MembershipSig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MembershipSig({})", self.to_base64())
    }
}

impl FromStr for MembershipSig {
    type Err = MembershipError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_base64(s)
    }
}

impl serde::Serialize for MembershipSig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> serde::Deserialize<'de> for MembershipSig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::from_base64(&text).map_err(serde::de::Error::custom)
    }
}

/// What a bundle says of a peer's enrollment: its identity key and the operator's
/// signature, which a node with a membership key checks against the peer's node id and
/// WireGuard key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerEnrollment {
    /// The peer's Ed25519 identity key.
    pub identity: IdentityPublic,
    /// The membership signature over the peer's node id, WireGuard key and identity key.
    pub signature: MembershipSig,
}

/// `SIGNATURE_LABEL ‖ len(node_id) ‖ node_id ‖ wg_key ‖ identity`.
fn message(
    node_id: &str,
    wg_key: &PublicKey,
    identity: &IdentityPublic,
) -> Result<Vec<u8>, MembershipError> {
    if !valid_node_id(node_id) {
        return Err(MembershipError::NodeId(node_id.escape_debug().to_string()));
    }
    let id = node_id.as_bytes();
    // A valid node id has at most 64 bytes.
    let len = u8::try_from(id.len()).map_err(|_| MembershipError::NodeId(node_id.into()))?;
    let mut out = Vec::with_capacity(SIGNATURE_LABEL.len() + 1 + id.len() + 2 * KEY_LEN);
    out.extend_from_slice(SIGNATURE_LABEL);
    out.push(len);
    out.extend_from_slice(id);
    out.extend_from_slice(wg_key.as_bytes());
    out.extend_from_slice(identity.as_bytes());
    Ok(out)
}

/// Decodes base64 `text` (surrounding white space ignored) into exactly `N` bytes.
fn decode_exact<const N: usize>(text: &str) -> Result<[u8; N], MembershipError> {
    let text = text.trim();
    if text.len() > MAX_TEXT {
        return Err(MembershipError::Base64);
    }
    let bytes = STANDARD.decode(text).map_err(|_| MembershipError::Base64)?;
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| MembershipError::Length {
        got: bytes.len(),
        want: N,
    })
}

#[cfg(test)]
mod tests;
