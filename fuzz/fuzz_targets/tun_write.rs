//! The tun write path with peer-controlled plaintext: packets a peer encrypts (anything it
//! likes, for a peer whose allowed IPs are a full tunnel's) are decrypted by the receive path
//! into its tun batch and then coalesced as the tun device's write does (tun-rs's receive
//! offload: TCP and UDP segments of one flow merged into one buffer), before the write.
//!
//! Input: a mode byte, then either raw packets (`len: u16` big-endian, then the bytes), or
//! one flow built from a header template and per-segment steps with valid checksums, so that
//! the coalescing code is reached beyond its checksum checks.

#![no_main]

use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use meshtun::device::fuzzing::Harness;
use tun_rs::GROTable;

static HARNESS: OnceLock<Harness> = OnceLock::new();
static GRO: Mutex<Option<GROTable>> = Mutex::new(None);

/// Packets per batch, at most.
const MAX_PACKETS: usize = 24;
/// Largest packet Alice's host may send (the harness's MTU).
const MTU: usize = 1420;

/// Reads big-endian u16-prefixed packets.
fn raw_packets(mut data: &[u8]) -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    while packets.len() < MAX_PACKETS && data.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([data[0], data[1]])).min(data.len() - 2);
        packets.push(data[2..2 + len].to_vec());
        data = &data[2 + len..];
    }
    packets
}

/// Ones'-complement sum of `data`, folded, added to `acc`.
fn sum(data: &[u8], mut acc: u32) -> u32 {
    for pair in data.chunks(2) {
        acc += u32::from(pair[0]) << 8 | pair.get(1).map_or(0, |b| u32::from(*b));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

/// Takes `n` bytes from the front of `data` (fewer if it runs out).
fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, rest) = data.split_at(n.min(data.len()));
    *data = rest;
    head
}

/// One flow: IPv4 or IPv6, TCP or UDP, from a fuzzed template; each segment gets a fuzzed
/// sequence step, length, flags and payload, and correct lengths and checksums unless the
/// input asks otherwise.
fn flow(mut data: &[u8]) -> Vec<Vec<u8>> {
    let shape = take(&mut data, 1).first().copied().unwrap_or(0);
    let (v6, tcp) = (shape & 1 != 0, shape & 2 != 0);
    let ip_len = if v6 { 40 } else { 20 };
    let l4_len = if tcp { 20 } else { 8 };
    let mut template = vec![0u8; ip_len + l4_len];
    let t = take(&mut data, template.len());
    template[..t.len()].copy_from_slice(t);
    let proto = if tcp { 6 } else { 17 };
    if v6 {
        template[0] = 0x60 | (template[0] & 0x0f);
        template[6] = proto;
    } else {
        template[0] = 0x45;
        template[9] = proto;
        template[6] &= 0x40; // no fragments
        template[7] = 0;
    }
    if tcp {
        template[ip_len + 12] = 5 << 4;
    }
    let mut seq = u32::from_be_bytes([0, 0, 0, 1]);
    let mut packets = Vec::new();
    while packets.len() < MAX_PACKETS && data.len() >= 4 {
        let step = take(&mut data, 4);
        let payload_len =
            usize::from(u16::from_be_bytes([step[0], step[1]])) % (MTU - ip_len - l4_len + 1);
        let (flags, fix) = (step[2], step[3]);
        let mut p = template.clone();
        p.resize(ip_len + l4_len + payload_len, 0);
        let payload = take(&mut data, payload_len);
        p[ip_len + l4_len..ip_len + l4_len + payload.len()].copy_from_slice(payload);
        let total = p.len();
        if v6 {
            p[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
        } else {
            p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        }
        if tcp {
            p[ip_len + 4..ip_len + 8].copy_from_slice(&seq.to_be_bytes());
            p[ip_len + 13] = flags;
            seq = seq.wrapping_add(payload_len as u32);
        } else {
            p[ip_len + 4..ip_len + 6].copy_from_slice(&((total - ip_len) as u16).to_be_bytes());
        }
        if fix & 1 == 0 {
            if !v6 {
                p[10..12].fill(0);
                let c = !sum(&p[..20], 0) as u16;
                p[10..12].copy_from_slice(&c.to_be_bytes());
            }
            let at = ip_len + if tcp { 16 } else { 6 };
            p[at..at + 2].fill(0);
            let mut pseudo = Vec::with_capacity(40);
            let addrs = if v6 { &p[8..40] } else { &p[12..20] };
            pseudo.extend_from_slice(addrs);
            pseudo.extend_from_slice(&[0, proto]);
            pseudo.extend_from_slice(&((total - ip_len) as u16).to_be_bytes());
            let c = !sum(&p[ip_len..], sum(&pseudo, 0)) as u16;
            p[at..at + 2].copy_from_slice(&c.to_be_bytes());
        }
        packets.push(p);
    }
    packets
}

fuzz_target!(|data: &[u8]| {
    let h = HARNESS.get_or_init(Harness::open);
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let packets = if mode & 1 == 0 {
        raw_packets(rest)
    } else {
        flow(rest)
    };
    let refs: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
    let mut batch = h.through_tunnel(&refs);
    let Ok(mut gro) = GRO.lock() else {
        return;
    };
    let table = gro.get_or_insert_with(GROTable::new);
    let (bufs, headroom) = batch.packet_buffers();
    let _ = table.apply_gro(bufs, headroom, mode & 2 != 0);
    batch.restore();
});
