//! Running a command to completion with a time limit, capturing its output. The work is [`meshtun_testbed::run`]'s; this adds what tests want: a failure panics.

use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

/// What a finished command printed, and how it exited.
#[derive(Debug)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// Its exit status.
    pub status: ExitStatus,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl From<meshtun_testbed::run::Output> for Output {
    fn from(out: meshtun_testbed::run::Output) -> Self {
        Self {
            command: out.command,
            status: out.status,
            stdout: out.stdout,
            stderr: out.stderr,
        }
    }
}

impl Output {
    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Returns stdout if the command succeeded; panics with the command and its stderr if not.
    pub fn expect_success(self) -> String {
        assert!(
            self.success(),
            "`{}` failed ({}):\n{}{}",
            self.command,
            self.status,
            self.stdout,
            self.stderr
        );
        self.stdout
    }
}

pub use meshtun_testbed::run::describe;

/// Runs `cmd` with stdin closed, waiting at most `timeout`.
///
/// Panics if it cannot start (naming the program: is it installed?) or if it is still running
/// after `timeout` (it is killed first).
pub fn run(cmd: &mut Command, timeout: Duration) -> Output {
    run_with_input(cmd, "", timeout)
}

/// Like [`run`], writing `input` to the command's stdin and then closing it.
pub fn run_with_input(cmd: &mut Command, input: &str, timeout: Duration) -> Output {
    meshtun_testbed::run::try_run_with_input(cmd, input, timeout)
        .map(Output::from)
        .unwrap_or_else(|why| panic!("{why}; is it installed?"))
}

/// Like [`run`], but a command that cannot start or does not finish within `timeout` (it is
/// killed) is an error rather than a panic: for diagnostics gathered while a test fails.
pub fn try_run(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    meshtun_testbed::run::try_run(cmd, timeout)
        .map(Output::from)
        .map_err(|e| e.to_string())
}

/// Waits for `child` to exit for at most `timeout`; `None` if it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    meshtun_testbed::run::wait_timeout(child, timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_status() {
        let out = run(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(10),
        );
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        assert_eq!(out.status.code(), Some(3));
        assert!(!out.success());
    }

    #[test]
    fn feeds_input() {
        let out = run_with_input(&mut Command::new("cat"), "hello\n", Duration::from_secs(10));
        assert_eq!(out.expect_success(), "hello\n");
    }

    #[test]
    #[should_panic(expected = "did not finish within")]
    fn kills_a_command_that_runs_too_long() {
        run(Command::new("sleep").arg("5"), Duration::from_millis(200));
    }

    #[test]
    #[should_panic(expected = "is it installed?")]
    fn names_a_missing_program() {
        run(
            &mut Command::new("meshtun-e2e-no-such-program"),
            Duration::from_secs(1),
        );
    }
}
