//! Membership gating, the node's side: measuring the scores this node submits, and talking
//! to the controller that decides, every epoch, which nodes may be in the mesh.
//!
//! - [`benchmark`]: benchmark sources (a harness command, or simulated scores) producing
//!   [`Benchmark`](meshtun_proto::wire::Benchmark) values;
//! - [`client`]: the controller client: signed benchmark submissions, long-polled bundle
//!   fetches, enrollment with an invite ticket;
//! - [`evaluator`]: `meshtun evaluate`, the reference evaluator: a harness run against a
//!   node, signed as a statement and submitted;
//! - [`bundle`]: checking a signed bundle and opening its preshared keys;
//! - [`members`]: the operator's membership signatures, checked on every gated peer;
//! - [`observe`]: peer observations, which peers to observe each round and the statements
//!   made of the probe results (no I/O);
//! - [`paths`]: this node's gated peers counted by path, and when to report the counts (no
//!   I/O);
//! - [`cache`]: the last verified bundle on disk;
//! - [`cutoff`](mod@cutoff): checking a cut-off notice served before a deny's bundles;
//! - [`runner`]: the daemon's gating tasks (benchmarks out, bundles in, updates to enforce);
//! - [`merge`](mod@merge): static and gated peers together;
//! - [`state`]: which bundle is in force at a given time (no I/O);
//! - [`status`]: the membership state a gated daemon reports.
//!
//! Applying an update to the WireGuard device and the routes is the daemon's part.

pub mod benchmark;
pub mod bundle;
pub mod cache;
pub mod candidates;
pub mod client;
pub mod clock;
pub mod cutoff;
pub mod evaluator;
pub mod instances;
pub mod keepalive;
pub mod members;
pub mod merge;
pub mod observe;
pub mod paths;
pub mod resolve;
pub mod runner;
mod scheduler;
pub mod state;
pub mod status;

pub use benchmark::{BenchmarkSource, CommandSource, HarnessOutput, SimulatedSource, SourceError};
pub use bundle::{verify_bundle, BundleCheckError, GatedPeer, Trust, VerifiedBundle};
pub use cache::{load_cache, save_cache, CacheError, CachedBundle};
pub use client::{enroll, enroll_signed, ClientError, ControllerClient};
pub use merge::{merge, GatedLimits, Merged};
pub use runner::{Gate, GateOptions, GateUpdate, GatedPeerConfig};
pub use state::{Enforced, GateState};

/// Why membership gating could not start, or restart on a reload.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// A `[benchmark]` section without a `[controller]` section.
    #[error("the [benchmark] section needs a [controller] section to submit to")]
    BenchmarkWithoutController,
    /// The node's identity key file could not be read or created.
    #[error(transparent)]
    Identity(#[from] crate::config::IdentityFileError),
    /// The controller client could not be set up.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The benchmark source is not usable.
    #[error(transparent)]
    Benchmark(#[from] SourceError),
}
/// Unix time now, in milliseconds (0 before 1970, saturating far in the future): the
/// clock bundles, benchmarks and signed requests are stamped with.
pub fn unix_ms() -> u64 {
    skewed_for_tests(meshtun_proto::time::unix_ms())
}

/// In debug builds, `now` moved by `MESHTUN_CLOCK_OFFSET_MS` (a signed number): the
/// end-to-end tests run nodes whose clocks are off. Release builds read the clock as it is.
#[cfg(debug_assertions)]
fn skewed_for_tests(now: u64) -> u64 {
    static OFFSET: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let offset = *OFFSET.get_or_init(|| {
        std::env::var("MESHTUN_CLOCK_OFFSET_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    });
    if offset >= 0 {
        now.saturating_add(offset.unsigned_abs())
    } else {
        now.saturating_sub(offset.unsigned_abs())
    }
}

#[cfg(not(debug_assertions))]
fn skewed_for_tests(now: u64) -> u64 {
    now
}

pub use status::{GateStatus, GatedPeerInfo, MembershipState, SharedGateStatus, CUTOFF_BUCKETS};
