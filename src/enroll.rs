//! Enrollment with an invite ticket (`POST /v1/enroll`), made so that an on-path attacker,
//! even over plain http, can neither use the invite nor change what the node is told.
//!
//! **The ticket** ([`Ticket`], printed by `meshtun-controller invite`) holds the controller's
//! URL, its Ed25519 key (pinned), its enrollment X25519 key, the node id, the one-time token
//! and the expiry. The controller stores only the token's SHA-256, the invite's *verifier*
//! `V`.
//!
//! **The request** carries a *claim* (JSON, sent base64 so that every proof covers the exact
//! bytes): node id, token id, the controller key, the node's WireGuard and identity public
//! keys, the addresses and endpoint asked for. Three proofs cover the claim bytes `C`:
//! - `token_mac = HMAC-SHA256(V, "meshtun-enroll-token-v2\0" ‖ C)`: proof of the token,
//!   which itself never travels. The token id, `hex(SHA-256("meshtun-invite-id-v2\0" ‖ V))`
//!   truncated to 16 bytes, lets the controller find the invite. Because the claim names the
//!   keys and the controller key, a MAC seen on the wire is useless for other keys or
//!   another controller.
//! - `identity_signature = Ed25519(identity, "meshtun-enroll-identity-v2\0" ‖ C)`: proof of
//!   possession of the identity key.
//! - `wg_proof = HMAC-SHA256(K, "meshtun-enroll-wg-v2\0" ‖ C)` with
//!   `K = HKDF-SHA256(X25519(wg_private, E), info = "meshtun-enroll-wg-v2" ‖ W ‖ E)`, where
//!   `W` is the node's WireGuard public key and `E` the controller's enrollment X25519 key
//!   from the ticket: proof of possession of the WireGuard key. Only the holder of the
//!   WireGuard private key or of the controller's enrollment key can compute the shared
//!   secret; the controller checks it with `X25519(e, W)`. This is WireGuard's own
//!   static-static DH, so it proves exactly what the Noise handshake will rely on, needs no
//!   extra round trip, and produces nothing a third party could verify or reuse. A key of
//!   small order is refused first, since its shared secret is all-zero for everyone.
//!
//! The enrollment key `e` is derived from the controller's Ed25519 seed with HKDF
//! ([`enrollment_key`]) under its own label, so the controller has no second key file, and
//! no key is used for both signing and Diffie-Hellman.
//!
//! **The reply** ([`SignedEnrollReply`]) is signed with the controller key over
//! `"meshtun-enroll-reply-v2\0" ‖ payload`. It names the SHA-256 of the claim it answers and
//! the keys it enrolled, so the node accepts only the answer to its own request, unaltered.
//!
//! A replayed request gains nothing: it can only enroll the keys it names, whose private
//! halves the attacker lacks, and a replay of an already redeemed claim is answered with
//! the record the invite made, signed.

use std::fmt;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use hkdf::Hkdf;
use ipnet::IpNet;
use ring::hmac;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::identity::{IdentityKey, IdentityPublic, SIGNATURE_LEN};
use crate::key::{PrivateKey, PublicKey, KEY_LEN};
use crate::membership::{MembershipPublic, MembershipSig};
use crate::wire::{check_endpoint, valid_node_id, MAX_NODE_ADDRESSES};

/// Version of the enrollment request format.
pub const ENROLL_VERSION: u32 = 2;

/// Largest enrollment request body accepted.
pub const MAX_ENROLL_BYTES: usize = 8 * 1024;

/// Largest claim accepted (decoded).
pub const MAX_CLAIM_BYTES: usize = 4 * 1024;

/// Largest signed enrollment reply a node reads.
pub const MAX_REPLY_BYTES: usize = 16 * 1024;

/// Prefix of an encoded ticket.
pub const TICKET_PREFIX: &str = "meshtun-ticket-v2:";

const OLD_TICKET_PREFIX: &str = "meshtun-ticket-v1:";
const TOKEN_LABEL: &[u8] = b"meshtun-enroll-token-v2\0";
const IDENTITY_LABEL: &[u8] = b"meshtun-enroll-identity-v2\0";
const WG_LABEL: &[u8] = b"meshtun-enroll-wg-v2\0";
const WG_KDF_INFO: &[u8] = b"meshtun-enroll-wg-v2";
const REPLY_LABEL: &[u8] = b"meshtun-enroll-reply-v2\0";
const TOKEN_ID_LABEL: &[u8] = b"meshtun-invite-id-v2\0";
const ENROLL_KEY_INFO: &[u8] = b"meshtun-controller-enroll-x25519-v1";

