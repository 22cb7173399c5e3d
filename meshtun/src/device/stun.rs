//! STUN messages on the WireGuard socket: the receive path hands STUN responses to the
//! daemon's STUN client ([`crate::stun`]) through a small bounded queue instead of the
//! WireGuard state machine.
//!
//! The check costs WireGuard nothing: a datagram reaches it only after the WireGuard
//! classifier refused it (a STUN success response starts `01 01`, which fails WireGuard's
//! three zero bytes; a request starts `00`). Only responses are queued, at most
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

    /// Takes `datagram` if it is a STUN response (success or error class); `false` if it is
    /// not STUN at all. A response that does not fit the queue is dropped (and still taken).
    pub fn offer(&self, src: SocketAddr, datagram: &[u8]) -> bool {
        if !is_stun(datagram) {
            return false;
        }
        // The class's high bit (0x0100 of the type) marks responses.
        let response = datagram[0] & 0x01 == 0x01;
        // A full queue costs no copy: a flood of responses is dropped for the price of the
        // header check.
        if response && datagram.len() <= MAX_MESSAGE && self.tx.capacity() > 0 {
            let _ = self.tx.try_send(StunDatagram {
                src,
                bytes: datagram.to_vec(),
            });
        }
        true
    }
}

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
}
