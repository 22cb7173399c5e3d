//! What happens when a task fails: the daemon does not go on half alive. A panic anywhere
//! (a packet worker, the timers, the membership scheduler, the fetch or benchmark loop, the
//! UAPI server) ends the whole process with a clear log line and exit status 70, so that the
//! service manager restarts it and the next start cleans up. A gated node thus fails closed:
//! its tun device, and every gated peer with it, goes away with the process.
//!
//! In debug builds, [`fault_point`] lets the end-to-end tests make a named task panic.

#[cfg(debug_assertions)]
use std::sync::OnceLock;

/// The exit status after a panic (`EX_SOFTWARE`: an internal software error).
pub const PANIC_EXIT_STATUS: i32 = 70;

/// Makes every panic, on any thread, end the process: the panic's message and location
/// are logged, then the process exits with [`PANIC_EXIT_STATUS`]. Call once, early in
/// `main`.
pub fn exit_on_panic() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        let thread = std::thread::current();
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            "a task panicked ({info}); stopping the daemon rather than running without it \
             (exit status {PANIC_EXIT_STATUS}: the service manager restarts it, and the next \
             start cleans up)"
        );
        std::process::exit(PANIC_EXIT_STATUS);
    }));
}

/// The task named in `MESHTUN_FAULT_PANIC`, and when it may panic: `MESHTUN_FAULT_AFTER_MS`
/// after the first fault point was passed (at once without it). Read once; debug builds
/// only.
#[cfg(debug_assertions)]
fn fault() -> Option<&'static (String, std::time::Instant)> {
    static FAULT: OnceLock<Option<(String, std::time::Instant)>> = OnceLock::new();
    FAULT
        .get_or_init(|| {
            let task = std::env::var("MESHTUN_FAULT_PANIC").ok()?;
            let after = std::env::var("MESHTUN_FAULT_AFTER_MS")
                .ok()
                .and_then(|ms| ms.parse().ok())
                .unwrap_or(0);
            Some((
                task,
                std::time::Instant::now() + std::time::Duration::from_millis(after),
            ))
        })
        .as_ref()
}

/// A place where the test hook may inject a panic into `task`: in debug builds, panics if
/// `MESHTUN_FAULT_PANIC` names it and its time has come. Compiled out of release builds.
#[inline(always)]
pub fn fault_point(task: &'static str) {
    #[cfg(debug_assertions)]
    if let Some((faulty, at)) = fault() {
        if faulty == task && std::time::Instant::now() >= *at {
            panic!("fault injected into the {task} task (MESHTUN_FAULT_PANIC)");
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = task;
}

/// The names [`fault_point`] is called with, one per supervised task.
pub const TASKS: &[&str] = &[
    "timer",
    "send",
    "receive",
    "scheduler",
    "fetch",
    "benchmark",
    "uapi",
];
