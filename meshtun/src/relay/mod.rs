//! A blind TURN relay (RFC 8656) for pairs with no direct path: the daemon allocates an
//! address on a relay server (coturn) from its WireGuard socket and WireGuard datagrams pass
//! through it as ChannelData, which the relay forwards without being able to read.
//!
//! Sans-IO: [`RelayClient`] is fed datagrams and the time and yields datagrams to send; the
//! caller owns the socket. The TURN state machine (Allocate with long-term credentials after
//! the 401 carrying realm and nonce, MESSAGE-INTEGRITY on every request and checked on every
//! response, Refresh before the lifetime ends, CreatePermission, ChannelBind, ChannelData
//! framing) is the `turn-client-proto` crate's, from the author of the `stun-types` codec
//! meshtun already uses. This module adds what meshtun needs around it:
//! - only datagrams from the relay server's address reach the state machine; responses are
//!   matched by transaction id and checked for integrity there, so forged, replayed and
//!   off-path responses are dropped;
//! - a bounded set of peers ([`MAX_RELAY_PEERS`]);
//! - a status for `meshtun show` (server, relayed address, expiry of the credentials) and
//!   the relayed address as a candidate for path selection;
//! - [`is_channel_data`], which tells ChannelData (first byte 0x40..=0x7F) from WireGuard
//!   (type 1..=4) and STUN (top two bits 00) on the shared socket.
//!
//! The credentials come from the bundle (`meshtun_proto::relay`); the password is kept in a
//! redacted, zeroized newtype and handed only to the state machine.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meshtun_proto::relay::RelayPassword;
use turn_client_proto::api::{
    CreatePermissionError, TurnConfig, TurnEvent, TurnPollRet, TurnRecvRet,
};
use turn_client_proto::prelude::*;
use turn_client_proto::stun::agent::Transmit;
use turn_client_proto::types::{TransportType, TurnCredentials};
use turn_client_proto::udp::TurnClientUdp;

/// The most peers one allocation has permissions and channels for.
pub const MAX_RELAY_PEERS: usize = 256;

/// The largest datagram relayed: a WireGuard datagram of a 1500-byte path plus headroom.
pub const MAX_RELAYED: usize = 65_535 - 4;

/// A node's relay credentials for one epoch, opened from its bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayCredentials {
    /// The first relay server, `HOST:PORT` (a name is resolved by the I/O layer).
    pub server: String,
    /// The TURN username, `"EXPIRY:NODE_ID"`.
    pub username: String,
    /// The password (redacted `Debug`, zeroized on drop).
    pub password: RelayPassword,
    /// When they stop working, Unix seconds.
    pub expires_s: u64,
}

impl RelayCredentials {
    /// The relay credentials of `bundle`, opened with the node's WireGuard key `key`:
    /// `Ok(None)` when the bundle has none (a denied node, or a controller without
    /// `[relay]`).
    pub fn open(
        bundle: &meshtun_proto::bundle::Bundle,
        key: &meshtun_proto::PrivateKey,
    ) -> Result<Option<Self>, RelayError> {
        let Some(relay) = &bundle.relay else {
            return Ok(None);
        };
        let sealed = || RelayError::Credentials(bundle.epoch);
        let seal_key = bundle.seal_key.as_ref().ok_or_else(sealed)?;
        let password = meshtun_proto::bundle::Opener::new(key, seal_key)
            .open_relay(bundle.epoch, relay)
            .map_err(|_| sealed())?;
        let url = relay.urls.first().ok_or_else(sealed)?;
        let server = meshtun_proto::relay::parse_turn_url(url)
            .map_err(|e| RelayError::Url(e.to_string()))?;
        Ok(Some(Self {
            server: server.to_owned(),
            username: relay.username.clone(),
            password,
            expires_s: relay.expires_s,
        }))
    }
}

/// Why the relay could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// There is no allocation (yet, or any more).
    #[error("no allocation on relay {0}")]
    NoAllocation(SocketAddr),
    /// [`MAX_RELAY_PEERS`] peers already.
    #[error("relay {0} already has {MAX_RELAY_PEERS} peers")]
    TooManyPeers(SocketAddr),
    /// The peer has no permission on the relay.
    #[error("no permission for peer {1} on relay {0}")]
    NoPermission(SocketAddr, SocketAddr),
    /// Larger than [`MAX_RELAYED`].
    #[error("datagram of {0} bytes is too large to relay")]
    TooLarge(usize),
    /// The bundle's relay password does not open, or the bundle names no relay.
    #[error("the relay credentials of the bundle of epoch {0} do not open")]
    Credentials(u64),
    /// The bundle's relay URL is not `turn:HOST:PORT`.
    #[error("{0}")]
    Url(String),
}

