//! The controller instances a node may talk to, and which one it uses now. No I/O.
//!
//! A node uses one instance at a time, the first of `[controller] url` at start. When a
//! request to it fails in a way that says the instance is gone or broken (no connection, a
//! timeout, a 5xx, an answer that does not verify), the node moves to the next URL and
//! retries there at once; it stays on an instance that works. Only after every instance
//! failed in a row does it back off.
//!
//! A long-poll to an instance that stopped answering (paused, or cut off by the network)
//! ends at a time limit learned from that instance: how long its last "nothing new" (304)
//! answer took, which is its long-poll setting, plus a margin. So a node moves within about
//! one long-poll of losing its instance, not after the client's generous first guess.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// The least time added to a learned long-poll for the network and the controller.
const MIN_POLL_MARGIN: Duration = Duration::from_secs(2);

/// The controller instances and the one in use.
#[derive(Debug)]
pub struct Instances {
    urls: Vec<String>,
    current: AtomicUsize,
    /// Failures in a row, across instances, since the last success.
    failures: AtomicUsize,
    /// Per instance: how long its last 304 took, in milliseconds; 0 before the first.
    learned_poll_ms: Vec<AtomicU64>,
}

impl Instances {
    /// The instances at `urls`, in order of preference. `urls` must not be empty (the
    /// configuration guarantees it).
    pub fn new(urls: Vec<String>) -> Self {
        let learned_poll_ms = urls.iter().map(|_| AtomicU64::new(0)).collect();
        Self {
            urls,
            current: AtomicUsize::new(0),
            failures: AtomicUsize::new(0),
            learned_poll_ms,
        }
    }

    /// The instance in use: its index (for [`Self::failed`]) and its URL.
    pub fn current(&self) -> (usize, &str) {
        let index = self.current.load(Ordering::Acquire) % self.urls.len().max(1);
        (index, self.urls.get(index).map_or("", String::as_str))
    }

    /// Every instance, in order of preference.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// A request to instance `index` succeeded.
    pub fn succeeded(&self) {
        self.failures.store(0, Ordering::Release);
    }

    /// Instance `index` failed as a lost instance does: move to the next one, unless another
    /// request already moved on. Returns whether the node should retry at once (false once
    /// every instance has failed in a row: back off then).
    pub fn failed(&self, index: usize) -> bool {
        let next = (index + 1) % self.urls.len().max(1);
        // Only the first of several concurrent failures of one instance moves on.
        let _ = self
            .current
            .compare_exchange(index, next, Ordering::AcqRel, Ordering::Acquire);
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        failures < self.urls.len()
    }

    /// Instance `index` answered a long-poll with "nothing new" after `elapsed`.
    pub fn learned_poll(&self, index: usize, elapsed: Duration) {
        if let Some(slot) = self.learned_poll_ms.get(index) {
            let ms = u64::try_from(elapsed.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            slot.store(ms, Ordering::Release);
        }
    }

    /// The time limit for a long-poll of `wait` to instance `index`: the wait, or that
    /// instance's own long-poll if it answered sooner before, plus a margin; never more than
    /// `wait + max_margin`.
    pub fn poll_timeout(&self, index: usize, wait: Duration, max_margin: Duration) -> Duration {
        let learned = self
            .learned_poll_ms
            .get(index)
            .map_or(0, |slot| slot.load(Ordering::Acquire));
        if learned == 0 {
            return wait.saturating_add(max_margin);
        }
        let poll = wait.min(Duration::from_millis(learned));
        let margin = (poll / 2).clamp(MIN_POLL_MARGIN, max_margin.max(MIN_POLL_MARGIN));
        poll.saturating_add(margin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Instances {
        Instances::new(vec![
            "http://a".into(),
            "http://b".into(),
            "http://c".into(),
        ])
    }

    #[test]
    fn a_failure_moves_to_the_next_and_wraps_around() {
        let instances = three();
        assert_eq!(instances.current(), (0, "http://a"));
        assert!(instances.failed(0));
        assert_eq!(instances.current(), (1, "http://b"));
        assert!(instances.failed(1));
        assert_eq!(instances.current(), (2, "http://c"));
        // The third failure in a row: every instance failed, back off.
        assert!(!instances.failed(2));
        assert_eq!(instances.current(), (0, "http://a"));
    }

    #[test]
    fn concurrent_failures_of_one_instance_move_once() {
        let instances = three();
        instances.failed(0);
        instances.failed(0);
        assert_eq!(instances.current(), (1, "http://b"));
    }

    #[test]
    fn a_success_keeps_the_instance_and_resets_the_count() {
        let instances = three();
        instances.failed(0);
        instances.failed(1);
        instances.succeeded();
        assert_eq!(instances.current(), (2, "http://c"));
        assert!(
            instances.failed(2),
            "a success starts a new round of retries"
        );
    }

    #[test]
    fn the_poll_limit_follows_what_each_instance_taught() {
        let instances = three();
        let wait = Duration::from_secs(25);
        let margin = Duration::from_secs(10);
        assert_eq!(
            instances.poll_timeout(0, wait, margin),
            Duration::from_secs(35)
        );
        instances.learned_poll(0, Duration::from_secs(3));
        assert_eq!(
            instances.poll_timeout(0, wait, margin),
            Duration::from_secs(5)
        );
        // Another instance has not taught anything yet.
        assert_eq!(
            instances.poll_timeout(1, wait, margin),
            Duration::from_secs(35)
        );
        instances.learned_poll(1, Duration::from_secs(40));
        assert_eq!(
            instances.poll_timeout(1, wait, margin),
            Duration::from_secs(35)
        );
    }

    #[test]
    fn one_instance_always_retries_itself() {
        let one = Instances::new(vec!["http://a".into()]);
        assert!(!one.failed(0));
        assert_eq!(one.current(), (0, "http://a"));
    }
}
