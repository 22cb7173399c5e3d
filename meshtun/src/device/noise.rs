//! The responder's view of a WireGuard handshake initiation (Noise_IKpsk2, first message),
//! sans-IO.
//!
//! Before any `Tunn` sees an initiation, the device needs two things boringtun does not
//! expose: who claims to have sent it (the encrypted static key, readable with our private
//! key alone, so anyone can claim any key) and, for a known peer, its TAI64N timestamp
//! (readable only with the static-static secret, so only the peer or we can have made it).
//! The device keeps the newest accepted timestamp per peer, across the `Tunn`s that a
//! preshared-key rotation creates, so that an old initiation replayed after a rotation is
//! refused as it would be by a WireGuard that never changed its key.
//!
//! The construction follows the WireGuard paper (section 5.4.2) and boringtun's
//! `noise/handshake.rs`; [`forge`](super::forge) builds initiations with the same
//! primitives, and the tests check both against boringtun.

use blake2::digest::{Digest, FixedOutput, KeyInit, Mac, Update};
use blake2::{Blake2s256, Blake2sMac};
use boringtun::x25519;
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, Tag};
use meshtun_proto::PublicKey;
use zeroize::Zeroizing;

/// Length of a handshake initiation.
pub const INIT_LEN: usize = 148;
/// Length of a handshake response.
pub const RESP_LEN: usize = 92;
/// Length of a cookie reply.
pub const COOKIE_LEN: usize = 64;
/// Length of a TAI64N timestamp.
pub const TIMESTAMP_LEN: usize = 12;

/// `HASH(CONSTRUCTION)`: the initial chaining key.
pub(super) const INITIAL_CHAIN_KEY: [u8; 32] = [
    96, 226, 109, 174, 243, 39, 239, 192, 46, 195, 53, 226, 160, 37, 210, 208, 22, 235, 66, 6, 248,
    114, 119, 245, 45, 56, 209, 152, 139, 120, 205, 54,
];

/// `HASH(HASH(CONSTRUCTION) || IDENTIFIER)`: the initial hash.
pub(super) const INITIAL_CHAIN_HASH: [u8; 32] = [
    34, 17, 179, 97, 8, 26, 197, 102, 105, 18, 67, 219, 69, 138, 213, 50, 45, 156, 108, 102, 34,
    147, 232, 183, 14, 225, 156, 101, 186, 7, 158, 243,
];

/// The label of the mac1 key.
pub(super) const LABEL_MAC1: &[u8] = b"mac1----";
/// The label of the cookie key.
pub(super) const LABEL_COOKIE: &[u8] = b"cookie--";

// Field offsets in an initiation.
const EPHEMERAL: std::ops::Range<usize> = 8..40;
const STATIC: std::ops::Range<usize> = 40..88;
const TIMESTAMP: std::ops::Range<usize> = 88..116;

/// `HASH(a || b)`.
pub(super) fn hash(a: &[u8], b: &[u8]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    Digest::update(&mut h, a);
    Digest::update(&mut h, b);
    h.finalize().into()
}

/// `HMAC(key, a || b)` over BLAKE2s.
pub(super) fn hmac(key: &[u8], a: &[u8], b: &[u8]) -> Zeroizing<[u8; 32]> {
    type HmacBlake2s = hmac::SimpleHmac<Blake2s256>;
    // HMAC takes keys of any length.
    let mut mac = <HmacBlake2s as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    Update::update(&mut mac, a);
    Update::update(&mut mac, b);
    Zeroizing::new(mac.finalize_fixed().into())
}

/// `MAC(key, data)`: keyed BLAKE2s with a 16-byte output.
pub(super) fn mac(key: &[u8], data: &[u8]) -> [u8; 16] {
    // Keys here are 16 or 32 bytes, within BLAKE2s's limit.
    let mut m = <Blake2sMac<blake2::digest::consts::U16> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!());
    Mac::update(&mut m, data);
    m.finalize_fixed().into()
}

/// The Noise `KDF2`: (new chaining key, key) from `chaining_key` and `input`.
pub(super) fn kdf2(
    chaining_key: &[u8; 32],
    input: &[u8],
) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
    let temp = hmac(chaining_key, input, &[]);
    let ck = hmac(&*temp, &[1], &[]);
    let key = hmac(&*temp, &*ck, &[2]);
    (ck, key)
}

