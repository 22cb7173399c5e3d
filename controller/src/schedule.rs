//! Epoch timing: when the next epoch is published, when it activates, and what to do after
//! a restart. Pure arithmetic on Unix milliseconds; the caller passes the time.
//!
//! An epoch is in force from its activation (included) to its `not_after` (excluded). The
//! scheduled successor of an epoch activates at its `not_after` and is published `lead_ms`
//! earlier, so nodes can fetch it in time. An immediate rotation (an admin's, or because an
//! allowed node started failing) creates an epoch in force from now, which supersedes any
//! successor already published: among the epochs in force, the one with the highest id is
//! current.
//!
//! # Epoch ids follow the wall clock
//!
//! A new epoch's id is `max(latest + 1, published_ms)` ([`next_epoch_id`]): the Unix
//! milliseconds at which the controller publishes it, or one above the newest stored id if
//! that is larger. Nodes only accept ids above the highest they have seen, so ids must never
//! go back, not even when the database does: a controller restored from a backup (or
//! re-initialised with the same key) would otherwise count again from an id its nodes passed
//! long ago, and they would ignore it until the counter caught up (a day-old backup meant a
//! day without a bundle). With clock-based ids, the first epoch a restored controller
//! publishes is above every id any earlier copy of the database issued before that moment,
//! as long as the controller's clock is right. Epochs published in the same millisecond
//! (immediate rotations) push ids ahead of the clock by one each, which a restored copy
//! overtakes after that many milliseconds.
//!
//! The id comes from the publication time, not the activation time: a restored copy whose
//! newest epoch is still in force schedules the same successor window the original already
//! published, and an activation-based id would repeat the original's id with another secret.

use meshtun_proto::wire::EpochTimes;
use serde::{Deserialize, Serialize};

/// Shortest epoch.
pub const MIN_LENGTH_MS: u64 = 1_000;

/// Longest epoch (30 days).
pub const MAX_LENGTH_MS: u64 = 30 * 24 * 3600 * 1000;

/// How long epochs last and how early their successors are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Length of an epoch, milliseconds.
    pub length_ms: u64,
    /// How long before an epoch ends its successor is published, milliseconds.
    pub lead_ms: u64,
}

/// Why a schedule is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The epoch is shorter than [`MIN_LENGTH_MS`].
    #[error("length_ms is {0}; an epoch must last at least {MIN_LENGTH_MS} ms (1 s)")]
    LengthTooShort(u64),
    /// The epoch is longer than [`MAX_LENGTH_MS`].
    #[error("length_ms is {0}; an epoch may last at most {MAX_LENGTH_MS} ms (30 days)")]
    LengthTooLong(u64),
    /// No time between publishing an epoch and its activation.
    #[error("lead_ms is 0; nodes need time to fetch the next epoch before it activates")]
    NoLead,
    /// The successor would be published before its predecessor starts.
    #[error("lead_ms ({lead_ms}) must be shorter than length_ms ({length_ms})")]
    LeadTooLong {
        /// The lead.
        lead_ms: u64,
        /// The epoch length.
        length_ms: u64,
    },
}

/// When an epoch is in force: from `activation_ms` (included) to `not_after_ms` (excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Start, Unix milliseconds.
    pub activation_ms: u64,
    /// End, Unix milliseconds.
    pub not_after_ms: u64,
}

/// The state of the epochs at some time, and what the controller must do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The epoch in force, if any.
    pub current: Option<EpochTimes>,
    /// The current epoch's successor, if already published.
    pub next: Option<EpochTimes>,
    /// What to do.
    pub action: Action,
}

/// What the controller must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Create and publish an epoch with this window now (id: [`next_epoch_id`]).
    Publish(Window),
    /// Nothing to do before this time; then plan again.
    Wait {
        /// Unix milliseconds.
        until_ms: u64,
    },
}

/// The id of an epoch published at `published_ms` (Unix milliseconds) when the newest stored
/// epoch is `latest`: `max(latest + 1, published_ms)`, so that ids follow the wall clock and
/// never repeat an id an earlier copy of the database issued (see the module docs).
pub fn next_epoch_id(latest: Option<u64>, published_ms: u64) -> u64 {
    let after_latest = latest.map_or(1, |l| l.saturating_add(1));
    after_latest.max(published_ms)
}

/// Whether `epoch` is in force at `now_ms`.
pub fn in_force(epoch: &EpochTimes, now_ms: u64) -> bool {
    epoch.activation_ms <= now_ms && now_ms < epoch.not_after_ms
}

impl Schedule {
    /// A checked schedule.
    pub fn new(length_ms: u64, lead_ms: u64) -> Result<Self, ScheduleError> {
        let schedule = Self { length_ms, lead_ms };
        schedule.validate()?;
        Ok(schedule)
    }