/// Length of a token id in hex digits.
pub const TOKEN_ID_LEN: usize = 32;

/// Why an enrollment request, ticket or reply was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrollError {
    /// Larger than allowed.
    #[error("the enrollment {what} is {len} bytes; at most {max} are accepted")]
    TooLarge {
        /// Request, claim or reply.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not of the expected shape.
    #[error("the enrollment {what} does not parse: {reason}")]
    Parse {
        /// Request, claim or reply.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A request of another version (version 1 sent the token itself).
    #[error(
        "enrollment request version {0} is not supported (version {ENROLL_VERSION} proves the \
         token without sending it); upgrade meshtun on the node"
    )]
    Version(u32),
    /// A field of the claim is not acceptable.
    #[error("the enrollment claim is refused: {0}")]
    Claim(String),
    /// The WireGuard key is of small order.
    #[error("the WireGuard key {0} is of small order (such as all-zero); generate a real key")]
    LowOrderKey(PublicKey),
    /// The claim names another controller key.
    #[error("the enrollment is meant for the controller with key {0}, not this one")]
    OtherController(IdentityPublic),
    /// The identity key's signature does not verify.
    #[error("the identity key's signature over the enrollment does not verify")]
    IdentityProof,
    /// The WireGuard key's proof of possession does not verify.
    #[error("the proof of possession of WireGuard key {0} does not verify")]
    WireGuardProof(PublicKey),
    /// The proof of the token does not verify.
    #[error("the proof of the invite token does not verify")]
    TokenProof,
    /// The reply is not signed by the pinned controller key, or was altered.
    #[error(
        "the enrollment answer is not signed by the controller key the ticket pins, or was \
         altered on the way"
    )]
    ReplySignature,
    /// The reply answers another request or enrolled other keys.
    #[error("the enrollment answer does not match this request: {0}")]
    ReplyMismatch(String),
}

/// An invite: everything a node needs to join, printed as one string. `Debug` leaves the
/// token out, the token is zeroized on drop, and `==` compares it in constant time.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ticket {
    /// The controller's base URL.
    pub url: String,
    /// The controller's Ed25519 key, to pin.
    pub controller_key: IdentityPublic,
    /// The controller's enrollment X25519 key ([`enrollment_key`]).
    pub enroll_key: PublicKey,
    /// The node id the ticket was made for.
    pub node_id: String,
    /// The one-time token: proved, never sent.
    pub token: String,
    /// When the ticket expires, Unix milliseconds.
    pub expires_ms: u64,
    /// The operator's membership key, when the controller has one (`[membership]
    /// public_key`): `meshtun join` then needs its signature over the node's keys
    /// (`--membership-sig`), checks it, and writes the key into the node's configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership_key: Option<MembershipPublic>,
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("url", &self.url)
            .field("controller_key", &self.controller_key)
            .field("enroll_key", &self.enroll_key)
            .field("node_id", &self.node_id)
            .field("token", &"<redacted>")
            .field("expires_ms", &self.expires_ms)
            .field("membership_key", &self.membership_key)
            .finish()
    }
}

impl PartialEq for Ticket {
    fn eq(&self, other: &Self) -> bool {
        let token: bool = self.token.as_bytes().ct_eq(other.token.as_bytes()).into();
        token
            && self.url == other.url
            && self.controller_key == other.controller_key
            && self.enroll_key == other.enroll_key
            && self.node_id == other.node_id
            && self.expires_ms == other.expires_ms
            && self.membership_key == other.membership_key
    }
}

impl Eq for Ticket {}

impl Drop for Ticket {
    /// The token is a credential until it is used: wiped when the ticket goes away.
    fn drop(&mut self) {
        self.token.zeroize();
    }
}

/// Why a ticket string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// Not a ticket at all.
    #[error(
        "not a meshtun ticket (expected {TICKET_PREFIX}… as printed by `meshtun-controller invite`)"
    )]
    Malformed,
    /// A ticket from a controller that takes the token in the clear.
    #[error(
        "this is a version 1 ticket, from a controller whose enrollment sends the token in the \
         clear; upgrade meshtun-controller and issue a new ticket"
    )]
    Old,
}

