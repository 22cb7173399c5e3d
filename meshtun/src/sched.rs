//! The packet workers' CPU priority: real time while they keep up, normal while they are
//! swamped.
//!
//! # Why
//!
//! When a tunnel is full, the CPU is the bottleneck: the daemons share the cores with the
//! programs that fill the tunnel (on a 2-core machine, iperf3 and the kernel's TCP stack).
//! At normal priority a daemon waits its turn behind them, and TCP fills the queues in front
//! of it: a ping through a tunnel carrying 4 TCP streams waited 3 ms in each direction, in
//! the daemon's run queue rather than in any buffer we own (a lower `nice` did not change
//! that). The kernel's own WireGuard does not wait: it runs in softirq context, ahead of
//! every process. Running the workers at the lowest real-time priority (`SCHED_RR` 1) does
//! the same here: they run as soon as a packet is there, the queues in front of them stay
//! empty, and the backlog stays where it belongs, in the sending application.
//!
//! # Why it is not the default
//!
//! A real-time worker is woken, and preempts whatever runs on its core, for every packet.
//! Against a sender without congestion control (a UDP flood of small datagrams) on the same
//! cores that costs a context switch per packet and starves the sender: on 2 cores, 64-byte
//! floods delivered 56 k packets/s at real time against 133 k at normal priority, 1392-byte
//! ones 62 k against 150 k. The kernel batches such work (NAPI, softirq budgets); a thread
//! cannot be told to wake only every so many packets. So `scheduling = "realtime"` is for
//! machines where latency under TCP load matters more than small-packet floods.
//!
//! # The guard
//!
//! Real time must not become a way to take the machine. A worker that has run for
//! [`BUSY_LIMIT`] without once going idle (a flood, or more traffic than the cores can
//! carry) drops back to normal priority and shares the cores fairly, as the kernel moves
//! softirq work that runs too long to the normal-priority `ksoftirqd`. It goes back to
//! real time the next time it wakes from idle.
//!
//! # How
//!
//! Only the async runtime's worker threads are raised, on their first wake-up, through the
//! runtime's park and unpark hooks ([`parked`], [`unparked`]); the packet loops report
//! progress after each batch ([`busy`]). Blocking-pool threads (the X25519 of a large
//! change) keep normal priority. [`Guard`] is the decision, free of I/O; the rest applies
//! it with `sched_setscheduler` on the calling thread. Raising needs `CAP_SYS_NICE` or an
//! `RLIMIT_RTPRIO` of at least 1 (`LimitRTPRIO=1` in the systemd unit); when refused, the
//! daemon says so once and runs at normal priority. Lowering is always allowed.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// Longest a worker may run at real-time priority without going idle.
pub const BUSY_LIMIT: Duration = Duration::from_millis(50);

/// The real-time priority used: the lowest, below every real-time task an operator runs.
pub const REALTIME_PRIORITY: i32 = 1;

/// The `[interface] scheduling` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheduling {
    /// Packet workers at real-time priority while they keep up.
    Realtime,
    /// Packet workers at the process's normal priority (the default).
    #[default]
    Normal,
}

impl Scheduling {
    /// The setting's name in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheduling::Realtime => "realtime",
            Scheduling::Normal => "normal",
        }
    }

    /// Parses the configuration value.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "realtime" => Some(Scheduling::Realtime),
            "normal" => Some(Scheduling::Normal),
            _ => None,
        }
    }
}

/// What a thread should switch to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// `SCHED_RR` at [`REALTIME_PRIORITY`].
    Realtime,
    /// `SCHED_OTHER`.
    Normal,
}

/// One worker thread's state, and the decisions taken on it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Guard {
    realtime: bool,
    /// The system refused real time to this thread: never asked again.
    refused: bool,
    /// Since when the thread has run without going idle.
    busy_since: Option<Instant>,
}

impl Guard {
    /// The thread woke from idle at `now`.
    pub fn unparked(&mut self, now: Instant) -> Option<Want> {
        self.busy_since = Some(now);
        (!self.realtime && !self.refused).then_some(Want::Realtime)
    }

    /// The thread goes idle.
    pub fn parked(&mut self) {
        self.busy_since = None;
    }

    /// The thread finished a batch at `now`: too long at real time without going idle
    /// asks to drop to normal.
    pub fn progress(&mut self, now: Instant) -> Option<Want> {
        let since = self.busy_since?;
        (self.realtime && now.saturating_duration_since(since) > BUSY_LIMIT).then_some(Want::Normal)
    }

    /// Records the outcome of applying `want`.
    pub fn applied(&mut self, want: Want, ok: bool) {
        match (want, ok) {
            (Want::Realtime, true) => self.realtime = true,
            (Want::Realtime, false) => self.refused = true,
            (Want::Normal, true) => self.realtime = false,
            // Lowering cannot be refused; if it were, stop trying.
            (Want::Normal, false) => self.refused = true,
        }
    }

