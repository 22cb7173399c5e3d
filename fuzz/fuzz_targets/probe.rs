//! Arbitrary datagrams through the reachability prober's reply reader: the IPv4 header
//! skipper and the echo-reply matcher, for both families.
//!
//! Beyond "never panics", a datagram accepted as a reply must carry the round's token, and
//! answer a target it was received from.

#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use meshtun::probe::packet::{icmp_v4_message, EchoRound, TOKEN_LEN};
use meshtun::probe::Family;

const TOKEN: [u8; TOKEN_LEN] = *b"fuzz-token-01234";

fuzz_target!(|data: &[u8]| {
    let Some((&pick, datagram)) = data.split_first() else {
        return;
    };
    let (family, targets, from): (Family, Vec<IpAddr>, IpAddr) = if pick & 1 == 0 {
        let t = vec!["100.64.0.2".parse().unwrap(), "100.64.0.3".parse().unwrap()];
        let from = t[usize::from(pick >> 7)];
        (Family::V4, t, from)
    } else {
        let t = vec!["fd00::2".parse().unwrap(), "fd00::3".parse().unwrap()];
        let from = t[usize::from(pick >> 7)];
        (Family::V6, t, from)
    };
    let round = EchoRound::new(family, 0x1234, TOKEN, targets.clone());
    let message = match family {
        Family::V4 => match icmp_v4_message(datagram) {
            Some(m) => m,
            None => return,
        },
        Family::V6 => datagram,
    };
    if let Some(index) = round.match_reply(from, message) {
        assert_eq!(targets.get(index), Some(&from), "reply matched another target");
        assert!(message.ends_with(&TOKEN), "reply without the round's token");
    }
});
