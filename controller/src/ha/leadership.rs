//! The engine's view of leadership: a cheap, cloneable handle it asks "may I publish now,
//! and with which token" ([`Leadership::may_publish`]), and that wakes it when another
//! instance publishes ([`Leadership::wakes`]).
//!
//! With SQLite there is one instance, which always leads ([`Leadership::sole`]). With
//! PostgreSQL the handle holds the [`LeaseCore`] that the lease keeper
//! ([`super::run_keeper`]) feeds, and every question reads the boot-time clock afresh: an
//! instance whose keeper is stuck stops leading at its local deadline all the same.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::instances::ClusterStatus;
use super::lease::{boottime, Attempt, Change, LeaseCore, LeaseTiming, LeaseToken, Mono};
use super::notify::Wake;

/// What the engine may do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publish {
    /// The only instance (SQLite): publish, unfenced.
    Sole,
    /// The leader: publish, fenced with this token.
    Leader(LeaseToken),
    /// A follower: neither decide nor publish; load what the leader publishes.
    Follower,
}

/// A clock reading function (the boot-time clock, or a test's).
pub type MonoClock = Arc<dyn Fn() -> Mono + Send + Sync>;

/// See the [module documentation](self).
#[derive(Clone, Default)]
pub struct Leadership(Option<Arc<Shared>>);

struct Shared {
    core: Mutex<LeaseCore>,
    /// When the database last answered the keeper (granted or refused the lease).
    reached: Mutex<Option<Mono>>,
    cluster: Mutex<Option<ClusterStatus>>,
    wake: watch::Sender<Wake>,
    /// [`Leadership::database_lost`] as of the keeper's last check.
    lost: watch::Sender<bool>,
    clock: MonoClock,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            None => f.write_str("Leadership::Sole"),
            Some(s) => f
                .debug_struct("Leadership")
                .field("core", &*s.core.lock())
                .finish_non_exhaustive(),
        }
    }
}

impl Leadership {
    /// The only instance: it always leads and publishes unfenced (SQLite).
    pub fn sole() -> Self {
        Self(None)
    }

    /// Instance `instance` of several, leading only while it holds the lease.
    pub fn lease(instance: impl Into<String>, timing: LeaseTiming) -> Self {
        Self::with_clock(instance, timing, Arc::new(boottime))
    }

    /// [`Leadership::lease`] on another clock (tests).
    pub fn with_clock(instance: impl Into<String>, timing: LeaseTiming, clock: MonoClock) -> Self {
        let (wake, _) = watch::channel(Wake::Start);
        let (lost, _) = watch::channel(false);
        Self(Some(Arc::new(Shared {
            core: Mutex::new(LeaseCore::new(instance, timing)),
            reached: Mutex::new(None),
            cluster: Mutex::new(None),
            wake,
            lost,
            clock,
        })))
    }

