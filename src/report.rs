//! One line for an error and its causes, as the command-line tools print and log it.
//!
//! The convention of every error type in meshtun: its `Display` says what failed and where
//! (file, key, peer, endpoint) and leaves out the cause whenever `source()` returns one. So
//! the chain, joined with `: `, names each cause exactly once.

use std::error::Error;
use std::fmt;

/// `error`, then each of its causes after `: `.
pub fn describe(error: &dyn Error) -> String {
    Chain(error).to_string()
}

/// Displays an error with its causes, as [`describe`] does, without building a string
/// first: for log fields (`tracing::warn!(error = %Chain(&error), "...")`).
#[derive(Debug, Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn Error + 'a));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod convention;

#[cfg(test)]
mod tests {
    use super::{describe, Chain};

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read {file}")]
    struct Read {
        file: &'static str,
        #[source]
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("{config}: line {line}")]
    struct Load {
        config: &'static str,
        line: usize,
        #[source]
        source: Read,
    }

    fn missing() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")
    }

    #[test]
    fn a_two_level_chain_says_each_part_once() {
        let read = Read {
            file: "wg0.key",
            source: missing(),
        };
        assert_eq!(describe(&read), "cannot read wg0.key: no such file");
    }

    #[test]
    fn a_deeper_chain_is_joined_in_order() {
        let load = Load {
            config: "wg0.toml",
            line: 3,
            source: Read {
                file: "wg0.key",
                source: missing(),
            },
        };
        let line = "wg0.toml: line 3: cannot read wg0.key: no such file";
        assert_eq!(describe(&load), line);
        assert_eq!(format!("{}", Chain(&load)), line);
    }

    /// No substring guessing: a cause is said even when the message happens to hold its text
    /// (the old de-duplication dropped it, losing the real reason).
    #[test]
    fn a_cause_is_never_dropped_for_looking_said() {
        let read = Read {
            file: "/run/meshtun/timed out",
            source: std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"),
        };
        assert_eq!(
            describe(&read),
            "cannot read /run/meshtun/timed out: timed out"
        );
    }

    #[test]
    fn an_error_without_a_cause_is_its_message() {
        assert_eq!(describe(&missing()), "no such file");
    }
}
