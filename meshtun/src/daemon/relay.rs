//! The daemon's relay task: the I/O around [`RelayClient`]. With the relay credentials of
//! the bundle in force, it allocates a relayed address on the TURN server from the device's
//! own WireGuard socket, keeps it (Refresh, permissions, channels), publishes it in the
//! gate's status (`meshtun show`, and the candidates this node reports), and runs the slow
//! half of the relay data path:
//! - it permits the IP addresses of the gated peers' candidates on the allocation, so that
//!   a peer behind any NAT can send to the relayed address, and once the relay confirms a
//!   permission, the silent peers there are sent a fresh initiation at once
//!   ([`HostDevice::retry_through_relay`]);
//! - a peer's first datagrams through the relay (Data indications) come here: the peer gets
//!   a slot in the device's relay table (its relayed endpoint), a channel is bound for it,
//!   and the datagram goes to the device ([`HostDevice::receive_datagram`]);
//! - the device's datagrams for a slot without a channel yet come here and leave as Send
//!   indications;
//! - once the relay binds a channel, the table says so and the device frames and unwraps
//!   ChannelData itself (`crate::device::relayed`).
//!
//! The device's receive path queues STUN responses and TURN messages together
//! ([`crate::device::stun`]); `split` sends what comes from the relay server (and all
//! ChannelData) here and the rest to the STUN task.
//!
//! An allocation is kept across epochs while it works: a new epoch's credentials are used
//! for the next Allocate (after a failure), so the relayed address, a candidate peers know,
//! does not change every epoch. Credentials withdrawn (a denied node) drop the allocation
//! and the device's relay table with it.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::HostDevice;
use crate::device::relayed::{relayed_endpoint, RelayRoutes, MAX_SLOTS};
use crate::device::stun::{is_channel_data, StunDatagram, STUN_QUEUE};
use crate::device::RelayOut;
use crate::gate::SharedGateStatus;
use crate::relay::{RelayClient, RelayCredentials, RelayInbound, RelayState};
use crate::wgcfg::RelayShown;

/// How long after a failed allocation the next attempt starts.
const RETRY: Duration = Duration::from_secs(5);

/// How long one name lookup of the relay server may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// New peer addresses given a slot per second at most: someone permitted on the relay who
/// sends from ever new ports churns the table at this rate, no faster.
const NEW_SLOTS_PER_SECOND: u32 = 16;

/// The running relay task; stopped when dropped.
pub struct RelayTask {
    task: JoinHandle<()>,
    credentials: watch::Sender<Option<RelayCredentials>>,
    permitted: watch::Sender<BTreeSet<IpAddr>>,
}

impl Drop for RelayTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RelayTask {
    /// The credentials of the update in force (`None`: none, or denied).
    pub fn set_credentials(&self, credentials: Option<RelayCredentials>) {
        self.credentials.send_if_modified(|current| {
            let changed = *current != credentials;
            *current = credentials;
            changed
        });
    }

    /// The IP addresses of the gated peers' candidates, which may send to the relayed
    /// address.
    pub fn permit(&self, ips: BTreeSet<IpAddr>) {
        self.permitted.send_if_modified(|current| {
            let changed = *current != ips;
            *current = ips;
            changed
        });
    }
}

/// The relay server the task talks to now, which [`split`] routes by.
type CurrentServer = Arc<Mutex<Option<SocketAddr>>>;

/// Splits the device's queue: ChannelData and datagrams from the current relay server go
/// to the relay task, the rest to the STUN task. Returns the STUN task's end and the relay
/// task's; the forwarder stops when the device's queue closes.
pub(super) fn split(
    mut from_device: mpsc::Receiver<StunDatagram>,
    server: CurrentServer,
) -> (mpsc::Receiver<StunDatagram>, mpsc::Receiver<StunDatagram>) {
    let (stun_tx, stun_rx) = mpsc::channel(STUN_QUEUE);
    let (relay_tx, relay_rx) = mpsc::channel(STUN_QUEUE);
    tokio::spawn(async move {
        while let Some(d) = from_device.recv().await {
            let relay = is_channel_data(&d.bytes) || *server.lock() == Some(d.src);
            // Full queues drop, as the device's does.
            let _ = match relay {
                true => relay_tx.try_send(d),
                false => stun_tx.try_send(d),
            };
        }
    });
    (stun_rx, relay_rx)
}

