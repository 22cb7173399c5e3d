//! `Tunn`s built before a change takes the control lock.
//!
//! A new `Tunn` costs two X25519 operations (boringtun derives our public key and the
//! static-static secret in `Tunn::new`); a new epoch gives every gated peer one. Building a
//! thousand of them under the control lock would stall the timers and every other change for
//! a noticeable time, so a change first builds the `Tunn`s it will need, outside the lock,
//! and the change then takes them instead of building its own. A prepared `Tunn` that the
//! change does not use (the configuration moved on meanwhile, or the private key changed)
//! gives its session index back.
//!
//! A large change (an epoch's bundle) builds its `Tunn`s on every core, on threads of its own
//! (the device runs this on tokio's blocking pool), so that neither the control lock nor the
//! runtime's workers, which carry the packet path, wait for the X25519 operations.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use meshtun_proto::{PresharedKey, PrivateKey, PublicKey};
use parking_lot::Mutex;

use super::index::{IndexExhausted, IndexTable};
use super::peer::Slot;
use super::queue::QueueBudget;
use super::snapshot::{Identity, Snapshot};
use crate::wgcfg::{DeviceSettings, DeviceUpdate};

/// What builds `Tunn`s: our key, the device's `Tunn` rate limiter, index table and queue
/// budget.
#[derive(Clone)]
pub struct SlotMaker {
    private: PrivateKey,
    identity: Arc<Identity>,
    indices: Arc<Mutex<IndexTable>>,
    budget: Arc<QueueBudget>,
}

impl SlotMaker {
    /// A maker for the key `private` (whose identity is `identity`), taking indices from
    /// `indices` and charging queued packets to `budget`.
    pub fn new(
        private: PrivateKey,
        identity: Arc<Identity>,
        indices: Arc<Mutex<IndexTable>>,
        budget: Arc<QueueBudget>,
    ) -> Self {
        Self {
            private,
            identity,
            indices,
            budget,
        }
    }

    /// A new `Tunn` for the peer `key` with `psk`, under a fresh index.
    pub fn make(
        &self,
        key: &PublicKey,
        psk: Option<PresharedKey>,
        now: Instant,
    ) -> Result<Slot, IndexExhausted> {
        let index = self.indices.lock().allocate(now)?;
        let limiter = self.identity.tunn_limiter.clone();
        let budget = self.budget.clone();
        Ok(Slot::new(&self.private, key, psk, index, limiter, budget))
    }

    /// The identity the `Tunn`s are made for.
    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }
}

/// Gives the allocator's free pages back to the system, after a large change: a `Tunn` is
/// some 11 KB, and a rotation of n peers holds 2n of them for a moment (the new ones are
/// built while the old ones still work); without this the process would keep that peak
/// resident for good. A no-op where the C library cannot do it.
pub fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no pointer.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The fewest `Tunn`s worth a thread of their own: a `Tunn` costs two X25519 operations
/// (some 50 µs), a thread some 20 µs to start.
pub const PARALLEL_FROM: usize = 32;

/// `Tunn`s made ahead of a change, by peer.
#[derive(Default)]
pub struct Prepared {
    identity: Option<Arc<Identity>>,
    slots: HashMap<PublicKey, Slot>,
}

impl Prepared {
    /// Makes a `Tunn` with `maker` for each `(peer, preshared key)` in `wanted`. Stops early
    /// (the change then builds the rest itself) if the indices run out.
    pub fn make(
        maker: &SlotMaker,
        wanted: impl IntoIterator<Item = (PublicKey, Option<PresharedKey>)>,
        now: Instant,
    ) -> Self {
        let mut prepared = Self {
            identity: Some(maker.identity().clone()),
            slots: HashMap::new(),
        };
        let made = wanted
            .into_iter()
            .map_while(|(key, psk)| maker.make(&key, psk, now).ok().map(|s| (key, s)));
        prepared.add(maker, made, now);
        prepared
    }

    /// Like [`make`](Self::make), on up to `threads` threads at once when `wanted` is
    /// large (at least [`PARALLEL_FROM`] pairs each); the calling thread takes a share.
    pub fn make_parallel(
        maker: &SlotMaker,
        wanted: &[(PublicKey, Option<PresharedKey>)],
        now: Instant,
        threads: usize,
    ) -> Self {
        let threads = threads.clamp(1, wanted.len().div_ceil(PARALLEL_FROM).max(1));
        if threads == 1 {
            return Self::make(maker, wanted.iter().cloned(), now);
        }
        let mut parts = wanted.chunks(wanted.len().div_ceil(threads));
        let first = parts.next().unwrap_or_default();
        let mut prepared = std::thread::scope(|scope| {
            let spawned: Vec<_> = parts
                .map(|part| {
                    let build = move || Self::make(maker, part.iter().cloned(), now);
                    // A thread that cannot start: its share is built here instead.
                    std::thread::Builder::new()
                        .name("meshtun-prepare".into())
                        .spawn_scoped(scope, build)
                        .map_err(|_| part)
                })
                .collect();
            let mut prepared = Self::make(maker, first.iter().cloned(), now);
            for handle in spawned {
                let part = match handle {
                    Ok(handle) => handle
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                    Err(part) => Self::make(maker, part.iter().cloned(), now),
                };
                prepared.absorb(maker, part, now);
            }
            prepared
        });
        prepared.identity = Some(maker.identity().clone());
        prepared
    }

