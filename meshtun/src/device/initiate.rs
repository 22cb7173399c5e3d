//! The handshake initiations of many peers at once: after an epoch's rotation every gated
//! peer sends one with its new preshared key, each an X25519 key pair and two more X25519
//! operations (some 50 µs). A thousand of them are written on every core, off the runtime's
//! workers, each peer's lock held only while its own initiation is written.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use super::peer::{PeerState, MAX_PROBES};
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
    each_peer(peers, |state, out| state.initiate_next(out, now))
}

/// Writes a fresh initiation (with its probes) for each of `peers` that is silent and lists
/// a candidate at one of `ips`, which the relay has just let through
/// (`PeerState::retry_through_relay`).
pub fn retries_through_relay(
    peers: &[Arc<Peer>],
    ips: &[IpAddr],
    now: Instant,
) -> Vec<DatagramBatch> {
    each_peer(peers, |state, out| {
        state.retry_through_relay(ips, out, now);
    })
}

/// Runs `write` on each peer not removed, with room for an initiation and its probes.
fn each_peer(
    peers: &[Arc<Peer>],
    mut write: impl FnMut(&mut PeerState, &mut DatagramBatch),
) -> Vec<DatagramBatch> {
    let mut batches = Vec::new();
    let mut out = new_batch();
    for peer in peers {
        if out.remaining() < PER_PEER {
            batches.push(std::mem::replace(&mut out, new_batch()));
        }
        let mut state = peer.state.lock();
        if !state.removed {
            write(&mut state, &mut out);
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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use meshtun_proto::{PresharedKey, PrivateKey};

    use super::*;
    use crate::device::control::Control;
    use crate::wgcfg::{DeviceSettings, PeerSettings};

    /// `n` peers with a preshared key, an endpoint and seven further candidates each, as a
    /// bundle gives them; their initiations are due.
    fn pending(n: usize) -> Vec<Arc<Peer>> {
        let peers = (0..n)
            .map(|i| PeerSettings {
                probes: (1..=MAX_PROBES as u16)
                    .map(|p| SocketAddr::from(([203, 0, 113, 1], p)))
                    .collect(),
                public_key: PrivateKey::generate().public_key(),
                preshared_key: Some(PresharedKey::generate()),
                endpoint: Some(SocketAddr::from(([198, 51, 100, 1], 20_000 + i as u16))),
                allowed_ips: Vec::new(),
                persistent_keepalive: None,
                forward: false,
            })
            .collect();
        let settings = DeviceSettings {
            private_key: PrivateKey::generate(),
            listen_port: None,
            fwmark: None,
            peers,
        };
        let mut control = Control::new(51820, 0);
        let mut out = DatagramBatch::new(BATCH, 256);
        control
            .apply_settings(&settings, Instant::now(), &mut out)
            .unwrap();
        control.take_pending(usize::MAX)
    }

    /// Every peer's initiation went to its endpoint, each once, and its copies to its
    /// candidates: none was left for the timer for want of room in a batch.
    fn all_sent(batches: &[DatagramBatch], n: usize) {
        let mut to_endpoints: Vec<u16> = batches
            .iter()
            .flat_map(|b| b.iter())
            .filter(|(to, d)| {
                to.ip() == std::net::IpAddr::from([198, 51, 100, 1]) && d.len() == 148 && d[0] == 1
            })
            .map(|(to, _)| to.port() - 20_000)
            .collect();
        to_endpoints.sort_unstable();
        assert_eq!(to_endpoints, (0..n as u16).collect::<Vec<_>>());
        let total: usize = batches.iter().map(DatagramBatch::len).sum();
        assert_eq!(total, n * PER_PEER, "the candidates were not all probed");
        assert!(batches.iter().all(|b| b.len() <= BATCH));
    }

    #[test]
    fn every_initiation_of_many_peers_is_written_with_its_probes() {
        let peers = pending(100);
        all_sent(&initiations(&peers, Instant::now()), 100);
    }

    #[test]
    fn initiations_written_on_several_threads_are_all_there_once() {
        let peers = pending(100);
        all_sent(&initiations_parallel(&peers, Instant::now(), 3), 100);
        // Written once: nothing is due any more.
        assert!(initiations(&peers, Instant::now()).is_empty());
    }
}
