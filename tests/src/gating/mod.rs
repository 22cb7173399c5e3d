//! Membership gating end to end: a real `meshtun-controller` and gated `meshtun up` daemons,
//! each in a network namespace of its own, joined by a bridge.
//!
//! The topology of a [`Mesh`]:
//!
//! ```text
//!   node a (192.0.2.1)   node b (192.0.2.2)  …  controller (192.0.2.250:8700)
//!         \                    |                      /
//!          +------------- hub namespace: bridge br0 -+
//! ```
//!
//! Outer addresses are in 192.0.2.0/24, tunnel addresses in 100.64.0.0/24 (node `i` has
//! `100.64.0.i`). The controller runs with a short epoch ([`Timing`]); every node is enrolled
//! with `meshtun-controller node add` before it starts, with an identity key the test wrote,
//! and measures its scores with a `[benchmark] command` that prints the score held in a file
//! the test rewrites ([`Mesh::set_score`]).
//!
//! - [`Mesh`] and [`GatedNode`]: the namespaces, the controller's home and the nodes' files;
//! - [`ha`]: several controller instances on one PostgreSQL database ([`Backend::Postgres`]),
//!   the database in a namespace of its own at 192.0.2.240;
//! - [`migrate`]: the controller moved from SQLite to PostgreSQL (`migrate`, `audit verify`);
//! - [`ControllerProc`]: `meshtun-controller serve` in its namespace: stop, continue, kill,
//!   restart, and what `status` and `audit show` report;
//! - [`PingRun`]: `ping -D` at a fixed rate in the background, and what it saw;
//! - [`observe`]: the daemons' gate log lines and their peers as the UAPI reports them;
//! - [`restore`]: a controller brought back from a backup while its mesh runs.
//!
//! Everything is cleaned up on drop; every wait is bounded in time.

mod control;
pub mod ha;
mod mesh;
pub mod migrate;
pub mod observe;
mod ping;
pub mod restore;

pub use control::{ControllerProc, Rotation};
pub use ha::Backend;
pub use mesh::{GatedNode, Instance, Mesh};
pub use ping::{PingReport, PingRun};

use std::time::Duration;

/// The controller's host number in 192.0.2.0/24.
pub const CONTROLLER_HOST: u8 = 250;

/// The controller's TCP port.
pub const CONTROLLER_PORT: u16 = 8700;

/// The UDP port every node listens on (each node has a namespace of its own).
pub const NODE_PORT: u16 = 51820;

/// Pings per second between nodes whose traffic must not be interrupted.
pub const PING_RATE: u32 = 50;

/// The passing score nodes start with.
pub const PASSING: f64 = 0.9;

/// A failing score (below the default threshold, 0.70).
pub const FAILING: f64 = 0.1;

/// The timing of a gated mesh: the controller's epoch and long poll, the nodes' grace and
/// benchmark interval. All in whole seconds, as the configuration files take them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// `[epoch] length`.
    pub epoch: u64,
    /// `[epoch] lead`: how long before activation the next epoch is published.
    pub lead: u64,
    /// `[api] long_poll`.
    pub long_poll: u64,
    /// `[controller] grace` of every node.
    pub grace: u64,
    /// `[benchmark] interval` of every node.
    pub interval: u64,
}

impl Default for Timing {
    /// A 5 s epoch published 2 s ahead, 3 s long polls, 3 s grace, a benchmark every second.
    fn default() -> Self {
        Self {
            epoch: 5,
            lead: 2,
            long_poll: 3,
            grace: 3,
            interval: 1,
        }
    }
}

impl Timing {
    /// The epoch length.
    pub fn epoch_len(&self) -> Duration {
        Duration::from_secs(self.epoch)
    }

    /// The controller's `controller.toml` settings for this timing: rotation on deny, the
    /// default threshold, readmission after one passing evaluation.
    pub fn controller_settings(&self) -> String {
        format!(
            "[epoch]\nlength = {}\nlead = {}\nrotate_on_deny = true\n\n\
             [policy]\nthreshold = 0.70\nreadmit_after = 1\n\n\
             [api]\nlong_poll = {}\n",
            self.epoch, self.lead, self.long_poll
        )
    }
}

/// The benchmark harness's output for `score`: all four scores equal to it.
pub fn harness_output(score: f64) -> String {
    format!(
        "{{\"overall\": {score}, \"refusal\": {score}, \"honesty\": {score}, \"policy\": {score}}}\n"
    )
}

/// The current time, Unix milliseconds.
pub fn now_ms() -> u64 {
    crate::controller::now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_settings_parse_as_toml_with_the_timing() {
        let timing = Timing::default();
        let table: toml::Table = timing.controller_settings().parse().unwrap();
        assert_eq!(table["epoch"]["length"].as_integer(), Some(5));
        assert_eq!(table["epoch"]["lead"].as_integer(), Some(2));
        assert_eq!(table["epoch"]["rotate_on_deny"].as_bool(), Some(true));
        assert_eq!(table["api"]["long_poll"].as_integer(), Some(3));
        assert_eq!(table["policy"]["readmit_after"].as_integer(), Some(1));
    }

    #[test]
    fn harness_output_is_the_documented_json() {
        let value: serde_json::Value = serde_json::from_str(&harness_output(0.25)).unwrap();
        for key in ["overall", "refusal", "honesty", "policy"] {
            assert_eq!(value[key].as_f64(), Some(0.25), "{key}");
        }
    }
}