impl Ticket {
    /// The printable form.
    pub fn encode(&self) -> String {
        let json = Zeroizing::new(serde_json::to_vec(self).unwrap_or_default());
        format!("{TICKET_PREFIX}{}", URL_SAFE_NO_PAD.encode(&*json))
    }

    /// Reads the printable form.
    pub fn decode(text: &str) -> Result<Self, TicketError> {
        let text = text.trim();
        if text.starts_with(OLD_TICKET_PREFIX) {
            return Err(TicketError::Old);
        }
        let body = text
            .strip_prefix(TICKET_PREFIX)
            .ok_or(TicketError::Malformed)?;
        if body.len() > 4096 {
            return Err(TicketError::Malformed);
        }
        let json = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(body)
                .map_err(|_| TicketError::Malformed)?,
        );
        serde_json::from_slice(&json).map_err(|_| TicketError::Malformed)
    }
}

/// What a node asks to be enrolled as. Every proof covers its exact bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollClaim {
    /// The node id of the ticket.
    pub node_id: String,
    /// Which invite ([`token_id`]).
    pub token_id: String,
    /// The controller the enrollment is for (the ticket's pinned key).
    pub controller_key: IdentityPublic,
    /// The node's WireGuard public key.
    pub wg_public_key: PublicKey,
    /// The node's Ed25519 identity key.
    pub identity_key: IdentityPublic,
    /// The overlay addresses asked for; empty to get the controller's choice.
    pub addresses: Vec<IpNet>,
    /// Where other nodes reach it (`host:port`), if known.
    pub endpoint: Option<String>,
    /// The operator's membership signature over the node id and both keys
    /// ([`crate::membership`]), for a controller with a membership key. Left out when
    /// absent, so that a claim without one is the same bytes as before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership_sig: Option<MembershipSig>,
}

impl EnrollClaim {
    /// Checks the fields: node id, token id, address count, endpoint, a key of full order.
    fn check(&self) -> Result<(), EnrollError> {
        let refuse = |reason: String| Err(EnrollError::Claim(reason));
        if !valid_node_id(&self.node_id) {
            return refuse(format!(
                "node id `{}` is not valid",
                self.node_id.escape_debug()
            ));
        }
        if self.token_id.len() != TOKEN_ID_LEN
            || !self.token_id.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return refuse(format!("the token id is not {TOKEN_ID_LEN} hex digits"));
        }
        if self.addresses.len() > MAX_NODE_ADDRESSES {
            return refuse(format!(
                "{} addresses; a node may have at most {MAX_NODE_ADDRESSES}",
                self.addresses.len()
            ));
        }
        if let Some(endpoint) = &self.endpoint {
            check_endpoint(endpoint).map_err(EnrollError::Claim)?;
        }
        if self.wg_public_key.is_low_order() {
            return Err(EnrollError::LowOrderKey(self.wg_public_key));
        }
        Ok(())
    }
}

/// `POST /v1/enroll`: a claim and its three proofs, base64. `Debug` shows the claim's size
/// only; `==` compares the token's proof in constant time.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// [`ENROLL_VERSION`].
    pub version: u32,
    /// The claim's JSON bytes.
    pub claim: String,
    /// Proof of the token.
    pub token_mac: String,
    /// Proof of possession of the identity key.
    pub identity_signature: String,
    /// Proof of possession of the WireGuard key.
    pub wg_proof: String,
}

impl PartialEq for EnrollRequest {
    fn eq(&self, other: &Self) -> bool {
        let mac: bool = self
            .token_mac
            .as_bytes()
            .ct_eq(other.token_mac.as_bytes())
            .into();
        mac && self.version == other.version
            && self.claim == other.claim
            && self.identity_signature == other.identity_signature
            && self.wg_proof == other.wg_proof
    }
}

impl Eq for EnrollRequest {}

impl fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollRequest")
            .field("version", &self.version)
            .field("claim_len", &self.claim.len())
            .finish_non_exhaustive()
    }
}

