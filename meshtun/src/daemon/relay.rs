//! The daemon's relay task: the I/O around [`RelayClient`]. With the relay credentials of
//! the bundle in force, it allocates a relayed address on the TURN server from the device's
//! own WireGuard socket, keeps it (Refresh, permissions, channels), publishes it in the
//! gate's status (`meshtun show`), and carries datagrams to and from peers through it for
//! whoever decides that a peer uses the relay ([`RelayHandle`]).
//!
//! The device's receive path queues STUN responses and TURN ChannelData together
//! ([`crate::device::stun`]); `split` sends what comes from the relay server (and all
//! ChannelData) here and the rest to the STUN task.
//!
//! An allocation is kept across epochs while it works: a new epoch's credentials are used
//! for the next Allocate (after a failure), so the relayed address, a candidate peers know,
//! does not change every epoch. Credentials withdrawn (a denied node) drop the allocation.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::HostDevice;
use crate::device::stun::{is_channel_data, StunDatagram, STUN_QUEUE};
use crate::gate::SharedGateStatus;
use crate::relay::{RelayClient, RelayCredentials, RelayInbound, RelayState};
use crate::wgcfg::RelayShown;

/// Datagrams from peers through the relay queued for their reader at most.
pub const RECEIVED_QUEUE: usize = 256;

/// Commands queued for the relay task at most.
const COMMANDS: usize = 256;

/// How long after a failed allocation the next attempt starts.
const RETRY: Duration = Duration::from_secs(5);

/// How long one name lookup of the relay server may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A datagram from a peer, received through the relay.
pub type Relayed = (SocketAddr, Vec<u8>);

enum Command {
    AddPeer(SocketAddr),
    Send(SocketAddr, Vec<u8>),
}

/// What path selection uses: the relayed address (a candidate to report), sending to a
/// peer through the relay, and the datagrams peers send back through it.
#[derive(Clone)]
pub struct RelayHandle {
    commands: mpsc::Sender<Command>,
    received: Arc<Mutex<Option<mpsc::Receiver<Relayed>>>>,
    status: SharedGateStatus,
}

impl RelayHandle {
    /// The relayed address, once allocated.
    pub fn relayed(&self) -> Option<SocketAddr> {
        self.status.lock().relay.as_ref().and_then(|r| r.relayed)
    }

    /// Lets `peer` send through the allocation (CreatePermission and ChannelBind); false if
    /// the task is gone or its queue is full.
    pub fn add_peer(&self, peer: SocketAddr) -> bool {
        self.commands.try_send(Command::AddPeer(peer)).is_ok()
    }

    /// Sends `datagram` to `peer` through the relay; false if it was dropped (the task is
    /// gone or behind).
    pub fn send(&self, peer: SocketAddr, datagram: Vec<u8>) -> bool {
        self.commands
            .try_send(Command::Send(peer, datagram))
            .is_ok()
    }

    /// The datagrams peers send through the relay, for their one reader; `None` after the
    /// first call. Beyond [`RECEIVED_QUEUE`] waiting, more are dropped.
    pub fn take_received(&self) -> Option<mpsc::Receiver<Relayed>> {
        self.received.lock().take()
    }
}

/// The running relay task; stopped when dropped.
pub struct RelayTask {
    task: JoinHandle<()>,
    credentials: watch::Sender<Option<RelayCredentials>>,
    /// Given to path selection.
    pub handle: RelayHandle,
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
/// STUN task's share of the device's queue (`None` if the queue was already taken).
pub(super) fn start(
    device: &Arc<HostDevice>,
    status: SharedGateStatus,
) -> Option<(RelayTask, mpsc::Receiver<StunDatagram>)> {
    let from_device = device.take_stun_responses()?;
    let server = CurrentServer::default();
    let (stun_rx, relay_rx) = split(from_device, server.clone());
    let (credentials, credentials_rx) = watch::channel(None);
    let (commands, commands_rx) = mpsc::channel(COMMANDS);
    let (received_tx, received_rx) = mpsc::channel(RECEIVED_QUEUE);
    let handle = RelayHandle {
        commands,
        received: Arc::new(Mutex::new(Some(received_rx))),
        status: status.clone(),
    };
    let io = Io {
        device: Arc::downgrade(device),
        port: device.listen_port(),
        server,
        status,
        received: received_tx,
    };
    let task = tokio::spawn(io.run(credentials_rx, relay_rx, commands_rx));
    Some((
        RelayTask {
            task,
            credentials,
            handle,
        },
        stun_rx,
    ))
}

struct Io {
    device: Weak<HostDevice>,
    port: u16,
    server: CurrentServer,
    status: SharedGateStatus,
    received: mpsc::Sender<Relayed>,
}

impl Io {
    async fn run(
        self,
        mut credentials: watch::Receiver<Option<RelayCredentials>>,
        mut inbox: mpsc::Receiver<StunDatagram>,
        mut commands: mpsc::Receiver<Command>,
    ) {
        let mut client: Option<RelayClient> = None;
        let mut retry_at = Instant::now();
        loop {
            let wanted = credentials.borrow().clone();
            match (&wanted, &client) {
                (None, Some(_)) => {
                    tracing::info!("relay credentials withdrawn: the allocation is dropped");
                    client = None;
                }
                (Some(c), None) if Instant::now() >= retry_at && c.expires_s > unix_s() => {
                    client = self.allocate(c).await;
                    retry_at = Instant::now() + RETRY;
                }
                (Some(_), Some(current)) if current.status().state == RelayState::Failed => {
                    tracing::info!(server = %current.server(), "relay allocation failed");
                    client = None;
                    retry_at = Instant::now() + RETRY;
                }
                _ => {}
            }
            *self.server.lock() = client.as_ref().map(RelayClient::server);
            let now = Instant::now();
            let wake = match client.as_mut() {
                Some(c) => {
                    let wake = c.poll(now);
                    if !self.flush(c, now).await {
                        return;
                    }
                    wake.unwrap_or(now + RETRY)
                }
                None if wanted.is_some() => retry_at.max(now + Duration::from_millis(100)),
                // Nothing to do until credentials come.
                None => now + Duration::from_secs(3600),
            };
            self.publish(client.as_ref());
            tokio::select! {
                changed = credentials.changed() => if changed.is_err() { return },
                d = inbox.recv() => {
                    let Some(d) = d else { return };
                    if let Some(c) = client.as_mut() {
                        if let RelayInbound::PeerData { peer, data } =
                            c.handle(d.src, &d.bytes, Instant::now())
                        {
                            let _ = self.received.try_send((peer, data));
                        }
                    }
                }
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { return };
                    if let Some(c) = client.as_mut() {
                        self.command(c, cmd).await;
                    }
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

    async fn command(&self, c: &mut RelayClient, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::AddPeer(peer) => {
                if let Err(error) = c.add_peer(peer, now) {
                    tracing::debug!(%peer, %error, "relay permission not requested");
                }
            }
            Command::Send(peer, data) => match c.send(peer, &data, now) {
                Ok((to, framed)) => {
                    if let Some(device) = self.device.upgrade() {
                        let _ = device.send_datagram(to, &framed).await;
                    }
                }
                Err(error) => tracing::debug!(%peer, %error, "datagram not relayed"),
            },
        }
        self.flush(c, now).await;
    }

    /// Sends what the client has to send; false once the device is gone.
    async fn flush(&self, c: &mut RelayClient, now: Instant) -> bool {
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

    fn publish(&self, client: Option<&RelayClient>) {
        let shown = client.map(|c| {
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