/// Starts the relay task on `device`'s socket, publishing into `status`. Returns it and the
/// STUN task's share of the device's queue (`None` if a queue was already taken).
pub(super) fn start(
    device: &Arc<HostDevice>,
    status: SharedGateStatus,
) -> Option<(RelayTask, mpsc::Receiver<StunDatagram>)> {
    let from_device = device.take_stun_responses()?;
    let outbox = device.take_relay_outbox()?;
    let server = CurrentServer::default();
    let (stun_rx, relay_rx) = split(from_device, server.clone());
    let (credentials, credentials_rx) = watch::channel(None);
    let (permitted, permitted_rx) = watch::channel(BTreeSet::new());
    let io = Io {
        device: Arc::downgrade(device),
        port: device.listen_port(),
        server,
        status,
        client: None,
        routes: None,
        born: Vec::new(),
        new_slots: (Instant::now(), 0),
        dirty: false,
    };
    let inputs = Inputs {
        credentials: credentials_rx,
        permitted: permitted_rx,
        inbox: relay_rx,
        outbox,
    };
    let task = tokio::spawn(io.run(inputs));
    Some((
        RelayTask {
            task,
            credentials,
            permitted,
        },
        stun_rx,
    ))
}

/// What the task waits on.
struct Inputs {
    credentials: watch::Receiver<Option<RelayCredentials>>,
    permitted: watch::Receiver<BTreeSet<IpAddr>>,
    /// TURN messages and ChannelData the device did not handle itself.
    inbox: mpsc::Receiver<StunDatagram>,
    /// The device's datagrams for slots without a channel.
    outbox: mpsc::Receiver<RelayOut>,
}

/// The task's state; it is the one writer of the allocation and of the relay table.
struct Io {
    device: Weak<HostDevice>,
    port: u16,
    server: CurrentServer,
    status: SharedGateStatus,
    client: Option<RelayClient>,
    /// The table the device has, for the allocation in `client`.
    routes: Option<RelayRoutes>,
    /// When each slot was given.
    born: Vec<Instant>,
    /// The second of the last new slot and the slots given in it.
    new_slots: (Instant, u32),
    /// `routes` changed since the device got it.
    dirty: bool,
}

