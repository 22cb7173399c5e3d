//! The incoming-packet path: arbitrary datagrams from the peer's address and from strangers,
//! data packets aimed at a live session index, and arbitrary IP packets on the send path.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use meshtun::device::fuzzing::Harness;

static HARNESS: OnceLock<Harness> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let h = HARNESS.get_or_init(Harness::new);
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => h.receive(rest, true),
        1 => h.receive(rest, false),
        2 => {
            // A data message addressed to one of Bob's live sessions.
            let indices = h.session_indices();
            let Some(&idx) = indices.get(usize::from(rest.first().copied().unwrap_or(0)) % indices.len().max(1)) else {
                return;
            };
            let mut datagram = vec![4, 0, 0, 0];
            datagram.extend_from_slice(&(idx << 8).to_le_bytes());
            datagram.extend_from_slice(rest);
            h.receive(&datagram, true);
        }
        _ => h.send(rest),
    }
});
