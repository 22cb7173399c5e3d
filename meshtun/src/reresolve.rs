//! Re-resolving the host-name endpoints of silent peers, as wg-quick's `reresolve-dns.sh`
//! does, without I/O. The daemon feeds it each watched peer's counters every few seconds;
//! it answers which names to look up again, and keeps what the lookups said.
//!
//! - A peer is silent when no handshake has completed for [`SILENT_AFTER`] (with none
//!   since it was first watched, that long after), or when what it sent has gone unanswered for [`FAILING_AFTER`]: a live
//!   peer answers data within 10 s (a passive keepalive) and an initiation at once, so 20 s
//!   without a byte back after a send means the handshake attempts are failing.
//! - A name is looked up at most once per [`LOOKUP_EVERY`] and never twice at once,
//!   whatever the number of peers using it, so a dead name costs one lookup per interval.
//! - Only names of watched peers are remembered: the state is bounded by the peers.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meshtun_proto::PublicKey;

/// No completed handshake for this long: the peer is silent (REKEY_AFTER_TIME 120 s plus
/// a margin, as `reresolve-dns.sh` uses).
pub const SILENT_AFTER: Duration = Duration::from_secs(135);

/// Sent to the peer and nothing back for this long: its handshakes are failing.
pub const FAILING_AFTER: Duration = Duration::from_secs(20);

/// A name is looked up again at most this often.
pub const LOOKUP_EVERY: Duration = Duration::from_secs(30);

/// One peer with a host-name endpoint, as the device reports it now.
#[derive(Debug, Clone)]
pub struct Watched<'a> {
    /// The peer.
    pub key: PublicKey,
    /// Its endpoint as configured (`host:port`, the host a name).
    pub name: &'a str,
    /// How long ago its last handshake completed; `None` for never.
    pub handshake_age: Option<Duration>,
    /// Bytes sent to it so far.
    pub tx_bytes: u64,
    /// Bytes received from it so far.
    pub rx_bytes: u64,
}

/// What was last seen of a peer's counters.
#[derive(Debug, Clone, Copy)]
struct Counters {
    /// When the peer was first watched.
    since: Instant,
    tx: u64,
    rx: u64,
    /// The first send since the last receive.
    unanswered_since: Option<Instant>,
}

/// What is known of a name.
#[derive(Debug, Clone, Copy, Default)]
struct Name {
    looked_at: Option<Instant>,
    pending: bool,
    address: Option<SocketAddr>,
}

/// The re-resolution state of a daemon's peers.
#[derive(Debug, Default)]
pub struct Reresolver {
    peers: HashMap<PublicKey, Counters>,
    names: HashMap<String, Name>,
}

