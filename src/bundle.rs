//! Bundles: what the controller tells one node for one epoch, signed by the controller, with
//! every preshared key sealed to the recipient's WireGuard key.
//!
//! **Signing.** A [`SignedBundle`] carries the bundle's JSON bytes (base64) and an Ed25519
//! signature over `"meshtun-bundle-v1\0" ‖ those bytes`, so there is no canonical-form
//! question: a node checks the signature with the pinned controller key, then parses. The
//! label keeps a bundle signature from ever being taken for anything else the controller key
//! signs (enrollment replies have their own label), and the reverse. Bundles signed before
//! the label (over the bare bytes) are accepted only from the node's own cache
//! ([`SignedBundle::verify_cached`]), never from the network: such a bundle is at most one
//! epoch old when the node is upgraded, expires with its epoch, and a cache file can only
//! be written by the node itself (mode 0600), so nothing an attacker can send is ever checked
//! without the label.
//!
//! **Sealing.** For each bundle the controller makes an ephemeral X25519 key `e` and computes
//! `k = HKDF-SHA256(ikm = X25519(e, recipient), info = "meshtun seal v1" ‖ E ‖ R)` where `E`
//! and `R` are the ephemeral and recipient public keys. Peer `i`'s key is sealed with
//! ChaCha20-Poly1305 under `k`, nonce = `i` (96-bit big-endian) and associated data
//! `"meshtun psk" ‖ epoch ‖ peer public key`. Only the holder of the recipient's WireGuard
//! private key can open it, and a sealed key cannot be moved to another peer, position or
//! epoch. Plain HTTP never carries a preshared key in the clear.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hkdf::Hkdf;
use ipnet::IpNet;
use rand_core::OsRng;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroize;

use crate::identity::{IdentityKey, IdentityPublic};
use crate::key::{PresharedKey, PrivateKey, PublicKey, KEY_LEN};
use crate::keyset::KeySet;
use crate::membership::PeerEnrollment;
use crate::psk::EpochId;
use crate::relay::{BundleRelay, RelayPassword, PASSWORD_LEN};

/// Version of the bundle format a controller writes: 2 lists candidate endpoints per peer
/// and says whether the recipient forwards between its peers (a hub).
pub const BUNDLE_VERSION: u32 = 2;

/// The oldest bundle format a node still reads: 1 had one `endpoint` per peer.
pub const MIN_BUNDLE_VERSION: u32 = 1;

/// The most nodes a bundle names in one hub's [`BundlePeer::forwards_to`]; the routes to the
/// others are in its allowed IPs all the same.
pub const MAX_FORWARDS_NAMED: usize = 64;

/// The most candidate endpoints a bundle lists for one peer.
pub const MAX_CANDIDATES: usize = 8;

/// Largest signed bundle a node accepts (a 10,000-peer bundle is about 2.5 MB).
pub const MAX_BUNDLE_BYTES: usize = 16 << 20;

const SEAL_INFO: &[u8] = b"meshtun seal v1";
/// The context label the bundle signature covers before the payload.
pub const SIGNATURE_LABEL: &[u8] = b"meshtun-bundle-v1\0";
const SEAL_AAD: &[u8] = b"meshtun psk";
const RELAY_AAD: &[u8] = b"meshtun relay password";
/// The first nonce byte of the relay password: peer keys use nonces with a zero first byte
/// (their index is in the last four), so the two never share a nonce under one bundle key.
const RELAY_NONCE_TAG: u8 = 1;

/// Length of a sealed preshared key: the key and the Poly1305 tag.
pub const SEALED_LEN: usize = KEY_LEN + 16;

/// Whether the recipient is in the mesh this epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Membership {
    /// Allowed: the bundle lists the peers to talk to.
    Allowed,
    /// Denied: the bundle carries no peer and no key.
    Denied {
        /// Why, in words an operator can act on.
        reason: String,
    },
}