    /// True for one of several instances (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        self.0.is_some()
    }

    /// What the engine may do now.
    pub fn may_publish(&self) -> Publish {
        match &self.0 {
            None => Publish::Sole,
            Some(s) => match s.core.lock().token((s.clock)()) {
                Some(token) => Publish::Leader(token),
                None => Publish::Follower,
            },
        }
    }

    /// True if this instance may decide and publish now.
    pub fn is_leader(&self) -> bool {
        self.may_publish() != Publish::Follower
    }

    /// The token to fence a publication with (`None`: the sole instance, or a follower).
    pub fn token(&self) -> Option<LeaseToken> {
        match self.may_publish() {
            Publish::Leader(token) => Some(token),
            _ => None,
        }
    }

    /// This instance's name (`None`: the sole instance).
    pub fn instance(&self) -> Option<String> {
        self.0.as_ref().map(|s| s.core.lock().instance().to_owned())
    }

    /// The cluster's status as of the keeper's last round (`None` for the sole instance or
    /// before the first round).
    pub fn cluster(&self) -> Option<ClusterStatus> {
        self.0.as_ref().and_then(|s| s.cluster.lock().clone())
    }

    /// Wakes for epochs published by any instance (`None` for the sole instance).
    pub fn wakes(&self) -> Option<watch::Receiver<Wake>> {
        self.0.as_ref().map(|s| s.wake.subscribe())
    }

    /// Where the epoch listener ([`super::run_listener`]) sends its wakes.
    pub fn wake_sender(&self) -> Option<watch::Sender<Wake>> {
        self.0.as_ref().map(|s| s.wake.clone())
    }

    /// The lease timing (`None` for the sole instance).
    pub fn timing(&self) -> Option<LeaseTiming> {
        self.0.as_ref().map(|s| s.core.lock().timing())
    }

    fn with_core<T>(&self, f: impl FnOnce(&mut LeaseCore, Mono) -> T) -> Option<T> {
        self.0.as_ref().map(|s| f(&mut s.core.lock(), (s.clock)()))
    }

    /// The keeper's next request.
    pub(crate) fn attempt(&self) -> Option<Attempt> {
        self.with_core(|core, now| core.attempt(now))
    }

    /// The database granted `attempt` in `term`.
    pub(crate) fn granted(&self, attempt: Attempt, term: u64) -> Change {
        self.reached();
        self.with_core(|core, now| core.granted(attempt, term, now))
            .unwrap_or(Change::None)
    }

    /// Another instance holds the lease.
    pub(crate) fn refused(&self) -> Change {
        self.reached();
        self.with_core(|core, now| core.refused(now))
            .unwrap_or(Change::None)
    }

    fn reached(&self) {
        if let Some(s) = &self.0 {
            *s.reached.lock() = Some((s.clock)());
        }
    }

    /// True once the database has not answered the keeper for a whole lease: this instance
    /// then holds nothing it can confirm (no new epoch reaches it, no nonce can be
    /// recorded), and tells nodes so (503) at once, so that they move to another instance.
    /// False for the sole instance, and before the keeper's first answer.
    pub fn database_lost(&self) -> bool {
        let Some(s) = &self.0 else {
            return false;
        };
        let Some(reached) = *s.reached.lock() else {
            return false;
        };
        let lease = s.core.lock().timing().lease();
        (s.clock)().saturating_sub(reached) > lease
    }

    /// Publishes [`Leadership::database_lost`] to [`Leadership::lost_watch`]ers if it
    /// changed; the keeper calls it after every round and every tick without an answer, so
    /// a loss is seen at most `lease/3` late.
    pub(crate) fn check_database(&self) {
        if let Some(s) = &self.0 {
            let lost = self.database_lost();
            s.lost
                .send_if_modified(|was| std::mem::replace(was, lost) != lost);
        }
    }

    /// Follows [`Leadership::database_lost`] as the keeper sees it (`None` for the sole
    /// instance): parked long-polls end with 503 when it turns true, so that their nodes
    /// move to another instance at once rather than at their poll's timeout.
    pub fn lost_watch(&self) -> Option<watch::Receiver<bool>> {
        self.0.as_ref().map(|s| s.lost.subscribe())
    }

    /// The keeper got no answer.
    pub(crate) fn failed(&self) -> Change {
        self.with_core(|core, now| core.failed(now))
            .unwrap_or(Change::None)
    }

    /// Gives the lease up locally; the term to release in the database.
    pub(crate) fn release(&self) -> Option<u64> {
        self.with_core(|core, _| core.release()).flatten()
    }

    /// The keeper's latest reading of the cluster.
    pub(crate) fn set_cluster(&self, status: ClusterStatus) {
        if let Some(s) = &self.0 {
            *s.cluster.lock() = Some(status);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;

    fn fake_clock() -> (Arc<AtomicU64>, MonoClock) {
        let ms = Arc::new(AtomicU64::new(1_000));
        let read = ms.clone();
        (
            ms,
            Arc::new(move || Duration::from_millis(read.load(Ordering::SeqCst))),
        )
    }

    #[test]
    fn the_sole_instance_always_publishes_unfenced() {
        let l = Leadership::sole();
        assert_eq!(l.may_publish(), Publish::Sole);
        assert!(l.is_leader());
        assert_eq!(l.token(), None);
        assert!(l.wakes().is_none());
        assert!(l.attempt().is_none());
    }

    #[test]
    fn a_lease_holder_leads_until_its_local_deadline_even_if_nobody_ticks() {
        let (ms, clock) = fake_clock();
        let l = Leadership::with_clock("a", LeaseTiming::new(Duration::from_secs(10)), clock);
        assert_eq!(l.may_publish(), Publish::Follower);
        let attempt = l.attempt().unwrap();
        assert_eq!(l.granted(attempt, 4), Change::Acquired { term: 4 });
        assert_eq!(l.may_publish(), Publish::Leader(LeaseToken::new("a", 4)));
        ms.fetch_add(7_999, Ordering::SeqCst);
        assert!(l.is_leader());
        // The keeper is stuck: nobody calls failed() or refused(); the handle still steps
        // down at 8 s (L - L/5) after the request was sent.
        ms.fetch_add(1, Ordering::SeqCst);
        assert_eq!(l.may_publish(), Publish::Follower);
        assert_eq!(l.token(), None);
    }

    #[test]
    fn clones_share_one_state_and_wakes_reach_subscribers() {
        let (_ms, clock) = fake_clock();
        let l = Leadership::with_clock("a", LeaseTiming::new(Duration::from_secs(1)), clock);
        let other = l.clone();
        let attempt = l.attempt().unwrap();
        l.granted(attempt, 1);
        assert!(other.is_leader());
        assert!(matches!(
            other.refused(),
            Change::SteppedDown { term: 1, .. }
        ));
        assert!(!l.is_leader());
        let mut rx = l.wakes().unwrap();
        other.wake_sender().unwrap().send_replace(Wake::Epoch(9));
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), Wake::Epoch(9));
    }

    #[test]
    fn the_database_is_lost_once_it_has_not_answered_for_a_lease() {
        let (ms, clock) = fake_clock();
        let l = Leadership::with_clock("a", LeaseTiming::new(Duration::from_secs(2)), clock);
        assert!(!l.database_lost(), "not before the keeper's first answer");
        l.refused();
        ms.fetch_add(1_900, Ordering::SeqCst);
        assert!(!l.database_lost());
        l.failed();
        ms.fetch_add(200, Ordering::SeqCst);
        assert!(l.database_lost(), "no answer for more than a lease");
        l.refused();
        assert!(!l.database_lost(), "an answer brings it back");
        assert!(!Leadership::sole().database_lost());
    }
}
