//! The in-process integration tests of the daemon crate, as one test binary (one link
//! instead of one per file); each file is a module. Run one file with
//! `cargo test -p meshtun --test integration FILE::`.
//!
//! `no_alloc.rs` installs the binary's global allocator; it counts only on a thread that
//! asked it to, so the other tests are unaffected. `device_queue.rs` stays a test binary of
//! its own: its allocator measures the whole process's heap, which other tests running
//! beside it would disturb.

mod common;
mod pair;

mod device_attacks;
mod device_forwarding;
mod device_pair;
mod device_scale;
mod enroll_mitm;
mod evaluate;
mod gate_controller;
mod gate_failover;
mod gate_runner;
mod gate_tls;
mod gated_routes;
mod host_netns;
mod join_controller;
mod membership_key;
mod no_alloc;
mod uapi_wg_tool;

use std::time::Duration;

/// Polls `cond` every 10 ms until it holds; panics naming `what` once `limit` has passed.
/// Tests wait with this for the condition they need, not for a fixed time.
pub async fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
