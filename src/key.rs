//! WireGuard key newtypes: public keys, private keys and preshared keys.
//!
//! All three are 32 bytes. The configuration and `wg` show them in base64; the UAPI uses hex.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand_core::{OsRng, RngCore};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Length in bytes of every WireGuard key.
pub const KEY_LEN: usize = 32;

/// Why a key could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The text is not valid base64.
    #[error("not valid base64 (a WireGuard key is 44 base64 characters ending in '=')")]
    Base64,
    /// The text is not valid hex.
    #[error("not valid hex (a UAPI key is 64 hex digits)")]
    Hex,
    /// The decoded key does not have 32 bytes.
    #[error("a key must be 32 bytes, this one has {0}")]
    Length(usize),
}

/// Decodes base64 key text into a buffer wiped on drop (also on error, and the decoded copy).
fn decode_base64(text: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyError> {
    let buf = Zeroizing::new(STANDARD.decode(text).map_err(|_| KeyError::Base64)?);
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    if buf.len() != KEY_LEN {
        return Err(KeyError::Length(buf.len()));
    }
    out.copy_from_slice(&buf);
    Ok(out)
}

/// Decodes hex key text into a buffer wiped on drop, so that a decode failing halfway
/// leaves no part of the key behind.
fn decode_hex(text: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyError> {
    if text.len() != 2 * KEY_LEN {
        return Err(if text.bytes().all(|b| b.is_ascii_hexdigit()) {
            KeyError::Length(text.len() / 2)
        } else {
            KeyError::Hex
        });
    }
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    hex::decode_to_slice(text, out.as_mut_slice()).map_err(|_| KeyError::Hex)?;
    Ok(out)
}

/// A Curve25519 public key: a node's identity on the WireGuard layer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    /// Wraps raw key bytes.
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw key bytes.
    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Decodes the base64 form used in configuration files.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode_base64(text).map(|bytes| Self(*bytes))
    }

    /// Decodes the hex form used by the UAPI.
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        decode_hex(text).map(|bytes| Self(*bytes))
    }

    /// The base64 form, as `wg` prints it.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// The hex form, as the UAPI carries it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl PublicKey {
    /// True for a key of small order (all-zero among them): any X25519 with it gives the
    /// all-zero shared secret, whoever computes it, so such a key proves nothing and
    /// protects nothing. The clamped scalar is a multiple of the cofactor 8, so one product
    /// with any clamped scalar is zero exactly for these points (on the curve or its twist).
    pub fn is_low_order(&self) -> bool {
        x25519_dalek::x25519([0x55; KEY_LEN], self.0) == [0u8; KEY_LEN]
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_base64(s)
    }
}

impl From<x25519_dalek::PublicKey> for PublicKey {
    fn from(key: x25519_dalek::PublicKey) -> Self {
        Self(key.to_bytes())
    }
}

impl From<PublicKey> for x25519_dalek::PublicKey {
    fn from(key: PublicKey) -> Self {
        x25519_dalek::PublicKey::from(key.0)
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::from_base64(&text).map_err(serde::de::Error::custom)
    }
}

/// A Curve25519 private key. Zeroized on drop; `Debug` never shows it.
#[derive(Clone, ZeroizeOnDrop)]
pub struct PrivateKey(x25519_dalek::StaticSecret);

impl PrivateKey {
    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Self {
        Self(x25519_dalek::StaticSecret::random_from_rng(OsRng))
    }

    /// Wraps raw key bytes (clamping happens at use, as in WireGuard).
    pub fn from_bytes(mut bytes: [u8; KEY_LEN]) -> Self {
        let key = Self(x25519_dalek::StaticSecret::from(bytes));
        bytes.zeroize();
        key
    }

    /// Decodes the base64 form used in configuration files.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode_base64(text).map(|bytes| Self::from_bytes(*bytes))
    }

    /// Decodes the hex form used by the UAPI.
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        decode_hex(text).map(|bytes| Self::from_bytes(*bytes))
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey::from(x25519_dalek::PublicKey::from(&self.0))
    }

    /// The base64 form. Only for writing key files and `genkey`.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.as_bytes())
    }

    /// The hex form. Only for the UAPI `get` answer on the 0600 socket.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_bytes())
    }

    /// The x25519 secret, for the WireGuard state machine.
    pub fn to_static_secret(&self) -> x25519_dalek::StaticSecret {
        self.0.clone()
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        self.0.as_bytes()
    }
}

