//! Membership gating, the node's side: measuring the scores this node submits, and talking
//! to the controller that decides, every epoch, which nodes may be in the mesh.
//!
//! - [`benchmark`]: benchmark sources (a harness command, or simulated scores) producing
//!   [`Benchmark`](meshtun_proto::wire::Benchmark) values;
//! - [`client`]: the controller client: signed benchmark submissions, long-polled bundle
//!   fetches, enrollment with an invite ticket;
//! - [`bundle`]: checking a signed bundle and opening its preshared keys;
//! - [`cache`]: the last verified bundle on disk;
//! - [`runner`]: the daemon's gating tasks (benchmarks out, bundles in, updates to enforce);
//! - [`merge`]: static and gated peers together;
//! - [`state`]: which bundle is in force at a given time (no I/O);
//! - [`status`]: the membership state a gated daemon reports.
//!
//! Applying an update to the WireGuard device and the routes is the daemon's part.

pub mod benchmark;
pub mod bundle;
pub mod cache;
pub mod client;
pub mod merge;
pub mod resolve;
pub mod runner;
mod scheduler;
pub mod state;
pub mod status;

pub use benchmark::{BenchmarkSource, CommandSource, SimulatedSource, SourceError};
pub use bundle::{verify_bundle, BundleCheckError, GatedPeer, VerifiedBundle};
pub use cache::{load_cache, save_cache, CacheError, CachedBundle};
pub use client::{enroll, ClientError, ControllerClient};
pub use merge::{merge, GatedLimits, Merged};
pub use runner::{Gate, GateOptions, GateUpdate, GatedPeerConfig};
pub use state::{Enforced, GateState};
/// Unix time now, in milliseconds (0 before 1970, saturating far in the future): the
/// clock bundles, benchmarks and signed requests are stamped with.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub use status::{GateStatus, GatedPeerInfo, MembershipState, SharedGateStatus};
