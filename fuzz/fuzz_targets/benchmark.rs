//! Arbitrary bytes through the controller's wire decoders: a submitted benchmark body, as
//! the API reads it at a fixed time, and an invite ticket.
//!
//! Beyond "never panics": an accepted benchmark has every score in [0, 1], a printable suite
//! version and no measurement time beyond the allowed clock skew, and it survives being
//! written and read again unchanged; an accepted ticket does too.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshtun_proto::wire::{Benchmark, Ticket, MAX_FUTURE_SKEW_MS, MAX_SUITE_VERSION};

/// The controller's clock during the run (Unix milliseconds).
const NOW_MS: u64 = 1_800_000_000_000;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = Benchmark::decode(data, NOW_MS) {
        for (name, value) in b.scores.named() {
            assert!((0.0..=1.0).contains(&value), "score {name} is {value}");
        }
        assert!(!b.suite_version.is_empty() && b.suite_version.len() <= MAX_SUITE_VERSION);
        assert!(b.suite_version.bytes().all(|c| c.is_ascii_graphic()));
        assert!(b.measured_at_ms <= NOW_MS + MAX_FUTURE_SKEW_MS);
        let again = serde_json::to_vec(&b).expect("a decoded benchmark serializes");
        assert_eq!(Benchmark::decode(&again, NOW_MS).as_ref(), Ok(&b));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(ticket) = Ticket::decode(text) {
            assert_eq!(Ticket::decode(&ticket.encode()), Ok(ticket));
        }
    }
});
