//! meshtun-controller: decides every epoch which nodes may be in the mesh, derives a
//! preshared key for every allowed pair, and serves each node its own signed bundle.
//!
//! - [`model`]: nodes, benchmarks, policy, decisions and epochs as plain data;
//! - [`membership`]: who is allowed, and who peers with whom (pure decisions);
//! - [`schedule`]: when epochs are published, activated and rotated (pure time arithmetic);
//! - [`engine`]: the live state: epochs published on schedule or at once on a deny, bundles served;
//! - [`api`]: the HTTP API; [`status`]: the status report; [`cli`]: the command line;
//! - [`store`]: durable state in SQLite, with the hash-chained audit log;
//! - [`ha`]: several instances on one PostgreSQL: the leader lease, fencing, epoch
//!   notifications, the shared replay-nonce table and the instances' status;
//! - [`auth`]: signed node requests (signature, freshness, replay, path binding) and the admin token;
//! - [`config`]: `controller.toml`, validated with key-and-line errors;
//! - [`enrollment_sig`]: the operator's membership key: the offline commands that make it
//!   and sign enrollments, and the check of every enrollment's signature;
//! - [`network`]: the overlay's address plan: checks and the next free address;
//! - [`bundles`]: building, signing and caching one node's bundle for one epoch;
//! - [`service`]: [`serve`], the one entry point of a running controller (API, status
//!   listener and engine tasks on a listener the caller bound, until shutdown);
//! - [`server`]: the accept loop, with connection caps and timeouts; [`quota`]: per-address
//!   and per-node caps and request quotas;
//! - [`metrics`]: Prometheus metrics; [`tls`]: optional TLS through rustls;
//! - [`clock`]: Unix time driven by tokio's clock (so tests can pause it);
//! - `testing` (feature `test-support`): the in-process controller fixture of the
//!   controller's and the daemon's tests.

pub mod api;
pub mod auth;
pub mod blocking;
pub mod bundles;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod engine;
pub mod enrollment_sig;
pub mod ha;
pub mod keys;
pub mod membership;
pub mod metrics;
pub mod model;
pub mod network;
pub mod quota;
pub mod relay;
pub mod schedule;
pub mod server;
pub mod service;
pub mod status;
pub mod store;
pub mod stun;
/// The throwaway PostgreSQL the tests run the store on (in the shared harness crate).
#[cfg(any(test, feature = "test-support"))]
pub use meshtun_testbed::postgres as temp_cluster;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod tls;
pub mod ui;

pub use service::{serve, Epochs, ServeError, ServeSettings, Shared};