/// One peer the recipient may talk to this epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundlePeer {
    /// The peer's node id.
    pub node_id: String,
    /// The peer's WireGuard public key.
    pub public_key: PublicKey,
    /// Where to reach it (`host:port`): format 1 only; format 2 lists [`Self::candidates`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Where it may be reached (`host:port`), best first: the endpoint an admin pinned,
    /// then the addresses the node reported and the one the controller saw it come from.
    /// At most [`MAX_CANDIDATES`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<String>,
    /// Its overlay networks; for a hub, also the host routes of the nodes it forwards to
    /// for the recipient ([`Self::forwards_to`]).
    pub allowed_ips: Vec<IpNet>,
    /// The pair's preshared key, sealed to the recipient (base64).
    pub sealed_psk: String,
    /// For a hub of `hub_and_spoke`: the node ids the recipient reaches through it (the
    /// first [`MAX_FORWARDS_NAMED`] by id), whose addresses `allowed_ips` carries. Only
    /// shown to the user; routing reads `allowed_ips`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forwards_to: Vec<String>,
    /// The peer's identity key and the operator's membership signature over its enrollment
    /// ([`crate::membership`]), when the controller holds one. A node configured with a
    /// membership key drops a peer without a valid one; other nodes ignore it. Bundles of
    /// controllers that predate it have none, and still decode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment: Option<PeerEnrollment>,
}

/// What one node is told for one epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    /// Format version ([`BUNDLE_VERSION`]).
    pub version: u32,
    /// The recipient's node id.
    pub node_id: String,
    /// The recipient's WireGuard public key (the sealing key).
    pub recipient: PublicKey,
    /// The epoch.
    pub epoch: EpochId,
    /// When to switch to this bundle's keys, Unix milliseconds.
    pub activation_ms: u64,
    /// After this, the bundle must not be used (Unix milliseconds).
    pub not_after_ms: u64,
    /// When the controller made it.
    pub issued_ms: u64,
    /// When the controller decided the epoch's membership (Unix milliseconds): the start
    /// of the decision-to-cut-off time a node measures. 0 from a controller that does not say.
    #[serde(default)]
    pub decided_ms: u64,
    /// Allowed or denied, with the reason.
    pub membership: Membership,
    /// The ephemeral public key the preshared keys are sealed with.
    pub seal_key: Option<PublicKey>,
    /// The peers (empty when denied).
    pub peers: Vec<BundlePeer>,
    /// Whether the recipient forwards packets between its gated peers: a hub of
    /// `hub_and_spoke`, which the spokes route each other through.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forward: bool,
    /// The relay servers and the recipient's credentials for this epoch (allowed nodes
    /// only, and only from a controller with `[relay]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<BundleRelay>,
}

impl BundlePeer {
    /// Where the peer may be reached, best first, whatever the format: the candidates, or
    /// the one endpoint of format 1.
    pub fn endpoints(&self) -> impl Iterator<Item = &str> {
        let legacy = self
            .candidates
            .is_empty()
            .then_some(self.endpoint.as_deref());
        self.candidates
            .iter()
            .map(String::as_str)
            .chain(legacy.flatten())
    }
}

/// A bundle with the controller's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedBundle {
    /// The bundle's JSON, base64.
    pub payload: String,
    /// Ed25519 signature over the payload bytes, base64.
    pub signature: String,
}

/// Why a bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// Bigger than [`MAX_BUNDLE_BYTES`].
    #[error("the bundle is too large ({0} bytes)")]
    TooLarge(usize),
    /// Not base64, or the signature has the wrong length.
    #[error("the bundle is not properly encoded")]
    Encoding,
    /// The controller's signature does not verify with any pinned key.
    #[error("the bundle's signature does not verify with any pinned controller key")]
    BadSignature,
    /// The signed payload is not a valid bundle.
    #[error("the signed bundle does not parse: {0}")]
    Parse(String),
    /// A version this node does not understand.
    #[error("unsupported bundle version {0}")]
    Version(u32),
    /// The recipient's WireGuard key is of small order: nothing can be sealed to it.
    #[error("the recipient's WireGuard key {0} is of small order; nothing is sealed to it")]
    LowOrderRecipient(PublicKey),
    /// A sealed key does not open (wrong recipient, or altered).
    #[error("the preshared key for peer {0} does not open")]
    Seal(String),
}

impl SignedBundle {
    /// Serializes and signs `bundle`.
    pub fn sign(bundle: &Bundle, key: &IdentityKey) -> Self {
        // About 230 bytes per peer; reserving them spares the copies of a growing buffer.
        let mut bytes = Vec::with_capacity(512 + 256 * bundle.peers.len());
        // Serializing plain data with string keys cannot fail.
        if serde_json::to_writer(&mut bytes, bundle).is_err() {
            bytes.clear();
        }
        let signature = key.sign(&labelled(&bytes));
        Self {
            payload: STANDARD.encode(&bytes),
            signature: STANDARD.encode(signature),
        }
    }