impl Io {
    async fn run(mut self, mut inputs: Inputs) {
        let mut retry_at = Instant::now();
        loop {
            let wanted = inputs.credentials.borrow().clone();
            match (&wanted, &self.client) {
                (None, Some(_)) => {
                    tracing::info!("relay credentials withdrawn: the allocation is dropped");
                    self.client = None;
                }
                (Some(c), None) if Instant::now() >= retry_at && c.expires_s > unix_s() => {
                    self.client = self.allocate(c).await;
                    retry_at = Instant::now() + RETRY;
                }
                (Some(_), Some(current)) if current.status().state == RelayState::Failed => {
                    tracing::info!(server = %current.server(), "relay allocation failed");
                    self.client = None;
                    retry_at = Instant::now() + RETRY;
                }
                _ => {}
            }
            *self.server.lock() = self.client.as_ref().map(RelayClient::server);
            let now = Instant::now();
            let wake = match self.client.as_mut() {
                Some(c) => c.poll(now).unwrap_or(now + RETRY),
                None if wanted.is_some() => retry_at.max(now + Duration::from_millis(100)),
                // Nothing to do until credentials come.
                None => now + Duration::from_secs(3600),
            };
            let permitted = inputs.permitted.borrow().clone();
            self.sync(&permitted, now);
            if !self.flush(now).await {
                return;
            }
            self.retry_granted().await;
            self.publish();
            tokio::select! {
                changed = inputs.credentials.changed() => if changed.is_err() { return },
                changed = inputs.permitted.changed() => if changed.is_err() { return },
                d = inputs.inbox.recv() => {
                    let Some(d) = d else { return };
                    self.inbound(d).await;
                }
                out = inputs.outbox.recv() => {
                    let Some((peer, data)) = out else { return };
                    self.outbound(peer, &data).await;
                }
                () = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    async fn allocate(&self, c: &RelayCredentials) -> Option<RelayClient> {
        let server = resolve(&c.server).await?;
        let local = match server {
            SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], self.port)),
            SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], self.port)),
        };
        tracing::info!(%server, username = %c.username, "allocating on the relay");
        Some(RelayClient::allocate(
            local,
            server,
            &c.username,
            &c.password,
            c.expires_s,
            Instant::now(),
        ))
    }

    /// Brings the relay table in line with the allocation: a new table for a new relayed
    /// address, permissions for `permitted`, the channels bound; publishes it to the device
    /// when it changed.
    fn sync(&mut self, permitted: &BTreeSet<IpAddr>, now: Instant) {
        let Some(c) = self.client.as_mut() else {
            if self.routes.take().is_some() {
                self.born.clear();
                if let Some(device) = self.device.upgrade() {
                    device.set_relay_routes(None);
                }
            }
            return;
        };
        let Some(relayed) = c.relayed() else {
            return;
        };
        for ip in permitted {
            if let Err(error) = c.permit(*ip, now) {
                tracing::debug!(%ip, %error, "relay permission not requested");
            }
        }
        let fresh = self
            .routes
            .as_ref()
            .is_none_or(|r| r.relayed != relayed || r.server != c.server());
        let mut routes = match (fresh, &self.routes) {
            (false, Some(r)) => r.clone(),
            _ => {
                self.born.clear();
                RelayRoutes::new(c.server(), relayed)
            }
        };
        for (slot, route) in routes.routes().to_vec().iter().enumerate() {
            let channel = c.channel_of(route.peer, now);
            if channel != route.channel {
                routes.set_channel(u16::try_from(slot).unwrap_or(u16::MAX), channel);
            }
        }
        if fresh || self.dirty || self.routes.as_ref() != Some(&routes) {
            if let Some(device) = self.device.upgrade() {
                device.set_relay_routes(Some(routes.clone()));
            }
            self.routes = Some(routes);
            self.dirty = false;
        }
    }

    /// A datagram from the relay server: a TURN message for the state machine, or a peer's
    /// datagram for the device, from the peer's slot.
    async fn inbound(&mut self, d: StunDatagram) {
        let now = Instant::now();
        let Some(c) = self.client.as_mut() else {
            return;
        };
        let RelayInbound::PeerData { peer, data } = c.handle(d.src, &d.bytes, now) else {
            return;
        };
        let Some(slot) = self.slot_for(peer, now) else {
            return;
        };
        if let Some(c) = self.client.as_mut() {
            // A channel, so that what follows takes the device's fast path.
            if let Err(error) = c.add_peer(peer, now) {
                tracing::debug!(%peer, %error, "no relay channel for this peer");
            }
        }
        // The device learns the slot before it answers through it.
        self.sync(&BTreeSet::new(), now);
        if let Some(device) = self.device.upgrade() {
            device.receive_datagram(relayed_endpoint(slot), &data).await;
        }
    }

    /// The slot of `peer`, given if new (at most [`NEW_SLOTS_PER_SECOND`]; the oldest slot
    /// is taken over when all [`MAX_SLOTS`] are given).
    fn slot_for(&mut self, peer: SocketAddr, now: Instant) -> Option<u16> {
        let routes = self.routes.as_mut()?;
        if let Some(slot) = routes.slot_of(peer) {
            return Some(slot);
        }
        let (second, given) = &mut self.new_slots;
        if now.saturating_duration_since(*second) >= Duration::from_secs(1) {
            *second = now;
            *given = 0;
        }
        if *given >= NEW_SLOTS_PER_SECOND {
            tracing::debug!(%peer, "too many new peers on the relay this second; dropped");
            return None;
        }
        *given += 1;
        self.dirty = true;
        if let Some(slot) = routes.add(peer) {
            self.born.push(now);
            return Some(slot);
        }
        let (oldest, _) = self.born.iter().enumerate().min_by_key(|(_, t)| **t)?;
        let slot = u16::try_from(oldest).ok()?;
        routes.replace(slot, peer);
        self.born[oldest] = now;
        debug_assert!(self.born.len() <= MAX_SLOTS);
        Some(slot)
    }

    /// A datagram the device has for `peer` before the relay bound its channel.
    async fn outbound(&mut self, peer: SocketAddr, data: &[u8]) {
        let now = Instant::now();
        let Some(c) = self.client.as_mut() else {
            return;
        };
        match c.send(peer, data, now) {
            Ok((to, framed)) => {
                if let Some(device) = self.device.upgrade() {
                    let _ = device.send_datagram(to, &framed).await;
                }
            }
            Err(error) => tracing::debug!(%peer, %error, "datagram not relayed"),
        }
    }

    /// Silent peers at the addresses the relay has just confirmed permissions for get a
    /// fresh initiation at once: the copies they were sent before were dropped by the relay.
    async fn retry_granted(&mut self) {
        let granted = self
            .client
            .as_mut()
            .map(RelayClient::take_granted)
            .unwrap_or_default();
        if granted.is_empty() {
            return;
        }
        tracing::debug!(
            ?granted,
            "relay permissions confirmed; silent peers there tried again"
        );
        if let Some(device) = self.device.upgrade() {
            device.retry_through_relay(&granted).await;
        }
    }

    /// Sends what the client has to send; false once the device is gone.
    async fn flush(&mut self, now: Instant) -> bool {
        let Some(c) = self.client.as_mut() else {
            return true;
        };
        while let Some((to, data)) = c.poll_transmit(now) {
            let Some(device) = self.device.upgrade() else {
                return false;
            };
            if let Err(error) = device.send_datagram(to, &data).await {
                tracing::debug!(%to, %error, "relay request not sent");
            }
        }
        true
    }

    fn publish(&self) {
        let shown = self.client.as_ref().map(|c| {
            let s = c.status();
            RelayShown {
                server: s.server,
                relayed: c.relayed(),
                expires_s: s.expires_s,
                state: match s.state {
                    RelayState::Allocating => "allocating",
                    RelayState::Allocated { .. } => "allocated",
                    RelayState::Failed => "failed",
                }
                .to_owned(),
            }
        });
        let mut status = self.status.lock();
        if status.relay.as_ref().map(|r| (&r.state, r.relayed))
            != shown.as_ref().map(|r| (&r.state, r.relayed))
        {
            if let Some(r) = &shown {
                tracing::info!(server = %r.server, relayed = ?r.relayed, state = %r.state, "relay");
            }
        }
        status.relay = shown;
    }
}

