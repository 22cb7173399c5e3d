//! Wall-clock time in Unix milliseconds.
//!
//! The controller reads the system's wall clock every time it needs a wall value (epoch
//! times, request freshness), so it follows the clock when NTP steps it or a VM resumes;
//! sleeps use tokio's monotonic clock, converted at each wake-up ([`Clock::instant_at`]).
//! Tests use a clock driven by tokio's (so that they can pause it) that they can also step.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use meshtun_proto::time::unix_ms;

use tokio::time::Instant;

/// A Unix-millisecond clock: the system's wall clock, or a test clock.
#[derive(Debug, Clone)]
pub struct Clock {
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    /// `SystemTime::now()`, read at every call.
    System,
    /// `base_ms` at `base`, advanced by tokio's clock, plus `step_ms` (moved by
    /// [`Clock::step`]).
    Test {
        base_ms: u64,
        base: Instant,
        step_ms: Arc<AtomicI64>,
    },
}

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Self {
        Self {
            source: Source::System,
        }
    }

    /// A test clock that reads `base_ms` now and then follows tokio's clock (so
    /// `tokio::time::pause` and `advance` drive it), and [`Clock::step`].
    pub fn starting_at(base_ms: u64) -> Self {
        Self {
            source: Source::Test {
                base_ms,
                base: Instant::now(),
                step_ms: Arc::new(AtomicI64::new(0)),
            },
        }
    }

    /// Steps a test clock by `delta_ms` (either way), as NTP steps a wall clock; every
    /// clone of it follows. Does nothing to the system clock.
    pub fn step(&self, delta_ms: i64) {
        if let Source::Test { step_ms, .. } = &self.source {
            step_ms.fetch_add(delta_ms, Ordering::Relaxed);
        }
    }

    /// Unix milliseconds now.
    pub fn now_ms(&self) -> u64 {
        match &self.source {
            Source::System => unix_ms(),
            Source::Test {
                base_ms,
                base,
                step_ms,
            } => {
                let elapsed = Instant::now().saturating_duration_since(*base);
                let ms =
                    base_ms.saturating_add(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
                ms.saturating_add_signed(step_ms.load(Ordering::Relaxed))
            }
        }
    }

    /// The tokio instant at which this clock should read `ms` (now, if that is in the
    /// past), as far as is known now: callers wake at most a second ahead and ask again, so
    /// a step of the wall clock in between is followed.
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
    async fn a_test_clock_follows_tokio_time_and_steps() {
        let clock = Clock::starting_at(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        tokio::time::advance(Duration::from_millis(2_500)).await;
        assert_eq!(clock.now_ms(), 3_500);
        let at = clock.instant_at(5_000);
        tokio::time::sleep_until(at).await;
        assert_eq!(clock.now_ms(), 5_000);
        let copy = clock.clone();
        clock.step(-4_000);
        assert_eq!(copy.now_ms(), 1_000);
    }

    /// #8: the system clock is the wall clock, read every time, not the wall time at start
    /// advanced by the monotonic clock. Here the monotonic (tokio) clock runs an hour ahead
    /// of the wall clock, as it does not after a suspend or when NTP steps the wall clock.
    #[tokio::test(start_paused = true)]
    async fn the_system_clock_reads_the_wall_clock_at_every_call_8() {
        let clock = Clock::system();
        tokio::time::advance(Duration::from_secs(3_600)).await;
        let wall = unix_ms();
        let read = clock.now_ms();
        assert!(
            read.abs_diff(wall) < 1_000,
            "the controller's clock reads {read}, the wall clock {wall}"
        );
    }
}