    /// Checks the length (1 s to 30 days) and the lead (at least 1 ms, shorter than the
    /// length).
    pub fn validate(&self) -> Result<(), ScheduleError> {
        let (length_ms, lead_ms) = (self.length_ms, self.lead_ms);
        if length_ms < MIN_LENGTH_MS {
            return Err(ScheduleError::LengthTooShort(length_ms));
        }
        if length_ms > MAX_LENGTH_MS {
            return Err(ScheduleError::LengthTooLong(length_ms));
        }
        if lead_ms == 0 {
            return Err(ScheduleError::NoLead);
        }
        if lead_ms >= length_ms {
            return Err(ScheduleError::LeadTooLong { lead_ms, length_ms });
        }
        Ok(())
    }

    /// When the successor of `current` must be published: `lead_ms` before it ends.
    pub fn publish_at(&self, current: &EpochTimes) -> u64 {
        current.not_after_ms.saturating_sub(self.lead_ms)
    }

    /// The window of the scheduled successor of `current`: from its end, for one length.
    pub fn following(&self, current: &EpochTimes) -> Window {
        self.starting_at(current.not_after_ms)
    }

    /// The window of an epoch created now, for an immediate rotation or when no epoch is in
    /// force: from `now_ms`, for one length.
    pub fn immediate(&self, now_ms: u64) -> Window {
        self.starting_at(now_ms)
    }

    fn starting_at(&self, activation_ms: u64) -> Window {
        Window {
            activation_ms,
            not_after_ms: activation_ms.saturating_add(self.length_ms),
        }
    }

