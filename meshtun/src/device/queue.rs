//! A device-wide budget for packets waiting for a handshake.
//!
//! A `Tunn` without a session keeps a copy of each packet it is asked to send (up to 256)
//! until its handshake completes, then sends them. Bounded per peer only, that is 256 full
//! packets for every peer the host sends to: hundreds of megabytes for a few thousand
//! unreachable peers. The device therefore charges every packet a `Tunn` queues to one
//! budget; once it is spent, packets for peers without a session are dropped (their
//! handshake still starts), as a full queue would drop them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Bytes all queued packets of a device may hold.
pub const QUEUE_BUDGET: usize = 8 << 20;

/// What boringtun's queue costs beyond the packet: the `Vec` header and allocator rounding.
const PER_PACKET: usize = 64;

/// Packets a `Tunn` queues at most (boringtun's `MAX_QUEUE_DEPTH`); beyond it boringtun
/// drops them itself.
const PER_TUNN: usize = 256;

/// The device's budget.
#[derive(Debug)]
pub struct QueueBudget {
    used: AtomicUsize,
    limit: usize,
}

impl QueueBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    /// Bytes charged now.
    #[cfg(test)]
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn try_take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(n))
            });
    }
}

/// What one `Tunn`'s queue holds of the budget. Everything is given back when it is dropped.
#[derive(Debug)]
pub struct Queued {
    budget: Arc<QueueBudget>,
    packets: usize,
    bytes: usize,
}

impl Queued {
    /// Nothing queued yet, charged to `budget`.
    pub fn new(budget: Arc<QueueBudget>) -> Self {
        Self {
            budget,
            packets: 0,
            bytes: 0,
        }
    }

    /// Charges a packet of `len` bytes about to be queued; false if the budget (or the
    /// `Tunn`'s own queue) has no room for it, and it must not be queued.
    pub fn charge(&mut self, len: usize) -> bool {
        let cost = len + PER_PACKET;
        if self.packets >= PER_TUNN || !self.budget.try_take(cost) {
            return false;
        }
        self.packets += 1;
        self.bytes += cost;
        true
    }

    /// One queued packet went out as a datagram of `datagram_len` bytes (its length plus
    /// at most 47: header, tag and padding).
    pub fn sent_one(&mut self, datagram_len: usize) {
        if self.packets == 0 {
            return;
        }
        let cost = (datagram_len.saturating_sub(32) + PER_PACKET).min(self.bytes);
        self.packets -= 1;
        self.bytes -= cost;
        self.budget.give_back(cost);
    }

    /// The queue is empty (flushed or cleared).
    pub fn emptied(&mut self) {
        self.budget.give_back(self.bytes);
        self.packets = 0;
        self.bytes = 0;
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.emptied();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_shared_and_given_back() {
        let budget = Arc::new(QueueBudget::new(1_000));
        let mut a = Queued::new(budget.clone());
        let mut b = Queued::new(budget.clone());
        assert!(a.charge(400));
        assert!(b.charge(400));
        assert!(!a.charge(100), "over the device's budget");
        assert_eq!(budget.used(), 928);
        a.sent_one(432);
        assert_eq!(budget.used(), 464);
        assert!(a.charge(100));
        drop(b);
        assert_eq!(budget.used(), 164);
        a.emptied();
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_tunn_queues_at_most_256() {
        let mut q = Queued::new(Arc::new(QueueBudget::new(usize::MAX)));
        for _ in 0..PER_TUNN {
            assert!(q.charge(0));
        }
        assert!(!q.charge(0));
    }
}
