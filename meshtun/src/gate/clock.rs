//! The controller's time, as this node estimates it. Activation and end times in bundles are
//! the controller's Unix milliseconds; a node whose clock is off would switch keys early or
//! late and apply cut-offs late. Each bundle says, signed, when the controller issued it
//! (`issued_ms`): `issued_ms - received` is the offset minus the bundle's age and the
//! network delay, so the largest of the recent observations is the best estimate. The
//! scheduler reads every time through [`ControllerClock::now`].

use std::collections::VecDeque;
use std::sync::Arc;

/// This node's clock, Unix milliseconds (injected in tests).
pub type LocalClock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Observations kept: a few epochs' worth, so that a corrected local clock is followed.
const OBSERVATIONS: usize = 8;

/// An offset beyond this is reported: the node's clock should be fixed (NTP).
pub const WARN_OFFSET_MS: u64 = 2_000;

/// The local clock and the estimated offset to the controller's.
pub struct ControllerClock {
    local: LocalClock,
    /// Recent `issued_ms - received_ms`, newest last.
    observed: VecDeque<i64>,
    warned: bool,
}

impl ControllerClock {
    /// No offset known yet: the controller's time is taken to be the local time.
    pub fn new(local: LocalClock) -> Self {
        Self {
            local,
            observed: VecDeque::with_capacity(OBSERVATIONS),
            warned: false,
        }
    }

    /// The local clock.
    pub fn local_ms(&self) -> u64 {
        (self.local)()
    }

    /// The estimated offset, controller minus local, in milliseconds (0 before any bundle).
    pub fn offset_ms(&self) -> i64 {
        self.observed.iter().copied().max().unwrap_or(0)
    }

    /// The controller's time now, as estimated.
    pub fn now(&self) -> u64 {
        shift(self.local_ms(), self.offset_ms())
    }

    /// A controller time, `controller_ms`, on this node's clock, as estimated.
    pub fn to_local(&self, controller_ms: u64) -> u64 {
        shift(controller_ms, self.offset_ms().saturating_neg())
    }

    /// Records a bundle issued at `issued_ms` (controller time) and received now. Returns the
    /// new offset if it has just gone beyond [`WARN_OFFSET_MS`] (to report once).
    pub fn observe(&mut self, issued_ms: u64) -> Option<i64> {
        let local = i128::from(self.local_ms());
        let sample = i128::from(issued_ms) - local;
        let sample = i64::try_from(sample).unwrap_or(if sample < 0 { i64::MIN } else { i64::MAX });
        if self.observed.len() == OBSERVATIONS {
            self.observed.pop_front();
        }
        self.observed.push_back(sample);
        let offset = self.offset_ms();
        // One observation may be a stale bundle: report only what two agree on.
        let large = offset.unsigned_abs() > WARN_OFFSET_MS && self.observed.len() >= 2;
        let report = large && !self.warned;
        self.warned = large;
        report.then_some(offset)
    }
}

/// `ms + offset`, saturating.
fn shift(ms: u64, offset: i64) -> u64 {
    if offset >= 0 {
        ms.saturating_add(offset.unsigned_abs())
    } else {
        ms.saturating_sub(offset.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn clock_at(local: Arc<AtomicU64>) -> ControllerClock {
        ControllerClock::new(Arc::new(move || local.load(Ordering::SeqCst)))
    }

    #[test]
    fn the_freshest_observation_wins_over_late_deliveries() {
        let local = Arc::new(AtomicU64::new(1_000_000));
        let mut clock = clock_at(local.clone());
        assert_eq!(clock.now(), 1_000_000);
        // The node runs 20 s ahead: a fresh bundle (30 ms old) and a cached one (4 s old).
        assert_eq!(
            clock.observe(1_000_000 - 20_000 - 30),
            None,
            "one is not enough"
        );
        let warned = clock.observe(1_000_000 - 20_000 - 4_000);
        assert_eq!(warned, Some(-20_030));
        assert_eq!(clock.observe(1_000_000 - 20_000 - 50), None, "warned once");
        assert_eq!(clock.offset_ms(), -20_030);
        local.store(1_005_000, Ordering::SeqCst);
        assert_eq!(clock.now(), 1_005_000 - 20_030);
    }

    #[test]
    fn a_corrected_local_clock_is_followed_within_a_few_bundles() {
        let local = Arc::new(AtomicU64::new(50_000_000));
        let mut clock = clock_at(local.clone());
        clock.observe(50_000_000 + 20_000);
        assert_eq!(clock.offset_ms(), 20_000);
        // NTP steps the local clock forward by 20 s: new observations are near 0.
        local.store(50_020_000, Ordering::SeqCst);
        for _ in 0..OBSERVATIONS {
            clock.observe(50_020_000 - 10);
        }
        assert_eq!(clock.offset_ms(), -10);
    }

    #[test]
    fn extreme_values_saturate() {
        let mut clock = clock_at(Arc::new(AtomicU64::new(0)));
        clock.observe(u64::MAX);
        assert_eq!(clock.now(), i64::MAX.unsigned_abs());
        assert_eq!(shift(5, -10), 0);
    }
}