    /// What to do at `now_ms`, given the stored epochs (any order; the newest few suffice:
    /// every epoch that may still be in force or upcoming). Used at every tick and after a
    /// restart:
    /// - no epoch in force (first start, an outage longer than the epoch, or a clock that
    ///   stepped back before every stored epoch): publish one from now; never in the past;
    /// - the current epoch's successor is published: wait for its activation;
    /// - otherwise publish the successor once its publish time has come (at once if it
    ///   passed while the controller was down; it still activates when `current` ends), or
    ///   wait until then.
    pub fn plan(&self, epochs: &[EpochTimes], now_ms: u64) -> Plan {
        let current = epochs
            .iter()
            .filter(|e| in_force(e, now_ms))
            .max_by_key(|e| e.epoch)
            .copied();
        let Some(cur) = current else {
            return Plan {
                current: None,
                next: None,
                action: Action::Publish(self.immediate(now_ms)),
            };
        };
        let next = epochs
            .iter()
            .filter(|e| e.epoch > cur.epoch && e.activation_ms > now_ms)
            .max_by_key(|e| e.epoch)
            .copied();
        let action = match next {
            Some(next) => Action::Wait {
                until_ms: next.activation_ms,
            },
            None if now_ms >= self.publish_at(&cur) => Action::Publish(self.following(&cur)),
            None => Action::Wait {
                until_ms: self.publish_at(&cur),
            },
        };
        Plan {
            current,
            next,
            action,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Schedule = Schedule {
        length_ms: 100_000,
        lead_ms: 10_000,
    };

    fn epoch(epoch: u64, activation_ms: u64, not_after_ms: u64) -> EpochTimes {
        EpochTimes {
            epoch,
            activation_ms,
            not_after_ms,
        }
    }

    fn window(activation_ms: u64, not_after_ms: u64) -> Window {
        Window {
            activation_ms,
            not_after_ms,
        }
    }

    #[test]
    fn epoch_ids_follow_the_clock_and_always_increase() {
        assert_eq!(next_epoch_id(None, 1_800_000_000_000), 1_800_000_000_000);
        assert_eq!(next_epoch_id(Some(5), 1_800_000_000_000), 1_800_000_000_000);
        // Two epochs in one millisecond, or a clock stepped back: one above the latest.
        assert_eq!(
            next_epoch_id(Some(1_800_000_000_000), 1_800_000_000_000),
            1_800_000_000_001
        );
        assert_eq!(next_epoch_id(Some(1_800_000_000_000), 5), 1_800_000_000_001);
        assert_eq!(next_epoch_id(None, 0), 1);
        assert_eq!(next_epoch_id(Some(u64::MAX), 0), u64::MAX);
    }

    #[test]
    fn validation_names_the_field() {
        assert_eq!(Schedule::new(100_000, 10_000), Ok(S));
        assert_eq!(Schedule::new(1_000, 999).map(|s| s.length_ms), Ok(1_000));
        let err = |length, lead| Schedule::new(length, lead).unwrap_err().to_string();
        assert!(err(999, 1).starts_with("length_ms is 999;"));
        assert!(err(MAX_LENGTH_MS + 1, 1).starts_with("length_ms is 2592000001;"));
        assert!(err(60_000, 0).starts_with("lead_ms is 0;"));
        assert_eq!(
            err(60_000, 60_000),
            "lead_ms (60000) must be shorter than length_ms (60000)"
        );
    }

    #[test]
    fn the_successor_is_published_lead_before_the_end_and_activates_at_the_end() {
        let cur = epoch(1, 0, 100_000);
        assert_eq!(S.publish_at(&cur), 90_000);
        assert_eq!(S.following(&cur), window(100_000, 200_000));
        assert_eq!(S.immediate(42), window(42, 100_042));
        assert_eq!(S.immediate(u64::MAX).not_after_ms, u64::MAX);
    }

    #[test]
    fn first_start_publishes_an_epoch_from_now() {
        let plan = S.plan(&[], 5_000);
        assert_eq!(plan.current, None);
        assert_eq!(plan.action, Action::Publish(window(5_000, 105_000)));
    }

    #[test]
    fn publish_time_boundary() {
        let epochs = [epoch(1, 0, 100_000)];
        let before = S.plan(&epochs, 89_999);
        assert_eq!(before.current, Some(epochs[0]));
        assert_eq!(before.action, Action::Wait { until_ms: 90_000 });
        let at = S.plan(&epochs, 90_000);
        assert_eq!(at.action, Action::Publish(window(100_000, 200_000)));
    }

    #[test]
    fn a_published_successor_is_waited_for_then_becomes_current_at_not_after() {
        let epochs = [epoch(1, 0, 100_000), epoch(2, 100_000, 200_000)];
        let plan = S.plan(&epochs, 95_000);
        assert_eq!(plan.current, Some(epochs[0]));
        assert_eq!(plan.next, Some(epochs[1]));
        assert_eq!(plan.action, Action::Wait { until_ms: 100_000 });
        let plan = S.plan(&epochs, 99_999);
        assert_eq!(plan.current, Some(epochs[0]));
        let plan = S.plan(&epochs, 100_000);
        assert_eq!(plan.current, Some(epochs[1]));
        assert_eq!(plan.next, None);
        assert_eq!(plan.action, Action::Wait { until_ms: 190_000 });
    }

    #[test]
    fn a_missed_publish_time_publishes_at_once_still_activating_at_the_end() {
        let plan = S.plan(&[epoch(1, 0, 100_000)], 99_000);
        assert_eq!(plan.action, Action::Publish(window(100_000, 200_000)));
    }

    #[test]
    fn at_not_after_without_a_successor_the_new_epoch_starts_now() {
        let plan = S.plan(&[epoch(1, 0, 100_000)], 100_000);
        assert_eq!(plan.current, None);
        assert_eq!(plan.action, Action::Publish(window(100_000, 200_000)));
    }

    #[test]
    fn after_a_long_outage_the_new_epoch_activates_now() {
        let epochs = [epoch(7, 0, 100_000), epoch(8, 100_000, 200_000)];
        let plan = S.plan(&epochs, 1_000_000);
        assert_eq!(plan.current, None);
        assert_eq!(plan.next, None);
        assert_eq!(plan.action, Action::Publish(window(1_000_000, 1_100_000)));
    }

    #[test]
    fn an_immediate_rotation_supersedes_the_published_successor() {
        // Epoch 2 was published at 90 s; a node failed at 95 s and epoch 3 rotated in.
        let epochs = [
            epoch(1, 0, 100_000),
            epoch(2, 100_000, 200_000),
            epoch(3, 95_000, 195_000),
        ];
        for now in [95_000, 150_000] {
            let plan = S.plan(&epochs, now);
            assert_eq!(plan.current, Some(epochs[2]), "at {now}");
            assert_eq!(plan.next, None);
        }
        assert_eq!(
            S.plan(&epochs, 96_000).action,
            Action::Wait { until_ms: 185_000 }
        );
        assert_eq!(
            S.plan(&epochs, 185_000).action,
            Action::Publish(window(195_000, 295_000))
        );
    }

    #[test]
    fn a_clock_stepped_back_never_publishes_in_the_past() {
        let epochs = [epoch(4, 500_000, 600_000)];
        let plan = S.plan(&epochs, 100_000);
        assert_eq!(plan.current, None);
        assert_eq!(plan.action, Action::Publish(window(100_000, 200_000)));
    }

    #[test]
    fn random_histories_never_publish_in_the_past() {
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..2_000 {
            let epochs: Vec<EpochTimes> = (0..rng.usize(..5))
                .map(|i| {
                    let start = rng.u64(..1_000_000);
                    epoch(i as u64, start, start + rng.u64(1..200_000))
                })
                .collect();
            let now = rng.u64(..1_200_000);
            let plan = S.plan(&epochs, now);
            if let Some(cur) = plan.current {
                assert!(in_force(&cur, now));
            }
            match plan.action {
                Action::Publish(w) => {
                    assert!(w.activation_ms >= now);
                    assert_eq!(w.not_after_ms - w.activation_ms, S.length_ms);
                    assert!(plan.next.is_none());
                }
                Action::Wait { until_ms } => assert!(until_ms > now),
            }
        }
    }
}
