//! Pings between the nodes through the tunnel: ICMP echo over a raw socket opened inside
//! each node's namespace, all pairs at once, each waiting at most [`PING_TIMEOUT`].
//!
//! [`PING_TIMEOUT`]: super::plan::PING_TIMEOUT

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::netns;
use super::plan::NodeSpec;

/// ICMP echo request.
const ECHO_REQUEST: u8 = 8;
/// ICMP echo reply.
const ECHO_REPLY: u8 = 0;
/// The payload of every echo request.
const PAYLOAD: &[u8] = b"meshtun demo ping";

/// What one ping found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The answer came after this long.
    Reply(Duration),
    /// No answer within the timeout.
    NoReply,
    /// The request could not be sent (no route, no interface yet).
    SendFailed(String),
}

/// One ping from one node to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The sender's letter.
    pub from: char,
    /// The target's letter.
    pub to: char,
    /// What happened.
    pub outcome: Outcome,
}

impl Probe {
    /// Whether the target answered.
    pub fn answered(&self) -> bool {
        matches!(self.outcome, Outcome::Reply(_))
    }
}

/// The internet checksum (RFC 1071) of `bytes`.
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => u32::from(u16::from_be_bytes([*hi, *lo])),
            [hi] => u32::from(u16::from_be_bytes([*hi, 0])),
            _ => 0,
        })
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP echo request with identifier `id` and sequence number `seq`.
pub fn echo_request(id: u16, seq: u16) -> Vec<u8> {
    let mut packet = vec![ECHO_REQUEST, 0, 0, 0];
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(PAYLOAD);
    let sum = checksum(&packet);
    packet[2..4].copy_from_slice(&sum.to_be_bytes());
    packet
}

/// The source, identifier and sequence number of an IPv4 packet holding an ICMP echo reply
/// (as a raw socket receives it, IP header first); `None` for anything else.
pub fn parse_echo_reply(packet: &[u8]) -> Option<(Ipv4Addr, u16, u16)> {
    let first = *packet.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(first & 0x0f) * 4;
    let source: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
    let icmp = packet.get(header_len..)?;
    match icmp {
        [ECHO_REPLY, 0, _, _, id_hi, id_lo, seq_hi, seq_lo, ..] => Some((
            Ipv4Addr::from(source),
            u16::from_be_bytes([*id_hi, *id_lo]),
            u16::from_be_bytes([*seq_hi, *seq_lo]),
        )),
        _ => None,
    }
}

