//! The handshake initiations of many peers at once: after an epoch's rotation every gated
//! peer sends one with its new preshared key, each an X25519 key pair and two more X25519
//! operations (some 50 µs). A thousand of them are written on every core, off the runtime's
//! workers, each peer's lock held only while its own initiation is written.

use std::sync::Arc;
use std::time::Instant;

use super::peer::MAX_PROBES;
use super::snapshot::Peer;
use super::transport::DatagramBatch;
use super::BATCH;

/// The room one peer's initiation may take in a batch: the message, and its copies to every
/// further candidate.
const PER_PEER: usize = 1 + MAX_PROBES;

/// The largest datagram an initiation batch holds: an initiation is 148 bytes.
const INITIATION_SLOT: usize = 256;

fn new_batch() -> DatagramBatch {
    DatagramBatch::new(BATCH, INITIATION_SLOT)
}

/// Writes the due initiation of each of `peers` that has not been removed (with its probes),
/// into as many batches as they need.
pub fn initiations(peers: &[Arc<Peer>], now: Instant) -> Vec<DatagramBatch> {
    let mut batches = Vec::new();
    let mut out = new_batch();
    for peer in peers {
        if out.remaining() < PER_PEER {
            batches.push(std::mem::replace(&mut out, new_batch()));
        }
        let mut state = peer.state.lock();
        if !state.removed {
            state.initiate_next(&mut out, now);
        }
    }
    if !out.is_empty() {
        batches.push(out);
    }
    batches
}

/// Like [`initiations`], on up to `threads` threads (the calling one takes a share).
pub fn initiations_parallel(
    peers: &[Arc<Peer>],
    now: Instant,
    threads: usize,
) -> Vec<DatagramBatch> {
    let threads = threads.clamp(1, peers.len().max(1));
    if threads == 1 {
        return initiations(peers, now);
    }
    let mut parts = peers.chunks(peers.len().div_ceil(threads));
    let first = parts.next().unwrap_or_default();
    std::thread::scope(|scope| {
        let spawned: Vec<_> = parts
            .map(|part| {
                // A thread that cannot start: its share is written here instead.
                std::thread::Builder::new()
                    .name("meshtun-initiate".into())
                    .spawn_scoped(scope, move || initiations(part, now))
                    .map_err(|_| part)
            })
            .collect();
        let mut batches = initiations(first, now);
        for handle in spawned {
            batches.extend(match handle {
                Ok(handle) => handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                Err(part) => initiations(part, now),
            });
        }
        batches
    })
}
