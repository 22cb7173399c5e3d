//! Allocation of the 24-bit local indices that identify each `Tunn`.
//!
//! boringtun puts our index in the top 24 bits of every session index and counts handshake
//! messages in the low byte, so an incoming response, cookie or data packet is routed by
//! `receiver_index >> 8`. Indices are random (they are visible on the wire), unique among live
//! `Tunn`s, and not reused for [`QUARANTINE`] after release, so that a late packet for a
//! dropped `Tunn` can never reach a new one.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore};

/// How long a released index stays unused: longer than any WireGuard session lives.
pub const QUARANTINE: Duration = Duration::from_secs(180);

/// Indices occupy 24 bits.
const INDEX_MASK: u32 = 0x00ff_ffff;

/// Why no index could be allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no free WireGuard session index (all 2^24 are live or quarantined)")]
pub struct IndexExhausted;

/// The set of live and quarantined indices.
#[derive(Debug, Default)]
pub struct IndexTable {
    live: HashSet<u32>,
    quarantined: HashSet<u32>,
    released: VecDeque<(u32, Instant)>,
}

impl IndexTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh random index that is neither live nor quarantined.
    pub fn allocate(&mut self, now: Instant) -> Result<u32, IndexExhausted> {
        self.expire(now);
        // Random probing finds a free index at once unless the space is nearly full; bound
        // the attempts and fall back to a scan so this can never loop forever.
        for _ in 0..64 {
            let idx = OsRng.next_u32() & INDEX_MASK;
            if self.is_free(idx) {
                self.live.insert(idx);
                return Ok(idx);
            }
        }
        let start = OsRng.next_u32() & INDEX_MASK;
        (0..=INDEX_MASK)
            .map(|i| (start.wrapping_add(i)) & INDEX_MASK)
            .find(|idx| self.is_free(*idx))
            .inspect(|idx| {
                self.live.insert(*idx);
            })
            .ok_or(IndexExhausted)
    }

    /// Releases a live index into quarantine.
    pub fn release(&mut self, idx: u32, now: Instant) {
        if self.live.remove(&idx) {
            self.quarantined.insert(idx);
            self.released.push_back((idx, now));
        }
    }

    /// True if `idx` is live.
    #[cfg(test)]
    pub fn is_live(&self, idx: u32) -> bool {
        self.live.contains(&idx)
    }

    /// Number of live indices.
    #[cfg(test)]
    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    fn is_free(&self, idx: u32) -> bool {
        !self.live.contains(&idx) && !self.quarantined.contains(&idx)
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(idx, at)) = self.released.front() {
            if now.saturating_duration_since(at) < QUARANTINE {
                break;
            }
            self.released.pop_front();
            self.quarantined.remove(&idx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_unique_and_24_bit() {
        let mut t = IndexTable::new();
        let now = Instant::now();
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let idx = t.allocate(now).unwrap();
            assert!(idx <= INDEX_MASK);
            assert!(seen.insert(idx));
        }
        assert_eq!(t.live_count(), 10_000);
    }

    #[test]
    fn released_indices_stay_quarantined() {
        let mut t = IndexTable::new();
        let now = Instant::now();
        let idx = t.allocate(now).unwrap();
        t.release(idx, now);
        assert!(!t.is_live(idx));
        assert!(!t.is_free(idx));
        t.expire(now + QUARANTINE - Duration::from_secs(1));
        assert!(!t.is_free(idx));
        t.expire(now + QUARANTINE);
        assert!(t.is_free(idx));
    }

    #[test]
    fn releasing_an_unknown_index_is_harmless() {
        let mut t = IndexTable::new();
        t.release(42, Instant::now());
        assert!(t.is_free(42));
    }
}