    /// Checks the signature (with its label) with the controller key, then parses.
    pub fn verify(&self, controller: &IdentityPublic) -> Result<Bundle, BundleError> {
        self.verify_with(&KeySet::one(*controller), false)
            .map(|(bundle, _)| bundle)
    }

    /// Checks the signature (with its label) with any of the pinned controller keys, then
    /// parses; returns the bundle and the key that signed it.
    pub fn verify_pinned(&self, pinned: &KeySet) -> Result<(Bundle, IdentityPublic), BundleError> {
        self.verify_with(pinned, false)
    }

    /// [`Self::verify_pinned`], also accepting a signature over the bare payload, as
    /// controllers signed before the label: only for the node's own cache (see the module
    /// documentation).
    pub fn verify_cached(&self, pinned: &KeySet) -> Result<(Bundle, IdentityPublic), BundleError> {
        self.verify_with(pinned, true)
    }

    fn verify_with(
        &self,
        pinned: &KeySet,
        unlabelled_too: bool,
    ) -> Result<(Bundle, IdentityPublic), BundleError> {
        if self.payload.len() > MAX_BUNDLE_BYTES * 4 / 3 + 4 {
            return Err(BundleError::TooLarge(self.payload.len()));
        }
        let bytes = STANDARD
            .decode(&self.payload)
            .map_err(|_| BundleError::Encoding)?;
        let signature = STANDARD
            .decode(&self.signature)
            .map_err(|_| BundleError::Encoding)?;
        let signer = pinned
            .verify(&labelled(&bytes), &signature)
            .or_else(|e| match unlabelled_too {
                true => pinned.verify(&bytes, &signature),
                false => Err(e),
            })
            .map_err(|_| BundleError::BadSignature)?;
        let signer = *signer;
        let bundle: Bundle =
            serde_json::from_slice(&bytes).map_err(|e| BundleError::Parse(e.to_string()))?;
        if !(MIN_BUNDLE_VERSION..=BUNDLE_VERSION).contains(&bundle.version) {
            return Err(BundleError::Version(bundle.version));
        }
        Ok((bundle, signer))
    }
}

/// `SIGNATURE_LABEL ‖ payload`: what the signature covers.
fn labelled(payload: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNATURE_LABEL.len() + payload.len());
    message.extend_from_slice(SIGNATURE_LABEL);
    message.extend_from_slice(payload);
    message
}

/// The ChaCha20-Poly1305 key of one bundle (HKDF-SHA256 of the X25519 shared secret).
fn seal_key(shared: &[u8; KEY_LEN], ephemeral: &PublicKey, recipient: &PublicKey) -> LessSafeKey {
    let mut info = [0u8; SEAL_INFO.len() + 2 * KEY_LEN];
    let (label, keys) = info.split_at_mut(SEAL_INFO.len());
    label.copy_from_slice(SEAL_INFO);
    let (e, r) = keys.split_at_mut(KEY_LEN);
    e.copy_from_slice(ephemeral.as_bytes());
    r.copy_from_slice(recipient.as_bytes());
    let hk = Hkdf::<Sha256>::new(None, shared);
    let mut okm = [0u8; KEY_LEN];
    // 32 bytes is always within HKDF-SHA256's output limit.
    let expanded = hk.expand(&info, &mut okm);
    debug_assert!(expanded.is_ok());
    // ring refuses only a key of the wrong length; `okm` has ChaCha20-Poly1305's 32 bytes.
    let key = UnboundKey::new(&CHACHA20_POLY1305, &okm).expect("a 32-byte ChaCha20-Poly1305 key");
    okm.zeroize();
    LessSafeKey::new(key)
}

