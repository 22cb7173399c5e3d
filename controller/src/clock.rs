//! Wall-clock time in Unix milliseconds, driven by tokio's clock so that tests can run
//! epochs with paused time.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// A Unix-millisecond clock anchored at creation and advanced by tokio's monotonic clock:
/// immune to wall-clock steps while running, and controllable with `tokio::time::pause`.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base_ms: u64,
    base: Instant,
}

impl Clock {
    /// A clock reading the system time now.
    pub fn system() -> Self {
        let base_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self::starting_at(base_ms)
    }

    /// A clock that reads `base_ms` now.
    pub fn starting_at(base_ms: u64) -> Self {
        Self {
            base_ms,
            base: Instant::now(),
        }
    }

    /// Unix milliseconds now.
    pub fn now_ms(&self) -> u64 {
        let elapsed = Instant::now().saturating_duration_since(self.base);
        self.base_ms
            .saturating_add(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
    }

    /// The tokio instant at which this clock reads `ms` (now, if that is in the past).
    pub fn instant_at(&self, ms: u64) -> Instant {
        let now = Instant::now();
        let ahead = ms.saturating_sub(self.now_ms());
        now + std::time::Duration::from_millis(ahead)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn follows_tokio_time() {
        let clock = Clock::starting_at(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        tokio::time::advance(Duration::from_millis(2_500)).await;
        assert_eq!(clock.now_ms(), 3_500);
        let at = clock.instant_at(5_000);
        tokio::time::sleep_until(at).await;
        assert_eq!(clock.now_ms(), 5_000);
    }
}