/// Where the allocation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayState {
    /// Allocate sent (first without credentials, then with the realm and nonce of the 401).
    Allocating,
    /// The relay allocated `relayed` for this node.
    Allocated {
        /// The relayed transport address: peers send to it.
        relayed: SocketAddr,
    },
    /// The relay refused (wrong or expired credentials) or stopped answering, or the
    /// allocation expired without a successful Refresh.
    Failed,
}

/// What `meshtun show` prints about the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayStatus {
    /// The relay server.
    pub server: SocketAddr,
    /// Where the allocation stands.
    pub state: RelayState,
    /// When the credentials expire (Unix seconds).
    pub expires_s: u64,
    /// Peers with a channel.
    pub channels: usize,
    /// The error code of the last error response from the relay (401: credentials refused),
    /// for people: it is not authenticated (a relay cannot sign a 401 to wrong
    /// credentials), so it never changes [`Self::state`].
    pub last_error: Option<u16>,
}

/// What a datagram from the socket turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum RelayInbound {
    /// A TURN message for the state machine: consumed.
    Handled,
    /// A datagram a peer sent to the relayed address: hand it to WireGuard as from `peer`.
    PeerData {
        /// The peer's address as the relay saw it.
        peer: SocketAddr,
        /// The datagram.
        data: Vec<u8>,
    },
    /// Not from the relay, or not a message of this allocation: dropped.
    Dropped,
}

/// One allocation on one relay server.
pub struct RelayClient {
    client: TurnClientUdp,
    server: SocketAddr,
    local: SocketAddr,
    base: Instant,
    state: RelayState,
    expires_s: u64,
    peers: BTreeSet<SocketAddr>,
    permitted: BTreeSet<std::net::IpAddr>,
    /// Addresses whose permission the relay confirmed since [`Self::take_granted`].
    granted: Vec<std::net::IpAddr>,
    channels: BTreeSet<SocketAddr>,
    last_error: Option<u16>,
}

impl std::fmt::Debug for RelayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayClient")
            .field("server", &self.server)
            .field("state", &self.state)
            .field("expires_s", &self.expires_s)
            .finish_non_exhaustive()
    }
}

impl RelayClient {
    /// Starts allocating on `server` from the socket bound to `local`, with `username` and
    /// `password` (which expire at `expires_s`, Unix seconds). `now` is the clock's origin.
    pub fn allocate(
        local: SocketAddr,
        server: SocketAddr,
        username: &str,
        password: &RelayPassword,
        expires_s: u64,
        now: Instant,
    ) -> Self {
        let config = TurnConfig::new(TurnCredentials::new(username, password.expose()));
        Self {
            client: TurnClientUdp::allocate(local, server, config),
            server,
            local,
            base: now,
            state: RelayState::Allocating,
            expires_s,
            peers: BTreeSet::new(),
            permitted: BTreeSet::new(),
            granted: Vec::new(),
            channels: BTreeSet::new(),
            last_error: None,
        }
    }

    /// The relay server.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The relayed address, once allocated: a candidate to report for this node.
    pub fn relayed(&self) -> Option<SocketAddr> {
        match self.state {
            RelayState::Allocated { relayed } => Some(relayed),
            _ => None,
        }
    }

    /// The status `meshtun show` prints.
    pub fn status(&self) -> RelayStatus {
        RelayStatus {
            server: self.server,
            state: self.state,
            expires_s: self.expires_s,
            channels: self.channels.len(),
            last_error: self.last_error,
        }
    }

    fn at(&self, now: Instant) -> turn_client_proto::stun::Instant {
        let nanos = now.saturating_duration_since(self.base).as_nanos();
        turn_client_proto::stun::Instant::from_nanos(i64::try_from(nanos).unwrap_or(i64::MAX))
    }