fn unix_s() -> u64 {
    crate::gate::unix_ms() / 1000
}

/// The first address of `server` (`host:port`), IPv4 first; `None` if it does not resolve
/// in time.
async fn resolve(server: &str) -> Option<SocketAddr> {
    if let Ok(addr) = server.parse() {
        return Some(addr);
    }
    let lookup = tokio::net::lookup_host(server);
    match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
        Ok(Ok(addrs)) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            addrs
                .iter()
                .find(|a| a.is_ipv4())
                .or(addrs.first())
                .copied()
        }
        _ => {
            tracing::debug!(%server, "relay server does not resolve");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(src: &str, bytes: Vec<u8>) -> StunDatagram {
        StunDatagram {
            src: src.parse().unwrap(),
            bytes,
        }
    }

    /// ChannelData and anything from the relay server reach the relay task; STUN from
    /// anywhere else reaches the STUN task; the relay server can change.
    #[tokio::test]
    async fn the_split_routes_by_source_and_framing() {
        let (tx, rx) = mpsc::channel(STUN_QUEUE);
        let server = CurrentServer::default();
        let (mut stun, mut relay) = split(rx, server.clone());
        let binding = meshtun_proto::stun::binding_success(
            meshtun_proto::stun::TransactionId::random(),
            "203.0.113.7:40000".parse().unwrap(),
        );
        let chan = vec![0x40, 0x00, 0x00, 0x04, 4, 0, 0, 0];
        tx.send(datagram("192.0.2.1:3478", binding.clone()))
            .await
            .unwrap();
        tx.send(datagram("192.0.2.1:3478", chan.clone()))
            .await
            .unwrap();
        let got = stun.recv().await.unwrap();
        assert_eq!(
            got.bytes, binding,
            "no relay yet: STUN goes to the STUN task"
        );
        assert_eq!(relay.recv().await.unwrap().bytes, chan);
        *server.lock() = Some("198.51.100.1:3478".parse().unwrap());
        tx.send(datagram("198.51.100.1:3478", binding.clone()))
            .await
            .unwrap();
        tx.send(datagram("192.0.2.1:3478", binding.clone()))
            .await
            .unwrap();
        assert_eq!(
            relay.recv().await.unwrap().src,
            "198.51.100.1:3478".parse().unwrap()
        );
        assert_eq!(
            stun.recv().await.unwrap().src,
            "192.0.2.1:3478".parse().unwrap()
        );
        drop(tx);
        assert!(stun.recv().await.is_none() && relay.recv().await.is_none());
    }
}
