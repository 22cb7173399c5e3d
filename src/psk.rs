//! Epoch secrets and the per-pair preshared key derivation.
//!
//! Both ends of a WireGuard pair must hold the same preshared key, so the key is derived per
//! pair, never per node:
//!
//! ```text
//! PSK(epoch, a, b) = HKDF-SHA256(ikm = epoch_secret, salt = none,
//!                                info = "meshtun psk v1" ‖ epoch (u64 big-endian) ‖ min(a, b) ‖ max(a, b))
//! ```
//!
//! where `a` and `b` are the two WireGuard public keys, ordered bytewise. The controller and
//! the daemon both use [`derive_pair_psk`], so they agree by construction.

use std::fmt;

use hkdf::Hkdf;
use rand_core::{OsRng, RngCore};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::key::{KeyError, PresharedKey, PublicKey, KEY_LEN};

/// The label mixed into every pair key.
pub const PSK_INFO: &[u8] = b"meshtun psk v1";

/// An epoch number: monotonic, never reused. The controller gives each epoch the Unix
/// milliseconds of its publication (or one more than the previous id), so that ids keep
/// increasing even across a database restored from a backup.
pub type EpochId = u64;

/// The 32-byte secret of one epoch. Zeroized on drop; `Debug` never shows it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct EpochSecret([u8; KEY_LEN]);

impl EpochSecret {
    /// A fresh secret from the operating system's random number generator.
    pub fn generate() -> Self {
        let mut bytes = [0u8; KEY_LEN];
        OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// Wraps raw secret bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Decodes the hex form the controller stores.
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        if text.len() != 2 * KEY_LEN {
            return Err(KeyError::Length(text.len() / 2));
        }
        // Wiped on drop: a decode failing halfway leaves no part of the secret behind.
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        hex::decode_to_slice(text, out.as_mut_slice()).map_err(|_| KeyError::Hex)?;
        Ok(Self(*out))
    }

    /// The hex form, for the controller's database only.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The raw secret bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl PartialEq for EpochSecret {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for EpochSecret {}

impl fmt::Debug for EpochSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EpochSecret(<redacted>)")
    }
}

/// The preshared key of the pair `{a, b}` in `epoch`. Symmetric in `a` and `b`.
///
/// To derive many keys of one epoch, [`PairKeys`] does the HKDF extraction only once.
pub fn derive_pair_psk(
    secret: &EpochSecret,
    epoch: EpochId,
    a: &PublicKey,
    b: &PublicKey,
) -> PresharedKey {
    PairKeys::new(secret, epoch).derive(a, b)
}

/// The pair keys of one epoch: [`derive_pair_psk`] with the HKDF extraction from the epoch
/// secret done once, so that each key costs only the expansion. The pseudorandom key is held
/// in a buffer zeroized on drop (an `Hkdf` value cannot be); `Debug` shows nothing.
#[derive(Clone)]
pub struct PairKeys {
    prk: Zeroizing<[u8; KEY_LEN]>,
    epoch: EpochId,
}

impl PairKeys {
    /// Prepares the derivation of `epoch`'s pair keys from its secret.
    pub fn new(secret: &EpochSecret, epoch: EpochId) -> Self {
        let (mut prk, _) = Hkdf::<Sha256>::extract(None, secret.as_bytes());
        let mut held = Zeroizing::new([0u8; KEY_LEN]);
        held.copy_from_slice(&prk);
        prk.as_mut_slice().zeroize();
        Self { prk: held, epoch }
    }

