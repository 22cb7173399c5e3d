//! Arbitrary datagrams through the STUN codec: `is_stun`, the Binding request parser (the
//! controller's STUN server) and the Binding response parser (the daemon's client).
//!
//! Beyond "never panics": anything either parser accepts passes `is_stun`, is at most
//! `MAX_MESSAGE` bytes, and a WireGuard message is never taken for STUN; an accepted
//! request answered with its own source address parses back to that address.

#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use meshtun_proto::stun::{
    binding_success, is_stun, parse_binding_request, parse_binding_response, MAX_MESSAGE,
};

/// Whether the device's classifier takes `data` for a WireGuard message: type 1 to 4, three
/// zero bytes, and the type's length (initiation 148, response 92, cookie 64, data ≥ 32).
fn wireguard(data: &[u8]) -> bool {
    if data.len() < 4 || data[1..4] != [0, 0, 0] {
        return false;
    }
    matches!(
        (data[0], data.len()),
        (1, 148) | (2, 92) | (3, 64) | (4, 32..)
    )
}

fuzz_target!(|data: &[u8]| {
    let looks = is_stun(data);
    if wireguard(data) {
        assert!(!looks, "a WireGuard message was taken for STUN");
    }
    if let Ok(id) = parse_binding_request(data) {
        assert!(looks && data.len() <= MAX_MESSAGE);
        let source: SocketAddr = "198.51.100.4:40000".parse().unwrap();
        let answer = binding_success(id, source);
        let parsed = parse_binding_response(&answer).expect("our own response parses");
        assert_eq!((parsed.transaction, parsed.mapped), (id, source));
    }
    if parse_binding_response(data).is_ok() {
        assert!(looks && data.len() <= MAX_MESSAGE);
    }
});