/// `AEAD(key, 0, plaintext, aad)` in place: `buf` holds the plaintext followed by room for
/// the 16-byte tag.
pub(super) fn seal(key: &[u8; 32], buf: &mut [u8], aad: &[u8]) {
    let (text, tag_out) = buf.split_at_mut(buf.len().saturating_sub(16));
    let cipher = ChaCha20Poly1305::new(key.into());
    // Encryption fails only past ChaCha20's length limit, far beyond 32 bytes.
    if let Ok(tag) = cipher.encrypt_in_place_detached(&[0u8; 12].into(), aad, text) {
        tag_out.copy_from_slice(&tag);
    }
}

/// Opens `AEAD(key, 0, ·, aad)` of `sealed` (ciphertext and tag) into `out`.
fn open(key: &[u8; 32], sealed: &[u8], aad: &[u8], out: &mut [u8]) -> Option<()> {
    let (text, tag) = sealed.split_at(sealed.len().checked_sub(16)?);
    if text.len() != out.len() {
        return None;
    }
    out.copy_from_slice(text);
    let cipher = ChaCha20Poly1305::new(key.into());
    cipher
        .decrypt_in_place_detached(&[0u8; 12].into(), aad, out, Tag::from_slice(tag))
        .ok()
}

/// A TAI64N timestamp from an initiation: seconds then nanoseconds, both big-endian, so
/// that byte order is time order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tai64n(pub [u8; TIMESTAMP_LEN]);

/// `DH(our static, peer static)`: the secret that authenticates an initiation's timestamp.
/// One per peer, computed once.
pub struct StaticShared(Zeroizing<[u8; 32]>);

impl StaticShared {
    /// The secret between `ours` and `peer`.
    pub fn new(ours: &x25519::StaticSecret, peer: &PublicKey) -> Self {
        let shared = ours.diffie_hellman(&x25519::PublicKey::from(*peer.as_bytes()));
        Self(Zeroizing::new(shared.to_bytes()))
    }
}

impl std::fmt::Debug for StaticShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticShared(<redacted>)")
    }
}

/// Our side of the handshake: the private key and the hash that starts every initiation
/// addressed to us.
pub struct Responder {
    secret: x25519::StaticSecret,
    start_hash: [u8; 32],
}

/// An initiation whose claimed sender is known; its timestamp is still sealed.
pub struct Opened {
    /// The static key the initiation claims. Anyone can claim any key.
    pub claimed: PublicKey,
    chaining_key: Zeroizing<[u8; 32]>,
    hash: [u8; 32],
    sealed_timestamp: [u8; 28],
}

impl Responder {
    /// The responder for our private key `secret`.
    pub fn new(secret: x25519::StaticSecret) -> Self {
        let public = x25519::PublicKey::from(&secret);
        Self {
            start_hash: hash(&INITIAL_CHAIN_HASH, public.as_bytes()),
            secret,
        }
    }

    /// Our private key.
    pub fn secret(&self) -> &x25519::StaticSecret {
        &self.secret
    }

    /// Reads the claimed sender of `init` (one X25519). `None` if it is not an initiation
    /// or its static key does not decrypt.
    pub fn open(&self, init: &[u8]) -> Option<Opened> {
        if init.len() != INIT_LEN || init[0] != 1 {
            return None;
        }
        let ephemeral: [u8; 32] = init.get(EPHEMERAL)?.try_into().ok()?;
        let sealed_static = init.get(STATIC)?;
        let sealed_timestamp: [u8; 28] = init.get(TIMESTAMP)?.try_into().ok()?;
        let h = hash(&self.start_hash, &ephemeral);
        let ck = hmac(&*hmac(&INITIAL_CHAIN_KEY, &ephemeral, &[]), &[1], &[]);
        let es = Zeroizing::new(
            self.secret
                .diffie_hellman(&x25519::PublicKey::from(ephemeral))
                .to_bytes(),
        );
        let (ck, key) = kdf2(&ck, &*es);
        let mut claimed = [0u8; 32];
        open(&key, sealed_static, &h, &mut claimed)?;
        Some(Opened {
            claimed: PublicKey::from_bytes(claimed),
            chaining_key: ck,
            hash: hash(&h, sealed_static),
            sealed_timestamp,
        })
    }
}

impl Opened {
    /// The initiation's timestamp, if it was sealed with `shared`, the secret between us and
    /// the claimed sender: only that peer (or we) could have made it. No X25519.
    pub fn timestamp(&self, shared: &StaticShared) -> Option<Tai64n> {
        let (_, key) = kdf2(&self.chaining_key, &*shared.0);
        let mut stamp = [0u8; TIMESTAMP_LEN];
        open(&key, &self.sealed_timestamp, &self.hash, &mut stamp)?;
        Some(Tai64n(stamp))
    }
}