    /// Whether the thread runs at real-time priority.
    pub fn is_realtime(&self) -> bool {
        self.realtime
    }
}

/// The process-wide setting; off until the daemon turns it on.
static MODE: AtomicU8 = AtomicU8::new(0);
/// Whether the refusal or the first success was logged.
static LOGGED: AtomicBool = AtomicBool::new(false);
/// Times a worker dropped to normal priority.
static DEMOTIONS: AtomicU64 = AtomicU64::new(0);
/// Worker threads at real-time priority now.
static REALTIME_THREADS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static GUARD: Cell<Guard> = const { Cell::new(Guard { realtime: false, refused: false, busy_since: None }) };
}

/// Turns real-time workers on or off for this process (the daemon, from its configuration).
/// Threads already raised drop back at their next batch when turned off.
pub fn set(mode: Scheduling) {
    MODE.store(u8::from(mode == Scheduling::Realtime), Ordering::Relaxed);
}

fn enabled() -> bool {
    MODE.load(Ordering::Relaxed) == 1
}

/// Times a packet worker dropped to normal priority after [`BUSY_LIMIT`] without idling.
pub fn demotions() -> u64 {
    DEMOTIONS.load(Ordering::Relaxed)
}

/// Worker threads at real-time priority now.
pub fn realtime_threads() -> u64 {
    REALTIME_THREADS.load(Ordering::Relaxed)
}

/// The runtime's unpark hook: a worker woke from idle.
pub fn unparked() {
    if !enabled() {
        return;
    }
    with_guard(|guard| guard.unparked(Instant::now()));
}

/// The runtime's park hook: a worker goes idle.
pub fn parked() {
    GUARD.with(|cell| {
        let mut guard = cell.get();
        guard.parked();
        cell.set(guard);
    });
}

/// Called by the packet loops after each batch.
pub fn busy() {
    with_guard(|guard| {
        if !enabled() && guard.is_realtime() {
            return Some(Want::Normal);
        }
        guard.progress(Instant::now())
    });
}

fn with_guard(decide: impl FnOnce(&mut Guard) -> Option<Want>) {
    GUARD.with(|cell| {
        let mut guard = cell.get();
        if let Some(want) = decide(&mut guard) {
            let result = apply(want);
            guard.applied(want, result.is_ok());
            account(want, &result);
        }
        cell.set(guard);
    });
}

fn account(want: Want, result: &std::io::Result<()>) {
    match (want, result) {
        (Want::Realtime, Ok(())) => {
            REALTIME_THREADS.fetch_add(1, Ordering::Relaxed);
            if !LOGGED.swap(true, Ordering::Relaxed) {
                tracing::info!(
                    "packet workers run at real-time priority (SCHED_RR {REALTIME_PRIORITY}) \
                     while they keep up"
                );
            }
        }
        (Want::Realtime, Err(error)) => {
            if !LOGGED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "packet workers stay at normal priority: real-time priority was refused \
                     ({error}; it needs CAP_SYS_NICE or RLIMIT_RTPRIO >= 1, LimitRTPRIO=1 in a \
                     systemd unit); latency under load will be higher (set [interface] \
                     scheduling = \"normal\" to silence this)"
                );
            }
        }
        (Want::Normal, Ok(())) => {
            REALTIME_THREADS.fetch_sub(1, Ordering::Relaxed);
            DEMOTIONS.fetch_add(1, Ordering::Relaxed);
            tracing::trace!("a packet worker dropped to normal priority");
        }
        (Want::Normal, Err(error)) => {
            tracing::warn!(%error, "a packet worker could not drop to normal priority");
        }
    }
}

