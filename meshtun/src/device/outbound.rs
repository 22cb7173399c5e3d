//! The send path: IP packets from the host, encrypted into datagrams for their peers.

use std::net::IpAddr;
use std::time::Instant;

use super::peer::DropReason;
use super::snapshot::{Locked, Snapshot};
use super::stats::Counters;
use super::transport::{DatagramBatch, PacketBatch};

/// The destination address of an IP packet, if it has a complete IPv4 or IPv6 header.
pub fn destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => {
            let b: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            (packet.len() >= 20).then_some(IpAddr::from(b))
        }
        6 => {
            let b: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        _ => None,
    }
}

/// Encrypts packets `start..` of `packets` into `out`, taking each peer's lock once per run
/// of packets for it. Returns the index of the first packet not handled because `out` is
/// full (`packets.len()` when all were handled).
pub fn encapsulate_batch(
    snap: &Snapshot,
    packets: &PacketBatch,
    start: usize,
    out: &mut DatagramBatch,
    counters: &Counters,
    now: Instant,
) -> usize {
    let mut locked = Locked::new();
    for i in start..packets.len() {
        let packet = packets.packet(i);
        let Some(peer) = destination(packet).and_then(|dst| snap.by_ip.lookup(dst)) else {
            counters.dropped_no_route();
            continue;
        };
        let Some(state) = locked.get(peer) else {
            counters.dropped_no_route();
            continue;
        };
        match state.encapsulate(packet, out, now) {
            Ok(()) => counters.sent(),
            Err(DropReason::Full) => return i,
            Err(DropReason::NoEndpoint) => counters.dropped_no_endpoint(),
            Err(DropReason::QueueFull) => counters.dropped_queue_full(),
            Err(_) => counters.dropped_no_route(),
        }
    }
    packets.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_reads_v4_and_v6_headers() {
        let mut v4 = [0u8; 20];
        v4[0] = 0x45;
        v4[16..20].copy_from_slice(&[100, 64, 0, 2]);
        assert_eq!(destination(&v4), Some("100.64.0.2".parse().unwrap()));
        assert_eq!(destination(&v4[..19]), None);
        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        v6[24] = 0xfd;
        v6[39] = 2;
        assert_eq!(destination(&v6), Some("fd00::2".parse().unwrap()));
        assert_eq!(destination(&v6[..39]), None);
        assert_eq!(destination(&[]), None);
        assert_eq!(destination(&[0x10; 40]), None);
    }
}
