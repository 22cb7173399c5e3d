//! Arbitrary datagrams through the STUN codec: `is_stun`, the Binding request parser (the
//! controller's STUN server) and the Binding response parser (the daemon's client).
//!
//! Beyond "never panics": anything either parser accepts passes `is_stun`, is at most
//! `MAX_MESSAGE` bytes, and a WireGuard-framed datagram is never taken for STUN; an accepted
//! request answered with its own source address parses back to that address.

#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use meshtun_proto::stun::{
    binding_success, is_stun, parse_binding_request, parse_binding_response, MAX_MESSAGE,
};

fuzz_target!(|data: &[u8]| {
    let looks = is_stun(data);
    if data.len() >= 4 && (1..=4).contains(&data[0]) && data[1..4] == [0, 0, 0] {
        assert!(!looks, "a WireGuard-framed datagram was taken for STUN");
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