/// A raw ICMP socket in each node's namespace.
#[derive(Debug)]
pub struct Pinger {
    nodes: Vec<(&'static NodeSpec, Socket)>,
    id: u16,
}

impl Pinger {
    /// Opens a raw ICMP socket inside each node's namespace (`nodes` with their namespaces).
    pub fn open(nodes: &[(&'static NodeSpec, String)]) -> std::io::Result<Self> {
        let mut sockets = Vec::new();
        for (node, ns) in nodes {
            let socket = netns::in_namespace(ns, || {
                Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
            })?;
            sockets.push((*node, socket));
        }
        Ok(Self {
            nodes: sockets,
            // The low bits of the pid tell this process's echoes from others'.
            id: (std::process::id() & 0xffff) as u16,
        })
    }

    /// Pings every node from every other node through the tunnel, all at once; `round`
    /// numbers the requests. Returns one probe per ordered pair, in node order.
    pub fn round(&self, round: u16, timeout: Duration) -> Vec<Probe> {
        std::thread::scope(|s| {
            let handles: Vec<_> = self
                .nodes
                .iter()
                .enumerate()
                .map(|(i, (from, socket))| {
                    let targets: Vec<(u16, &NodeSpec)> = self
                        .nodes
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != i)
                        .map(|(j, (to, _))| (sequence(round, i, j), *to))
                        .collect();
                    s.spawn(move || ping_from(from, socket, self.id, &targets, timeout))
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        })
    }
}

/// The sequence number of the echo from node `from` to node `to` in `round`.
fn sequence(round: u16, from: usize, to: usize) -> u16 {
    round.wrapping_mul(16).wrapping_add((from * 4 + to) as u16)
}

/// Sends an echo to each target from `socket`, then collects answers until `timeout`.
fn ping_from(
    from: &NodeSpec,
    socket: &Socket,
    id: u16,
    targets: &[(u16, &NodeSpec)],
    timeout: Duration,
) -> Vec<Probe> {
    let started = Instant::now();
    let mut outcomes: Vec<Option<Outcome>> = targets
        .iter()
        .map(|(seq, to)| {
            let dest = SockAddr::from(SocketAddrV4::new(to.tunnel, 0));
            socket
                .send_to(&echo_request(id, *seq), &dest)
                .err()
                .map(|e| Outcome::SendFailed(e.to_string()))
        })
        .collect();
    let deadline = started + timeout;
    let mut buf = [0u8; 1500];
    while outcomes.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || socket.set_read_timeout(Some(left)).is_err() {
            break;
        }
        let Ok(len) = (&*socket).read(&mut buf) else {
            break;
        };
        let Some((source, reply_id, seq)) = buf.get(..len).and_then(parse_echo_reply) else {
            continue;
        };
        for (slot, (want_seq, to)) in outcomes.iter_mut().zip(targets) {
            if slot.is_none() && reply_id == id && seq == *want_seq && source == to.tunnel {
                *slot = Some(Outcome::Reply(started.elapsed()));
            }
        }
    }
    outcomes
        .into_iter()
        .zip(targets)
        .map(|(outcome, (_, to))| Probe {
            from: from.letter,
            to: to.letter,
            outcome: outcome.unwrap_or(Outcome::NoReply),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 header (20 bytes, from `source`) followed by `icmp`.
    fn ipv4(source: [u8; 4], icmp: &[u8]) -> Vec<u8> {
        let mut packet = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
        packet.extend_from_slice(&source);
        packet.extend_from_slice(&[100, 64, 0, 1]);
        packet.extend_from_slice(icmp);
        packet
    }

    #[test]
    fn echo_requests_carry_a_valid_checksum() {
        let packet = echo_request(0x1234, 7);
        assert_eq!(&packet[..2], &[8, 0]);
        assert_eq!(&packet[4..8], &[0x12, 0x34, 0, 7]);
        // The checksum over a packet including its checksum is zero.
        assert_eq!(checksum(&packet), 0);
        // Odd lengths pad with a zero byte.
        assert_eq!(checksum(&[0xff]), 0x00ff);
    }

    #[test]
    fn replies_are_recognised_and_everything_else_is_not() {
        let mut reply = echo_request(0x1234, 7);
        reply[0] = ECHO_REPLY;
        assert_eq!(
            parse_echo_reply(&ipv4([100, 64, 0, 2], &reply)),
            Some((Ipv4Addr::new(100, 64, 0, 2), 0x1234, 7))
        );
        let request = echo_request(0x1234, 7);
        assert_eq!(parse_echo_reply(&ipv4([100, 64, 0, 2], &request)), None);
        // Destination unreachable.
        assert_eq!(
            parse_echo_reply(&ipv4([100, 64, 0, 2], &[3, 1, 0, 0])),
            None
        );
        assert_eq!(parse_echo_reply(&ipv4([100, 64, 0, 2], &reply[..6])), None);
        assert_eq!(parse_echo_reply(&[]), None);
        assert_eq!(parse_echo_reply(&[0x45, 0, 0]), None);
        let mut v6 = ipv4([100, 64, 0, 2], &reply);
        v6[0] = 0x60;
        assert_eq!(parse_echo_reply(&v6), None);
        // A header length beyond the packet.
        let mut long = ipv4([100, 64, 0, 2], &reply);
        long[0] = 0x4f;
        assert_eq!(parse_echo_reply(&long), None);
    }

    #[test]
    fn sequence_numbers_differ_per_pair_and_round() {
        let mut seen = std::collections::HashSet::new();
        for round in 0..100 {
            for from in 0..3 {
                for to in (0..3).filter(|&t| t != from) {
                    assert!(seen.insert(sequence(round, from, to)));
                }
            }
        }
    }
}
