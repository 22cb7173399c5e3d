//! The leader lease: a sans-IO core that decides whether this instance leads, and the two
//! statements that acquire, renew and release the lease row.
//!
//! # Timing, and why two instances never both believe they lead
//!
//! The lease lasts `L` (`[ha] lease`, 6 s by default). Two clocks are involved, and each
//! side only ever compares readings of its own clock:
//!
//! - **The database's clock** sets and judges the lease: an acquisition or renewal writes
//!   `expires_at = clock_timestamp() + L`, and a lease counts as expired once
//!   `expires_at <= clock_timestamp()`. `clock_timestamp()` (not `now()`, which is frozen at
//!   the start of a transaction) is read when the statement runs. Instances' wall clocks
//!   never enter.
//! - **The instance's boot-time monotonic clock** ([`boottime`], `CLOCK_BOOTTIME`: it keeps
//!   counting through SIGSTOP, a suspended VM or a suspended host, unlike `CLOCK_MONOTONIC`)
//!   bounds the instance's own belief. Before each renewal it reads `sent_at`; if the database
//!   grants the lease, the instance holds it until `sent_at + L - margin` on its clock.
//!
//! The database can only have run the statement after it was sent, so its expiry is at least
//! `L` after `sent_at`; the instance gives up `margin = L/5` earlier than that. It is
//! therefore never still leading when the database lets another instance take over, as long
//! as the two clocks run at rates within 20 % of each other (NTP-disciplined clocks differ
//! by a few parts per million) — and the answer may come back arbitrarily late: a grant that
//! arrives after its own deadline is ignored.
//!
//! Renewals are sent every `L/3`, each bounded by `statement_timeout = lock_timeout = L/3`,
//! so a leader gets two tries (at `L/3` and `2L/3`) before it steps down at `0.8 L`. A follower
//! tries to acquire at the same pace, so a dead leader is replaced within `L + L/3` (within
//! one renew interval of a clean shutdown, which releases the lease).
//!
//! Belief is not what makes publication safe: [`super::fence()`] checks the term and expiry
//! again, by the database's clock, inside the publishing transaction and keeps the row
//! locked until it commits. The local deadline is what keeps a deposed leader from acting
//! (deciding, answering as leader) in the meantime.

use std::time::Duration;

use postgres::Client;

use super::{Ctx as _, HaError};

/// A reading of the boot-time monotonic clock, since boot.
pub type Mono = Duration;

/// The boot-time monotonic clock (`CLOCK_BOOTTIME`), which also counts while the process is
/// stopped and while the system is suspended.
pub fn boottime() -> Mono {
    use nix::time::{clock_gettime, ClockId};
    // CLOCK_BOOTTIME exists on every Linux since 2.6.39; the fallbacks are never taken there.
    clock_gettime(ClockId::CLOCK_BOOTTIME)
        .or_else(|_| clock_gettime(ClockId::CLOCK_MONOTONIC))
        .map_or(Duration::ZERO, Duration::from)
}

/// The lease length and the intervals derived from it. See the [module documentation](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    lease: Duration,
}

impl LeaseTiming {
    /// Timing for a lease of `lease` (at least 30 ms, so every derived interval is positive).
    pub fn new(lease: Duration) -> Self {
        Self {
            lease: lease.max(Duration::from_millis(30)),
        }
    }

    /// The lease length, as the database counts it.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// How often the lease is renewed (by the leader) or tried (by a follower): `L/3`. Also
    /// the bound on each of the keeper's statements.
    pub fn renew_every(&self) -> Duration {
        self.lease / 3
    }

    /// How much earlier than the database the holder gives the lease up: `L/5`.
    pub fn margin(&self) -> Duration {
        self.lease / 5
    }

    /// How long after sending a granted request the holder may act as leader: `L - L/5`.
    pub fn hold_for(&self) -> Duration {
        self.lease - self.margin()
    }
}

/// Proof of leadership: the instance and the term the database granted it. Checked again by
/// [`super::fence()`] in every publishing transaction, so a stale one is harmless.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseToken {
    instance: String,
    term: u64,
}

impl LeaseToken {
    /// A token naming `instance` and `term` (whether it holds is for the database to say).
    pub fn new(instance: impl Into<String>, term: u64) -> Self {
        Self {
            instance: instance.into(),
            term,
        }
    }

    /// The instance.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The term: the fencing token, strictly increasing across holders.
    pub fn term(&self) -> u64 {
        self.term
    }
}

/// One acquire-or-renew request: when it was sent, and the term the instance believed it
/// held then (none: it asks for a new term).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// Boot-time clock reading taken before the request was sent.
    pub sent_at: Mono,
    /// The term held at `sent_at`, if any.
    pub term: Option<u64>,
}

/// What changed in this instance's leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Nothing.
    None,
    /// The lease was renewed in the same term.
    Renewed,
    /// This instance now leads in `term`.
    Acquired {
        /// The new term.
        term: u64,
    },
    /// This instance no longer leads.
    SteppedDown {
        /// The term it held.
        term: u64,
        /// Why.
        why: &'static str,
    },
}

