//! The controller's in-process integration tests, as one test binary (one link instead of
//! one per file); each file is a module. Run one file with
//! `cargo test -p meshtun-controller --test integration FILE::`.
//!
//! `peers_alloc.rs` installs the binary's global allocator; it counts per thread, so the
//! other tests running beside it do not disturb its measurement.

mod api;
mod candidates;
mod enroll;
mod epochs;
mod ha;
mod hub_and_spoke;
mod membership;
mod observations;
mod paths;
mod peers_alloc;
mod prebuild;
mod retention;
mod server;
mod statements;
mod tls;
mod ui;
