//! Ed25519 identity keys: a node signs its requests with one, the controller signs bundles
//! with its own, and each side pins the other's public key.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use rand_core::OsRng;
use zeroize::Zeroize;

use crate::key::{KeyError, KEY_LEN};

/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// Why a signature did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the Ed25519 signature does not verify")]
pub struct BadSignature;

/// An Ed25519 signing key. Zeroized on drop; `Debug` never shows it.
#[derive(Clone)]
pub struct IdentityKey(SigningKey);

impl IdentityKey {
    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Self {
        Self(SigningKey::generate(&mut OsRng))
    }

    /// Wraps the 32-byte secret seed.
    pub fn from_bytes(mut bytes: [u8; KEY_LEN]) -> Self {
        let key = Self(SigningKey::from_bytes(&bytes));
        bytes.zeroize();
        key
    }

    /// Decodes the base64 seed, as key files hold it.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let mut buf = STANDARD.decode(text.trim()).map_err(|_| KeyError::Base64)?;
        let result = <[u8; KEY_LEN]>::try_from(buf.as_slice())
            .map(Self::from_bytes)
            .map_err(|_| KeyError::Length(buf.len()));
        buf.zeroize();
        result
    }

    /// The base64 seed, for writing a 0600 key file.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.to_bytes())
    }

    /// The 32-byte secret seed, for deriving other keys from it (zeroized on drop).
    pub fn seed(&self) -> zeroize::Zeroizing<[u8; KEY_LEN]> {
        zeroize::Zeroizing::new(self.0.to_bytes())
    }

    /// The public half.
    pub fn public(&self) -> IdentityPublic {
        IdentityPublic(self.0.verifying_key().to_bytes())
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.0.sign(message).to_bytes()
    }
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityKey(<redacted>, public {})", self.public())
    }
}

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentityPublic([u8; KEY_LEN]);

impl IdentityPublic {
    /// Wraps raw key bytes (checked when used).
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw key bytes.
    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Decodes the base64 form.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let buf = STANDARD.decode(text.trim()).map_err(|_| KeyError::Base64)?;
        <[u8; KEY_LEN]>::try_from(buf.as_slice())
            .map(Self)
            .map_err(|_| KeyError::Length(buf.len()))
    }

    /// The base64 form.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Checks `signature` over `message`, rejecting malleable and small-order forms.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), BadSignature> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| BadSignature)?;
        let sig = <[u8; SIGNATURE_LEN]>::try_from(signature).map_err(|_| BadSignature)?;
        key.verify_strict(message, &Signature::from_bytes(&sig))
            .map_err(|_| BadSignature)
    }
}

impl fmt::Display for IdentityPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for IdentityPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityPublic({})", self.to_base64())
    }
}

impl FromStr for IdentityPublic {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_base64(s)
    }
}

impl serde::Serialize for IdentityPublic {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> serde::Deserialize<'de> for IdentityPublic {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::from_base64(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let key = IdentityKey::generate();
        let sig = key.sign(b"hello");
        assert!(key.public().verify(b"hello", &sig).is_ok());
        assert_eq!(key.public().verify(b"hellO", &sig), Err(BadSignature));
        assert_eq!(
            IdentityKey::generate().public().verify(b"hello", &sig),
            Err(BadSignature)
        );
        assert_eq!(key.public().verify(b"hello", &sig[..63]), Err(BadSignature));
    }

    #[test]
    fn keys_round_trip_and_stay_redacted() {
        let key = IdentityKey::generate();
        let again = IdentityKey::from_base64(&key.to_base64()).unwrap();
        assert_eq!(again.public(), key.public());
        assert_eq!(
            IdentityPublic::from_base64(&key.public().to_base64()).unwrap(),
            key.public()
        );
        assert!(!format!("{key:?}").contains(&key.to_base64()));
    }
}
