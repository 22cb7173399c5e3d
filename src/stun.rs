//! STUN (RFC 8489) Binding messages, as meshtun uses them for endpoint discovery: the daemon
//! asks a STUN server, from its own WireGuard socket, which address and port its datagrams
//! come from (its reflexive address); the controller answers such requests.
//!
//! The message format is the `stun-types` crate's; this module only picks the small subset
//! meshtun sends and accepts:
//! - requests: a Binding request with a random transaction id and a FINGERPRINT;
//! - responses: a Binding success response with XOR-MAPPED-ADDRESS and a FINGERPRINT;
//! - a FINGERPRINT, when present, must match; comprehension-required attributes other than
//!   the ones above make a message unacceptable (a server drops such a request unanswered).
//!
//! [`is_stun`] tells a STUN message from a WireGuard message arriving on the same socket
//! without parsing or allocating.

use std::net::SocketAddr;

use rand_core::{OsRng, RngCore};
use stun_types::attribute::{
    Attribute, AttributeStaticType, AttributeType, MessageIntegrity, MessageIntegritySha256,
    RawAttribute, XorMappedAddress,
};
use stun_types::message::{
    Message, MessageClass, MessageType, MessageWrite, MessageWriteExt, MessageWriteVec, BINDING,
};

/// The magic cookie of every RFC 5389/8489 message, in bytes 4..8.
pub const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

/// Length of a STUN header.
pub const HEADER_LEN: usize = 20;

/// The largest message meshtun parses: Binding messages with the attributes meshtun uses
/// are under 100 bytes; RFC 8489 asks implementations to fit in 548 bytes without path MTU
/// discovery.
pub const MAX_MESSAGE: usize = 548;

/// A STUN transaction id: 96 random bits that match a response to its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransactionId(pub [u8; 12]);

impl TransactionId {
    /// A fresh id from the operating system's random generator.
    pub fn random() -> Self {
        let mut id = [0u8; 12];
        OsRng.fill_bytes(&mut id);
        Self(id)
    }

    fn to_stun(self) -> stun_types::message::TransactionId {
        let mut wide = [0u8; 16];
        wide[4..].copy_from_slice(&self.0);
        u128::from_be_bytes(wide).into()
    }

    fn from_stun(id: stun_types::message::TransactionId) -> Self {
        let wide = u128::from(id).to_be_bytes();
        let mut narrow = [0u8; 12];
        narrow.copy_from_slice(&wide[4..]);
        Self(narrow)
    }
}

/// Why a datagram is not an acceptable STUN Binding message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum StunError {
    /// The datagram does not have a STUN header (or its length does not match).
    #[error("not a STUN message")]
    NotStun,
    /// Longer than [`MAX_MESSAGE`].
    #[error("STUN message of {0} bytes is longer than {MAX_MESSAGE}")]
    TooLong(usize),
    /// The attributes do not parse, or the FINGERPRINT does not match.
    #[error("malformed STUN message: {0}")]
    Malformed(String),
    /// A STUN message, but not the Binding message of the expected class.
    #[error("STUN message of type {0:#06x} is not the expected Binding message")]
    Unexpected(u16),
    /// A comprehension-required attribute meshtun does not handle.
    #[error("STUN attribute {0:#06x} is required to be understood and is not supported")]
    UnsupportedAttribute(u16),
    /// A success response without XOR-MAPPED-ADDRESS.
    #[error("STUN Binding response has no XOR-MAPPED-ADDRESS")]
    NoMappedAddress,
}

/// A parsed Binding success response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindingResponse {
    /// The request it answers.
    pub transaction: TransactionId,
    /// The address and port the server saw the request come from.
    pub mapped: SocketAddr,
}

/// Whether `datagram` looks like a STUN message rather than a WireGuard one: the top two
/// bits of the type are zero, bytes 4..8 hold the magic cookie, and the length field is a
/// multiple of 4 that matches the datagram. No parsing, no allocation.
///
/// WireGuard messages cannot pass: their type (1..=4) is followed by three zero bytes, so
/// bytes 4..8 hold a sender index or a counter, which would have to equal the cookie and the
/// length field (bytes 2..4, zero) would have to match a 20-byte datagram, which no WireGuard
/// message is.
#[inline]
pub fn is_stun(datagram: &[u8]) -> bool {
    let Some(header) = datagram.get(..HEADER_LEN) else {
        return false;
    };
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    header[0] & 0xc0 == 0
        && header[4..8] == MAGIC_COOKIE
        && length % 4 == 0
        && length + HEADER_LEN == datagram.len()
}

