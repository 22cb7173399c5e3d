//! meshtun: a userspace WireGuard daemon with membership gating.
//!
//! The daemon is built in layers, with I/O at the edges; [`layering`] lists them, and its
//! test fails on any `use` that runs up the tree:
//! - [`config`]: the TOML configuration, parsed once into typed values, and `wg-quick` import;
//! - [`wgcfg`]: the device's desired configuration, partial updates and status as plain data;
//! - [`allowed_ips`]: the longest-prefix-match table behind cryptokey routing;
//! - [`device`]: the WireGuard device around boringtun's `noise::Tunn`, generic over its tun
//!   and UDP transports so that tests can run nodes in-process;
//! - [`tun`] and [`udp`]: the real transports (tun-rs with offload; quinn-udp with GSO/GRO);
//! - [`uapi`]: the cross-platform WireGuard configuration protocol that `wg` speaks;
//! - [`gate`]: membership gating by a controller: benchmark sources, the signed controller
//!   client, verified bundles with their preshared keys opened, and the bundle cache;
//! - [`metrics`]: Prometheus metrics of the device and its gating, on an optional address;
//! - [`host`]: addresses, routes, rules, DNS and hooks, applied and undone as `wg-quick` does;
//! - [`join`]: enrolling a node at a controller with an invite ticket and writing its
//!   configuration;
//! - [`show`] and [`probe`]: `meshtun show`, with each peer's reachability over the tunnel;
//! - [`stun`]: the STUN client (sans I/O) that learns the node's reflexive address from its
//!   WireGuard socket;
//! - [`cli`]: the `meshtun` command line;
//! - `demo` (Linux, feature `demo`): `meshtun demo`, the gating scenario live in network
//!   namespaces with an embedded controller.

pub mod allowed_ips;
pub mod cli;
pub mod config;
#[cfg(any(target_os = "linux", target_os = "macos"))]
pub mod daemon;
#[cfg(all(feature = "demo", target_os = "linux"))]
pub mod demo;
pub mod device;
pub mod gate;
pub mod host;
#[cfg(unix)]
pub mod join;
pub mod keys;
pub mod layering;
pub mod metrics;
pub mod probe;
pub mod relay;
pub mod reresolve;
pub mod sched;
pub mod show;
pub mod stun;
pub mod supervise;
#[cfg(any(target_os = "linux", target_os = "macos"))]
pub mod tun;
pub mod uapi;
#[cfg(unix)]
pub mod udp;
pub mod wgcfg;
