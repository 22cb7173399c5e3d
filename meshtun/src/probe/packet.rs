//! ICMP and ICMPv6 echo messages: building requests and recognising our replies.
//!
//! A request carries an identifier, a sequence number (which peer it probes) and a random
//! token as its payload. A reply is ours only if it is an echo reply with code 0, with our
//! identifier, a sequence number we sent, the token we sent, from the address that sequence
//! number probed, and (for ICMPv4) a valid checksum. ICMPv6 checksums cover the IPv6
//! pseudo-header, which includes our own address; the kernel verifies them before an ICMPv6
//! socket sees a message, and fills them in on the requests we send.

use std::net::IpAddr;

/// Length of the random token sent as the payload of every request.
pub const TOKEN_LEN: usize = 16;

/// Length of an echo header: type, code, checksum, identifier, sequence number.
const HEADER_LEN: usize = 8;

/// Length of every request we send.
pub const REQUEST_LEN: usize = HEADER_LEN + TOKEN_LEN;

/// The IP version of an ICMP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// ICMP over IPv4.
    V4,
    /// ICMPv6.
    V6,
}

impl Family {
    /// The family of `address`.
    pub fn of(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    fn request_type(self) -> u8 {
        match self {
            Family::V4 => 8,
            Family::V6 => 128,
        }
    }

    fn reply_type(self) -> u8 {
        match self {
            Family::V4 => 0,
            Family::V6 => 129,
        }
    }
}

/// The Internet checksum (RFC 1071) of `bytes`: the ones' complement of the ones'
/// complement sum of its 16-bit big-endian words, an odd last byte padded with zero.
pub fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut words = bytes.chunks_exact(2);
    for word in &mut words {
        if let [high, low] = word {
            sum += u32::from(u16::from_be_bytes([*high, *low]));
        }
    }
    if let [last] = words.remainder() {
        sum += u32::from(u16::from_be_bytes([*last, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // After folding, the sum fits in 16 bits.
    !u16::try_from(sum).unwrap_or(u16::MAX)
}

/// An echo request. For ICMPv4 the checksum is filled in; for ICMPv6 it is left zero for
/// the kernel to compute.
pub fn echo_request(
    family: Family,
    identifier: u16,
    sequence: u16,
    token: &[u8; TOKEN_LEN],
) -> [u8; REQUEST_LEN] {
    let mut packet = [0u8; REQUEST_LEN];
    let [kind, _code, _sum_high, _sum_low, id_high, id_low, seq_high, seq_low, payload @ ..] =
        &mut packet;
    *kind = family.request_type();
    [*id_high, *id_low] = identifier.to_be_bytes();
    [*seq_high, *seq_low] = sequence.to_be_bytes();
    payload.copy_from_slice(token);
    if family == Family::V4 {
        let [high, low] = checksum(&packet).to_be_bytes();
        packet[2] = high;
        packet[3] = low;
    }
    packet
}

/// The ICMP message in what an ICMPv4 socket received: raw sockets on Linux (and datagram
/// ICMP sockets on macOS) deliver the IPv4 header too, which is then skipped. `None` if the
/// header is malformed or not ICMP.
///
/// An ICMP message cannot be mistaken for an IPv4 header: no ICMP type has 4 in its high
/// nibble that this prober accepts (an echo reply is type 0).
pub fn icmp_v4_message(received: &[u8]) -> Option<&[u8]> {
    let first = *received.first()?;
    if first >> 4 != 4 {
        return Some(received);
    }
    let header_len = usize::from(first & 0x0f) * 4;
    let protocol = *received.get(9)?;
    if header_len < 20 || protocol != 1 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([*received.get(2)?, *received.get(3)?]));
    // Some systems report the total length without the header or in host order; the
    // received length bounds the message in any case.
    let end = if total >= header_len && total <= received.len() {
        total
    } else {
        received.len()
    };
    received.get(header_len..end)
}

/// The echoes of one probe round: one identifier and token, and per sequence number the
/// address it was sent to.
#[derive(Debug, Clone)]
pub struct EchoRound {
    family: Family,
    identifier: u16,
    token: [u8; TOKEN_LEN],
    targets: Vec<IpAddr>,
}

impl EchoRound {
    /// A round of `family` echoes to `targets` (sequence number = index), sent with
    /// `identifier` and `token`.
    pub fn new(
        family: Family,
        identifier: u16,
        token: [u8; TOKEN_LEN],
        targets: Vec<IpAddr>,
    ) -> Self {
        Self {
            family,
            identifier,
            token,
            targets,
        }
    }

    /// The request for sequence number `sequence`.
    pub fn request(&self, sequence: u16) -> [u8; REQUEST_LEN] {
        echo_request(self.family, self.identifier, sequence, &self.token)
    }

    /// The index of the target that `message` (an ICMP or ICMPv6 message, without an IP
    /// header) received from `from` answers, or `None` if it is not a reply to this round.
    pub fn match_reply(&self, from: IpAddr, message: &[u8]) -> Option<usize> {
        let (header, payload) = message.split_at_checked(HEADER_LEN)?;
        let &[kind, code, _, _, id_high, id_low, seq_high, seq_low] = header else {
            return None;
        };
        if kind != self.family.reply_type() || code != 0 {
            return None;
        }
        if self.family == Family::V4 && checksum(message) != 0 {
            return None;
        }
        if u16::from_be_bytes([id_high, id_low]) != self.identifier || payload != self.token {
            return None;
        }
        let index = usize::from(u16::from_be_bytes([seq_high, seq_low]));
        (self.targets.get(index) == Some(&from)).then_some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: [u8; TOKEN_LEN] = *b"0123456789abcdef";

    /// The reply a host sends for `request`: the same message with the reply type and,
    /// for ICMPv4, the checksum recomputed.
    fn reply_to(family: Family, request: &[u8]) -> Vec<u8> {
        let mut reply = request.to_vec();
        reply[0] = family.reply_type();
        reply[2] = 0;
        reply[3] = 0;
        if family == Family::V4 {
            let sum = checksum(&reply).to_be_bytes();
            reply[2..4].copy_from_slice(&sum);
        }
        reply
    }

    fn round(family: Family) -> EchoRound {
        let targets = match family {
            Family::V4 => vec!["100.64.0.2".parse().unwrap(), "100.64.0.3".parse().unwrap()],
            Family::V6 => vec!["fd00::2".parse().unwrap(), "fd00::3".parse().unwrap()],
        };
        EchoRound::new(family, 0xbeef, TOKEN, targets)
    }

    #[test]
    fn checksum_matches_rfc_1071() {
        // The example of RFC 1071, section 3: the sum is 0xddf2, its complement 0x220d.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
        // An odd length pads with a zero byte.
        assert_eq!(checksum(&[0x01]), !0x0100);
        assert_eq!(checksum(&[]), 0xffff);
        // A message with its checksum in place sums to zero.
        let request = echo_request(Family::V4, 1, 2, &TOKEN);
        assert_eq!(checksum(&request), 0);
    }

    #[test]
    fn requests_carry_type_identifier_sequence_and_token() {
        let v4 = echo_request(Family::V4, 0x1234, 0x0102, &TOKEN);
        assert_eq!(&v4[..2], &[8, 0]);
        assert_eq!(&v4[4..8], &[0x12, 0x34, 0x01, 0x02]);
        assert_eq!(&v4[8..], &TOKEN);
        assert_ne!(&v4[2..4], &[0, 0]);
        let v6 = echo_request(Family::V6, 0x1234, 0x0102, &TOKEN);
        assert_eq!(&v6[..4], &[128, 0, 0, 0]);
        assert_eq!(&v6[4..], &v4[4..]);
    }

    #[test]
    fn replies_are_matched_to_their_target() {
        for family in [Family::V4, Family::V6] {
            let round = round(family);
            for index in [0, 1] {
                let reply = reply_to(family, &round.request(index as u16));
                assert_eq!(
                    round.match_reply(round.targets[index], &reply),
                    Some(index),
                    "{family:?}"
                );
            }
        }
    }

    #[test]
    fn a_reply_with_another_identifier_is_not_ours() {
        for family in [Family::V4, Family::V6] {
            let ours = round(family);
            let theirs = EchoRound::new(family, 0xbeee, TOKEN, ours.targets.clone());
            let reply = reply_to(family, &theirs.request(0));
            assert_eq!(ours.match_reply(ours.targets[0], &reply), None);
            // The same reply with our identifier is ours: only the identifier differed.
            let reply = reply_to(family, &ours.request(0));
            assert_eq!(ours.match_reply(ours.targets[0], &reply), Some(0));
        }
    }

    #[test]
    fn foreign_or_damaged_messages_are_not_ours() {
        for family in [Family::V4, Family::V6] {
            let round = round(family);
            let request = round.request(1);
            let reply = reply_to(family, &request);
            let target = round.targets[1];
            // Our own request (seen on a raw socket) is not a reply.
            assert_eq!(round.match_reply(target, &request), None);
            // From another address than the one probed with that sequence number.
            assert_eq!(round.match_reply(round.targets[0], &reply), None);
            // Another token.
            let other = EchoRound::new(family, 0xbeef, [7; TOKEN_LEN], round.targets.clone());
            assert_eq!(
                round.match_reply(target, &reply_to(family, &other.request(1))),
                None
            );
            // A sequence number never sent.
            assert_eq!(
                round.match_reply(target, &reply_to(family, &round.request(9))),
                None
            );
            // A non-zero code, and a truncated message.
            let mut coded = reply.clone();
            coded[1] = 1;
            assert_eq!(round.match_reply(target, &coded), None);
            assert_eq!(round.match_reply(target, &reply[..12]), None);
            assert_eq!(round.match_reply(target, &[]), None);
        }
        let round = round(Family::V4);
        let mut corrupt = reply_to(Family::V4, &round.request(0));
        corrupt[20] ^= 0x40;
        assert_eq!(round.match_reply(round.targets[0], &corrupt), None);
    }

    #[test]
    fn an_ipv4_header_is_skipped() {
        let message = reply_to(Family::V4, &echo_request(Family::V4, 1, 2, &TOKEN));
        let mut packet = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
        packet.extend_from_slice(&[100, 64, 0, 2, 100, 64, 0, 1]);
        let total = u16::try_from(packet.len() + message.len()).unwrap();
        packet[2..4].copy_from_slice(&total.to_be_bytes());
        packet.extend_from_slice(&message);
        assert_eq!(icmp_v4_message(&packet), Some(&message[..]));
        // Without a header the message is taken as it is.
        assert_eq!(icmp_v4_message(&message), Some(&message[..]));
        // An IPv4 header for another protocol, or a short one, yields nothing.
        let mut udp = packet.clone();
        udp[9] = 17;
        assert_eq!(icmp_v4_message(&udp), None);
        assert_eq!(icmp_v4_message(&packet[..6]), None);
        let mut short = packet;
        short[0] = 0x44;
        assert_eq!(icmp_v4_message(&short), None);
    }
}
