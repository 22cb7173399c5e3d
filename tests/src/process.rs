//! A long-running process inside a namespace that serves a WireGuard UAPI socket: the common
//! part of [`crate::Daemon`] and [`crate::WgGo`].

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::netns::Netns;
use crate::run::{describe, wait_timeout};

/// How long a daemon may take to answer on its UAPI socket after starting.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a daemon may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A supervised process: stderr and stdout go to a log file; stopped with SIGTERM on drop.
#[derive(Debug)]
pub struct Supervised<'ns> {
    ns: &'ns Netns,
    label: String,
    child: Option<Child>,
    log: PathBuf,
}

impl<'ns> Supervised<'ns> {
    /// Starts `cmd` (from [`Netns::command`]) logging to `log`; `label` names it in messages.
    pub fn spawn(ns: &'ns Netns, label: String, mut cmd: Command, log: PathBuf) -> Self {
        let file = File::create(&log)
            .unwrap_or_else(|e| panic!("cannot create log {}: {e}", log.display()));
        let file2 = file
            .try_clone()
            .expect("cannot duplicate a log file handle");
        cmd.stdin(Stdio::null()).stdout(file).stderr(file2);
        let child = ns.spawn(&mut cmd);
        eprintln!("started {label} (pid {}): {}", child.id(), describe(&cmd));
        Self {
            ns,
            label,
            child: Some(child),
            log,
        }
    }

    /// The log written so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id, while the process has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit status, if the process has exited (reaping it).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = child.try_wait().ok().flatten()?;
        self.reaped(status)
    }

    /// Waits until `socket` answers a UAPI `get`, or fails the test with the log if the process
    /// exits first or [`START_TIMEOUT`] passes.
    pub fn wait_for_uapi(&mut self, socket: &Path) {
        self.wait_ready(|| {
            if uapi_answers(socket) {
                Ok(())
            } else {
                Err(format!("{} does not answer", socket.display()))
            }
        });
    }

    /// Waits until `ready` returns `Ok`, or fails the test with the last reason it gave and the
    /// log if the process exits first or [`START_TIMEOUT`] passes.
    pub fn wait_ready(&mut self, mut ready: impl FnMut() -> Result<(), String>) {
        let mut last = String::new();
        let done = crate::wait_until(START_TIMEOUT, || {
            if let Some(status) = self.exited() {
                panic!(
                    "{} exited ({status}) before it was ready ({last}); its log:\n{}",
                    self.label,
                    self.log()
                );
            }
            ready().map_err(|why| last = why).is_ok()
        });
        assert!(
            done,
            "{} was not ready within {START_TIMEOUT:?}: {last}; its log:\n{}",
            self.label,
            self.log()
        );
    }

    /// Sends `signal` to the process (by pid), if it has not been reaped.
    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            let _ = kill(Pid::from_raw(pid as i32), signal);
        }
    }

    /// Waits up to `timeout` for the process to exit by itself; its exit status (reaping it),
    /// or `None` if it is still running (or was reaped before).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = wait_timeout(child, timeout)?;
        self.reaped(status)
    }

    /// Kills the process with SIGKILL and reaps it; its exit status, or `None` if it had
    /// already been reaped.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let _ = child.kill();
        let status = child.wait().ok()?;
        self.reaped(status)
    }

    /// Sends SIGTERM and waits up to [`STOP_TIMEOUT`]; if it is still running then, kills it
    /// and returns `None`.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        if let Some(status) = wait_timeout(child, STOP_TIMEOUT) {
            return self.reaped(status);
        }
        eprintln!(
            "{} ignored SIGTERM for {STOP_TIMEOUT:?}; killing it",
            self.label
        );
        let _ = child.kill();
        if let Ok(status) = child.wait() {
            self.reaped(status);
        }
        None
    }

    fn reaped(&mut self, status: ExitStatus) -> Option<ExitStatus> {
        if let Some(child) = self.child.take() {
            self.ns.forget(child.id());
        }
        Some(status)
    }
}

impl Drop for Supervised<'_> {
    fn drop(&mut self) {
        self.terminate();
        if std::thread::panicking() {
            eprintln!(
                "----- log of {} ({}) -----\n{}----- end of log -----",
                self.label,
                self.log.display(),
                self.log()
            );
        }
    }
}

/// Whether the UAPI socket at `path` answers `get=1` with `errno=0`.
pub fn uapi_answers(path: &Path) -> bool {
    uapi_get(path).is_some_and(|reply| reply.lines().any(|l| l == "errno=0"))
}

/// Sends a UAPI `get=1` request and returns the reply, or `None` on any error. Bounded by
/// one-second socket timeouts.
pub fn uapi_get(path: &Path) -> Option<String> {
    let mut stream = UnixStream::connect(path).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(1)))
        .ok()?;
    stream.write_all(b"get=1\n\n").ok()?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !reply.ends_with(b"\n\n") && reply.len() < 1 << 20 {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(buf.get(..n)?);
    }
    String::from_utf8(reply).ok()
}
