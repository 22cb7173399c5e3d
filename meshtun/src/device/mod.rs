//! The WireGuard device: boringtun's `noise::Tunn` per peer, with meshtun's own peer table,
//! session indices, rate limiting and timers, generic over its tun and UDP transports.
//!
//! Tasks:
//! - one send worker per tun lane (queue): packets from the host are routed by longest-prefix
//!   match and encrypted, a batch at a time;
//! - one receive worker per UDP socket: datagrams are routed by session index, decrypted and
//!   checked against the sender's allowed IPs;
//! - a timer task (every [`TICK`]) for handshake retries, rekeys, keepalives and the
//!   make-before-break key switch.
//!
//! Configuration changes go through a control lock that the packet path never takes; they
//! publish a new routing snapshot (`snapshot.rs`) that workers pick up at their next batch.

mod control;
mod inbound;
mod index;
mod initiate;
mod noise;
mod outbound;
mod peer;
mod prepare;
mod queue;
pub mod relayed;
mod snapshot;
mod stamps;
mod stats;
pub mod stun;
mod tasks;
pub mod transport;

#[doc(hidden)]
pub mod benching;
pub mod channel;
#[doc(hidden)]
pub mod forge;
#[doc(hidden)]
pub mod fuzzing;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use index::IndexExhausted;
pub use stats::CounterTotals;
pub use transport::{TunIo, UdpFactory, UdpIo, UdpSockets};

use control::Control;
use prepare::Prepared;
use relayed::RelayRoutes;
use snapshot::Snapshot;
use stats::Counters;
use stun::{StunDatagram, StunInbox};
use transport::DatagramBatch;

use crate::wgcfg::{DeviceSettings, DeviceStatus, DeviceUpdate};

/// How often the timer task runs; WireGuard's timers need at least every 250 ms.
pub const TICK: Duration = Duration::from_millis(100);

/// The shortest time between two rounds of probes to a peer's further candidates
/// (WireGuard's `REKEY_TIMEOUT`): a member that lists someone else's address as a candidate
/// makes each of its peers send that address at most one initiation this often.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// How long a peer must have sent nothing authenticated before its further candidates are
/// probed (`KEEPALIVE_TIMEOUT` + `REKEY_TIMEOUT`): a working path is never second-guessed.
pub const SILENT_AFTER: Duration = Duration::from_secs(15);

/// The most threads that build a large change's `Tunn`s, or write its initiations, at once.
const MAX_PREPARE_THREADS: usize = 4;

/// The most handshake initiations written in one go (then sent before the next).
const MAX_INITIATIONS_AT_ONCE: usize = 4_096;

/// Threads for a large change's `Tunn`s and initiations: one per core, at most
/// [`MAX_PREPARE_THREADS`].
fn prepare_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.min(MAX_PREPARE_THREADS)
}

/// Packets per batch on the packet path.
pub const BATCH: usize = 128;