/// A parsed, well-formed enrollment request whose proofs are still to be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    /// The claim.
    pub claim: EnrollClaim,
    /// Its exact bytes, as proved.
    claim_bytes: Vec<u8>,
    token_mac: [u8; 32],
    identity_signature: [u8; SIGNATURE_LEN],
    wg_proof: [u8; 32],
}

/// The invite's verifier: the SHA-256 of its token, which is all the controller stores.
pub fn invite_verifier(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The public id of the invite whose verifier is `verifier`.
pub fn token_id(verifier: &[u8; 32]) -> String {
    let digest = Sha256::new()
        .chain_update(TOKEN_ID_LABEL)
        .chain_update(verifier)
        .finalize();
    hex::encode(&digest[..TOKEN_ID_LEN / 2])
}

/// The controller's enrollment X25519 key, derived from its Ed25519 key.
pub fn enrollment_key(controller: &IdentityKey) -> PrivateKey {
    let seed = controller.seed();
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    // 32 bytes is always within HKDF-SHA256's output limit.
    let expanded = Hkdf::<Sha256>::new(None, &*seed).expand(ENROLL_KEY_INFO, &mut *out);
    debug_assert!(expanded.is_ok());
    PrivateKey::from_bytes(*out)
}

fn mac(key: &[u8], label: &[u8], claim: &[u8]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(label);
    ctx.update(claim);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

fn mac_verify(key: &[u8], label: &[u8], claim: &[u8], tag: &[u8; 32]) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut message = Vec::with_capacity(label.len() + claim.len());
    message.extend_from_slice(label);
    message.extend_from_slice(claim);
    hmac::verify(&key, &message, tag).is_ok()
}

fn signed_message(label: &[u8], bytes: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(label.len() + bytes.len());
    message.extend_from_slice(label);
    message.extend_from_slice(bytes);
    message
}

/// The WireGuard proof key from a shared secret, or `None` if it is all-zero.
fn wg_key(
    shared: &x25519_dalek::SharedSecret,
    wg: &PublicKey,
    enroll: &PublicKey,
) -> Option<Zeroizing<[u8; 32]>> {
    if !shared.was_contributory() {
        return None;
    }
    let mut info = [0u8; WG_KDF_INFO.len() + 2 * KEY_LEN];
    let (label, keys) = info.split_at_mut(WG_KDF_INFO.len());
    label.copy_from_slice(WG_KDF_INFO);
    let (w, e) = keys.split_at_mut(KEY_LEN);
    w.copy_from_slice(wg.as_bytes());
    e.copy_from_slice(enroll.as_bytes());
    let mut key = Zeroizing::new([0u8; 32]);
    let expanded = Hkdf::<Sha256>::new(None, shared.as_bytes()).expand(&info, &mut *key);
    debug_assert!(expanded.is_ok());
    Some(key)
}

fn decode_fixed<const N: usize>(what: &'static str, text: &str) -> Result<[u8; N], EnrollError> {
    let parse = |reason: &str| EnrollError::Parse {
        what: "request",
        reason: format!("{what}: {reason}"),
    };
    if text.len() > 4 * N {
        return Err(parse("too long"));
    }
    let bytes = STANDARD.decode(text).map_err(|_| parse("not base64"))?;
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| parse(&format!("not {N} bytes")))
}

impl EnrollRequest {
    /// The request for `ticket` from a node with WireGuard key `wg` and identity key
    /// `identity`, asking for `addresses` (empty: the controller's choice) and `endpoint`.
    /// Returns it with its claim (for checking the reply).
    pub fn build(
        ticket: &Ticket,
        wg: &PrivateKey,
        identity: &IdentityKey,
        addresses: Vec<IpNet>,
        endpoint: Option<String>,
    ) -> Result<(Self, Enrollment), EnrollError> {
        Self::build_signed(ticket, (wg, identity), addresses, endpoint, None)
    }