#[cfg(test)]
mod tests {
    use boringtun::noise::errors::WireGuardError;
    use boringtun::noise::{Tunn, TunnResult};
    use meshtun_proto::PrivateKey;

    use super::super::forge;
    use super::*;

    fn tunn(own: &PrivateKey, peer: &PrivateKey) -> Tunn {
        let peer = x25519::PublicKey::from(*peer.public_key().as_bytes());
        Tunn::new(own.to_static_secret(), peer, None, None, 7, None)
    }

    fn initiation(t: &mut Tunn) -> Vec<u8> {
        let mut buf = [0u8; 256];
        match t.format_handshake_initiation(&mut buf, true) {
            TunnResult::WriteToNetwork(p) => p.to_vec(),
            other => panic!("no initiation: {other:?}"),
        }
    }

    #[test]
    fn reads_sender_and_timestamp_of_boringtun_initiations() {
        let (a, b) = (PrivateKey::generate(), PrivateKey::generate());
        let mut ta = tunn(&a, &b);
        let responder = Responder::new(b.to_static_secret());
        let shared = StaticShared::new(responder.secret(), &a.public_key());
        let first = responder.open(&initiation(&mut ta)).expect("opens");
        assert_eq!(first.claimed, a.public_key());
        let t1 = first.timestamp(&shared).expect("timestamp");
        // The sleep is the test: time passes, so the next initiation's timestamp is newer.
        std::thread::sleep(std::time::Duration::from_millis(2));
        let t2 = responder
            .open(&initiation(&mut ta))
            .and_then(|o| o.timestamp(&shared))
            .expect("second timestamp");
        assert!(t2 > t1, "timestamps grow: {t1:?} then {t2:?}");
        // The wrong static-static secret reads nothing.
        let other = StaticShared::new(responder.secret(), &PrivateKey::generate().public_key());
        assert!(first.timestamp(&other).is_none());
        // Someone else's key opens nothing.
        assert!(Responder::new(a.to_static_secret())
            .open(&initiation(&mut ta))
            .is_none());
    }

    #[test]
    fn refuses_what_is_not_an_initiation() {
        let responder = Responder::new(PrivateKey::generate().to_static_secret());
        assert!(responder.open(&[]).is_none());
        assert!(responder.open(&[1; INIT_LEN]).is_none());
        assert!(responder.open(&[1; INIT_LEN - 1]).is_none());
        let mut garbage = [0x5au8; INIT_LEN];
        garbage[0] = 1;
        assert!(responder.open(&garbage).is_none());
    }

    #[test]
    fn forged_initiations_claim_any_key_but_carry_no_timestamp() {
        let (a, b) = (PrivateKey::generate(), PrivateKey::generate());
        let forged = forge::initiation(&b.public_key(), &a.public_key(), 99);
        let responder = Responder::new(b.to_static_secret());
        let opened = responder.open(&forged).expect("the claimed key decrypts");
        assert_eq!(opened.claimed, a.public_key());
        let shared = StaticShared::new(responder.secret(), &a.public_key());
        assert!(opened.timestamp(&shared).is_none());
        // boringtun agrees: mac1 and the static key pass, the timestamp does not.
        let mut tb = tunn(&b, &a);
        let mut buf = [0u8; 256];
        match tb.decapsulate(None, &forged, &mut buf) {
            TunnResult::Err(WireGuardError::InvalidAeadTag) => {}
            other => panic!("boringtun should fail on the timestamp: {other:?}"),
        }
    }

    #[test]
    fn forged_cookie_replies_and_responses_pass_mac_checks() {
        let (a, b) = (PrivateKey::generate(), PrivateKey::generate());
        let mut ta = tunn(&a, &b);
        let init = initiation(&mut ta);
        let cookie = forge::cookie_reply(&b.public_key(), &init).expect("a cookie reply");
        let mut buf = [0u8; 256];
        // The observer's cookie authenticates as the responder's own would.
        assert!(matches!(
            ta.decapsulate(None, &cookie, &mut buf),
            TunnResult::Done
        ));
        let index = u32::from_le_bytes(init[4..8].try_into().unwrap());
        let response = forge::response(&a.public_key(), index, 5);
        match ta.decapsulate(None, &response, &mut buf) {
            TunnResult::Err(WireGuardError::InvalidMac) => panic!("mac1 of the response is wrong"),
            TunnResult::Err(_) => {}
            other => panic!("a forged response was accepted: {other:?}"),
        }
        assert!(forge::cookie_reply(&b.public_key(), &cookie).is_none());
    }
}