/// Errors from configuring or running a device.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The UDP sockets could not be opened.
    #[error("cannot listen on UDP port {port}")]
    Bind {
        /// The port asked for (0: any).
        port: u16,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The firewall mark could not be set.
    #[error("cannot set fwmark {mark:#x} on the UDP sockets")]
    Fwmark {
        /// The mark.
        mark: u32,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// No session index is free.
    #[error(transparent)]
    Index(#[from] IndexExhausted),
}

/// Shared state of a running device.
struct Inner<T, F: UdpFactory> {
    name: String,
    tun: Arc<T>,
    factory: F,
    /// Largest IP packet on the tun side.
    mtu: usize,
    sockets: ArcSwap<UdpSockets<F::Socket>>,
    snapshot: ArcSwap<Snapshot>,
    control: Mutex<Control>,
    counters: Mutex<Vec<Arc<Counters>>>,
    /// The counters of datagrams handled outside the workers ([`Device::receive_datagram`]).
    slow_counters: Arc<Counters>,
    receivers: Mutex<Vec<JoinHandle<()>>>,
    fatal: watch::Sender<Option<String>>,
    /// Where receive workers put STUN responses.
    stun: StunInbox,
    /// The other end, until [`Device::take_stun_responses`] takes it.
    stun_responses: Mutex<Option<tokio::sync::mpsc::Receiver<StunDatagram>>>,
    /// The peers reached through a TURN relay, published by the relay task.
    relay: ArcSwapOption<RelayRoutes>,
    /// Datagrams for relayed peers without a channel yet, for the relay task.
    relay_outbox: tokio::sync::mpsc::Sender<RelayOut>,
    /// The other end, until [`Device::take_relay_outbox`] takes it.
    relay_outbox_rx: Mutex<Option<tokio::sync::mpsc::Receiver<RelayOut>>>,
}

/// A datagram for a relayed peer the relay has no channel for yet: the peer's address as
/// the relay sees it, and the datagram.
pub type RelayOut = (SocketAddr, Vec<u8>);

/// Datagrams waiting for the relay task at most (the first round trip of a relayed path).
pub const RELAY_OUTBOX: usize = 64;

/// A running WireGuard device.
pub struct Device<T: TunIo, F: UdpFactory> {
    inner: Arc<Inner<T, F>>,
    tasks: Vec<JoinHandle<()>>,
}

impl<T: TunIo, F: UdpFactory> Device<T, F> {
    /// Starts a device named `name` over `tun` (whose MTU is `mtu`), binding its UDP sockets
    /// through `factory`, configured with `settings`. Must run inside a tokio runtime.
    pub fn start(
        name: &str,
        tun: T,
        factory: F,
        mtu: u16,
        settings: &DeviceSettings,
    ) -> Result<Self, DeviceError> {
        let port = settings.listen_port.unwrap_or(0);
        let fwmark = settings.fwmark.unwrap_or(0);
        let sockets = factory
            .bind(port, settings.fwmark.filter(|m| *m != 0))
            .map_err(|source| DeviceError::Bind { port, source })?;
        let mut control = Control::new(sockets.port, fwmark);
        let mut out = DatagramBatch::new(BATCH, usize::from(mtu) + 64);
        control.apply_settings(settings, Instant::now(), &mut out)?;
        let (fatal, _) = watch::channel(None);
        let (stun, stun_responses) = StunInbox::new();
        let (relay_outbox, relay_outbox_rx) = tokio::sync::mpsc::channel(RELAY_OUTBOX);
        let slow_counters = Arc::new(Counters::default());
        let inner = Arc::new(Inner {
            name: name.to_owned(),
            tun: Arc::new(tun),
            factory,
            mtu: usize::from(mtu).max(1280),
            sockets: ArcSwap::from_pointee(sockets),
            snapshot: ArcSwap::from_pointee(control.snapshot()),
            control: Mutex::new(control),
            counters: Mutex::new(vec![slow_counters.clone()]),
            slow_counters,
            receivers: Mutex::new(Vec::new()),
            fatal,
            stun,
            stun_responses: Mutex::new(Some(stun_responses)),
            relay: ArcSwapOption::empty(),
            relay_outbox,
            relay_outbox_rx: Mutex::new(Some(relay_outbox_rx)),
        });
        let mut tasks = vec![tokio::spawn(tasks::timer_task(inner.clone()))];
        for lane in 0..inner.tun.lanes().max(1) {
            tasks.push(tokio::spawn(tasks::send_worker(inner.clone(), lane)));
        }
        inner.spawn_receivers();
        let device = Self { inner, tasks };
        let first = out;
        let inner = device.inner.clone();
        tokio::spawn(async move { inner.send(&first).await });
        Ok(device)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The UDP port the device listens on.
    pub fn listen_port(&self) -> u16 {
        self.inner.sockets.load().port
    }

    /// Applies a whole new configuration; peers that did not change keep their sessions.
    pub async fn reconfigure(&self, settings: &DeviceSettings) -> Result<(), DeviceError> {
        let update = DeviceUpdate {
            listen_port: Some(settings.listen_port.unwrap_or(0)),
            fwmark: Some(settings.fwmark.unwrap_or(0)),
            ..DeviceUpdate::default()
        };
        let wanted = prepare::wanted_by_settings(&self.inner.snapshot.load(), settings);
        self.inner
            .change(wanted, |control, now, out| {
                control.apply_settings(settings, now, out)?;
                Ok(update)
            })
            .await
    }

    /// Applies a partial change, as a UAPI `set` carries it.
    pub async fn update(&self, update: DeviceUpdate) -> Result<(), DeviceError> {
        let wanted = prepare::wanted_by_update(&update);
        self.inner
            .change(wanted, |control, now, out| {
                control.apply_update(&update, now, out)?;
                Ok(DeviceUpdate {
                    listen_port: update.listen_port,
                    fwmark: update.fwmark,
                    ..DeviceUpdate::default()
                })
            })
            .await
    }

    /// Bounds make-before-break: after a peer's preshared key changes, its previous key keeps
    /// carrying traffic only until the new one completes a handshake, or for `limit`,
    /// whichever comes first; then the previous session is dropped and the peer waits for
    /// the new key. `None` (the default) sets no bound. Applies to key changes from now on;
    /// one already under way keeps its deadline.
    pub fn set_key_handover(&self, limit: Option<Duration>) {
        self.inner.control.lock().key_handover = limit;
    }

    /// The current status of the device and its peers.
    pub fn status(&self) -> DeviceStatus {
        self.inner.control.lock().status(&self.inner.name)
    }

    /// Packet counters summed over every worker.
    pub fn counters(&self) -> CounterTotals {
        let mut total = CounterTotals::default();
        for c in self.inner.counters.lock().iter() {
            c.add_to(&mut total);
        }
        total
    }

    /// The STUN responses the device's sockets receive, for the one STUN client; `None`
    /// after the first call. Until taken (or when the client falls behind), responses beyond
    /// [`stun::STUN_QUEUE`] are dropped.
    pub fn take_stun_responses(&self) -> Option<tokio::sync::mpsc::Receiver<StunDatagram>> {
        self.inner.stun_responses.lock().take()
    }

    /// Sends one datagram (a STUN request) from the device's socket for `dest`'s address
    /// family, so that it leaves with the same source address and port as WireGuard's.
    pub async fn send_datagram(&self, dest: SocketAddr, datagram: &[u8]) -> io::Result<()> {
        let sockets = self.inner.sockets.load_full();
        let socket = sockets.for_dest(&dest).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!("no socket for the address family of {dest}"),
            )
        })?;
        socket.send(dest, datagram, datagram.len()).await
    }

    /// Publishes the peers reachable through the relay (`None`: no allocation); the packet
    /// path uses the new table from its next batch.
    pub fn set_relay_routes(&self, routes: Option<RelayRoutes>) {
        let ip = routes.as_ref().map(|r| r.server.ip());
        if self.inner.relay.load().as_ref().map(|r| r.server.ip()) != ip {
            self.inner.control.lock().set_relay_ip(ip);
        }
        self.inner.relay.store(routes.map(Arc::new));
    }

    /// The relay confirmed that `ips` may send to this node's relayed address: every silent
    /// peer with a candidate at one of them gets a fresh initiation now, as the copies it
    /// was sent before were dropped by the relay.
    pub async fn retry_through_relay(&self, ips: &[std::net::IpAddr]) {
        let snap = self.inner.snapshot.load_full();
        for batch in initiate::retries_through_relay(&snap.peers, ips, Instant::now()) {
            self.inner.send(&batch).await;
        }
    }

    /// The datagrams for relayed peers that have no channel yet, for the one relay task;
    /// `None` after the first call. Beyond [`RELAY_OUTBOX`] waiting, more are dropped.
    pub fn take_relay_outbox(&self) -> Option<tokio::sync::mpsc::Receiver<RelayOut>> {
        self.inner.relay_outbox_rx.lock().take()
    }

    /// Handles one datagram that reached the device another way than its sockets (a peer's
    /// datagram the relay task unwrapped), as the receive workers handle theirs: `src` is
    /// the slot's relayed endpoint.
    pub async fn receive_datagram(&self, src: SocketAddr, datagram: &[u8]) {
        tasks::receive_one(&self.inner, src, datagram).await;
    }

    /// Waits until a worker fails for good (the tun device went away, say) and returns why.
    pub async fn failed(&self) -> String {
        let mut rx = self.inner.fatal.subscribe();
        loop {
            if let Some(reason) = rx.borrow_and_update().clone() {
                return reason;
            }
            if rx.changed().await.is_err() {
                return "device stopped".to_owned();
            }
        }
    }

    /// Stops every task and drops every session.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        for task in self.inner.receivers.lock().drain(..) {
            task.abort();
        }
        self.inner.control.lock().clear_peers(Instant::now());
    }
}

