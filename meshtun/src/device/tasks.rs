//! The device's long-running tasks. Each does its I/O here and its packet work in the
//! synchronous functions of [`outbound`](super::outbound), [`inbound`](super::inbound) and
//! [`peer`](super::peer), so that no lock is ever held across an `await`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::inbound::{Inbound, Need};
use super::outbound::encapsulate_batch;
use super::transport::{
    DatagramBatch, PacketBatch, RecvBatch, TunIo, UdpFactory, UdpIo, MAX_PACKET, TUN_HEADROOM,
};
use super::{Inner, BATCH, TICK};
use meshtun_proto::report::Chain;

/// Receive slots per UDP read, and the size of each (a coalesced read can fill 64 KiB, some
/// 45 datagrams of a full-sized tunnel).
const RECV_SLOTS: usize = 16;
const RECV_SLOT_LEN: usize = 65_536;

/// Decrypted packets per tun write batch. Every slot can grow to a 64 KiB coalesced packet,
/// so this bounds the receive worker's memory (64 × 64 KiB); 64 full-sized packets still
/// coalesce into two writes.
const TUN_WRITE_BATCH: usize = 64;

/// Reads packets from one lane of the tun device, encrypts them and sends them to their
/// peers.
pub(super) async fn send_worker<T: TunIo, F: UdpFactory>(inner: Arc<Inner<T, F>>, lane: usize) {
    let counters = inner.new_counters();
    let mut packets = PacketBatch::new(BATCH, inner.mtu, TUN_HEADROOM);
    let mut out = DatagramBatch::new(BATCH, inner.mtu + 64);
    loop {
        crate::supervise::fault_point("send");
        packets.clear();
        if let Err(error) = inner.tun.recv(lane, &mut packets).await {
            let reason = format!("reading from tun device {} failed: {error}", inner.name);
            tracing::error!("{reason}");
            inner.fatal.send_replace(Some(reason));
            return;
        }
        let snap = inner.snapshot.load_full();
        let now = Instant::now();
        let mut next = 0;
        while next < packets.len() {
            out.clear();
            let stopped = encapsulate_batch(&snap, &packets, next, &mut out, &counters, now);
            // An empty batch that still could not take the packet means the packet cannot
            // ever fit: skip it rather than loop.
            next = if stopped == next && out.is_empty() {
                next + 1
            } else {
                stopped
            };
            inner.send(&out).await;
        }
        crate::sched::busy();
    }
}

/// Where a pass over a receive batch stopped.
enum Step {
    /// Every datagram was handled.
    Done,
    /// Flush, then resume at this datagram.
    Flush(usize),
    /// A packet too large for a batch slot is waiting in the big buffer; flush, write it,
    /// then resume at this datagram.
    Big(usize),
}

fn receive_pass(
    mut inbound: Inbound<'_>,
    received: &RecvBatch,
    skip: usize,
    tun: &mut PacketBatch,
    big: &mut PacketBatch,
    out: &mut DatagramBatch,
) -> Step {
    for (k, (src, datagram)) in received.datagrams().enumerate().skip(skip) {
        let big_slot = big.next_slot().unwrap_or_default();
        match inbound.datagram(src, datagram, tun, out, big_slot) {
            (Need::Flush, _) => return Step::Flush(k),
            (Need::Nothing, Some(len)) => {
                big.commit(len);
                return Step::Big(k + 1);
            }
            (Need::Nothing, None) => {}
        }
    }
    Step::Done
}

