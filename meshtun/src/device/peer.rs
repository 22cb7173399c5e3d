//! One peer: its WireGuard state machines, endpoint, counters and timers.
//!
//! A peer holds up to three boringtun `Tunn`s, each with its own session index:
//! - `active` carries traffic;
//! - `next` holds a new preshared key and handshakes while `active` keeps carrying traffic;
//!   once a session on it is confirmed it becomes `active` (make-before-break);
//! - `retiring` is the previous `active`, kept only to decrypt packets still in flight, and
//!   never ticked, so it can never rekey with an old key.
//!
//! Everything here is synchronous and does no I/O: datagrams to send go into a
//! [`DatagramBatch`], decrypted packets into a caller-provided buffer.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519;
use ipnet::IpNet;
use meshtun_proto::{PresharedKey, PrivateKey, PublicKey};

use super::noise::{Opened, StaticShared, Tai64n};
use super::queue::{QueueBudget, Queued};
use super::transport::DatagramBatch;

/// How long a retired `Tunn` keeps decrypting packets still in flight.
pub const RETIRE_AFTER: Duration = Duration::from_secs(15);

/// How long `next` may handshake, from its first initiation, before it is abandoned:
/// WireGuard's REKEY_ATTEMPT_TIME, after which boringtun's `Tunn` also gives up. Counted here
/// on the device's clock (`now`), which tests can drive; boringtun reads its own.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(90);

/// Which of a peer's `Tunn`s a session index belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotKind {
    /// The one carrying traffic.
    Active,
    /// The one handshaking with a new preshared key.
    Next,
    /// The previous one, decrypt-only.
    Retiring,
}

/// One `Tunn` and what we track about it.
pub struct Slot {
    /// Boxed: a `Tunn` is large, and slots move (prepared, installed, retired).
    tunn: Box<Tunn>,
    index: u32,
    psk: Option<PresharedKey>,
    /// Full 32-bit receiver index of the newest session a packet arrived on.
    confirmed_session: Option<u32>,
    /// Made for a new preshared key, and its first initiation is not sent yet.
    due: bool,
    /// When its first initiation with a new preshared key went out.
    initiated: Option<Instant>,
    /// What the packets the `Tunn` queued before its handshake hold of the device's budget.
    queued: Queued,
}

impl Slot {
    /// A new `Tunn` for `peer` under `index`, with our own keepalive handling, sharing the
    /// device's `Tunn` rate limiter `limiter` (see
    /// [`Identity::tunn_limiter`](super::snapshot::Identity::tunn_limiter)) and queue budget
    /// `budget`.
    pub fn new(
        private: &PrivateKey,
        peer: &PublicKey,
        psk: Option<PresharedKey>,
        index: u32,
        limiter: Arc<RateLimiter>,
        budget: Arc<QueueBudget>,
    ) -> Self {
        let tunn = Box::new(Tunn::new(
            private.to_static_secret(),
            x25519::PublicKey::from(*peer.as_bytes()),
            psk.as_ref().map(|k| *k.as_bytes()),
            None,
            index,
            Some(limiter),
        ));
        Self {
            tunn,
            index,
            psk,
            confirmed_session: None,
            due: false,
            initiated: None,
            queued: Queued::new(budget),
        }
    }

    /// The slot's 24-bit session index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The preshared key the `Tunn` was made with.
    pub fn psk(&self) -> &Option<PresharedKey> {
        &self.psk
    }

    /// True if the `Tunn` has a session that can encrypt.
    fn has_session(&self) -> bool {
        self.tunn.time_since_last_handshake().is_some()
    }

    /// True if its handshake was given up: by boringtun, or [`GIVE_UP_AFTER`] after the
    /// first initiation.
    fn gave_up(&self, now: Instant) -> bool {
        self.tunn.is_expired()
            || self
                .initiated
                .is_some_and(|at| now.saturating_duration_since(at) >= GIVE_UP_AFTER)
    }
}