impl<T: TunIo, F: UdpFactory> Drop for Device<T, F> {
    fn drop(&mut self) {
        self.stop();
    }
}

impl<T: TunIo, F: UdpFactory> Inner<T, F> {
    /// Runs a control change, rebinds or re-marks the sockets if the returned update asks
    /// for it, publishes the new snapshot and sends what the change produced. The `Tunn`s
    /// for the `(peer, preshared key)` pairs in `wanted` are built first, outside the control
    /// lock. The handshake initiations it made due are sent before it returns, unless there
    /// are many ([`prepare::PARALLEL_FROM`] or more new `Tunn`s): those go out right after,
    /// from a task of their own.
    async fn change(
        self: &Arc<Self>,
        wanted: Vec<(
            meshtun_proto::PublicKey,
            Option<meshtun_proto::PresharedKey>,
        )>,
        f: impl FnOnce(&mut Control, Instant, &mut DatagramBatch) -> Result<DeviceUpdate, DeviceError>,
    ) -> Result<(), DeviceError> {
        let large = wanted.len() >= prepare::PARALLEL_FROM;
        let prepared = self.prepare_off_workers(wanted).await;
        let mut out = DatagramBatch::new(BATCH, self.mtu + 64);
        let result = {
            let mut control = self.control.lock();
            let now = Instant::now();
            control.use_prepared(prepared);
            let result =
                f(&mut control, now, &mut out).and_then(|net| self.apply_net(&mut control, &net));
            control.finish_change(now);
            self.snapshot.store(Arc::new(control.snapshot()));
            result
        };
        self.send(&out).await;
        if !large {
            self.initiate_pending(&mut out).await;
            return result;
        }
        // The change is in force: a large one's initiations (an epoch's rotation: some 50 µs
        // each) go out from a task of their own, so that the caller (the daemon's routes,
        // a deny's cut-off) need not wait for them. Then the replaced `Tunn`s are gone (those
        // of peers in a rotation retire later), and their memory goes back.
        let inner = self.clone();
        tokio::spawn(async move {
            inner.initiate_pending(&mut out).await;
            let _ = tokio::task::spawn_blocking(prepare::give_back_freed_memory).await;
        });
        result
    }

