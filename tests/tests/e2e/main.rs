//! The end-to-end tests: real meshtun, meshtun-controller and wireguard-go binaries in network
//! namespaces, one module per subject, all in one test binary. One binary links once instead
//! of once per file, and `--test-threads` runs tests of different files side by side: most of
//! them wait on real time (epochs, handshakes, timeouts) rather than use the CPU. Every test
//! creates its own namespaces and names (`meshtun_e2e::unique_suffix`), so any two may run at
//! once.
//!
//! A new end-to-end test file goes in this directory, with its `mod` line below; run one file
//! with `cargo test -p meshtun-e2e --test e2e FILE::`. The tests that build release binaries
//! (`../controller_static.rs`, `../packages.rs`) stay binaries of their own, so that their
//! builds never run beside the timing-sensitive tests here.

mod bad_config;
mod controller_abuse;
mod controller_crash;
mod controller_secrets;
mod dashboard;
mod dashboard_ha;
mod demo;
mod demo_dashboard;
mod dependencies;
mod enroll_proxy;
mod evaluators;
mod flood;
mod forged_handshakes;
mod gating_backup;
mod gating_clock_skew;
mod gating_controller;
mod gating_deny;
mod gating_mesh;
mod gating_restore;
mod ha_deny;
mod ha_failover;
mod ha_migrate;
mod ha_partition;
mod ha_pause;
mod ha_replay;
mod harness_wireguard_go;
mod hub_forwarding;
mod interop_wireguard_go;
mod key_rotation;
mod lifecycle;
mod live_edits;
mod membership_key;
mod metrics;
mod monitoring;
mod namespaces;
mod nat_direct;
mod nat_keepalive;
mod nat_relay;
mod nat_stun;
mod nat_victim;
mod offload;
mod peer_observations;
mod realtime;
mod realtime_flood;
mod relay_turn;
mod reresolve;
mod roaming;
mod root_trust;
mod show_colour;
mod show_reachability;
mod socket_activation;
mod supervision;
mod systemd_notify;
mod systemd_units;
mod two_nodes;
mod unprivileged;
mod wg_tool;