    fn to_std(&self, at: turn_client_proto::stun::Instant) -> Instant {
        let since = at.saturating_duration_since(turn_client_proto::stun::Instant::ZERO);
        self.base + since
    }

    /// Takes a datagram that arrived on the socket from `from`. Only the relay server's
    /// messages reach the state machine.
    pub fn handle(&mut self, from: SocketAddr, datagram: &[u8], now: Instant) -> RelayInbound {
        if from != self.server || datagram.len() > MAX_RELAYED + 4 {
            return RelayInbound::Dropped;
        }
        if let Some(code) = error_code(datagram) {
            self.last_error = Some(code);
        }
        let at = self.at(now);
        let transmit = Transmit::new(datagram, TransportType::Udp, from, self.local);
        let inbound = match self.client.recv(transmit, at) {
            TurnRecvRet::Handled => RelayInbound::Handled,
            TurnRecvRet::PeerData(data) => RelayInbound::PeerData {
                peer: data.peer,
                data: data.data().to_vec(),
            },
            TurnRecvRet::Ignored(_) | TurnRecvRet::PeerIcmp { .. } => RelayInbound::Dropped,
        };
        self.drain_events();
        inbound
    }

    /// Runs the timers (retransmissions, Refresh, permission and channel refreshes) and
    /// returns when to call again; `None` once the allocation has failed for good.
    pub fn poll(&mut self, now: Instant) -> Option<Instant> {
        let at = self.at(now);
        let next = match self.client.poll(at) {
            TurnPollRet::WaitUntil(t) => Some(self.to_std(t).max(now)),
            TurnPollRet::Closed => {
                self.state = RelayState::Failed;
                None
            }
            // TCP only: a UDP allocation never asks for these.
            TurnPollRet::AllocateTcpSocket { .. } | TurnPollRet::TcpClose { .. } => {
                Some(now + Duration::from_millis(50))
            }
        };
        self.drain_events();
        next
    }