fn nonce(index: u32) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[NONCE_LEN - 4..].copy_from_slice(&index.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn aad(epoch: EpochId, peer: &PublicKey) -> [u8; SEAL_AAD.len() + 8 + KEY_LEN] {
    let mut a = [0u8; SEAL_AAD.len() + 8 + KEY_LEN];
    let (label, rest) = a.split_at_mut(SEAL_AAD.len());
    label.copy_from_slice(SEAL_AAD);
    let (e, p) = rest.split_at_mut(8);
    e.copy_from_slice(&epoch.to_be_bytes());
    p.copy_from_slice(peer.as_bytes());
    a
}

/// Seals preshared keys for one recipient (one ephemeral key per bundle).
pub struct Sealer {
    ephemeral: PublicKey,
    cipher: LessSafeKey,
}

impl Sealer {
    /// A sealer for `recipient`, with a fresh ephemeral key. Refuses a recipient key of
    /// small order ([`PublicKey::is_low_order`]): the shared secret would be all-zero, so
    /// anyone could open what is sealed to it.
    pub fn new(recipient: &PublicKey) -> Result<Self, BundleError> {
        let secret = x25519_dalek::EphemeralSecret::random_from_rng(OsRng);
        let ephemeral = PublicKey::from(x25519_dalek::PublicKey::from(&secret));
        let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(*recipient));
        if !shared.was_contributory() {
            return Err(BundleError::LowOrderRecipient(*recipient));
        }
        let cipher = seal_key(shared.as_bytes(), &ephemeral, recipient);
        Ok(Self { ephemeral, cipher })
    }

    /// The ephemeral public key to put in the bundle.
    pub fn ephemeral(&self) -> PublicKey {
        self.ephemeral
    }

    /// Seals the key of the `index`-th peer, `peer`, for `epoch` (base64).
    pub fn seal(&self, index: u32, epoch: EpochId, peer: &PublicKey, psk: &PresharedKey) -> String {
        let mut sealed = [0u8; SEALED_LEN];
        let (body, tag) = sealed.split_at_mut(KEY_LEN);
        body.copy_from_slice(psk.as_bytes());
        let aad = aad(epoch, peer);
        match self
            .cipher
            .seal_in_place_separate_tag(nonce(index), Aad::from(&aad), body)
        {
            Ok(t) => tag.copy_from_slice(t.as_ref()),
            // Sealing fails only beyond 256 GiB; never leave the key in the clear.
            Err(_) => {
                sealed.zeroize();
                return String::new();
            }
        }
        STANDARD.encode(sealed)
    }

    /// Seals the relay password of `username` for `epoch` (base64).
    pub fn seal_relay(&self, epoch: EpochId, username: &str, password: &RelayPassword) -> String {
        // Room for the tag, so that appending it does not leave a copy in a freed buffer.
        let mut sealed = zeroize::Zeroizing::new(Vec::with_capacity(PASSWORD_LEN + 64));
        sealed.extend_from_slice(password.expose().as_bytes());
        let aad = relay_aad(epoch, username);
        match self
            .cipher
            .seal_in_place_append_tag(relay_nonce(), Aad::from(&aad), &mut *sealed)
        {
            Ok(()) => STANDARD.encode(&*sealed),
            // Sealing fails only beyond 256 GiB; never leave the password in the clear.
            Err(_) => String::new(),
        }
    }
}

/// Opens the preshared keys of a bundle with the recipient's WireGuard private key.
pub struct Opener {
    cipher: LessSafeKey,
}

impl Opener {
    /// An opener for the bundle sealed with `ephemeral` to `private`'s public key.
    pub fn new(private: &PrivateKey, ephemeral: &PublicKey) -> Self {
        let secret = private.to_static_secret();
        let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(*ephemeral));
        Self {
            cipher: seal_key(shared.as_bytes(), ephemeral, &private.public_key()),
        }
    }

    /// Opens the `index`-th peer's sealed key.
    pub fn open(
        &self,
        index: u32,
        epoch: EpochId,
        peer: &BundlePeer,
    ) -> Result<PresharedKey, BundleError> {
        let fail = || BundleError::Seal(peer.node_id.clone());
        if peer.sealed_psk.len() > 4 * SEALED_LEN {
            return Err(fail());
        }
        let mut sealed = STANDARD.decode(&peer.sealed_psk).map_err(|_| fail())?;
        if sealed.len() != SEALED_LEN {
            return Err(fail());
        }
        let aad = aad(epoch, &peer.public_key);
        let key = self
            .cipher
            .open_in_place(nonce(index), Aad::from(&aad), &mut sealed)
            .map_err(|_| fail())
            .and_then(|plain| <[u8; KEY_LEN]>::try_from(&*plain).map_err(|_| fail()));
        sealed.zeroize();
        key.map(PresharedKey::from_bytes)
    }

    /// Opens the relay password of `relay`, sealed for `epoch`.
    pub fn open_relay(
        &self,
        epoch: EpochId,
        relay: &BundleRelay,
    ) -> Result<RelayPassword, BundleError> {
        let fail = || BundleError::Seal(format!("relay credentials of {}", relay.username));
        if relay.sealed_password.len() > 4 * (PASSWORD_LEN + 16) {
            return Err(fail());
        }
        let mut sealed = zeroize::Zeroizing::new(
            STANDARD
                .decode(&relay.sealed_password)
                .map_err(|_| fail())?,
        );
        let aad = relay_aad(epoch, &relay.username);
        let plain = self
            .cipher
            .open_in_place(relay_nonce(), Aad::from(&aad), &mut sealed)
            .map_err(|_| fail())?;
        let text = std::str::from_utf8(plain).map_err(|_| fail())?;
        Ok(RelayPassword::new(text.to_owned()))
    }
}