/// What became of a decrypted datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// An IP packet of this many bytes, from this inner source, is in the buffer.
    Packet(usize, IpAddr),
    /// A keepalive or handshake message: nothing for the host.
    Control,
    /// The datagram was not accepted.
    Dropped(DropReason),
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The peer has been removed, or has no key to talk with.
    NoTunnel,
    /// No endpoint is known for the peer, so nothing can be sent.
    NoEndpoint,
    /// The datagram did not authenticate or was a replay.
    Invalid,
    /// The output batch is full; retry after flushing it.
    Full,
    /// The peer has no session yet and the device's budget for queued packets is spent.
    QueueFull,
}

/// The mutable state of a peer, behind its lock.
pub struct PeerState {
    active: Option<Slot>,
    next: Option<Slot>,
    retiring: Option<(Slot, Instant)>,
    /// The preshared key the configuration asks for.
    pub psk: Option<PresharedKey>,
    /// Where datagrams go; follows the last authenticated packet.
    pub endpoint: Option<SocketAddr>,
    /// When `endpoint` last changed (wall clock), for `meshtun show`.
    pub endpoint_since: Option<SystemTime>,
    /// Persistent keepalive interval in seconds.
    pub keepalive: Option<u16>,
    /// Further candidate endpoints, probed with copies of the initiations while the peer is
    /// silent (see [`PROBE_INTERVAL`](super::PROBE_INTERVAL)).
    pub probes: Vec<SocketAddr>,
    /// When the candidates were last probed.
    probed_at: Option<Instant>,
    /// When an authenticated packet last came from a direct (not relayed) address.
    direct_heard: Option<Instant>,
    /// When the direct candidates of a relayed peer were last probed.
    direct_probed_at: Option<Instant>,
    /// The IP address of this device's TURN relay: an endpoint there (a peer's relayed
    /// address) is a path through the relay, as is a relayed endpoint.
    pub relay_ip: Option<IpAddr>,
    /// When the peer last sent something authenticated.
    last_received: Option<Instant>,
    /// The peer's allowed IPs, in configuration order.
    pub allowed_ips: Vec<IpNet>,
    /// Wall-clock time of the last confirmed handshake.
    pub last_handshake: Option<SystemTime>,
    /// Datagram bytes received from the peer.
    pub rx_bytes: u64,
    /// Datagram bytes sent to the peer.
    pub tx_bytes: u64,
    last_sent: Option<Instant>,
    /// Queued packets could not all be flushed after a handshake.
    pending_flush: bool,
    /// Session indices dropped on the packet path, to be returned to the index table.
    released: Vec<u32>,
    /// When the active `Tunn`'s preshared key stops carrying traffic if `next` has not
    /// completed a handshake by then.
    handover_deadline: Option<Instant>,
    /// The peer has been removed from the device.
    pub removed: bool,
    /// The secret that authenticates this peer's initiations to us; computed at the first.
    static_shared: Option<StaticShared>,
    /// The timestamp of the newest initiation any of this peer's `Tunn`s accepted. Each new
    /// `Tunn` starts from zero; this carries replay protection across preshared-key changes.
    pub newest_initiation: Option<Tai64n>,
}

/// A handshake initiation from a known peer, its claimed sender read.
pub struct Initiation<'a> {
    /// Where it came from.
    pub src: SocketAddr,
    /// The datagram.
    pub datagram: &'a [u8],
    /// What the responder read of it.
    pub opened: &'a Opened,
    /// Our private key.
    pub ours: &'a x25519::StaticSecret,
    /// The peer's public key.
    pub peer: &'a PublicKey,
}

impl PeerState {
    /// State for a new peer; it gets a `Tunn` through [`install_active`](Self::install_active).
    pub fn new(
        psk: Option<PresharedKey>,
        endpoint: Option<SocketAddr>,
        keepalive: Option<u16>,
        allowed_ips: Vec<IpNet>,
    ) -> Self {
        Self {
            active: None,
            next: None,
            retiring: None,
            psk,
            endpoint_since: endpoint.map(|_| SystemTime::now()),
            endpoint,
            keepalive: keepalive.filter(|k| *k > 0),
            probes: Vec::new(),
            probed_at: None,
            direct_heard: None,
            direct_probed_at: None,
            relay_ip: None,
            last_received: None,
            allowed_ips,
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
            last_sent: None,
            pending_flush: false,
            released: Vec::new(),
            handover_deadline: None,
            removed: false,
            static_shared: None,
            newest_initiation: None,
        }
    }

