//! Running a command to completion with a time limit, capturing its output.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::Error;

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

impl Output {
    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Its standard output if it succeeded; otherwise an error with what it printed.
    pub fn into_result(self) -> Result<String, Error> {
        if self.success() {
            return Ok(self.stdout);
        }
        let said = if self.stderr.trim().is_empty() {
            self.stdout.trim()
        } else {
            self.stderr.trim()
        };
        Err(Error::Failed {
            command: self.command,
            status: self.status.to_string(),
            stderr: said.to_owned(),
        })
    }
}

/// A printable form of `cmd`'s command line.
pub fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// `program args…` as a command.
pub fn command<S: AsRef<OsStr>>(program: impl AsRef<OsStr>, args: &[S]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args);
    cmd
}

/// Runs `cmd` with stdin closed, waiting at most `timeout` (it is killed after that).
pub fn try_run(cmd: &mut Command, timeout: Duration) -> Result<Output, Error> {
    try_run_with_input(cmd, "", timeout)
}

/// Like [`try_run`], writing `input` to the command's stdin and then closing it.
pub fn try_run_with_input(
    cmd: &mut Command,
    input: &str,
    timeout: Duration,
) -> Result<Output, Error> {
    let command = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    if let Some(mut stdin) = child.stdin.take() {
        // A command that exits without reading its input is not an error here.
        let _ = stdin.write_all(input.as_bytes());
    }
    let Some(status) = wait_timeout(&mut child, timeout) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(Error::Timeout { command, timeout });
    };
    Ok(Output {
        command,
        status,
        stdout: join_text(stdout),
        stderr: join_text(stderr),
    })
}

/// Runs `cmd` (at most `timeout`); its standard output if it succeeded.
pub fn run_ok(cmd: &mut Command, timeout: Duration) -> Result<String, Error> {
    try_run(cmd, timeout)?.into_result()
}

/// Waits for `child` to exit for at most `timeout`; `None` if it is still running (or
/// cannot be waited for).
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) | Err(_) => return None,
        }
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

fn join_text(reader: JoinHandle<Vec<u8>>) -> String {
    String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_status() {
        let out = try_run(
            &mut command("sh", &["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        assert_eq!(out.status.code(), Some(3));
        let err = out.into_result().unwrap_err().to_string();
        assert!(err.contains("sh -c") && err.contains(": err"), "{err}");
    }

    #[test]
    fn feeds_input() {
        let out = try_run_with_input(&mut Command::new("cat"), "hello\n", Duration::from_secs(10));
        assert_eq!(out.unwrap().into_result().unwrap(), "hello\n");
    }

    #[test]
    fn kills_a_command_that_runs_too_long() {
        let err = try_run(&mut command("sleep", &["5"]), Duration::from_millis(200)).unwrap_err();
        assert!(err.to_string().contains("did not finish within"), "{err}");
    }

    #[test]
    fn names_a_missing_program() {
        let err = try_run(
            &mut Command::new("meshtun-testbed-no-such-program"),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("meshtun-testbed-no-such-program"),
            "{err}"
        );
    }
}
