//! The newest initiation timestamps of removed peers.

use std::collections::{HashMap, VecDeque};

use meshtun_proto::PublicKey;

use super::noise::Tai64n;

/// Removed peers remembered in [`RemovedStamps`], at most.
const REMOVED_STAMPS: usize = 16_384;

/// The newest initiation timestamp of each recently removed peer, so that a peer removed and
/// added again (a gated peer denied, then allowed) keeps its replay protection. Bounded: the
/// longest-removed peers are forgotten first.
#[derive(Default)]
pub struct RemovedStamps {
    /// Each remembered peer's timestamp, and the number of the entry in `order` that keeps it.
    stamps: HashMap<PublicKey, (Tai64n, u64)>,
    /// Removals, oldest first; an entry whose number no longer matches is stale.
    order: VecDeque<(PublicKey, u64)>,
    next: u64,
}

impl RemovedStamps {
    /// Remembers `stamp` as the newest initiation of the removed peer `key`.
    pub fn remember(&mut self, key: PublicKey, stamp: Tai64n) {
        self.next += 1;
        self.stamps.insert(key, (stamp, self.next));
        self.order.push_back((key, self.next));
        while self.order.len() > REMOVED_STAMPS {
            if let Some((old, number)) = self.order.pop_front() {
                if self.stamps.get(&old).is_some_and(|(_, n)| *n == number) {
                    self.stamps.remove(&old);
                }
            }
        }
    }

    /// The remembered timestamp of `key`, forgotten now (the peer is back).
    pub fn take(&mut self, key: &PublicKey) -> Option<Tai64n> {
        self.stamps.remove(key).map(|(stamp, _)| stamp)
    }
}

#[cfg(test)]
mod tests {
    use meshtun_proto::PrivateKey;

    use super::*;

    #[test]
    fn removed_stamps_are_bounded_and_keep_the_newest_removals() {
        let mut r = RemovedStamps::default();
        let keys: Vec<PublicKey> = (0..REMOVED_STAMPS + 10)
            .map(|_| PrivateKey::generate().public_key())
            .collect();
        let stamp = |n: u8| Tai64n([n; 12]);
        // The first key is removed, added back and removed again: its newer entry counts.
        r.remember(keys[0], stamp(1));
        assert_eq!(r.take(&keys[0]), Some(stamp(1)));
        r.remember(keys[0], stamp(2));
        for key in &keys[1..] {
            r.remember(*key, stamp(3));
        }
        assert!(r.order.len() <= REMOVED_STAMPS && r.stamps.len() <= REMOVED_STAMPS);
        assert_eq!(r.take(&keys[0]), None, "the oldest removal is forgotten");
        assert_eq!(r.take(&keys[keys.len() - 1]), Some(stamp(3)));
        assert_eq!(r.take(&keys[keys.len() - 1]), None);
    }
}
