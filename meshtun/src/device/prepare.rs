//! `Tunn`s built before a change takes the control lock.
//!
//! A new `Tunn` costs two X25519 operations (boringtun derives our public key and the
//! static-static secret in `Tunn::new`); a new epoch gives every gated peer one. Building a
//! thousand of them under the control lock would stall the timers and every other change for
//! a noticeable time, so a change first builds the `Tunn`s it will need, outside the lock,
//! and the change then takes them instead of building its own. A prepared `Tunn` that the
//! change does not use (the configuration moved on meanwhile, or the private key changed)
//! gives its session index back.

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
        let mut slots = HashMap::new();
        for (key, psk) in wanted {
            match maker.make(&key, psk, now) {
                Ok(slot) => {
                    if let Some(old) = slots.insert(key, slot) {
                        maker.indices.lock().release(old.index(), now);
                    }
                }
                Err(_) => break,
            }
        }
        Self {
            identity: Some(maker.identity().clone()),
            slots,
        }
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
