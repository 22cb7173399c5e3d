//! Signed requests from nodes to the controller.
//!
//! A node signs, with its Ed25519 identity key, the canonical text
//!
//! ```text
//! meshtun-request-v2
//! CONTROLLER_KEY (base64, the controller's Ed25519 key the node pins)
//! METHOD
//! PATH?QUERY
//! hex(SHA-256(body))
//! NODE_ID
//! TIMESTAMP_MS
//! NONCE_HEX
//! ```
//!
//! and sends the node id, timestamp, nonce and signature in the headers named below. The
//! controller checks the signature against the node's enrolled key and its own public key,
//! that the timestamp is within its window, and that the nonce was not seen before, so a
//! request cannot be forged, altered, replayed, redirected to another path or node, or
//! replayed at another controller (staging and production, say) that knows the same node.
//!
//! Format v1 (the same text without the controller key) is no longer accepted on the wire;
//! [`RequestSignature::verify_archived_v1`] checks requests recorded in that format.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

use crate::identity::{IdentityKey, IdentityPublic, SIGNATURE_LEN};

/// Header naming the node that signed the request.
pub const HEADER_NODE: &str = "x-meshtun-node";
/// Header with the signing time, Unix milliseconds.
pub const HEADER_TIMESTAMP: &str = "x-meshtun-timestamp";
/// Header with the 16-byte random nonce, hex.
pub const HEADER_NONCE: &str = "x-meshtun-nonce";
/// Header with the Ed25519 signature, base64.
pub const HEADER_SIGNATURE: &str = "x-meshtun-signature";

/// Length of a request nonce in bytes.
pub const NONCE_LEN: usize = 16;

/// What a signed request carries in its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSignature {
    /// The node's id.
    pub node: String,
    /// Signing time, Unix milliseconds.
    pub timestamp_ms: u64,
    /// Random nonce.
    pub nonce: [u8; NONCE_LEN],
    /// Ed25519 signature over the canonical text.
    pub signature: [u8; SIGNATURE_LEN],
}

/// Why a request signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A header is missing.
    #[error("missing header {0}")]
    Missing(&'static str),
    /// A header is malformed.
    #[error("malformed header {0}")]
    Malformed(&'static str),
    /// The signature does not verify.
    #[error("the request signature does not verify (format meshtun-request-v2, naming this controller's key)")]
    BadSignature,
    /// The timestamp is outside the accepted window.
    #[error(
        "the request is {skew_ms} ms away from the controller's clock (window ±{window_ms} ms)"
    )]
    Stale {
        /// Signed time minus now.
        skew_ms: i64,
        /// Accepted distance.
        window_ms: u64,
    },
}

/// The canonical text a node signs for the controller whose key is `controller`.
pub fn signing_input(
    controller: &IdentityPublic,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    node: &str,
    timestamp_ms: u64,
    nonce: &[u8; NONCE_LEN],
) -> Vec<u8> {
    let rest = signing_input_v1(method, path_and_query, body, node, timestamp_ms, nonce);
    let rest = rest
        .strip_prefix(b"meshtun-request-v1\n".as_slice())
        .unwrap_or(&rest);
    let mut input = format!("meshtun-request-v2\n{}\n", controller.to_base64()).into_bytes();
    input.extend_from_slice(rest);
    input
}

/// The text of format v1, which did not name the controller.
fn signing_input_v1(
    method: &str,
    path_and_query: &str,
    body: &[u8],
    node: &str,
    timestamp_ms: u64,
    nonce: &[u8; NONCE_LEN],
) -> Vec<u8> {
    let body_hash = hex::encode(Sha256::digest(body));
    format!(
        "meshtun-request-v1\n{}\n{}\n{}\n{}\n{}\n{}",
        method.to_ascii_uppercase(),
        path_and_query,
        body_hash,
        node,
        timestamp_ms,
        hex::encode(nonce)
    )
    .into_bytes()
}