/// Reads datagrams from one UDP socket, decrypts them and writes the packets to the tun
/// device through `lane`.
pub(super) async fn receive_worker<T: TunIo, F: UdpFactory>(
    inner: Arc<Inner<T, F>>,
    socket: Arc<F::Socket>,
    lane: usize,
) {
    let counters = inner.new_counters();
    let mut received = RecvBatch::new(RECV_SLOTS, RECV_SLOT_LEN);
    let mut tun = PacketBatch::coalescing(TUN_WRITE_BATCH, inner.mtu + 64, TUN_HEADROOM);
    let mut big = PacketBatch::new(1, MAX_PACKET, TUN_HEADROOM);
    let mut out = DatagramBatch::new(64, inner.mtu + 64);
    let mut failures = 0u32;
    loop {
        crate::supervise::fault_point("receive");
        if let Err(error) = socket.recv(&mut received).await {
            failures += 1;
            tracing::debug!(%error, "UDP receive failed");
            // Errors such as ICMP port unreachable are transient; back off if they persist.
            if failures > 8 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            continue;
        }
        failures = 0;
        let snap = inner.snapshot.load_full();
        let relay = inner.relay.load_full();
        let mut skip = 0;
        loop {
            tun.clear();
            big.clear();
            out.clear();
            let inbound = Inbound::new(&snap, Instant::now(), &counters)
                .with_stun(&inner.stun)
                .with_relay(relay.as_deref());
            let step = receive_pass(inbound, &received, skip, &mut tun, &mut big, &mut out);
            write_tun(&inner, lane, &mut tun).await;
            write_tun(&inner, lane, &mut big).await;
            inner.send(&out).await;
            match step {
                Step::Done => break,
                Step::Flush(k) | Step::Big(k) => skip = k,
            }
        }
        crate::sched::busy();
    }
}

/// Handles one datagram that did not come from a socket (the relay task's), writing its
/// packet through lane 0.
pub(super) async fn receive_one<T: TunIo, F: UdpFactory>(
    inner: &Arc<Inner<T, F>>,
    src: std::net::SocketAddr,
    datagram: &[u8],
) {
    let mut tun = PacketBatch::new(1, inner.mtu + 64, TUN_HEADROOM);
    let mut big = PacketBatch::new(1, MAX_PACKET, TUN_HEADROOM);
    let mut out = DatagramBatch::new(4, inner.mtu + 64);
    let snap = inner.snapshot.load_full();
    {
        // The workers' state holds peer locks: done before any await.
        let mut inbound = Inbound::new(&snap, Instant::now(), &inner.slow_counters);
        let big_slot = big.next_slot().unwrap_or_default();
        if let (Need::Nothing, Some(len)) =
            inbound.datagram(src, datagram, &mut tun, &mut out, big_slot)
        {
            big.commit(len);
        }
    }
    write_tun(inner, 0, &mut tun).await;
    write_tun(inner, 0, &mut big).await;
    inner.send(&out).await;
}

async fn write_tun<T: TunIo, F: UdpFactory>(
    inner: &Inner<T, F>,
    lane: usize,
    batch: &mut PacketBatch,
) {
    if batch.is_empty() {
        return;
    }
    if let Err(error) = inner.tun.send(lane, batch).await {
        tracing::debug!(%error, interface = %inner.name, "writing to the tun device failed");
    }
}

/// Ticks every peer's timers, retires old sessions and starts make-before-break rekeys.
pub(super) async fn timer_task<T: TunIo, F: UdpFactory>(inner: Arc<Inner<T, F>>) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out = DatagramBatch::new(BATCH, inner.mtu + 64);
    loop {
        crate::supervise::fault_point("timer");
        interval.tick().await;
        let snap = inner.snapshot.load_full();
        let now = Instant::now();
        let mut released = Vec::new();
        let mut rekey = Vec::new();
        out.clear();
        for peer in &snap.peers {
            {
                let mut state = peer.state.lock();
                if state.removed {
                    continue;
                }
                released.extend(state.tick(&mut out, now));
                if state.needs_rekey() && !state.has_next() {
                    rekey.push(peer.clone());
                }
            }
            if out.remaining() < 4 {
                inner.send(&out).await;
                out.clear();
            }
        }
        if let Some(identity) = &snap.identity {
            identity.limiter.reset_count();
            identity.tunn_limiter.reset_count();
        }
        inner.send(&out).await;
        if !released.is_empty() || !rekey.is_empty() {
            let wanted = rekey
                .iter()
                .map(|peer| (peer.key, peer.state.lock().psk.clone()))
                .collect();
            let prepared = inner.prepare(wanted);
            {
                let mut control = inner.control.lock();
                control.use_prepared(prepared);
                control.release(released, now);
                for peer in &rekey {
                    if let Err(error) = control.rekey_if_needed(peer, now) {
                        tracing::warn!(peer = %peer.key, error = %Chain(&error), "cannot start a new handshake");
                    }
                }
                control.finish_change(now);
                inner.snapshot.store(Arc::new(control.snapshot()));
            }
            inner.initiate_pending(&mut out).await;
        }
    }
}
