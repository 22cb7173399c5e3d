//! The harness `meshtun demo` and the end-to-end tests (`tests/`, crate meshtun-e2e) share:
//! real binaries in Linux network namespaces.
//!
//! - [`Netns`]: a network namespace, deleted on drop, and the `ip` tool ([`ip`]);
//! - [`run`]: a command run to completion with a time limit;
//! - [`process`]: a long-running process logging to a file, stopped by pid, and
//!   [`process::LogFollower`] to read its log as it grows;
//! - [`gatelog`]: the one parser of the daemons' gate log lines (`MEMBERSHIP=…`,
//!   `APPLIED …`, `CUTOFF …`);
//! - [`controller`]: the `meshtun-controller` binary, found and run as an operator would
//!   (its configuration, `init`, `node add`, `serve`, `rotate`, and `audit show` read back);
//! - [`nat`]: NAT routers (nftables masquerade) in front of a node; [`coturn`]: the TURN
//!   relay's configuration and command;
//! - [`in_ci`]: the one rule for "are we in CI", where a test that cannot run fails.
//!
//! Errors are values ([`Error`]): the demo reports them, the e2e harness panics with them.
//! This crate never links the controller's library, SQLite or an HTTP stack, because the
//! shipping `meshtun` binary links it for `meshtun demo`.

pub mod controller;
pub mod coturn;
pub mod gatelog;
pub mod nat;
mod netns;
pub mod postgres;
pub mod process;
pub mod run;

pub use netns::{enter_named, ip, ip_tool, Netns, NETNS_DIR};

use std::time::Duration;

/// Whether this run is under CI (`CI` set to `true`, in any case, or `1`), where a test that
/// cannot run (no root, no namespaces, a missing tool) must fail rather than skip.
pub fn in_ci() -> bool {
    ci_value(std::env::var("CI").ok().as_deref())
}

/// [`in_ci`] for a given value of `CI`.
fn ci_value(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// What went wrong in the harness; every variant names the command or file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A program could not be started.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A command exited with a failure.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on standard error (or standard output if that was empty).
        stderr: String,
    },
    /// A command did not finish in time (it was killed).
    #[error("`{command}` did not finish within {timeout:?}; killed it")]
    Timeout {
        /// The command line.
        command: String,
        /// The limit.
        timeout: Duration,
    },
    /// A file or system operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A program printed something this harness does not understand.
    #[error("{what}: {detail}")]
    Output {
        /// What was read.
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The `meshtun-controller` binary is in neither place it is looked for.
    #[error(
        "meshtun-controller is not installed: it is neither beside this program ({beside}) \
         nor on PATH; build it (cargo build --release builds both) or install the \
         meshtun-controller package"
    )]
    NoController {
        /// Where it was looked for beside the running program.
        beside: String,
    },
}

impl Error {
    /// An I/O error while doing `what`.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_is_true_or_one_in_any_case() {
        for yes in ["true", "TRUE", "True", "1"] {
            assert!(ci_value(Some(yes)), "{yes}");
        }
        for no in ["", "false", "0", "yes", "truee"] {
            assert!(!ci_value(Some(no)), "{no}");
        }
        assert!(!ci_value(None));
    }
}