impl RequestSignature {
    /// Signs a request to the controller whose key is `controller`, with a fresh nonce.
    pub fn sign(
        key: &IdentityKey,
        controller: &IdentityPublic,
        node: &str,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        timestamp_ms: u64,
    ) -> Self {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let input = signing_input(
            controller,
            method,
            path_and_query,
            body,
            node,
            timestamp_ms,
            &nonce,
        );
        Self {
            node: node.to_owned(),
            timestamp_ms,
            nonce,
            signature: key.sign(&input),
        }
    }

    /// The four headers, as `(name, value)` pairs.
    pub fn headers(&self) -> [(&'static str, String); 4] {
        [
            (HEADER_NODE, self.node.clone()),
            (HEADER_TIMESTAMP, self.timestamp_ms.to_string()),
            (HEADER_NONCE, hex::encode(self.nonce)),
            (HEADER_SIGNATURE, STANDARD.encode(self.signature)),
        ]
    }

    /// Reads the headers through `get` (a header lookup by lower-case name).
    pub fn from_headers<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Self, AuthError> {
        let header = |name: &'static str| get(name).ok_or(AuthError::Missing(name));
        let node = header(HEADER_NODE)?;
        if node.is_empty() || node.len() > 64 {
            return Err(AuthError::Malformed(HEADER_NODE));
        }
        let timestamp_ms = header(HEADER_TIMESTAMP)?
            .parse()
            .map_err(|_| AuthError::Malformed(HEADER_TIMESTAMP))?;
        let mut nonce = [0u8; NONCE_LEN];
        hex::decode_to_slice(header(HEADER_NONCE)?, &mut nonce)
            .map_err(|_| AuthError::Malformed(HEADER_NONCE))?;
        let raw = STANDARD
            .decode(header(HEADER_SIGNATURE)?)
            .map_err(|_| AuthError::Malformed(HEADER_SIGNATURE))?;
        let signature = <[u8; SIGNATURE_LEN]>::try_from(raw.as_slice())
            .map_err(|_| AuthError::Malformed(HEADER_SIGNATURE))?;
        Ok(Self {
            node: node.to_owned(),
            timestamp_ms,
            nonce,
            signature,
        })
    }

    /// Checks the signature over the request with the node's key, as a request to the
    /// controller whose key is `controller`.
    pub fn verify(
        &self,
        key: &IdentityPublic,
        controller: &IdentityPublic,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<(), AuthError> {
        let input = signing_input(
            controller,
            method,
            path_and_query,
            body,
            &self.node,
            self.timestamp_ms,
            &self.nonce,
        );
        key.verify(&input, &self.signature)
            .map_err(|_| AuthError::BadSignature)
    }

    /// Checks a signature in format v1 (which named no controller), for requests recorded
    /// before v2: never for a request on the wire.
    pub fn verify_archived_v1(
        &self,
        key: &IdentityPublic,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<(), AuthError> {
        let input = signing_input_v1(
            method,
            path_and_query,
            body,
            &self.node,
            self.timestamp_ms,
            &self.nonce,
        );
        key.verify(&input, &self.signature)
            .map_err(|_| AuthError::BadSignature)
    }

    /// Checks that the request was signed within `window_ms` of `now_ms`.
    pub fn check_fresh(&self, now_ms: u64, window_ms: u64) -> Result<(), AuthError> {
        let skew_ms = i64::try_from(self.timestamp_ms)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(now_ms).unwrap_or(i64::MAX));
        if skew_ms.unsigned_abs() > window_ms {
            return Err(AuthError::Stale { skew_ms, window_ms });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn controller() -> IdentityPublic {
        IdentityKey::from_bytes([7; 32]).public()
    }

    fn signed() -> (IdentityKey, RequestSignature) {
        let key = IdentityKey::generate();
        let sig = RequestSignature::sign(
            &key,
            &controller(),
            "node-a",
            "post",
            "/v1/benchmarks/node-a",
            b"{}",
            1_000,
        );
        (key, sig)
    }

    #[test]
    fn a_signed_request_verifies_and_survives_the_headers() {
        let (key, sig) = signed();
        let map: HashMap<_, _> = sig.headers().into_iter().collect();
        let back = RequestSignature::from_headers(|n| map.get(n).map(String::as_str)).unwrap();
        assert_eq!(back, sig);
        back.verify(
            &key.public(),
            &controller(),
            "POST",
            "/v1/benchmarks/node-a",
            b"{}",
        )
        .unwrap();
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let (key, sig) = signed();
        let public = key.public();
        let c = controller();
        let bad = AuthError::BadSignature;
        assert_eq!(
            sig.verify(&public, &c, "GET", "/v1/benchmarks/node-a", b"{}"),
            Err(bad.clone())
        );
        assert_eq!(
            sig.verify(&public, &c, "POST", "/v1/benchmarks/node-b", b"{}"),
            Err(bad.clone())
        );
        assert_eq!(
            sig.verify(&public, &c, "POST", "/v1/benchmarks/node-a", b"{ }"),
            Err(bad.clone())
        );
        let mut other = sig.clone();
        other.node = "node-b".into();
        assert_eq!(
            other.verify(&public, &c, "POST", "/v1/benchmarks/node-a", b"{}"),
            Err(bad.clone())
        );
        let mut later = sig.clone();
        later.timestamp_ms += 1;
        assert_eq!(
            later.verify(&public, &c, "POST", "/v1/benchmarks/node-a", b"{}"),
            Err(bad.clone())
        );
        let mut renonced = sig;
        renonced.nonce[0] ^= 1;
        assert_eq!(
            renonced.verify(&public, &c, "POST", "/v1/benchmarks/node-a", b"{}"),
            Err(bad)
        );
    }

    #[test]
    fn freshness_window() {
        let (_, sig) = signed();
        assert!(sig.check_fresh(1_000 + 30_000, 30_000).is_ok());
        assert!(matches!(
            sig.check_fresh(1_000 + 30_001, 30_000),
            Err(AuthError::Stale { .. })
        ));
        assert!(sig.check_fresh(0, 30_000).is_ok());
    }

    #[test]
    fn malformed_headers_are_named() {
        let missing = RequestSignature::from_headers(|_| None);
        assert_eq!(missing, Err(AuthError::Missing(HEADER_NODE)));
        let bad_time = RequestSignature::from_headers(|n| match n {
            HEADER_TIMESTAMP => Some("soon"),
            _ => Some("x"),
        });
        assert_eq!(bad_time, Err(AuthError::Malformed(HEADER_TIMESTAMP)));
    }

    /// #22: a request signed for one controller does not verify at another that knows the
    /// same node, and a v1 signature (which named no controller) is refused on the wire.
    #[test]
    fn a_request_names_its_controller_and_v1_is_refused_22() {
        let key = IdentityKey::generate();
        let staging = IdentityKey::generate().public();
        let production = IdentityKey::generate().public();
        let path = "/v1/benchmarks/node-a";
        let sig = RequestSignature::sign(&key, &staging, "node-a", "POST", path, b"{}", 1_000);
        sig.verify(&key.public(), &staging, "POST", path, b"{}")
            .unwrap();
        assert_eq!(
            sig.verify(&key.public(), &production, "POST", path, b"{}"),
            Err(AuthError::BadSignature)
        );
        // The same request signed in format v1 verifies nowhere any more, except as an
        // archived record.
        let v1 = RequestSignature {
            signature: key.sign(&signing_input_v1(
                "POST", path, b"{}", "node-a", 1_000, &sig.nonce,
            )),
            ..sig.clone()
        };
        assert_eq!(
            v1.verify(&key.public(), &staging, "POST", path, b"{}"),
            Err(AuthError::BadSignature)
        );
        v1.verify_archived_v1(&key.public(), "POST", path, b"{}")
            .unwrap();
        let text = signing_input(&staging, "POST", path, b"{}", "node-a", 1_000, &sig.nonce);
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.starts_with(&format!("meshtun-request-v2\n{staging}\nPOST\n")),
            "{text}"
        );
    }
}
