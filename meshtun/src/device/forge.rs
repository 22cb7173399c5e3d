//! Forged handshake messages, as anyone on the network can make them, for attack tests.
//!
//! None of these needs a secret: an initiation that claims a peer's key needs only the
//! responder's public key (the claimed key is encrypted to the responder, and mac1 is keyed
//! with its public key); a response aimed at a session index needs a guessed index; a cookie
//! reply needs the mac1 of a message its victim sent, which an on-path observer sees.

use boringtun::x25519;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::XChaCha20Poly1305;
use meshtun_proto::PublicKey;
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use super::noise::{
    hash, hmac, kdf2, mac, seal, COOKIE_LEN, INITIAL_CHAIN_HASH, INITIAL_CHAIN_KEY, INIT_LEN,
    LABEL_COOKIE, LABEL_MAC1, RESP_LEN,
};

/// Writes mac1 (keyed with `to`'s public key) into the last 32 bytes of `msg`, and zeroes
/// mac2 (no cookie).
fn finish(to: &PublicKey, msg: &mut [u8]) {
    let at = msg.len() - 32;
    let m = mac(&hash(LABEL_MAC1, to.as_bytes()), &msg[..at]);
    msg[at..at + 16].copy_from_slice(&m);
    msg[at + 16..].fill(0);
}

/// A handshake initiation to `responder` that claims to come from `claimed`, with a fresh
/// ephemeral key and sender index `sender`. Its static key decrypts and its mac1 is valid;
/// its timestamp is sealed under a random key, since only the holder of `claimed`'s
/// private key could seal it properly.
pub fn initiation(responder: &PublicKey, claimed: &PublicKey, sender: u32) -> [u8; INIT_LEN] {
    let mut msg = [0u8; INIT_LEN];
    msg[0] = 1;
    msg[4..8].copy_from_slice(&sender.to_le_bytes());
    let ephemeral = x25519::StaticSecret::random_from_rng(OsRng);
    let ephemeral_public = x25519::PublicKey::from(&ephemeral);
    msg[8..40].copy_from_slice(ephemeral_public.as_bytes());
    let h = hash(&INITIAL_CHAIN_HASH, responder.as_bytes());
    let h = hash(&h, ephemeral_public.as_bytes());
    let ck = hmac(
        &*hmac(&INITIAL_CHAIN_KEY, ephemeral_public.as_bytes(), &[]),
        &[1],
        &[],
    );
    let es = Zeroizing::new(
        ephemeral
            .diffie_hellman(&x25519::PublicKey::from(*responder.as_bytes()))
            .to_bytes(),
    );
    let (_, key) = kdf2(&ck, &*es);
    msg[40..72].copy_from_slice(claimed.as_bytes());
    seal(&key, &mut msg[40..88], &h);
    let h = hash(&h, &msg[40..88]);
    let mut guess = [0u8; 32];
    OsRng.fill_bytes(&mut guess);
    OsRng.fill_bytes(&mut msg[88..100]);
    seal(&guess, &mut msg[88..116], &h);
    finish(responder, &mut msg);
    msg
}

/// A handshake response to `victim` for its session index `receiver` (as guessed or
/// observed), from sender index `sender`, with random key material and a valid mac1.
pub fn response(victim: &PublicKey, receiver: u32, sender: u32) -> [u8; RESP_LEN] {
    let mut msg = [0u8; RESP_LEN];
    OsRng.fill_bytes(&mut msg[12..60]);
    msg[0] = 2;
    msg[4..8].copy_from_slice(&sender.to_le_bytes());
    msg[8..12].copy_from_slice(&receiver.to_le_bytes());
    finish(victim, &mut msg);
    msg
}

/// A cookie reply to the handshake message `observed` that its victim sent to `responder`:
/// addressed to the message's sender index and sealed with the mac1 it carried, so that it
/// authenticates exactly as the responder's own would. `None` if `observed` is not a
/// handshake initiation or response.
pub fn cookie_reply(responder: &PublicKey, observed: &[u8]) -> Option<[u8; COOKIE_LEN]> {
    if !matches!(
        (observed.first(), observed.len()),
        (Some(1), INIT_LEN) | (Some(2), RESP_LEN)
    ) {
        return None;
    }
    let mac1 = &observed[observed.len() - 32..observed.len() - 16];
    let mut msg = [0u8; COOKIE_LEN];
    msg[0] = 3;
    msg[4..8].copy_from_slice(&observed[4..8]);
    OsRng.fill_bytes(&mut msg[8..32]);
    OsRng.fill_bytes(&mut msg[32..48]);
    let key = hash(LABEL_COOKIE, responder.as_bytes());
    let cipher = XChaCha20Poly1305::new(&key.into());
    let (head, body) = msg.split_at_mut(32);
    let (cookie, tag_out) = body.split_at_mut(16);
    let nonce = chacha20poly1305::XNonce::from_slice(&head[8..32]);
    let tag = cipher.encrypt_in_place_detached(nonce, mac1, cookie).ok()?;
    tag_out.copy_from_slice(&tag);
    Some(msg)
}