/// A Binding request with transaction id `id` and a FINGERPRINT (28 bytes).
pub fn binding_request(id: TransactionId) -> Vec<u8> {
    let mtype = MessageType::from_class_method(MessageClass::Request, BINDING);
    let mut message = Message::builder(mtype, id.to_stun(), MessageWriteVec::new());
    // A FINGERPRINT is the last attribute of a message under 548 bytes: this cannot fail.
    let _ = message.add_fingerprint();
    message.finish()
}

/// A Binding success response to request `id`, telling the client it came from `mapped`:
/// XOR-MAPPED-ADDRESS and FINGERPRINT only (40 bytes for IPv4, 52 for IPv6).
pub fn binding_success(id: TransactionId, mapped: SocketAddr) -> Vec<u8> {
    let stun_id = id.to_stun();
    let mtype = MessageType::from_class_method(MessageClass::Success, BINDING);
    let mut message = Message::builder(mtype, stun_id, MessageWriteVec::new());
    // Both attributes fit, are not duplicated and FINGERPRINT comes last: neither can fail.
    let _ = message.add_attribute(&XorMappedAddress::new(mapped, stun_id));
    let _ = message.add_fingerprint();
    message.finish()
}

/// Parses a Binding request, as a server receives it, into its transaction id.
pub fn parse_binding_request(datagram: &[u8]) -> Result<TransactionId, StunError> {
    let message = parse(datagram, MessageClass::Request)?;
    Ok(TransactionId::from_stun(message.transaction_id()))
}

/// Parses a Binding success response, as a client receives it.
pub fn parse_binding_response(datagram: &[u8]) -> Result<BindingResponse, StunError> {
    let message = parse(datagram, MessageClass::Success)?;
    let stun_id = message.transaction_id();
    let mapped = message
        .attribute::<XorMappedAddress>()
        .map_err(|_| StunError::NoMappedAddress)?
        .addr(stun_id);
    Ok(BindingResponse {
        transaction: TransactionId::from_stun(stun_id),
        mapped,
    })
}

/// Checks the framing, the type and the attributes of a Binding message of class `class`.
fn parse(datagram: &[u8], class: MessageClass) -> Result<Message<'_>, StunError> {
    if datagram.len() > MAX_MESSAGE {
        return Err(StunError::TooLong(datagram.len()));
    }
    if !is_stun(datagram) {
        return Err(StunError::NotStun);
    }
    let message = Message::from_bytes(datagram).map_err(|e| StunError::Malformed(e.to_string()))?;
    let mtype = message.get_type();
    if !mtype.has_method(BINDING) || !mtype.has_class(class) {
        return Err(StunError::Unexpected(u16::from_be_bytes([
            datagram[0],
            datagram[1],
        ])));
    }
    for (_, attribute) in message.iter_attributes() {
        check_attribute(&attribute, class)?;
    }
    Ok(message)
}

/// Comprehension-optional attributes (0x8000 and above: SOFTWARE, FINGERPRINT, which the
/// parser has already checked...) are ignored. Of the comprehension-required ones, a response
/// may carry XOR-MAPPED-ADDRESS and a MESSAGE-INTEGRITY, which meshtun cannot check (it has
/// no credentials) and ignores: a response is trusted for its transaction id and its source.
/// A request may carry none: one with USERNAME or MESSAGE-INTEGRITY asks for authentication
/// the server does not do, and is dropped.
fn check_attribute(attribute: &RawAttribute<'_>, class: MessageClass) -> Result<(), StunError> {
    let kind: AttributeType = attribute.get_type();
    let understood = match class {
        MessageClass::Success => {
            kind == XorMappedAddress::TYPE
                || kind == MessageIntegrity::TYPE
                || kind == MessageIntegritySha256::TYPE
        }
        _ => false,
    };
    if !kind.comprehension_required() || understood {
        return Ok(());
    }
    Err(StunError::UnsupportedAttribute(kind.value()))
}

#[cfg(test)]
#[path = "stun_tests.rs"]
mod tests;
