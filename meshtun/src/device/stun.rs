//! STUN messages on the WireGuard socket: the receive path hands STUN responses (from STUN
//! servers and from a TURN relay) and TURN ChannelData (a relayed peer's datagrams, first
//! byte 0x40..=0x7F) to the daemon's clients ([`crate::stun`], `crate::relay`) through a
//! small bounded queue instead of the WireGuard state machine; the daemon tells them apart by
//! their source.
//!
//! The check costs WireGuard nothing: a datagram reaches it only after the WireGuard
//! classifier refused it (a STUN success response starts `01 01`, which fails WireGuard's
//! three zero bytes; a request starts `00`). Only responses and indications are queued, at most
//! [`STUN_QUEUE`] of them; when the client falls behind, further ones are dropped.

use std::net::SocketAddr;

use meshtun_proto::stun::{is_stun, MAX_MESSAGE};
use tokio::sync::mpsc;

/// STUN responses queued for the client at most.
pub const STUN_QUEUE: usize = 16;

/// A STUN response received on the device's socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StunDatagram {
    /// Where it came from.
    pub src: SocketAddr,
    /// The message.
    pub bytes: Vec<u8>,
}

/// The receive workers' end of the queue.
#[derive(Debug, Clone)]
pub struct StunInbox {
    tx: mpsc::Sender<StunDatagram>,
}

impl StunInbox {
    /// A queue of [`STUN_QUEUE`] responses and its receiving end.
    pub fn new() -> (Self, mpsc::Receiver<StunDatagram>) {
        let (tx, rx) = mpsc::channel(STUN_QUEUE);
        (Self { tx }, rx)
    }

    /// Takes `datagram` if it is a STUN response (success or error class), a STUN
    /// indication (a TURN Data indication) or TURN ChannelData; `false` if it is neither. One that does not fit the queue is dropped
    /// (and still taken).
    pub fn offer(&self, src: SocketAddr, datagram: &[u8]) -> bool {
        if is_channel_data(datagram) {
            if self.tx.capacity() > 0 {
                let _ = self.tx.try_send(StunDatagram {
                    src,
                    bytes: datagram.to_vec(),
                });
            }
            return true;
        }
        if !is_stun(datagram) {
            return false;
        }
        // The class bits (0x0110 of the type): responses (0x0100, 0x0110) and indications
        // (0x0010: a TURN Data indication carries a peer's first datagrams) are queued;
        // requests (0x0000) are not: the device answers none.
        let class = u16::from_be_bytes([datagram[0], datagram[1]]) & 0x0110;
        let response = class != 0;
        // A full queue costs no copy: a flood of responses is dropped for the price of the
        // header check.
        // An indication carries a peer's datagram, up to the size of relayed ChannelData.
        let limit = match class {
            0x0010 => MAX_CHANNEL_DATA,
            _ => MAX_MESSAGE,
        };
        if response && datagram.len() <= limit && self.tx.capacity() > 0 {
            let _ = self.tx.try_send(StunDatagram {
                src,
                bytes: datagram.to_vec(),
            });
        }
        true
    }
}

/// Whether `datagram` is framed as TURN ChannelData (RFC 8656 section 12.4): a channel
/// number in 0x4000..=0x7FFF, then a length that the datagram matches, up to 3 bytes of
/// padding. WireGuard messages (type 1..=4) and STUN messages (top bits 00) never pass.
/// The same rule as `crate::relay::is_channel_data`, which the device cannot import.
#[inline]
pub fn is_channel_data(datagram: &[u8]) -> bool {
    let Some(header) = datagram.get(..4) else {
        return false;
    };
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    (0x40..=0x7f).contains(&header[0])
        && length + 4 <= datagram.len()
        && datagram.len() <= length + 4 + 3
        && datagram.len() <= MAX_CHANNEL_DATA
}

/// The largest ChannelData queued: a relayed WireGuard datagram of a 9000-byte path.
pub const MAX_CHANNEL_DATA: usize = 9_216;

#[cfg(test)]
mod tests {
    use super::*;
    use meshtun_proto::stun::{binding_request, binding_success, TransactionId};

    #[test]
    fn only_stun_responses_are_queued_and_the_queue_is_bounded() {
        let (inbox, mut rx) = StunInbox::new();
        let src: SocketAddr = "192.0.2.1:3478".parse().unwrap();
        let id = TransactionId::random();
        let response = binding_success(id, "198.51.100.2:51820".parse().unwrap());
        assert!(!inbox.offer(src, &[4, 0, 0, 0, 1, 2, 3, 4]));
        assert!(inbox.offer(src, &binding_request(id)), "a request is STUN");
        for _ in 0..100 {
            assert!(inbox.offer(src, &response));
        }
        let mut queued = 0;
        while let Ok(d) = rx.try_recv() {
            assert_eq!(d.bytes, response);
            queued += 1;
        }
        assert_eq!(
            queued, STUN_QUEUE,
            "requests are not queued; the rest is dropped"
        );
    }

    /// A TURN Data indication (class 0x0010) carries a peer's first datagrams through the
    /// relay: it is queued, up to relayed-datagram size; a request is not.
    #[test]
    fn data_indications_are_queued_and_requests_are_not() {
        let (inbox, mut rx) = StunInbox::new();
        let src: SocketAddr = "198.51.100.1:3478".parse().unwrap();
        // Data indication (0x0017), its length, the magic cookie, a transaction id, and a
        // WireGuard-initiation-sized body beyond MAX_MESSAGE.
        let mut indication = vec![0x00, 0x17, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        indication.extend_from_slice(&[7; 12]);
        indication.resize(MAX_MESSAGE + 100, 0);
        let body = u16::try_from(indication.len() - 20).unwrap();
        indication[2..4].copy_from_slice(&body.to_be_bytes());
        assert!(inbox.offer(src, &indication));
        assert_eq!(rx.try_recv().unwrap().bytes, indication);
        let request = binding_request(TransactionId::random());
        assert!(inbox.offer(src, &request));
        assert!(rx.try_recv().is_err(), "a request is not queued");
    }

    #[test]
    fn channel_data_is_queued_bounded_and_wireguard_is_not() {
        let (inbox, mut rx) = StunInbox::new();
        let src: SocketAddr = "198.51.100.1:3478".parse().unwrap();
        let mut chan = vec![0x40, 0x00, 0x00, 0x94];
        chan.extend_from_slice(&[4, 0, 0, 0]);
        chan.resize(4 + 0x94, 9);
        for _ in 0..100 {
            assert!(inbox.offer(src, &chan));
        }
        let mut init = vec![1u8, 0, 0, 0];
        init.resize(148, 7);
        assert!(
            !inbox.offer(src, &init),
            "a WireGuard initiation is not ChannelData"
        );
        assert!(
            !inbox.offer(src, &[0x40, 0, 0, 9, 1]),
            "shorter than its length"
        );
        let mut queued = 0;
        while let Ok(d) = rx.try_recv() {
            assert_eq!(d.bytes, chan);
            queued += 1;
        }
        assert_eq!(queued, STUN_QUEUE, "the rest of the flood is dropped");
    }
}
