//! A long-running process (a daemon, the controller) whose output goes to a log file,
//! signalled and stopped by its pid; and reading such a log as it grows.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::run::{describe, wait_timeout};
use crate::Error;

/// How a [`Process::terminate`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It exited (after SIGTERM, or before): its status.
    Exited(ExitStatus),
    /// It ignored SIGTERM for the whole wait and was killed with SIGKILL.
    Killed,
    /// It had been reaped before.
    AlreadyReaped,
}

/// A process whose standard output and error go to a log file. Not stopped on drop: its
/// owner decides how (the e2e harness and the demo both terminate on drop).
#[derive(Debug)]
pub struct Process {
    label: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    /// Starts `cmd` with stdin closed, logging to `log` (created or truncated); `label`
    /// names it in messages. `spawn` starts it (e.g. [`crate::Netns::spawn`], which
    /// remembers the pid).
    pub fn start(
        label: impl Into<String>,
        mut cmd: Command,
        log: &Path,
        spawn: impl FnOnce(&mut Command) -> Result<Child, Error>,
    ) -> Result<Self, Error> {
        let what = |verb: &str| format!("cannot {verb} the log {}", log.display());
        let file = File::create(log).map_err(|e| Error::io(what("create"), e))?;
        let file2 = file.try_clone().map_err(|e| Error::io(what("reopen"), e))?;
        cmd.stdin(Stdio::null()).stdout(file).stderr(file2);
        let child = spawn(&mut cmd)?;
        Ok(Self {
            label: label.into(),
            child: Some(child),
            log: log.to_owned(),
        })
    }

    /// [`Process::start`] with a plain `Command::spawn`.
    pub fn spawn(label: impl Into<String>, cmd: Command, log: &Path) -> Result<Self, Error> {
        Self::start(label, cmd, log, |cmd| {
            cmd.spawn().map_err(|source| Error::Spawn {
                command: describe(cmd),
                source,
            })
        })
    }

    /// The label given at the start.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The log written so far (empty if it cannot be read).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// The process id, while the process has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit status, if the process has exited (reaping it).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(status)
    }

    /// Sends `signal` to the process by its pid, if it has not been reaped (so the pid is
    /// still its own).
    pub fn signal(&self, signal: Signal) -> Result<(), Error> {
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        send(pid, signal)
            .map_err(|e| Error::io(format!("cannot send {signal} to pid {pid}"), e.into()))
    }

    /// Waits up to `timeout` for the process to exit by itself; its status (reaping it), or
    /// `None` if it is still running or was reaped before.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let status = wait_timeout(self.child.as_mut()?, timeout)?;
        self.child = None;
        Some(status)
    }

    /// Kills the process with SIGKILL and reaps it; its status, or `None` if it had been
    /// reaped before.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = child.kill();
        child.wait().ok()
    }

    /// Sends SIGTERM and waits up to `timeout`; kills it if it is still running then.
    pub fn terminate(&mut self, timeout: Duration) -> Ended {
        if self.pid().is_none() {
            return Ended::AlreadyReaped;
        }
        let _ = self.signal(Signal::SIGTERM);
        if let Some(status) = self.wait_exit(timeout) {
            return Ended::Exited(status);
        }
        self.kill();
        Ended::Killed
    }
}

fn send(pid: u32, signal: Signal) -> nix::Result<()> {
    let pid = i32::try_from(pid).map_err(|_| nix::errno::Errno::ESRCH)?;
    kill(Pid::from_raw(pid), signal)
}

/// The last `lines` lines of a log file (empty if it cannot be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The most a follower reads in one call.
const FOLLOW_CHUNK: u64 = 256 * 1024;

/// Follows a log file as it grows, line by line.
#[derive(Debug)]
pub struct LogFollower {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl LogFollower {
    /// Follows `path` from its start.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            offset: 0,
            partial: Vec::new(),
        }
    }

    /// The complete lines written since the last call (at most 256 KiB of them).
    pub fn new_lines(&mut self) -> Vec<String> {
        let Ok(mut file) = File::open(&self.path) else {
            return Vec::new();
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut chunk = Vec::new();
        let Ok(read) = file.take(FOLLOW_CHUNK).read_to_end(&mut chunk) else {
            return Vec::new();
        };
        self.offset += read as u64;
        self.partial.extend_from_slice(&chunk);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        String::from_utf8_lossy(&complete)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Instant;

    #[test]
    fn the_follower_returns_each_complete_line_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.log");
        let mut file = File::create(&path).unwrap();
        let mut follower = LogFollower::new(path.clone());
        assert!(follower.new_lines().is_empty());
        file.write_all(b"one\ntw").unwrap();
        assert_eq!(follower.new_lines(), ["one"]);
        assert!(follower.new_lines().is_empty());
        file.write_all(b"o\nthree\n").unwrap();
        assert_eq!(follower.new_lines(), ["two", "three"]);
    }

    #[test]
    fn the_tail_is_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.log");
        std::fs::write(&path, "1\n2\n3\n4\n").unwrap();
        assert_eq!(log_tail(&path, 2), "3\n4");
        assert_eq!(log_tail(&path, 10), "1\n2\n3\n4");
        assert_eq!(log_tail(&dir.path().join("missing"), 3), "");
    }

    #[test]
    fn an_exit_is_seen_with_its_log_and_sigterm_stops_by_pid() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.log");
        let mut exits = Process::spawn(
            "exits",
            crate::run::command("sh", &["-c", "echo failed: no tun device; exit 3"]),
            &log,
        )
        .unwrap();
        let status = exits.wait_exit(Duration::from_secs(5)).expect("it exits");
        assert_eq!(status.code(), Some(3));
        assert!(exits.log().contains("failed: no tun device"));
        assert_eq!(exits.pid(), None, "reaped");
        assert_eq!(
            exits.terminate(Duration::from_secs(1)),
            Ended::AlreadyReaped
        );

        let mut sleeps =
            Process::spawn("sleeps", crate::run::command("sleep", &["30"]), &log).unwrap();
        assert!(sleeps.exited().is_none());
        let started = Instant::now();
        assert!(matches!(
            sleeps.terminate(Duration::from_secs(5)),
            Ended::Exited(_)
        ));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_process_ignoring_sigterm_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let mut stubborn = Process::spawn(
            "stubborn",
            crate::run::command("sh", &["-c", "trap '' TERM; echo ready; exec sleep 30"]),
            &dir.path().join("s.log"),
        )
        .unwrap();
        // The trap must be set before SIGTERM is sent.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !stubborn.log().contains("ready") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            stubborn.terminate(Duration::from_millis(300)),
            Ended::Killed
        );
        assert_eq!(stubborn.pid(), None);
    }
}