    /// Adds `made`; a second `Tunn` for the same peer replaces the first, whose index goes
    /// back.
    fn add(
        &mut self,
        maker: &SlotMaker,
        made: impl Iterator<Item = (PublicKey, Slot)>,
        now: Instant,
    ) {
        for (key, slot) in made {
            if let Some(old) = self.slots.insert(key, slot) {
                maker.indices.lock().release(old.index(), now);
            }
        }
    }

    /// Adds the `Tunn`s of `other`, made by the same maker after this one's.
    fn absorb(&mut self, maker: &SlotMaker, mut other: Prepared, now: Instant) {
        let made: Vec<(PublicKey, Slot)> = other.slots.drain().collect();
        self.add(maker, made.into_iter(), now);
    }

    /// The prepared `Tunn` for `key` with `psk`, if there is one and it was made for
    /// `identity`.
    pub fn take(
        &mut self,
        identity: &Arc<Identity>,
        key: &PublicKey,
        psk: &Option<PresharedKey>,
    ) -> Option<Slot> {
        if !self
            .identity
            .as_ref()
            .is_some_and(|i| Arc::ptr_eq(i, identity))
        {
            return None;
        }
        if self.slots.get(key).is_some_and(|s| s.psk() == psk) {
            return self.slots.remove(key);
        }
        None
    }

    /// The indices of the `Tunn`s nobody took; they are dropped.
    pub fn leftover(&mut self) -> Vec<u32> {
        self.slots.drain().map(|(_, slot)| slot.index()).collect()
    }
}

/// The peers of `settings` whose `Tunn` a reconfiguration will replace: new peers, and peers
/// whose preshared key changes, as seen in the snapshot `snap`.
pub fn wanted_by_settings(
    snap: &Snapshot,
    settings: &DeviceSettings,
) -> Vec<(PublicKey, Option<PresharedKey>)> {
    settings
        .peers
        .iter()
        .filter(|p| {
            snap.by_key
                .get(&p.public_key)
                .is_none_or(|peer| peer.state.lock().psk != p.preshared_key)
        })
        .map(|p| (p.public_key, p.preshared_key.clone()))
        .collect()
}

/// The peers of `update` whose preshared key it sets.
pub fn wanted_by_update(update: &DeviceUpdate) -> Vec<(PublicKey, Option<PresharedKey>)> {
    update
        .peers
        .iter()
        .filter(|p| !p.remove)
        .filter_map(|p| Some((p.public_key, p.preshared_key.clone()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::queue::QUEUE_BUDGET;
    use std::collections::HashSet;

    fn maker() -> (SlotMaker, Arc<Mutex<IndexTable>>) {
        let private = PrivateKey::generate();
        let identity = Arc::new(Identity::new(&private));
        let indices = Arc::new(Mutex::new(IndexTable::new()));
        let budget = Arc::new(QueueBudget::new(QUEUE_BUDGET));
        let maker = SlotMaker::new(private, identity, indices.clone(), budget);
        (maker, indices)
    }

    #[test]
    fn tunns_built_on_several_threads_are_the_ones_asked_for_each_under_its_own_index() {
        let (maker, indices) = maker();
        let keys: Vec<PublicKey> = (0..200)
            .map(|_| PrivateKey::generate().public_key())
            .collect();
        let mut wanted: Vec<(PublicKey, Option<PresharedKey>)> = keys
            .iter()
            .map(|k| (*k, Some(PresharedKey::generate())))
            .collect();
        // The same peer twice, in different threads' shares: the later key wins.
        let late = (keys[0], Some(PresharedKey::generate()));
        wanted.push(late.clone());
        let now = Instant::now();
        let mut prepared = Prepared::make_parallel(&maker, &wanted, now, 4);
        assert_eq!(prepared.slots.len(), keys.len());
        let unique: HashSet<u32> = prepared.slots.values().map(Slot::index).collect();
        assert_eq!(unique.len(), keys.len(), "two Tunns share an index");
        // The index of the replaced Tunn went back: only the kept ones are live.
        assert_eq!(indices.lock().live_count(), keys.len());
        let identity = maker.identity().clone();
        assert!(prepared.take(&identity, &late.0, &late.1).is_some());
        for (key, psk) in &wanted[1..keys.len()] {
            assert!(
                prepared.take(&identity, key, psk).is_some(),
                "a Tunn is missing"
            );
        }
        assert!(prepared.leftover().is_empty());
    }

    #[test]
    fn a_small_change_is_built_on_the_calling_thread() {
        let (maker, indices) = maker();
        let wanted = vec![(PrivateKey::generate().public_key(), None)];
        let prepared = Prepared::make_parallel(&maker, &wanted, Instant::now(), 8);
        assert_eq!(prepared.slots.len(), 1);
        assert_eq!(indices.lock().live_count(), 1);
    }
}