#[derive(Debug, Clone, Copy)]
struct Held {
    term: u64,
    until: Mono,
}

/// Whether this instance leads, from the answers of the database and its own clock. Pure:
/// every input, the clock included, is an argument.
#[derive(Debug, Clone)]
pub struct LeaseCore {
    instance: String,
    timing: LeaseTiming,
    held: Option<Held>,
}

impl LeaseCore {
    /// An instance named `instance` that does not lead yet.
    pub fn new(instance: impl Into<String>, timing: LeaseTiming) -> Self {
        Self {
            instance: instance.into(),
            timing,
            held: None,
        }
    }

    /// The instance's name.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The timing.
    pub fn timing(&self) -> LeaseTiming {
        self.timing
    }

    fn held_at(&self, now: Mono) -> Option<Held> {
        self.held.filter(|h| now < h.until)
    }

    /// The request to send now.
    pub fn attempt(&self, now: Mono) -> Attempt {
        Attempt {
            sent_at: now,
            term: self.held_at(now).map(|h| h.term),
        }
    }

    /// The database granted `attempt` in `term`; `now` is when the answer arrived.
    pub fn granted(&mut self, attempt: Attempt, term: u64, now: Mono) -> Change {
        let until = attempt.sent_at.saturating_add(self.timing.hold_for());
        if until <= now {
            return self.lose(now, "the grant came back after its own deadline");
        }
        match self.held_at(now) {
            Some(h) if h.term == term => {
                self.held = Some(Held {
                    term,
                    until: until.max(h.until),
                });
                Change::Renewed
            }
            _ => {
                self.held = Some(Held { term, until });
                Change::Acquired { term }
            }
        }
    }

    /// The database refused: another instance holds an unexpired lease.
    pub fn refused(&mut self, now: Mono) -> Change {
        self.lose(now, "another instance holds the lease")
    }

    /// No answer (connection lost, timeout): the lease is kept until its local deadline.
    pub fn failed(&mut self, now: Mono) -> Change {
        self.tick(now)
    }

    /// Steps down if the local deadline has passed.
    pub fn tick(&mut self, now: Mono) -> Change {
        match self.held {
            Some(h) if now >= h.until => {
                self.held = None;
                Change::SteppedDown {
                    term: h.term,
                    why: "the lease could not be renewed before its local deadline",
                }
            }
            _ => Change::None,
        }
    }

    /// Gives the lease up (shutdown); the term to release in the database, if any.
    pub fn release(&mut self) -> Option<u64> {
        self.held.take().map(|h| h.term)
    }

    fn lose(&mut self, now: Mono, why: &'static str) -> Change {
        let before = self.held.take();
        match before {
            Some(h) if now < h.until => Change::SteppedDown { term: h.term, why },
            Some(h) => Change::SteppedDown {
                term: h.term,
                why: "the lease could not be renewed before its local deadline",
            },
            None => Change::None,
        }
    }

    /// The token to publish with, if this instance leads at `now`.
    pub fn token(&self, now: Mono) -> Option<LeaseToken> {
        self.held_at(now)
            .map(|h| LeaseToken::new(self.instance.clone(), h.term))
    }

    /// How long this instance may still act as leader after `now` (zero if it does not lead).
    pub fn remaining(&self, now: Mono) -> Duration {
        self.held_at(now)
            .map_or(Duration::ZERO, |h| h.until.saturating_sub(now))
    }
}

/// Acquires or renews the lease for `instance`: one statement, judged by the database's
/// clock. A renewal (`believed` is the unexpired term this instance holds) keeps the term;
/// anything else that succeeds starts a new term, one above the last. Returns the term
/// granted, or `None` if another instance holds an unexpired lease.
pub fn try_acquire(
    client: &mut Client,
    instance: &str,
    believed: Option<u64>,
    lease: Duration,
) -> Result<Option<u64>, HaError> {
    let what = format!("acquiring the leader lease for {instance}");
    let believed = believed.map_or(Ok(-1), |t| term_param(t, &what))?;
    let row = client
        .query_opt(
            "UPDATE leader_lease SET \
                 term = CASE WHEN holder = $1 AND term = $2 AND expires_at > clock_timestamp() \
                        THEN term ELSE term + 1 END, \
                 holder = $1, \
                 expires_at = clock_timestamp() + make_interval(secs => $3) \
             WHERE id = 1 AND (expires_at <= clock_timestamp() OR holder = $1) \
             RETURNING term",
            &[&instance, &believed, &lease.as_secs_f64()],
        )
        .ctx(&what)?;
    row.map(|r| {
        let term: i64 = r.try_get(0).ctx(&what)?;
        u64::try_from(term).map_err(|_| HaError::Corrupt {
            what: what.clone(),
            reason: format!("negative term {term}"),
        })
    })
    .transpose()
}

