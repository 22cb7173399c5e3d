//! Arbitrary text through the membership decoders: a membership public key, a signature,
//! and a bundle peer's enrollment (JSON), then the check of a peer against a fixed key.
//!
//! Beyond "never panics": an accepted key or signature round-trips through its text form
//! unchanged, and no input verifies for a node under the fixed key (this target signs
//! nothing with it, and a fuzzer cannot forge an Ed25519 signature: a pass would be a
//! verification bug).

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshtun_proto::membership::{MembershipKey, MembershipPublic, MembershipSig, PeerEnrollment};
use meshtun_proto::PublicKey;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = MembershipPublic::from_base64(text) {
        assert_eq!(MembershipPublic::from_base64(&key.to_base64()), Ok(key));
    }
    if let Ok(sig) = MembershipSig::from_base64(text) {
        assert_eq!(MembershipSig::from_base64(&sig.to_base64()), Ok(sig));
    }
    if let Ok(enrollment) = serde_json::from_str::<PeerEnrollment>(text) {
        let key = MembershipKey::from_base64("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=")
            .expect("a 32-byte seed");
        let wg = PublicKey::from_bytes([9; 32]);
        let verdict = key.public().verify(
            "node-a",
            &wg,
            &enrollment.identity,
            &enrollment.signature,
        );
        assert!(verdict.is_err(), "a signature this target never made verified");
    }
});