impl Reresolver {
    /// Takes the peers' counters at `now`; returns the names to look up now (marked as
    /// being looked up until [`Self::record`]).
    pub fn due(&mut self, watched: &[Watched<'_>], now: Instant) -> Vec<String> {
        let keys: HashSet<PublicKey> = watched.iter().map(|w| w.key).collect();
        self.peers.retain(|k, _| keys.contains(k));
        let names: HashSet<&str> = watched.iter().map(|w| w.name).collect();
        self.names.retain(|n, _| names.contains(n.as_str()));
        let mut due = Vec::new();
        for peer in watched {
            if !self.silent(peer, now) {
                continue;
            }
            let name = self.names.entry(peer.name.to_owned()).or_default();
            let recent = name
                .looked_at
                .is_some_and(|t| now.saturating_duration_since(t) < LOOKUP_EVERY);
            if !name.pending && !recent {
                name.pending = true;
                name.looked_at = Some(now);
                due.push(peer.name.to_owned());
            }
        }
        due
    }

    /// Updates `peer`'s counters; true if it is silent.
    fn silent(&mut self, peer: &Watched<'_>, now: Instant) -> bool {
        let seen = self.peers.entry(peer.key).or_insert(Counters {
            since: now,
            tx: peer.tx_bytes,
            rx: peer.rx_bytes,
            unanswered_since: None,
        });
        if peer.rx_bytes != seen.rx {
            seen.unanswered_since = None;
        } else if peer.tx_bytes != seen.tx && seen.unanswered_since.is_none() {
            seen.unanswered_since = Some(now);
        }
        seen.tx = peer.tx_bytes;
        seen.rx = peer.rx_bytes;
        let failing = seen
            .unanswered_since
            .is_some_and(|t| now.saturating_duration_since(t) >= FAILING_AFTER);
        let age = peer
            .handshake_age
            .unwrap_or_else(|| now.saturating_duration_since(seen.since));
        let stale = age >= SILENT_AFTER;
        failing || stale
    }

    /// Records a lookup of `name` at `now`; true if it gave an address other than the one
    /// recorded before (the peers using it must move).
    pub fn record(&mut self, name: &str, address: Option<SocketAddr>, now: Instant) -> bool {
        let Some(known) = self.names.get_mut(name) else {
            // No watched peer uses it any more.
            return false;
        };
        known.pending = false;
        known.looked_at = Some(now);
        match address {
            Some(address) if known.address != Some(address) => {
                known.address = Some(address);
                true
            }
            _ => false,
        }
    }

    /// The address the last lookup of `name` gave, if any.
    pub fn address(&self, name: &str) -> Option<SocketAddr> {
        self.names.get(name).and_then(|n| n.address)
    }

    /// Forgets the addresses looked up (a reload resolved every endpoint afresh).
    pub fn forget_addresses(&mut self) {
        for name in self.names.values_mut() {
            name.address = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use meshtun_proto::PrivateKey;

    use super::*;

    const NAME: &str = "peer.example:51820";

    fn watched(key: PublicKey, age: Option<u64>, tx: u64, rx: u64) -> Watched<'static> {
        Watched {
            key,
            name: NAME,
            handshake_age: age.map(Duration::from_secs),
            tx_bytes: tx,
            rx_bytes: rx,
        }
    }

    #[test]
    fn a_recent_handshake_needs_no_lookup_and_an_old_one_does() {
        let key = PrivateKey::generate().public_key();
        let mut r = Reresolver::default();
        let t0 = Instant::now();
        assert!(r.due(&[watched(key, Some(10), 0, 0)], t0).is_empty());
        assert!(r.due(&[watched(key, Some(134), 0, 0)], t0).is_empty());
        assert_eq!(r.due(&[watched(key, Some(135), 0, 0)], t0), [NAME]);
        // Never a handshake: silent once watched that long.
        let never = PrivateKey::generate().public_key();
        let mut r = Reresolver::default();
        assert!(r.due(&[watched(never, None, 0, 0)], t0).is_empty());
        let later = t0 + SILENT_AFTER;
        assert_eq!(r.due(&[watched(never, None, 0, 0)], later), [NAME]);
    }

    #[test]
    fn sends_unanswered_for_twenty_seconds_are_a_failing_handshake() {
        let key = PrivateKey::generate().public_key();
        let mut r = Reresolver::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(r.due(&[watched(key, Some(1), 100, 100)], t0).is_empty());
        // Sending, with answers: fine.
        assert!(r.due(&[watched(key, Some(5), 200, 200)], at(5)).is_empty());
        // Sending from 10 s on, nothing back.
        assert!(r
            .due(&[watched(key, Some(10), 300, 200)], at(10))
            .is_empty());
        assert!(r
            .due(&[watched(key, Some(20), 400, 200)], at(20))
            .is_empty());
        assert!(r
            .due(&[watched(key, Some(29), 500, 200)], at(29))
            .is_empty());
        assert_eq!(r.due(&[watched(key, Some(30), 600, 200)], at(30)), [NAME]);
        // An answer ends it.
        assert!(!r.record(NAME, None, at(31)));
        assert!(r.due(&[watched(key, Some(1), 700, 300)], at(70)).is_empty());
        // Nothing sent, nothing received: idle, not failing.
        assert!(r
            .due(&[watched(key, Some(60), 700, 300)], at(130))
            .is_empty());
    }

    #[test]
    fn a_name_is_looked_up_once_at_a_time_and_at_most_every_thirty_seconds() {
        let (k1, k2) = (
            PrivateKey::generate().public_key(),
            PrivateKey::generate().public_key(),
        );
        let mut r = Reresolver::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // Two silent peers on one name: one lookup.
        let both = [watched(k1, Some(200), 0, 0), watched(k2, Some(300), 0, 0)];
        assert_eq!(r.due(&both, t0), [NAME]);
        // Still pending long after: not again (a lookup that hangs costs nothing more).
        assert!(r.due(&both, at(100)).is_empty());
        let first: SocketAddr = "192.0.2.7:51820".parse().unwrap();
        assert!(r.record(NAME, Some(first), at(100)));
        assert_eq!(r.address(NAME), Some(first));
        // A flood of ticks within the interval: nothing.
        for s in 100..130 {
            assert!(r.due(&both, at(s)).is_empty(), "looked up again at {s} s");
        }
        assert_eq!(r.due(&both, at(130)), [NAME]);
        assert!(
            !r.record(NAME, Some(first), at(131)),
            "same address: no move"
        );
        assert_eq!(r.due(&both, at(161)), [NAME]);
        let moved: SocketAddr = "198.51.100.9:51820".parse().unwrap();
        assert!(r.record(NAME, Some(moved), at(162)));
        // A failed lookup keeps the last address.
        assert_eq!(r.due(&both, at(192)), [NAME]);
        assert!(!r.record(NAME, None, at(193)));
        assert_eq!(r.address(NAME), Some(moved));
    }

    #[test]
    fn state_is_bounded_by_the_watched_peers() {
        let mut r = Reresolver::default();
        let t0 = Instant::now();
        let names: Vec<String> = (0..1000).map(|i| format!("n{i}.example:1")).collect();
        for (i, name) in names.iter().enumerate() {
            let w = Watched {
                key: PrivateKey::generate().public_key(),
                name,
                handshake_age: Some(SILENT_AFTER),
                tx_bytes: 0,
                rx_bytes: 0,
            };
            assert_eq!(r.due(&[w], t0 + Duration::from_secs(i as u64)).len(), 1);
            assert!(r.peers.len() == 1 && r.names.len() == 1);
        }
        // A result for a name no peer uses any more is dropped.
        assert!(!r.record("n0.example:1", Some("192.0.2.1:1".parse().unwrap()), t0));
    }
}