/// Ends `instance`'s lease in `term` now, so that another instance can take over at once.
/// Returns false if it did not hold it (any more).
pub fn release(client: &mut Client, instance: &str, term: u64) -> Result<bool, HaError> {
    let what = format!("releasing the leader lease of {instance} in term {term}");
    let term = term_param(term, &what)?;
    let n = client
        .execute(
            "UPDATE leader_lease SET expires_at = clock_timestamp() \
             WHERE id = 1 AND holder = $1 AND term = $2 AND expires_at > clock_timestamp()",
            &[&instance, &term],
        )
        .ctx(&what)?;
    Ok(n == 1)
}

/// A term as the database's `bigint`.
pub(crate) fn term_param(term: u64, what: &str) -> Result<i64, HaError> {
    i64::try_from(term).map_err(|_| HaError::Corrupt {
        what: what.to_owned(),
        reason: format!("term {term} is out of range"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Duration = Duration::from_secs(10);

    fn s(secs: f64) -> Mono {
        Duration::from_secs_f64(secs)
    }

    fn core() -> LeaseCore {
        LeaseCore::new("a", LeaseTiming::new(L))
    }

    #[test]
    fn timing_renews_three_times_per_lease_and_steps_down_a_fifth_early() {
        let t = LeaseTiming::new(L);
        assert_eq!(
            t.renew_every(),
            Duration::from_millis(3_333) + Duration::from_nanos(333_333)
        );
        assert_eq!(t.margin(), Duration::from_secs(2));
        assert_eq!(t.hold_for(), Duration::from_secs(8));
        // Two renewals fail, the third would come after the deadline.
        assert!(t.renew_every() * 2 < t.hold_for());
        assert!(t.renew_every() * 3 > t.hold_for());
    }

    #[test]
    fn a_grant_is_held_from_the_send_time_not_the_answer() {
        let mut c = core();
        let a = c.attempt(s(100.0));
        assert_eq!(a.term, None);
        // The answer took 5 s: the lease is held until 100 + 8, not 105 + 8.
        assert_eq!(c.granted(a, 7, s(105.0)), Change::Acquired { term: 7 });
        assert_eq!(c.token(s(107.9)).unwrap().term(), 7);
        assert_eq!(c.token(s(108.0)), None);
        assert_eq!(c.remaining(s(106.0)), Duration::from_secs(2));
    }

    #[test]
    fn a_late_grant_is_ignored_and_a_held_lease_is_dropped() {
        let mut c = core();
        let a = c.attempt(s(0.0));
        assert_eq!(c.granted(a, 1, s(0.1)), Change::Acquired { term: 1 });
        let renew = c.attempt(s(3.0));
        assert_eq!(renew.term, Some(1));
        // The renewal's answer arrives 9 s later: past 3 + 8.
        let change = c.granted(renew, 1, s(12.0));
        assert!(
            matches!(change, Change::SteppedDown { term: 1, .. }),
            "{change:?}"
        );
        assert_eq!(c.token(s(12.0)), None);
        // The next attempt asks for a new term.
        assert_eq!(c.attempt(s(12.0)).term, None);
    }

    #[test]
    fn failed_renewals_keep_the_lease_until_the_local_deadline_only() {
        let mut c = core();
        let a = c.attempt(s(0.0));
        c.granted(a, 3, s(0.0));
        assert_eq!(c.failed(s(3.3)), Change::None);
        assert_eq!(c.failed(s(6.6)), Change::None);
        assert!(c.token(s(7.99)).is_some());
        assert!(matches!(
            c.tick(s(8.0)),
            Change::SteppedDown { term: 3, .. }
        ));
        assert_eq!(c.token(s(8.0)), None);
        // Even without a tick, the token is gone past the deadline.
        let mut d = core();
        let a = d.attempt(s(0.0));
        d.granted(a, 4, s(0.0));
        assert_eq!(d.token(s(9.0)), None);
    }

    #[test]
    fn renewals_extend_and_a_new_term_replaces_the_old() {
        let mut c = core();
        let a = c.attempt(s(0.0));
        c.granted(a, 1, s(0.0));
        let r = c.attempt(s(3.0));
        assert_eq!(c.granted(r, 1, s(3.1)), Change::Renewed);
        assert_eq!(c.remaining(s(3.1)), Duration::from_millis(7_900));
        let r = c.attempt(s(6.0));
        assert_eq!(c.granted(r, 2, s(6.1)), Change::Acquired { term: 2 });
        assert_eq!(c.token(s(6.1)).unwrap().term(), 2);
    }

    #[test]
    fn refusal_steps_down_at_once_and_release_gives_the_term_back() {
        let mut c = core();
        let a = c.attempt(s(0.0));
        c.granted(a, 5, s(0.0));
        assert!(matches!(
            c.refused(s(1.0)),
            Change::SteppedDown { term: 5, .. }
        ));
        assert_eq!(c.token(s(1.0)), None);
        assert_eq!(c.refused(s(1.0)), Change::None);
        let a = c.attempt(s(2.0));
        c.granted(a, 6, s(2.0));
        assert_eq!(c.release(), Some(6));
        assert_eq!(c.token(s(2.0)), None);
    }

    #[test]
    fn the_boot_clock_moves_forward() {
        let a = boottime();
        std::thread::sleep(Duration::from_millis(5));
        assert!(boottime() >= a + Duration::from_millis(5));
    }
}