    /// The next datagram to send to the relay server, if any.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        let at = self.at(now);
        let transmit = self.client.poll_transmit(at)?;
        Some((transmit.to, transmit.data.to_vec()))
    }

    fn drain_events(&mut self) {
        while let Some(event) = self.client.poll_event() {
            match event {
                TurnEvent::AllocationCreated(_, relayed) => {
                    self.state = RelayState::Allocated { relayed };
                }
                TurnEvent::AllocationCreateFailed(_) => self.state = RelayState::Failed,
                TurnEvent::ChannelCreated(_, peer) => {
                    self.channels.insert(peer);
                }
                TurnEvent::ChannelCreateFailed(_, peer) => {
                    self.channels.remove(&peer);
                }
                TurnEvent::PermissionCreateFailed(_, ip) => {
                    self.permitted.remove(&ip);
                    self.peers.retain(|p| p.ip() != ip);
                    self.channels.retain(|p| p.ip() != ip);
                }
                TurnEvent::PermissionCreated(_, ip) => {
                    if self.granted.len() < MAX_RELAY_PEERS && !self.granted.contains(&ip) {
                        self.granted.push(ip);
                    }
                }
                TurnEvent::TcpConnected(_) | TurnEvent::TcpConnectFailed(_) => {}
            }
        }
    }

    /// Lets `peer` (a peer's relayed or reflexive address) send through the allocation:
    /// CreatePermission for its IP address and ChannelBind for its address, so that data
    /// to and from it travels as ChannelData (4-byte header). Idempotent.
    pub fn add_peer(&mut self, peer: SocketAddr, now: Instant) -> Result<(), RelayError> {
        if self.relayed().is_none() {
            return Err(RelayError::NoAllocation(self.server));
        }
        if self.peers.contains(&peer) {
            return Ok(());
        }
        if self.peers.len() >= MAX_RELAY_PEERS {
            return Err(RelayError::TooManyPeers(self.server));
        }
        let at = self.at(now);
        // Peers behind one NAT share an IP address and so a permission (pending or not).
        self.permit(peer.ip(), now)?;
        // A channel for this address may exist from an earlier add: then keep it.
        let _ = self.client.bind_channel(TransportType::Udp, peer, at);
        self.peers.insert(peer);
        Ok(())
    }

    /// Lets every address of `ip` (a peer's candidate: its NAT maps each flow to that
    /// address, on a port unknown in advance behind a symmetric NAT) send to the relayed
    /// address: CreatePermission, refreshed by the state machine while the allocation
    /// lives. Idempotent; [`MAX_RELAY_PEERS`] addresses at most.
    pub fn permit(&mut self, ip: std::net::IpAddr, now: Instant) -> Result<(), RelayError> {
        if self.relayed().is_none() {
            return Err(RelayError::NoAllocation(self.server));
        }
        if self.permitted.contains(&ip) {
            return Ok(());
        }
        if self.client.have_permission(TransportType::Udp, ip) {
            self.permitted.insert(ip);
            return Ok(());
        }
        if self.permitted.len() >= MAX_RELAY_PEERS {
            return Err(RelayError::TooManyPeers(self.server));
        }
        match self
            .client
            .create_permission(TransportType::Udp, ip, self.at(now))
        {
            Ok(()) | Err(CreatePermissionError::AlreadyExists) => {
                self.permitted.insert(ip);
                Ok(())
            }
            Err(_) => Err(RelayError::NoAllocation(self.server)),
        }
    }

    /// The addresses the relay newly confirmed a permission for (a refresh is not news),
    /// each once: datagrams from them to the relayed address pass from now on, so a peer
    /// there whose earlier attempts the relay dropped can be tried again at once.
    pub fn take_granted(&mut self) -> Vec<std::net::IpAddr> {
        std::mem::take(&mut self.granted)
    }

    /// The channel bound for `peer`, if bound and not expired.
    pub fn channel_of(&mut self, peer: SocketAddr, now: Instant) -> Option<u16> {
        if !self.channels.contains(&peer) {
            return None;
        }
        let at = self.at(now);
        // Building a send is side-effect free; ChannelData starts with the channel number.
        let transmit = self
            .client
            .send_to(TransportType::Udp, peer, [0u8; 0], at)
            .ok()??
            .build();
        let header = transmit.data.get(..2)?;
        let channel = u16::from_be_bytes([header[0], header[1]]);
        (0x4000..=0x7fff).contains(&channel).then_some(channel)
    }

    /// Wraps `data` for `peer` (ChannelData once the channel is bound, a Send indication
    /// before); returns the datagram to send to the relay server and where.
    pub fn send(
        &mut self,
        peer: SocketAddr,
        data: &[u8],
        now: Instant,
    ) -> Result<(SocketAddr, Vec<u8>), RelayError> {
        if data.len() > MAX_RELAYED {
            return Err(RelayError::TooLarge(data.len()));
        }
        let at = self.at(now);
        match self.client.send_to(TransportType::Udp, peer, data, at) {
            Ok(Some(transmit)) => {
                let transmit = transmit.build();
                Ok((transmit.to, transmit.data))
            }
            Ok(None) => Err(RelayError::NoAllocation(self.server)),
            Err(turn_client_proto::api::SendError::NoPermission) => {
                Err(RelayError::NoPermission(self.server, peer))
            }
            Err(_) => Err(RelayError::NoAllocation(self.server)),
        }
    }
}

/// The ERROR-CODE of a STUN error response, if `datagram` is one.
fn error_code(datagram: &[u8]) -> Option<u16> {
    use turn_client_proto::types::stun::attribute::ErrorCode;
    use turn_client_proto::types::stun::message::{Message, MessageClass};
    if datagram.first()? & 0xc0 != 0 {
        return None;
    }
    let message = Message::from_bytes(datagram).ok()?;
    if !message.has_class(MessageClass::Error) {
        return None;
    }
    message.attribute::<ErrorCode>().ok().map(|e| e.code())
}

/// Whether `datagram` can be TURN ChannelData: the channel number (first two bytes) is in
/// 0x4000..=0x7FFF and the length field fits the datagram (UDP pads nothing, but RFC 8656
/// lets a sender pad to 4 bytes). WireGuard messages start with type 1..=4 and STUN
/// messages with two zero bits, so neither passes.
#[inline]
pub fn is_channel_data(datagram: &[u8]) -> bool {
    let Some(header) = datagram.get(..4) else {
        return false;
    };
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    (0x40..=0x7f).contains(&header[0])
        && length + 4 <= datagram.len()
        && datagram.len() <= length + 4 + 3
}

#[cfg(test)]
mod tests;
