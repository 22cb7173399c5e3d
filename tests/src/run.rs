//! Running a command to completion with a time limit, capturing its output.

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

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

/// A printable form of `cmd`'s command line.
pub fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Runs `cmd` with stdin closed, waiting at most `timeout`.
///
/// Panics if it cannot start (naming the program: is it installed?) or if it is still running
/// after `timeout` (it is killed first).
pub fn run(cmd: &mut Command, timeout: Duration) -> Output {
    run_with_input(cmd, "", timeout)
}

/// Like [`run`], writing `input` to the command's stdin and then closing it.
pub fn run_with_input(cmd: &mut Command, input: &str, timeout: Duration) -> Output {
    try_run_with_input(cmd, input, timeout).unwrap_or_else(|why| panic!("{why}"))
}

/// Like [`run`], but a command that cannot start or does not finish within `timeout` (it is
/// killed) is an error rather than a panic: for diagnostics gathered while a test fails.
pub fn try_run(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    try_run_with_input(cmd, "", timeout)
}

fn try_run_with_input(cmd: &mut Command, input: &str, timeout: Duration) -> Result<Output, String> {
    let command = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `{command}` ({e}); is it installed?"))?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    if let Some(mut stdin) = child.stdin.take() {
        // A command that exits without reading its input is not an error here.
        let _ = stdin.write_all(input.as_bytes());
    }
    let Some(status) = wait_timeout(&mut child, timeout) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!(
            "`{command}` did not finish within {timeout:?}; killed it"
        ));
    };
    Ok(Output {
        command,
        status,
        stdout: join_text(stdout),
        stderr: join_text(stderr),
    })
}

/// Waits for `child` to exit for at most `timeout`; `None` if it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) => return None,
            Err(e) => panic!("cannot wait for child process {}: {e}", child.id()),
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