/// Switches the calling thread's scheduling policy.
#[cfg(target_os = "linux")]
fn apply(want: Want) -> std::io::Result<()> {
    let (policy, priority) = match want {
        Want::Realtime => (libc::SCHED_RR, REALTIME_PRIORITY),
        Want::Normal => (libc::SCHED_OTHER, 0),
    };
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: `param` is a valid, initialised sched_param that outlives the call; pid 0 is
    // the calling thread.
    let rc = unsafe { libc::sched_setscheduler(0, policy, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Real-time workers are implemented on Linux only; elsewhere they stay at normal priority.
#[cfg(not(target_os = "linux"))]
fn apply(want: Want) -> std::io::Result<()> {
    match want {
        Want::Normal => Ok(()),
        Want::Realtime => Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "real-time packet workers are implemented on Linux only",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_is_raised_on_its_first_wake_up_and_not_again_while_raised() {
        let mut g = Guard::default();
        let t = Instant::now();
        assert_eq!(g.unparked(t), Some(Want::Realtime));
        g.applied(Want::Realtime, true);
        g.parked();
        assert_eq!(g.unparked(t), None);
        assert!(g.is_realtime());
    }

    #[test]
    fn a_worker_busy_past_the_limit_drops_to_normal_and_is_raised_when_it_next_wakes() {
        let mut g = Guard::default();
        let t = Instant::now();
        g.unparked(t);
        g.applied(Want::Realtime, true);
        assert_eq!(
            g.progress(t + BUSY_LIMIT),
            None,
            "exactly the limit is allowed"
        );
        let later = t + BUSY_LIMIT + Duration::from_micros(1);
        assert_eq!(g.progress(later), Some(Want::Normal));
        g.applied(Want::Normal, true);
        assert!(!g.is_realtime());
        assert_eq!(g.progress(later + BUSY_LIMIT * 10), None, "already normal");
        g.parked();
        assert_eq!(g.unparked(later), Some(Want::Realtime));
    }

    #[test]
    fn going_idle_resets_the_busy_clock() {
        let mut g = Guard::default();
        let t = Instant::now();
        g.unparked(t);
        g.applied(Want::Realtime, true);
        g.parked();
        assert_eq!(
            g.progress(t + BUSY_LIMIT * 100),
            None,
            "idle: nothing to limit"
        );
        g.unparked(t + BUSY_LIMIT * 100);
        assert_eq!(g.progress(t + BUSY_LIMIT * 101), None);
    }

    #[test]
    fn a_refused_thread_is_never_asked_again() {
        let mut g = Guard::default();
        let t = Instant::now();
        assert_eq!(g.unparked(t), Some(Want::Realtime));
        g.applied(Want::Realtime, false);
        g.parked();
        assert_eq!(g.unparked(t), None);
        assert_eq!(
            g.progress(t + BUSY_LIMIT * 2),
            None,
            "never raised: nothing to drop"
        );
    }

    #[test]
    fn the_setting_parses_its_two_values_only() {
        assert_eq!(Scheduling::parse("realtime"), Some(Scheduling::Realtime));
        assert_eq!(Scheduling::parse("normal"), Some(Scheduling::Normal));
        assert_eq!(Scheduling::parse("Realtime"), None);
        assert_eq!(Scheduling::parse(""), None);
        assert_eq!(Scheduling::default(), Scheduling::Normal);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod live_tests {
    use super::*;

    /// The calling thread's scheduling policy.
    fn policy() -> i32 {
        // SAFETY: sched_getscheduler reads the policy of the calling thread (pid 0).
        unsafe { libc::sched_getscheduler(0) }
    }

    /// Whether this process may raise a thread to real time; outside CI a test without the
    /// privilege says so and passes, in CI it fails.
    fn privileged(test: &str) -> bool {
        let ok = std::thread::spawn(|| apply(Want::Realtime).is_ok())
            .join()
            .unwrap_or(false);
        if !ok {
            assert!(
                std::env::var_os("CI").is_none_or(|v| v != "true"),
                "{test}: real-time priority refused in CI (needs root or CAP_SYS_NICE)"
            );
            eprintln!("SKIP {test}: real-time priority refused (needs root or CAP_SYS_NICE)");
        }
        ok
    }

    #[test]
    fn a_runtime_worker_runs_at_real_time_and_drops_to_normal_when_kept_busy() {
        if !privileged("a_runtime_worker_runs_at_real_time_and_drops_to_normal_when_kept_busy") {
            return;
        }
        set(Scheduling::Realtime);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .on_thread_park(parked)
            .on_thread_unpark(unparked)
            .build()
            .expect("runtime");
        let (woke, kept_busy, woke_again) = runtime.block_on(async {
            tokio::spawn(async {
                // Going idle once makes the worker park and wake, as packet workers do.
                tokio::time::sleep(Duration::from_millis(5)).await;
                let woke = policy();
                // A flood: batch after batch, never idle, past the limit.
                let start = Instant::now();
                while start.elapsed() < BUSY_LIMIT + Duration::from_millis(30) {
                    busy();
                    std::hint::spin_loop();
                }
                let kept_busy = policy();
                tokio::time::sleep(Duration::from_millis(5)).await;
                (woke, kept_busy, policy())
            })
            .await
            .expect("task")
        });
        set(Scheduling::Normal);
        assert_eq!(
            woke,
            libc::SCHED_RR,
            "a worker that woke from idle is real time"
        );
        assert_eq!(
            kept_busy,
            libc::SCHED_OTHER,
            "a worker busy for longer than {BUSY_LIMIT:?} without idling is normal"
        );
        assert_eq!(woke_again, libc::SCHED_RR, "raised again once it idled");
        assert!(demotions() >= 1);
    }
}