fn relay_nonce() -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[0] = RELAY_NONCE_TAG;
    Nonce::assume_unique_for_key(n)
}

/// `"meshtun relay password" ‖ epoch ‖ username`: a sealed password opens only for the
/// username and epoch it was minted for.
fn relay_aad(epoch: EpochId, username: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(RELAY_AAD.len() + 8 + username.len());
    a.extend_from_slice(RELAY_AAD);
    a.extend_from_slice(&epoch.to_be_bytes());
    a.extend_from_slice(username.as_bytes());
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(recipient: &PrivateKey, peers: &[(PublicKey, PresharedKey)]) -> Bundle {
        let sealer = Sealer::new(&recipient.public_key()).unwrap();
        Bundle {
            forward: false,
            relay: None,
            version: BUNDLE_VERSION,
            node_id: "node-a".into(),
            recipient: recipient.public_key(),
            epoch: 9,
            activation_ms: 1_000,
            not_after_ms: 61_000,
            issued_ms: 500,
            decided_ms: 400,
            membership: Membership::Allowed,
            seal_key: Some(sealer.ephemeral()),
            peers: peers
                .iter()
                .enumerate()
                .map(|(i, (pk, psk))| BundlePeer {
                    forwards_to: Vec::new(),
                    enrollment: None,
                    candidates: Vec::new(),
                    node_id: format!("peer-{i}"),
                    public_key: *pk,
                    endpoint: Some("192.0.2.2:51820".into()),
                    allowed_ips: vec!["100.64.0.2/32".parse().unwrap()],
                    sealed_psk: sealer.seal(i as u32, 9, pk, psk),
                })
                .collect(),
        }
    }

    fn peers(n: usize) -> Vec<(PublicKey, PresharedKey)> {
        (0..n)
            .map(|_| {
                (
                    PrivateKey::generate().public_key(),
                    PresharedKey::generate(),
                )
            })
            .collect()
    }

    #[test]
    fn the_recipient_opens_every_key_and_nobody_else_does() {
        let recipient = PrivateKey::generate();
        let list = peers(3);
        let b = bundle(&recipient, &list);
        let ephemeral = b.seal_key.unwrap();
        let opener = Opener::new(&recipient, &ephemeral);
        for (i, peer) in b.peers.iter().enumerate() {
            assert_eq!(opener.open(i as u32, 9, peer).unwrap(), list[i].1);
        }
        let stranger = Opener::new(&PrivateKey::generate(), &ephemeral);
        assert!(stranger.open(0, 9, &b.peers[0]).is_err());
    }

    #[test]
    fn sealing_is_chacha20_poly1305_as_specified() {
        // Recomputes a sealed key from the module documentation with RustCrypto's
        // ChaCha20-Poly1305, independently of the implementation used here.
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        let recipient = PrivateKey::generate();
        let sealer = Sealer::new(&recipient.public_key()).unwrap();
        let ephemeral = sealer.ephemeral();
        let shared = recipient
            .to_static_secret()
            .diffie_hellman(&x25519_dalek::PublicKey::from(ephemeral));
        let mut info = b"meshtun seal v1".to_vec();
        info.extend_from_slice(ephemeral.as_bytes());
        info.extend_from_slice(recipient.public_key().as_bytes());
        let mut key = [0u8; 32];
        Hkdf::<Sha256>::new(None, shared.as_bytes())
            .expand(&info, &mut key)
            .unwrap();
        let peer = PrivateKey::generate().public_key();
        let psk = PresharedKey::generate();
        let mut aad = b"meshtun psk".to_vec();
        aad.extend_from_slice(&7u64.to_be_bytes());
        aad.extend_from_slice(peer.as_bytes());
        let mut nonce = [0u8; 12];
        nonce[8..].copy_from_slice(&5u32.to_be_bytes());
        let expected = chacha20poly1305::ChaCha20Poly1305::new(&key.into())
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: psk.as_bytes(),
                    aad: &aad,
                },
            )
            .unwrap();
        let sealed = sealer.seal(5, 7, &peer, &psk);
        assert_eq!(STANDARD.decode(&sealed).unwrap(), expected);
        let entry = BundlePeer {
            forwards_to: Vec::new(),
            enrollment: None,
            candidates: Vec::new(),
            node_id: "peer".into(),
            public_key: peer,
            endpoint: None,
            allowed_ips: vec![],
            sealed_psk: sealed,
        };
        assert_eq!(
            Opener::new(&recipient, &ephemeral).open(5, 7, &entry),
            Ok(psk)
        );
    }

    #[test]
    fn nothing_is_sealed_to_a_low_order_key() {
        for key in [[0u8; 32], {
            let mut one = [0u8; 32];
            one[0] = 1;
            one
        }] {
            let key = PublicKey::from_bytes(key);
            assert_eq!(
                Sealer::new(&key).err(),
                Some(BundleError::LowOrderRecipient(key))
            );
        }
    }

    #[test]
    fn malformed_sealed_keys_are_refused() {
        let recipient = PrivateKey::generate();
        let b = bundle(&recipient, &peers(1));
        let opener = Opener::new(&recipient, &b.seal_key.unwrap());
        let sealed = STANDARD.decode(&b.peers[0].sealed_psk).unwrap();
        for text in [
            String::new(),
            "!!".to_owned(),
            STANDARD.encode(&sealed[..SEALED_LEN - 1]),
            STANDARD.encode([sealed.as_slice(), &[0]].concat()),
            "A".repeat(1 << 20),
        ] {
            let mut peer = b.peers[0].clone();
            peer.sealed_psk = text;
            assert_eq!(
                opener.open(0, 9, &peer),
                Err(BundleError::Seal("peer-0".into()))
            );
        }
    }

    #[test]
    fn sealed_keys_are_bound_to_position_epoch_and_peer() {
        let recipient = PrivateKey::generate();
        let b = bundle(&recipient, &peers(2));
        let opener = Opener::new(&recipient, &b.seal_key.unwrap());
        assert!(
            opener.open(1, 9, &b.peers[0]).is_err(),
            "moved to another position"
        );
        assert!(
            opener.open(0, 10, &b.peers[0]).is_err(),
            "replayed into another epoch"
        );
        let mut swapped = b.peers[0].clone();
        swapped.public_key = b.peers[1].public_key;
        assert!(
            opener.open(0, 9, &swapped).is_err(),
            "given to another peer"
        );
    }

    #[test]
    fn signed_bundles_verify_only_with_the_controller_key_and_unaltered() {
        let controller = IdentityKey::generate();
        let b = bundle(&PrivateKey::generate(), &peers(1));
        let signed = SignedBundle::sign(&b, &controller);
        assert_eq!(signed.verify(&controller.public()).unwrap(), b);
        assert_eq!(
            signed.verify(&IdentityKey::generate().public()),
            Err(BundleError::BadSignature)
        );
        let mut altered = b.clone();
        altered.epoch += 1;
        let forged = SignedBundle {
            payload: STANDARD.encode(serde_json::to_vec(&altered).unwrap()),
            signature: signed.signature.clone(),
        };
        assert_eq!(
            forged.verify(&controller.public()),
            Err(BundleError::BadSignature)
        );
        let junk = SignedBundle {
            payload: "!!".into(),
            signature: signed.signature,
        };
        assert_eq!(
            junk.verify(&controller.public()),
            Err(BundleError::Encoding)
        );
    }

    #[test]
    fn the_signature_covers_the_label_and_unlabelled_ones_pass_only_from_the_cache() {
        let controller = IdentityKey::generate();
        let b = bundle(&PrivateKey::generate(), &peers(1));
        let signed = SignedBundle::sign(&b, &controller);
        let bytes = STANDARD.decode(&signed.payload).unwrap();
        let mut message = b"meshtun-bundle-v1\0".to_vec();
        message.extend_from_slice(&bytes);
        let signature = STANDARD.decode(&signed.signature).unwrap();
        assert!(controller.public().verify(&message, &signature).is_ok());
        assert!(controller.public().verify(&bytes, &signature).is_err());
        // A bundle signed the old way, over the bare payload.
        let old = SignedBundle {
            payload: signed.payload.clone(),
            signature: STANDARD.encode(controller.sign(&bytes)),
        };
        assert_eq!(
            old.verify(&controller.public()),
            Err(BundleError::BadSignature)
        );
        let pinned = KeySet::one(controller.public());
        assert_eq!(old.verify_cached(&pinned).unwrap().0, b);
        assert_eq!(signed.verify_cached(&pinned).unwrap().0, b);
        assert_eq!(
            old.verify_cached(&KeySet::one(IdentityKey::generate().public())),
            Err(BundleError::BadSignature)
        );
    }

    /// Key rotation: a node pinning the old and the new key accepts a bundle signed by
    /// either and learns which; a key it does not pin is refused, whatever the others.
    #[test]
    fn a_bundle_signed_by_any_pinned_key_is_accepted_and_names_its_signer() {
        let old = IdentityKey::generate();
        let new = IdentityKey::generate();
        let b = bundle(&PrivateKey::generate(), &peers(2));
        let pinned = KeySet::new(vec![old.public(), new.public()]).unwrap();
        for key in [&old, &new] {
            let (got, signer) = SignedBundle::sign(&b, key).verify_pinned(&pinned).unwrap();
            assert_eq!((got, signer), (b.clone(), key.public()));
        }
        let rogue = SignedBundle::sign(&b, &IdentityKey::generate());
        assert_eq!(rogue.verify_pinned(&pinned), Err(BundleError::BadSignature));
        assert_eq!(
            SignedBundle::sign(&b, &new).verify_pinned(&KeySet::one(old.public())),
            Err(BundleError::BadSignature),
            "a node that pins only the old key refuses the new key's bundles"
        );
    }

    #[test]
    fn the_wire_form_never_holds_a_key_in_the_clear() {
        let list = peers(1);
        let b = bundle(&PrivateKey::generate(), &list);
        let json =
            serde_json::to_string(&SignedBundle::sign(&b, &IdentityKey::generate())).unwrap();
        let inner = String::from_utf8(
            STANDARD
                .decode(SignedBundle::sign(&b, &IdentityKey::generate()).payload)
                .unwrap(),
        )
        .unwrap();
        for text in [json, inner] {
            assert!(!text.contains(&list[0].1.to_base64()));
            assert!(!text.contains(&list[0].1.to_hex()));
        }
    }

    #[test]
    fn the_relay_password_opens_only_for_its_recipient_epoch_and_username() {
        let recipient = PrivateKey::generate();
        let sealer = Sealer::new(&recipient.public_key()).unwrap();
        let secret = crate::relay::RelaySecret::new("north-wind-secret");
        let (username, password) = secret.mint("node-a", 61);
        let mut relay = BundleRelay {
            urls: vec!["turn:198.51.100.1:3478".into()],
            username: username.clone(),
            expires_s: 61,
            sealed_password: sealer.seal_relay(9, &username, &password),
        };
        assert!(!relay.sealed_password.contains(password.expose()));
        let opener = Opener::new(&recipient, &sealer.ephemeral());
        assert_eq!(opener.open_relay(9, &relay).unwrap(), password);
        assert!(opener.open_relay(10, &relay).is_err(), "another epoch");
        let stranger = Opener::new(&PrivateKey::generate(), &sealer.ephemeral());
        assert!(stranger.open_relay(9, &relay).is_err(), "another recipient");
        relay.username = "999999:node-a".into();
        assert!(
            opener.open_relay(9, &relay).is_err(),
            "a longer-lived username"
        );
        relay.username = username;
        relay.sealed_password = "A".repeat(400);
        assert!(opener.open_relay(9, &relay).is_err(), "oversized");
        // A peer key sealed in the same bundle never shares the password's nonce.
        let psk = PresharedKey::generate();
        let sealed_psk = sealer.seal(0, 9, &recipient.public_key(), &psk);
        assert_ne!(&sealed_psk[..8], &sealer.seal_relay(9, "x", &password)[..8]);
    }

    #[test]
    fn a_bundle_without_relay_parses_and_serializes_without_it() {
        let recipient = PrivateKey::generate();
        let b = bundle(&recipient, &peers(1));
        let json = serde_json::to_string(&b).unwrap();
        assert!(!json.contains("relay"));
        let back: Bundle = serde_json::from_str(&json).unwrap();
        assert_eq!(back.relay, None);
    }
}