impl PartialEq for PrivateKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for PrivateKey {}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey(<redacted>, public {})", self.public_key())
    }
}

/// A 32-byte symmetric preshared key. Zeroized on drop; `Debug` never shows it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PresharedKey([u8; KEY_LEN]);

impl PresharedKey {
    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Self {
        let mut bytes = [0u8; KEY_LEN];
        OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Decodes the base64 form used in configuration files.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode_base64(text).map(|bytes| Self(*bytes))
    }

    /// Decodes the hex form used by the UAPI.
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        decode_hex(text).map(|bytes| Self(*bytes))
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// True for the all-zero key, which WireGuard treats as "no preshared key".
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|b| *b == 0)
    }

    /// The base64 form. Only for `genpsk` and files written with mode 0600.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// The hex form. Only for the UAPI `get` answer on the 0600 socket.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl PartialEq for PresharedKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for PresharedKey {}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_round_trips_base64_and_hex() {
        let private = PrivateKey::generate();
        let public = private.public_key();
        assert_eq!(PublicKey::from_base64(&public.to_base64()).unwrap(), public);
        assert_eq!(PublicKey::from_hex(&public.to_hex()).unwrap(), public);
        assert_eq!(public.to_base64().len(), 44);
    }

    #[test]
    fn private_key_matches_wg_pubkey() {
        // Vector produced by `wg pubkey`.
        let private =
            PrivateKey::from_base64("yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=").unwrap();
        assert_eq!(
            private.public_key().to_base64(),
            "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
        );
    }

    #[test]
    fn bad_keys_are_refused_with_a_reason() {
        assert_eq!(PublicKey::from_base64("not a key"), Err(KeyError::Base64));
        assert_eq!(PublicKey::from_base64("AAAA"), Err(KeyError::Length(3)));
        assert_eq!(PublicKey::from_hex("zz"), Err(KeyError::Hex));
        assert_eq!(PublicKey::from_hex("00"), Err(KeyError::Length(1)));
        let long = "A".repeat(400);
        assert!(PublicKey::from_base64(&long).is_err());
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let psk = PresharedKey::generate();
        let shown = format!("{psk:?}");
        assert!(!shown.contains(&psk.to_base64()));
        assert!(!shown.contains(&psk.to_hex()));
        let private = PrivateKey::generate();
        let shown = format!("{private:?}");
        assert!(!shown.contains(&private.to_base64()));
        assert!(shown.contains(&private.public_key().to_base64()));
    }

    #[test]
    fn low_order_public_keys_are_detected() {
        // The points of order 1, 2, 4 and 8 (and non-canonical encodings of them), from
        // the list libsodium and the X25519 literature refuse.
        let hex_points = [
            "0000000000000000000000000000000000000000000000000000000000000000",
            "0100000000000000000000000000000000000000000000000000000000000000",
            "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
            "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        ];
        for text in hex_points {
            assert!(PublicKey::from_hex(text).unwrap().is_low_order(), "{text}");
        }
        for _ in 0..32 {
            assert!(!PrivateKey::generate().public_key().is_low_order());
        }
    }

    /// The constant-time `==` of the secret types still tells every one-byte difference.
    #[test]
    fn secret_equality_sees_a_difference_in_any_byte() {
        let base = [7u8; KEY_LEN];
        assert_eq!(
            PresharedKey::from_bytes(base),
            PresharedKey::from_bytes(base)
        );
        assert_eq!(PrivateKey::from_bytes(base), PrivateKey::from_bytes(base));
        for i in 0..KEY_LEN {
            let mut other = base;
            other[i] ^= 0x80;
            assert_ne!(
                PresharedKey::from_bytes(base),
                PresharedKey::from_bytes(other),
                "byte {i}"
            );
            assert_ne!(
                PrivateKey::from_bytes(base),
                PrivateKey::from_bytes(other),
                "byte {i}"
            );
        }
    }

    #[test]
    fn zero_psk_is_detected() {
        assert!(PresharedKey::from_bytes([0; 32]).is_zero());
        assert!(!PresharedKey::generate().is_zero());
    }
}