    /// The preshared key of the pair `{a, b}`. Symmetric in `a` and `b`.
    pub fn derive(&self, a: &PublicKey, b: &PublicKey) -> PresharedKey {
        let (lo, hi) = if a.as_bytes() <= b.as_bytes() {
            (a, b)
        } else {
            (b, a)
        };
        let mut info = [0u8; PSK_INFO.len() + 8 + 2 * KEY_LEN];
        let (label, rest) = info.split_at_mut(PSK_INFO.len());
        label.copy_from_slice(PSK_INFO);
        let (epoch_bytes, keys) = rest.split_at_mut(8);
        epoch_bytes.copy_from_slice(&self.epoch.to_be_bytes());
        let (lo_bytes, hi_bytes) = keys.split_at_mut(KEY_LEN);
        lo_bytes.copy_from_slice(lo.as_bytes());
        hi_bytes.copy_from_slice(hi.as_bytes());
        let mut okm = [0u8; KEY_LEN];
        // A 32-byte PRK is SHA-256's output length, which `from_prk` always accepts.
        let hkdf = Hkdf::<Sha256>::from_prk(&*self.prk).expect("a 32-byte HKDF-SHA256 PRK");
        // HKDF-SHA256 expands up to 8160 bytes, so 32 always succeeds.
        let expanded = hkdf.expand(&info, &mut okm);
        debug_assert!(expanded.is_ok());
        let psk = PresharedKey::from_bytes(okm);
        okm.zeroize();
        psk
    }
}

impl fmt::Debug for PairKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PairKeys(epoch {}, <redacted>)", self.epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> PublicKey {
        PublicKey::from_bytes([byte; KEY_LEN])
    }

    #[test]
    fn both_ends_of_a_pair_get_the_same_key() {
        let s = EpochSecret::generate();
        assert_eq!(
            derive_pair_psk(&s, 7, &key(1), &key(2)),
            derive_pair_psk(&s, 7, &key(2), &key(1))
        );
    }

    #[test]
    fn any_change_of_epoch_pair_or_secret_changes_the_key() {
        let s = EpochSecret::generate();
        let base = derive_pair_psk(&s, 7, &key(1), &key(2));
        assert_ne!(base, derive_pair_psk(&s, 8, &key(1), &key(2)));
        assert_ne!(base, derive_pair_psk(&s, 7, &key(1), &key(3)));
        assert_ne!(base, derive_pair_psk(&s, 7, &key(3), &key(2)));
        assert_ne!(
            base,
            derive_pair_psk(&EpochSecret::generate(), 7, &key(1), &key(2))
        );
    }

    #[test]
    fn fixed_test_vectors() {
        // Computed independently with a plain HMAC-SHA256 HKDF in Python (RFC 5869, no salt).
        let s = EpochSecret::from_bytes([0x42; 32]);
        assert_eq!(
            derive_pair_psk(&s, 1, &key(0x01), &key(0x02)).to_hex(),
            VECTOR_EPOCH1
        );
        assert_eq!(
            derive_pair_psk(&s, 2, &key(0x02), &key(0x01)).to_hex(),
            VECTOR_EPOCH2
        );
    }

    const VECTOR_EPOCH1: &str = "1a784866f1c8d05d2dfc4e8a26ee15f4b72348407fd46b480e15434bd0b81453";
    const VECTOR_EPOCH2: &str = "b1331e46eff5a0088fe3750848c647dedc40079d85595d6399852b5c7b360b95";

    #[test]
    fn pair_keys_match_the_one_shot_derivation() {
        let s = EpochSecret::from_bytes([0x42; 32]);
        let keys = PairKeys::new(&s, 1);
        assert_eq!(keys.derive(&key(0x01), &key(0x02)).to_hex(), VECTOR_EPOCH1);
        assert_eq!(keys.derive(&key(0x02), &key(0x01)).to_hex(), VECTOR_EPOCH1);
        for (a, b) in [(3, 9), (200, 7), (5, 5)] {
            assert_eq!(
                keys.derive(&key(a), &key(b)),
                derive_pair_psk(&s, 1, &key(a), &key(b))
            );
        }
        assert_eq!(
            PairKeys::new(&s, 2).derive(&key(0x01), &key(0x02)).to_hex(),
            VECTOR_EPOCH2
        );
        assert_eq!(format!("{keys:?}"), "PairKeys(epoch 1, <redacted>)");
    }

    #[test]
    fn secrets_are_redacted_and_round_trip() {
        let s = EpochSecret::generate();
        assert_eq!(format!("{s:?}"), "EpochSecret(<redacted>)");
        assert_eq!(EpochSecret::from_hex(&s.to_hex()).unwrap(), s);
        assert!(EpochSecret::from_hex("abc").is_err());
    }
}