    /// Builds `Tunn`s for the `(peer, preshared key)` pairs in `wanted`, outside the control
    /// lock (which it takes only to read the key).
    fn prepare(
        &self,
        wanted: Vec<(
            meshtun_proto::PublicKey,
            Option<meshtun_proto::PresharedKey>,
        )>,
    ) -> Prepared {
        if wanted.is_empty() {
            return Prepared::default();
        }
        let Some(maker) = self.control.lock().slot_maker() else {
            return Prepared::default();
        };
        Prepared::make(&maker, wanted, Instant::now())
    }

    /// Like [`prepare`](Self::prepare), but many `Tunn`s (an epoch's bundle) are built on
    /// every core, on tokio's blocking pool, so that the workers carrying the packet path
    /// never wait for them.
    async fn prepare_off_workers(
        &self,
        wanted: Vec<(
            meshtun_proto::PublicKey,
            Option<meshtun_proto::PresharedKey>,
        )>,
    ) -> Prepared {
        if wanted.len() < prepare::PARALLEL_FROM {
            return self.prepare(wanted);
        }
        let Some(maker) = self.control.lock().slot_maker() else {
            return Prepared::default();
        };
        let threads = prepare_threads();
        let build = move || Prepared::make_parallel(&maker, &wanted, Instant::now(), threads);
        match tokio::task::spawn_blocking(build).await {
            Ok(prepared) => prepared,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            // The runtime is shutting down: the change builds its own `Tunn`s.
            Err(_) => Prepared::default(),
        }
    }

    /// Sends the handshake initiation of every peer whose new preshared key is waiting for
    /// one, a batch at a time, whatever their number. The control lock is taken only to pick
    /// the peers; each peer's lock only to write its initiation. A few are written here into
    /// `out` (cleared first); many (an epoch's rotation) on every core, on tokio's blocking
    /// pool, so that the workers carrying the packet path never wait for them.
    async fn initiate_pending(&self, out: &mut DatagramBatch) {
        loop {
            out.clear();
            let peers = self.control.lock().take_pending(MAX_INITIATIONS_AT_ONCE);
            if peers.is_empty() {
                return;
            }
            if peers.len() < prepare::PARALLEL_FROM {
                for batch in initiate::initiations(&peers, Instant::now()) {
                    self.send(&batch).await;
                }
                continue;
            }
            let threads = prepare_threads();
            let write = move || initiate::initiations_parallel(&peers, Instant::now(), threads);
            let batches = match tokio::task::spawn_blocking(write).await {
                Ok(batches) => batches,
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                // The runtime is shutting down.
                Err(_) => return,
            };
            for batch in &batches {
                self.send(batch).await;
            }
        }
    }