    /// [`Self::build`] with the operator's membership signature over the node's id and keys
    /// in the claim.
    pub fn build_signed(
        ticket: &Ticket,
        (wg, identity): (&PrivateKey, &IdentityKey),
        addresses: Vec<IpNet>,
        endpoint: Option<String>,
        membership_sig: Option<MembershipSig>,
    ) -> Result<(Self, Enrollment), EnrollError> {
        let verifier = Zeroizing::new(invite_verifier(&ticket.token));
        let claim = EnrollClaim {
            node_id: ticket.node_id.clone(),
            token_id: token_id(&verifier),
            controller_key: ticket.controller_key,
            wg_public_key: wg.public_key(),
            identity_key: identity.public(),
            addresses,
            endpoint,
            membership_sig,
        };
        // The claim is not checked here: the controller does ([`Self::decode`]), and the
        // tests of its refusals build hostile claims with this.
        let claim_bytes = serde_json::to_vec(&claim).map_err(|e| EnrollError::Parse {
            what: "claim",
            reason: e.to_string(),
        })?;
        let shared = wg
            .to_static_secret()
            .diffie_hellman(&x25519_dalek::PublicKey::from(ticket.enroll_key));
        let key = wg_key(&shared, &claim.wg_public_key, &ticket.enroll_key).ok_or_else(|| {
            EnrollError::Claim("the ticket's enrollment key is of small order".into())
        })?;
        let enrollment = Enrollment {
            token_mac: mac(&*verifier, TOKEN_LABEL, &claim_bytes),
            identity_signature: identity.sign(&signed_message(IDENTITY_LABEL, &claim_bytes)),
            wg_proof: mac(&*key, WG_LABEL, &claim_bytes),
            claim,
            claim_bytes,
        };
        let request = Self {
            version: ENROLL_VERSION,
            claim: STANDARD.encode(&enrollment.claim_bytes),
            token_mac: STANDARD.encode(enrollment.token_mac),
            identity_signature: STANDARD.encode(enrollment.identity_signature),
            wg_proof: STANDARD.encode(enrollment.wg_proof),
        };
        Ok((request, enrollment))
    }

    /// Parses a request body and checks its shape and fields (not yet its proofs): at most
    /// [`MAX_ENROLL_BYTES`], version [`ENROLL_VERSION`], a claim of at most
    /// [`MAX_CLAIM_BYTES`] with valid fields and a WireGuard key of full order.
    pub fn decode(body: &[u8]) -> Result<Enrollment, EnrollError> {
        if body.len() > MAX_ENROLL_BYTES {
            return Err(EnrollError::TooLarge {
                what: "request",
                len: body.len(),
                max: MAX_ENROLL_BYTES,
            });
        }
        let request: Self = serde_json::from_slice(body).map_err(|e| EnrollError::Parse {
            what: "request",
            reason: e.to_string(),
        })?;
        if request.version != ENROLL_VERSION {
            return Err(EnrollError::Version(request.version));
        }
        if request.claim.len() > MAX_CLAIM_BYTES * 4 / 3 + 4 {
            return Err(EnrollError::TooLarge {
                what: "claim",
                len: request.claim.len() * 3 / 4,
                max: MAX_CLAIM_BYTES,
            });
        }
        let claim_bytes = STANDARD
            .decode(&request.claim)
            .map_err(|_| EnrollError::Parse {
                what: "request",
                reason: "claim: not base64".into(),
            })?;
        let claim: EnrollClaim =
            serde_json::from_slice(&claim_bytes).map_err(|e| EnrollError::Parse {
                what: "claim",
                reason: e.to_string(),
            })?;
        claim.check()?;
        Ok(Enrollment {
            token_mac: decode_fixed("token_mac", &request.token_mac)?,
            identity_signature: decode_fixed("identity_signature", &request.identity_signature)?,
            wg_proof: decode_fixed("wg_proof", &request.wg_proof)?,
            claim,
            claim_bytes,
        })
    }
}

impl Enrollment {
    /// Checks that the claim is for the controller with key `controller` and proves
    /// possession of both keys; `enroll_key` is that controller's [`enrollment_key`].
    pub fn verify_possession(
        &self,
        controller: &IdentityPublic,
        enroll_key: &PrivateKey,
    ) -> Result<(), EnrollError> {
        let claim = &self.claim;
        if claim.controller_key != *controller {
            return Err(EnrollError::OtherController(claim.controller_key));
        }
        claim
            .identity_key
            .verify(
                &signed_message(IDENTITY_LABEL, &self.claim_bytes),
                &self.identity_signature,
            )
            .map_err(|_| EnrollError::IdentityProof)?;
        let shared = enroll_key
            .to_static_secret()
            .diffie_hellman(&x25519_dalek::PublicKey::from(claim.wg_public_key));
        let key = wg_key(&shared, &claim.wg_public_key, &enroll_key.public_key())
            .ok_or(EnrollError::LowOrderKey(claim.wg_public_key))?;
        if !mac_verify(&*key, WG_LABEL, &self.claim_bytes, &self.wg_proof) {
            return Err(EnrollError::WireGuardProof(claim.wg_public_key));
        }
        Ok(())
    }

