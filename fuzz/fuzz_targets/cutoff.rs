//! Cut-off notices as a node reads them (`verify_cutoff`): arbitrary bodies, arbitrary
//! payloads under a valid controller signature with the notice label, and the same payloads
//! signed under the bundle label or bare. The first input byte picks which.
//!
//! Beyond "never panics": only a payload the controller signed under the notice label
//! opens, and what opens names at most `MAX_DENIED` nodes in the known format.

#![no_main]

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use meshtun::gate::cutoff::verify_cutoff;
use meshtun_proto::bundle::SIGNATURE_LABEL;
use meshtun_proto::cutoff::{SignedCutOff, CUTOFF_FORMAT, CUTOFF_LABEL, MAX_DENIED};
use meshtun_proto::{IdentityKey, KeySet, PrivateKey};

fn body(controller: &IdentityKey, label: &[u8], payload: &[u8]) -> Vec<u8> {
    let signed = SignedCutOff {
        notice: STANDARD.encode(payload),
        signature: STANDARD.encode(controller.sign(&[label, payload].concat())),
    };
    serde_json::to_vec(&signed).unwrap_or_default()
}

fuzz_target!(|data: &[u8]| {
    let controller = IdentityKey::from_bytes([1; 32]);
    let pinned = KeySet::one(controller.public());
    let me = PrivateKey::from_bytes([2; 32]).public_key();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        // Any body: nothing unsigned opens.
        0 => {
            if let Ok(notice) = verify_cutoff(rest, &pinned, "node-a", &me) {
                panic!("an unsigned notice opened: {notice:?}");
            }
        }
        // Any payload, validly signed: parsing and the checks hold up.
        1 => {
            let signed = body(&controller, CUTOFF_LABEL, rest);
            if let Ok(notice) = verify_cutoff(&signed, &pinned, "node-a", &me) {
                assert!(notice.denied.len() <= MAX_DENIED);
                let parsed: meshtun_proto::cutoff::CutOff =
                    serde_json::from_slice(rest).expect("an opened notice parses");
                assert_eq!(parsed.format, CUTOFF_FORMAT);
            }
        }
        // The same payload signed as a bundle, or bare: never a notice.
        _ => {
            for label in [SIGNATURE_LABEL, b"".as_slice()] {
                let signed = body(&controller, label, rest);
                assert!(
                    verify_cutoff(&signed, &pinned, "node-a", &me).is_err(),
                    "a payload signed under another label opened as a notice"
                );
            }
        }
    }
});