    /// Applies a listen-port or fwmark change to the sockets.
    fn apply_net(
        self: &Arc<Self>,
        control: &mut Control,
        net: &DeviceUpdate,
    ) -> Result<(), DeviceError> {
        if let Some(mark) = net.fwmark {
            if mark != control.fwmark {
                let sockets = self.sockets.load();
                for s in sockets.v4.iter().chain(sockets.v6.iter()) {
                    s.set_fwmark(mark)
                        .map_err(|source| DeviceError::Fwmark { mark, source })?;
                }
                control.fwmark = mark;
            }
        }
        if let Some(port) = net.listen_port {
            // Port 0 asks for "any": keep the one we have.
            if port != 0 && port != control.listen_port {
                let mark = (control.fwmark != 0).then_some(control.fwmark);
                let sockets = self
                    .factory
                    .bind(port, mark)
                    .map_err(|source| DeviceError::Bind { port, source })?;
                control.listen_port = sockets.port;
                self.sockets.store(Arc::new(sockets));
                self.spawn_receivers();
            }
        }
        Ok(())
    }

    /// (Re)starts one receive worker per socket.
    fn spawn_receivers(self: &Arc<Self>) {
        let sockets = self.sockets.load_full();
        let mut receivers = self.receivers.lock();
        for task in receivers.drain(..) {
            task.abort();
        }
        // Each receive worker writes through its own lane, so that two of them never wait
        // for each other's coalescing table.
        let lanes = self.tun.lanes().max(1);
        for (k, socket) in sockets.v4.iter().chain(sockets.v6.iter()).enumerate() {
            receivers.push(tokio::spawn(tasks::receive_worker(
                self.clone(),
                socket.clone(),
                k % lanes,
            )));
        }
    }

    /// A fresh counter set for a new worker.
    fn new_counters(&self) -> Arc<Counters> {
        let c = Arc::new(Counters::default());
        self.counters.lock().push(c.clone());
        c
    }

    /// Sends every datagram in `out` through the socket for its address family.
    async fn send(&self, out: &DatagramBatch) {
        if out.is_empty() {
            return;
        }
        let sockets = self.sockets.load_full();
        let max = sockets
            .v4
            .as_ref()
            .or(sockets.v6.as_ref())
            .map_or(1, |s| s.max_segments());
        let mut framed = Vec::new();
        for (dest, bytes, seg) in out.runs(max) {
            if let Some(slot) = relayed::relayed_slot(&dest) {
                self.send_relayed(&sockets, slot, bytes, seg, &mut framed)
                    .await;
                continue;
            }
            let Some(socket) = sockets.for_dest(&dest) else {
                tracing::debug!(%dest, "no socket for this address family; datagram dropped");
                continue;
            };
            if let Err(error) = socket.send(dest, bytes, seg).await {
                if bytes.len() <= seg {
                    tracing::debug!(%dest, %error, "send failed; datagram dropped");
                    continue;
                }
                // The segmented send was refused: fall back to one datagram at a time.
                tracing::debug!(%dest, %error, "segmented send failed; sending one by one");
                for datagram in bytes.chunks(seg) {
                    if let Err(error) = socket.send(dest, datagram, datagram.len()).await {
                        tracing::debug!(%dest, %error, "send failed; datagram dropped");
                    }
                }
            }
        }
    }

    /// Sends a run of datagrams to the relayed peer of `slot`: as ChannelData to the relay
    /// server once the channel is bound, through the relay task before.
    async fn send_relayed(
        &self,
        sockets: &UdpSockets<F::Socket>,
        slot: u16,
        bytes: &[u8],
        seg: usize,
        framed: &mut Vec<u8>,
    ) {
        let Some(routes) = self.relay.load_full() else {
            return;
        };
        let Some(route) = routes.route(slot) else {
            return;
        };
        let Some(channel) = route.channel else {
            for datagram in bytes.chunks(seg.max(1)) {
                let _ = self.relay_outbox.try_send((route.peer, datagram.to_vec()));
            }
            return;
        };
        let Some(socket) = sockets.for_dest(&routes.server) else {
            return;
        };
        // Framing adds 4 bytes a segment: keep each send within the offload limit.
        let framed_seg = seg + relayed::CHANNEL_HEADER;
        let per_send = (transport::MAX_SEGMENTED_BYTES / framed_seg).max(1) * seg.max(1);
        for part in bytes.chunks(per_send) {
            relayed::frame_run(channel, part, seg, framed);
            if let Err(error) = socket.send(routes.server, framed, framed_seg).await {
                tracing::debug!(server = %routes.server, %error, "relayed send failed; sending one by one");
                for datagram in framed.chunks(framed_seg) {
                    let _ = socket.send(routes.server, datagram, datagram.len()).await;
                }
            }
        }
    }
}