    /// Checks the proof of the token against the invite's `verifier` (constant time).
    pub fn verify_token(&self, verifier: &[u8; 32]) -> Result<(), EnrollError> {
        if mac_verify(verifier, TOKEN_LABEL, &self.claim_bytes, &self.token_mac) {
            Ok(())
        } else {
            Err(EnrollError::TokenProof)
        }
    }

    /// The hex SHA-256 of the claim bytes, which the reply names.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(&self.claim_bytes))
    }
}

/// What the controller recorded for an enrolled node: the payload of the signed reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollResponse {
    /// The hex SHA-256 of the claim this answers ([`Enrollment::digest`]).
    pub request_digest: String,
    /// The node id the invite was made for.
    pub node_id: String,
    /// The WireGuard key enrolled.
    pub wg_public_key: PublicKey,
    /// The identity key enrolled.
    pub identity_key: IdentityPublic,
    /// The node's overlay addresses: the invite's if the admin assigned some, the request's
    /// otherwise, else the next free address of each overlay prefix.
    pub addresses: Vec<IpNet>,
    /// Where other nodes reach it: the invite's if the admin set one, the request's
    /// otherwise.
    pub endpoint: Option<String>,
    /// The overlay's prefixes (the controller's `[network]`): the node accepts routes from
    /// the controller only inside them.
    pub network: Vec<IpNet>,
}

/// The enrollment reply, signed with the controller key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedEnrollReply {
    /// The [`EnrollResponse`] JSON, base64.
    pub payload: String,
    /// Ed25519 over `"meshtun-enroll-reply-v2\0" ‖ payload bytes`, base64.
    pub signature: String,
}

impl SignedEnrollReply {
    /// Serializes and signs `reply`.
    pub fn sign(reply: &EnrollResponse, key: &IdentityKey) -> Self {
        // Serializing plain data with string keys cannot fail.
        let bytes = serde_json::to_vec(reply).unwrap_or_default();
        Self {
            signature: STANDARD.encode(key.sign(&signed_message(REPLY_LABEL, &bytes))),
            payload: STANDARD.encode(bytes),
        }
    }

    /// Checks the signature with the pinned `controller` key, then that the reply answers
    /// `enrollment`: the same claim, node id and keys.
    pub fn verify(
        &self,
        controller: &IdentityPublic,
        enrollment: &Enrollment,
    ) -> Result<EnrollResponse, EnrollError> {
        if self.payload.len() > MAX_REPLY_BYTES {
            return Err(EnrollError::TooLarge {
                what: "reply",
                len: self.payload.len(),
                max: MAX_REPLY_BYTES,
            });
        }
        let bytes = STANDARD
            .decode(&self.payload)
            .map_err(|_| EnrollError::ReplySignature)?;
        let signature = STANDARD
            .decode(&self.signature)
            .map_err(|_| EnrollError::ReplySignature)?;
        controller
            .verify(&signed_message(REPLY_LABEL, &bytes), &signature)
            .map_err(|_| EnrollError::ReplySignature)?;
        let reply: EnrollResponse =
            serde_json::from_slice(&bytes).map_err(|e| EnrollError::Parse {
                what: "reply",
                reason: e.to_string(),
            })?;
        let claim = &enrollment.claim;
        let mismatch = |what: &str| Err(EnrollError::ReplyMismatch(what.to_owned()));
        if reply.request_digest != enrollment.digest() {
            return mismatch("it answers another request");
        }
        if reply.node_id != claim.node_id {
            return mismatch(&format!(
                "it enrolled node `{}`, not `{}`",
                reply.node_id.escape_debug(),
                claim.node_id
            ));
        }
        if reply.wg_public_key != claim.wg_public_key || reply.identity_key != claim.identity_key {
            return mismatch("it enrolled other keys");
        }
        Ok(reply)
    }
}

#[cfg(test)]
mod tests;
