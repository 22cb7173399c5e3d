//! Signed statements as the controller reads them (`SignedStatement::decode`, then
//! `verify`): arbitrary bodies, and arbitrary statements validly signed. The first input
//! byte picks which.
//!
//! Beyond "never panics": a decoded statement is within its bounds, and re-encoding it
//! decodes to the same statement; only what the evaluator's key signed verifies.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshtun_proto::statement::{SignedStatement, Statement, MAX_DIMENSIONS};
use meshtun_proto::IdentityKey;

fuzz_target!(|data: &[u8]| {
    let key = IdentityKey::from_bytes([1; 32]);
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        // Any body: decoding holds up, and an unsigned statement never verifies.
        if let Ok(signed) = SignedStatement::decode(rest) {
            assert!(!signed.statement.scores.is_empty());
            assert!(signed.statement.scores.len() <= MAX_DIMENSIONS);
            assert!(signed
                .statement
                .scores
                .values()
                .all(|s| s.is_finite() && (0.0..=1.0).contains(s)));
            let again = SignedStatement::decode(&signed.encode()).expect("re-encoded decodes");
            assert_eq!(again, signed);
            let _ = signed.verify(&key.public());
        }
    } else if let Ok(statement) = serde_json::from_slice::<Statement>(rest) {
        // Any statement that passes validation, validly signed, verifies (and a flipped
        // signature does not).
        if let Ok(signed) = statement.sign(&key) {
            signed
                .verify(&key.public())
                .expect("a signed statement verifies");
            let mut flipped = signed.clone();
            flipped.signature[0] ^= 1;
            assert!(flipped.verify(&key.public()).is_err());
        }
    }
});