    /// The session indices of every live `Tunn`.
    pub fn indices(&self) -> impl Iterator<Item = u32> + '_ {
        let a = self.active.as_ref().map(Slot::index);
        let n = self.next.as_ref().map(Slot::index);
        let r = self.retiring.as_ref().map(|(s, _)| s.index());
        a.into_iter().chain(n).chain(r)
    }

    /// Which slot owns `index`.
    pub fn slot_of(&self, index: u32) -> Option<SlotKind> {
        if self.active.as_ref().is_some_and(|s| s.index == index) {
            Some(SlotKind::Active)
        } else if self.next.as_ref().is_some_and(|s| s.index == index) {
            Some(SlotKind::Next)
        } else if self
            .retiring
            .as_ref()
            .is_some_and(|(s, _)| s.index == index)
        {
            Some(SlotKind::Retiring)
        } else {
            None
        }
    }

    /// True while a new preshared key is handshaking beside the active session.
    pub fn has_next(&self) -> bool {
        self.next.is_some()
    }

    /// Replaces every `Tunn` with `slot` (new peer, new private key). Returns the indices
    /// dropped.
    pub fn install_active(&mut self, slot: Slot) -> Vec<u32> {
        // A new private key means a new static-static secret.
        self.static_shared = None;
        let mut dropped = self.clear_slots();
        dropped.retain(|i| *i != slot.index);
        self.active = Some(slot);
        dropped
    }

    /// Drops every `Tunn` and returns their indices (peer removal, private key removal).
    pub fn clear_slots(&mut self) -> Vec<u32> {
        let mut dropped: Vec<u32> = self.indices().collect();
        dropped.append(&mut self.released);
        self.active = None;
        self.next = None;
        self.retiring = None;
        self.handover_deadline = None;
        dropped
    }

    /// Starts using the preshared key of `slot`, make-before-break. If the active `Tunn` has
    /// no session yet it is simply replaced; otherwise `slot` becomes `next` and handshakes
    /// beside it, and the active one carries traffic until `next` is confirmed or until
    /// `deadline`, if any (an earlier deadline from a change still under way stays).
    /// Returns the indices dropped. The caller sends an initiation with
    /// [`initiate_next`](Self::initiate_next); [`tick`](Self::tick) sends it otherwise.
    pub fn begin_rekey(&mut self, mut slot: Slot, deadline: Option<Instant>) -> Vec<u32> {
        slot.due = true;
        let mut dropped = Vec::new();
        match &self.active {
            Some(active) if active.has_session() => {
                if let Some(old) = self.next.replace(slot) {
                    dropped.push(old.index);
                }
                self.handover_deadline = self.handover_deadline.or(deadline);
            }
            _ => {
                if let Some(old) = self.active.replace(slot) {
                    dropped.push(old.index);
                }
                if let Some(old) = self.next.take() {
                    dropped.push(old.index);
                }
                self.handover_deadline = None;
            }
        }
        dropped
    }

    /// True if the configured key differs from the one the live `Tunn`s use.
    pub fn needs_rekey(&self) -> bool {
        let target = self.next.as_ref().or(self.active.as_ref());
        target.is_some_and(|s| s.psk != self.psk)
    }

    /// Sends a handshake initiation with the newly configured key: on `next`, or on
    /// `active` when it had no session and was simply replaced. Needs an endpoint and room
    /// in `out`; without them the initiation stays due.
    pub fn initiate_next(&mut self, out: &mut DatagramBatch, now: Instant) {
        let slot = match self.next.as_mut() {
            Some(next) => Some(next),
            None => self.active.as_mut().filter(|a| !a.has_session()),
        };
        let (Some(endpoint), Some(slot)) = (self.endpoint, slot) else {
            return;
        };
        let Some(space) = out.space_max() else {
            return;
        };
        match slot.tunn.format_handshake_initiation(space, false) {
            TunnResult::WriteToNetwork(p) => {
                let len = p.len();
                slot.due = false;
                slot.initiated.get_or_insert(now);
                out.commit(endpoint, len);
                self.note_sent(len, now);
                self.probe(out, now);
            }
            // A handshake is already under way.
            TunnResult::Done => slot.due = false,
            _ => {}
        }
    }

    /// True if a `Tunn` made for a new preshared key has not sent its first initiation.
    fn initiation_due(&self) -> bool {
        let slot = match &self.next {
            Some(next) => Some(next),
            None => self.active.as_ref().filter(|a| !a.has_session()),
        };
        slot.is_some_and(|s| s.due)
    }

    fn note_sent(&mut self, len: usize, now: Instant) {
        self.tx_bytes += len as u64;
        self.last_sent = Some(now);
    }

    /// Sets the further candidates: each address once, at most [`MAX_PROBES`].
    /// New candidates are probed at the next tick if the path is relayed.
    pub fn set_probes(&mut self, probes: &[SocketAddr]) {
        let old = std::mem::take(&mut self.probes);
        for addr in probes {
            if self.probes.len() < MAX_PROBES && !self.probes.contains(addr) {
                self.probes.push(*addr);
            }
        }
        if old != self.probes {
            self.direct_probed_at = None;
        }
    }

    /// Copies the initiation just committed to `out` to every further candidate, if the
    /// peer has been silent for [`SILENT_AFTER`](super::SILENT_AFTER) and the candidates were
    /// not probed in the last [`PROBE_INTERVAL`](super::PROBE_INTERVAL).
    fn probe(&mut self, out: &mut DatagramBatch, now: Instant) {
        let since =
            |t: Option<Instant>, limit| t.is_some_and(|t| now.saturating_duration_since(t) < limit);
        if self.probes.is_empty()
            || since(self.last_received, super::SILENT_AFTER)
            || since(self.probed_at, super::PROBE_INTERVAL)
        {
            return;
        }
        self.probed_at = Some(now);
        let mut sent = 0;
        for addr in self.probes.iter().filter(|a| Some(**a) != self.endpoint) {
            if !out.repeat_last(*addr) {
                break;
            }
            sent += HANDSHAKE_INIT_LEN;
        }
        self.tx_bytes += sent as u64;
    }

    /// Encrypts one IP packet for this peer into `out`.
    pub fn encapsulate(
        &mut self,
        packet: &[u8],
        out: &mut DatagramBatch,
        now: Instant,
    ) -> Result<(), DropReason> {
        let endpoint = self.endpoint.ok_or(DropReason::NoEndpoint)?;
        let slot = self.active.as_mut().ok_or(DropReason::NoTunnel)?;
        let need = (packet.len() + 32).max(148);
        let space = out.space(need).ok_or(DropReason::Full)?;
        // Without a session the `Tunn` keeps a copy until its handshake completes.
        if !slot.has_session() && !slot.queued.charge(packet.len()) {
            if let TunnResult::WriteToNetwork(p) =
                slot.tunn.format_handshake_initiation(space, false)
            {
                let len = p.len();
                out.commit(endpoint, len);
                self.note_sent(len, now);
                self.probe(out, now);
            }
            return Err(DropReason::QueueFull);
        }
        match slot.tunn.encapsulate(packet, space) {
            TunnResult::WriteToNetwork(p) => {
                let (len, initiation) = (p.len(), is_initiation(p));
                out.commit(endpoint, len);
                self.note_sent(len, now);
                if initiation {
                    self.probe(out, now);
                }
                Ok(())
            }
            // Queued until the handshake completes.
            TunnResult::Done => Ok(()),
            _ => Err(DropReason::Invalid),
        }
    }

    /// Handles a handshake initiation: the active `Tunn` answers, and so does `next` if
    /// present, so that the handshake completes whichever preshared key the peer holds (the
    /// initiator discards the response it cannot authenticate).
    ///
    /// First its timestamp must decrypt with the secret only the peer shares with us (a
    /// forgery that merely claims the peer's key stops here) and be newer than any this peer
    /// sent before, whichever `Tunn` accepted it. Only a `Tunn` that authenticated the
    /// initiation answers with a handshake response; only then does the endpoint move.
    pub fn handle_initiation(
        &mut self,
        init: &Initiation,
        out: &mut DatagramBatch,
        now: Instant,
    ) -> Result<(), DropReason> {
        let shared = self
            .static_shared
            .get_or_insert_with(|| StaticShared::new(init.ours, init.peer));
        let stamp = init.opened.timestamp(shared).ok_or(DropReason::Invalid)?;
        if self.newest_initiation.is_some_and(|newest| stamp <= newest) {
            return Err(DropReason::Invalid);
        }
        let (src, datagram) = (init.src, init.datagram);
        let active = self.active.as_mut().ok_or(DropReason::NoTunnel)?;
        let mut sent = respond(active, src, datagram, out)?.unwrap_or(0);
        if let Some(next) = self.next.as_mut() {
            if let Ok(Some(len)) = respond(next, src, datagram, out) {
                sent += len;
            }
        }
        if sent == 0 {
            return Err(DropReason::Invalid);
        }
        self.newest_initiation = Some(stamp);
        self.note_sent(sent, now);
        self.rx_bytes += datagram.len() as u64;
        self.roam(src, now);
        self.last_received = Some(now);
        self.flush_queue(SlotKind::Active, out, now);
        Ok(())
    }

    /// Handles a handshake response or cookie reply addressed to the `Tunn` of `kind`.
    ///
    /// A response that completes our handshake (boringtun then sends a keepalive on the new
    /// session) confirms the session and moves the endpoint. A cookie reply only gives the
    /// `Tunn` a cookie for its next initiation: it proves nothing about its sender, so the
    /// endpoint stays.
    pub fn handle_reply(
        &mut self,
        kind: SlotKind,
        src: SocketAddr,
        datagram: &[u8],
        out: &mut DatagramBatch,
        now: Instant,
    ) -> Result<(), DropReason> {
        let slot = self.slot_mut(kind).ok_or(DropReason::NoTunnel)?;
        let space = out.space_max().ok_or(DropReason::Full)?;
        let response = datagram.first() == Some(&HANDSHAKE_RESPONSE);
        match slot.tunn.decapsulate(Some(src.ip()), datagram, space) {
            TunnResult::WriteToNetwork(p) if response && is_data(p) => {
                let len = p.len();
                slot.confirmed_session = read_u32(datagram, 8);
                out.commit(src, len);
                self.note_sent(len, now);
                self.handshake_confirmed(kind, now);
            }
            TunnResult::Done if !response => return Ok(()),
            _ => return Err(DropReason::Invalid),
        }
        self.rx_bytes += datagram.len() as u64;
        self.roam(src, now);
        self.last_received = Some(now);
        let kind = if kind == SlotKind::Next {
            SlotKind::Active
        } else {
            kind
        };
        self.flush_queue(kind, out, now);
        Ok(())
    }

    /// Decrypts a data datagram addressed to the `Tunn` of `kind` into `dst`, which must be at
    /// least as long as the datagram.
    pub fn decapsulate(
        &mut self,
        kind: SlotKind,
        src: SocketAddr,
        datagram: &[u8],
        dst: &mut [u8],
        now: Instant,
    ) -> Received {
        if dst.len() < datagram.len() {
            return Received::Dropped(DropReason::Full);
        }
        let Some(slot) = self.slot_mut(kind) else {
            return Received::Dropped(DropReason::NoTunnel);
        };
        let received = match slot.tunn.decapsulate(Some(src.ip()), datagram, dst) {
            TunnResult::WriteToTunnelV4(p, addr) => Received::Packet(p.len(), IpAddr::V4(addr)),
            TunnResult::WriteToTunnelV6(p, addr) => Received::Packet(p.len(), IpAddr::V6(addr)),
            TunnResult::Done => Received::Control,
            _ => return Received::Dropped(DropReason::Invalid),
        };
        let session = read_u32(datagram, 4);
        if slot.confirmed_session != session {
            slot.confirmed_session = session;
            self.handshake_confirmed(kind, now);
        }
        self.rx_bytes += datagram.len() as u64;
        self.roam(src, now);
        self.last_received = Some(now);
        received
    }

    /// A session on `kind` is confirmed: record the handshake, and promote `next`.
    fn handshake_confirmed(&mut self, kind: SlotKind, now: Instant) {
        self.last_handshake = Some(SystemTime::now());
        if kind != SlotKind::Next {
            return;
        }
        let Some(next) = self.next.take() else {
            return;
        };
        self.handover_deadline = None;
        if let Some(old) = self.active.replace(next) {
            if let Some((gone, _)) = self.retiring.replace((old, now + RETIRE_AFTER)) {
                self.released.push(gone.index);
            }
        }
        tracing::debug!("new session confirmed; previous key retired");
    }

    /// After a handshake, sends the packets boringtun queued while it waited.
    fn flush_queue(&mut self, kind: SlotKind, out: &mut DatagramBatch, now: Instant) {
        let Some(endpoint) = self.endpoint else {
            return;
        };
        let mut sent = 0;
        let mut done = true;
        // Without a session nothing can go; boringtun would queue each packet again.
        if let Some(slot) = self.slot_mut(kind).filter(|s| s.has_session()) {
            done = false;
            while let Some(space) = out.space_max() {
                match slot.tunn.decapsulate(None, &[], space) {
                    TunnResult::WriteToNetwork(p) => {
                        let len = p.len();
                        out.commit(endpoint, len);
                        slot.queued.sent_one(len);
                        sent += len;
                    }
                    _ => {
                        slot.queued.emptied();
                        done = true;
                        break;
                    }
                }
            }
        }
        self.pending_flush = !done;
        if sent > 0 {
            self.note_sent(sent, now);
        }
    }

    /// Runs the WireGuard timers: handshake retries, rekeys, keepalives, retirement.
    /// Returns the indices released.
    pub fn tick(&mut self, out: &mut DatagramBatch, now: Instant) -> Vec<u32> {
        if self.pending_flush {
            self.flush_queue(SlotKind::Active, out, now);
        }
        let mut released = std::mem::take(&mut self.released);
        if let Some((slot, deadline)) = &self.retiring {
            if now >= *deadline {
                released.push(slot.index);
                self.retiring = None;
            }
        }
        if self
            .handover_deadline
            .is_some_and(|deadline| now >= deadline)
        {
            released.extend(self.end_handover());
        }
        if self.initiation_due() {
            self.initiate_next(out, now);
        }
        self.tick_slot(SlotKind::Active, out, now);
        self.tick_slot(SlotKind::Next, out, now);
        if self.next.as_ref().is_some_and(|s| s.gave_up(now)) {
            // The peer never answered with the new key; `active` is untouched and the caller
            // starts a fresh attempt.
            if let Some(next) = self.next.take() {
                released.push(next.index);
            }
        }
        self.persistent_keepalive(out, now);
        self.probe_direct(out, now);
        released
    }

    /// The handover deadline passed with `next` still unconfirmed: the previous key's
    /// session ends, and `next` becomes the active `Tunn` (it keeps handshaking). Returns
    /// the index dropped.
    fn end_handover(&mut self) -> Option<u32> {
        let next = self.next.take()?;
        self.handover_deadline = None;
        tracing::debug!("the previous preshared key reached its deadline; its session is dropped");
        self.active.replace(next).map(|old| old.index)
    }

    fn tick_slot(&mut self, kind: SlotKind, out: &mut DatagramBatch, now: Instant) {
        let endpoint = self.endpoint;
        let Some(slot) = self.slot_mut(kind) else {
            return;
        };
        let Some(space) = out.space_max() else {
            return;
        };
        match slot.tunn.update_timers(space) {
            TunnResult::WriteToNetwork(p) => {
                let (len, initiation) = (p.len(), is_initiation(p));
                if let Some(endpoint) = endpoint {
                    out.commit(endpoint, len);
                    self.note_sent(len, now);
                    if initiation {
                        self.probe(out, now);
                    }
                }
            }
            // The handshake gave up: boringtun dropped the queued packets.
            TunnResult::Err(WireGuardError::ConnectionExpired) => slot.queued.emptied(),
            _ => {}
        }
    }

    fn persistent_keepalive(&mut self, out: &mut DatagramBatch, now: Instant) {
        let Some(interval) = self.keepalive else {
            return;
        };
        let due = self.last_sent.is_none_or(|t| {
            now.saturating_duration_since(t) >= Duration::from_secs(interval.into())
        });
        if due && self.endpoint.is_some() {
            // An empty packet is a keepalive; with no session it starts a handshake.
            let _ = self.encapsulate(&[], out, now);
            self.last_sent = Some(now);
        }
    }

    /// Sends a keepalive now (as `wg` does when persistent keepalive is switched on).
    pub fn send_keepalive(&mut self, out: &mut DatagramBatch, now: Instant) {
        if self.endpoint.is_some() {
            let _ = self.encapsulate(&[], out, now);
            self.last_sent = Some(now);
        }
    }

    fn slot_mut(&mut self, kind: SlotKind) -> Option<&mut Slot> {
        match kind {
            SlotKind::Active => self.active.as_mut(),
            SlotKind::Next => self.next.as_mut(),
            SlotKind::Retiring => self.retiring.as_mut().map(|(s, _)| s),
        }
    }
}

/// The most further candidates a peer is probed at (a bundle lists at most eight
/// candidates, the first being the endpoint).
pub const MAX_PROBES: usize = 7;

/// The message type of a handshake initiation.
const HANDSHAKE_INIT: u8 = 1;
/// Length of a handshake initiation.
const HANDSHAKE_INIT_LEN: usize = 148;
/// The message type of a handshake response.
const HANDSHAKE_RESPONSE: u8 = 2;
/// Length of a handshake response.
const RESPONSE_LEN: usize = 92;
/// The message type of a transport data message.
const DATA: u8 = 4;
/// Length of a keepalive, the shortest data message.
const KEEPALIVE_LEN: usize = 32;

/// True if `p` is a handshake initiation.
fn is_initiation(p: &[u8]) -> bool {
    p.len() == HANDSHAKE_INIT_LEN && p.first() == Some(&HANDSHAKE_INIT)
}

/// True if `p` is a handshake response: what a `Tunn` sends only after it authenticated an
/// initiation.
fn is_response(p: &[u8]) -> bool {
    p.len() == RESPONSE_LEN && p.first() == Some(&HANDSHAKE_RESPONSE)
}

/// True if `p` is a data message: after a handshake response, the keepalive a `Tunn` sends
/// only once it authenticated the response.
fn is_data(p: &[u8]) -> bool {
    p.len() >= KEEPALIVE_LEN && p.first() == Some(&DATA)
}

/// Feeds an initiation to `slot`. Returns the length of the handshake response it committed
/// to `out`, if it answered with one; anything else a `Tunn` might write is dropped.
fn respond(
    slot: &mut Slot,
    src: SocketAddr,
    datagram: &[u8],
    out: &mut DatagramBatch,
) -> Result<Option<usize>, DropReason> {
    let space = out.space_max().ok_or(DropReason::Full)?;
    match slot.tunn.decapsulate(Some(src.ip()), datagram, space) {
        TunnResult::WriteToNetwork(p) if is_response(p) => {
            let len = p.len();
            out.commit(src, len);
            Ok(Some(len))
        }
        TunnResult::Err(WireGuardError::WrongTai64nTimestamp) => Err(DropReason::Invalid),
        _ => Ok(None),
    }
}

/// Reads a little-endian u32 at `offset`, if the datagram is long enough.
fn read_u32(datagram: &[u8], offset: usize) -> Option<u32> {
    let bytes = datagram.get(offset..offset + 4)?;
    Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

pub(super) mod paths;
#[cfg(test)]
mod tests;
