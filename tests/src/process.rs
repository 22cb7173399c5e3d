//! A long-running process inside a namespace that serves a WireGuard UAPI socket: the common
//! part of [`crate::Daemon`] and [`crate::WgGo`].

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use meshtun_testbed::process::{Ended, Process};
use nix::sys::signal::Signal;

use crate::netns::Netns;
use crate::run::describe;

/// How long a daemon may take to answer on its UAPI socket after starting.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a daemon may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A supervised process: stderr and stdout go to a log file; stopped with SIGTERM on drop.
/// The process itself is a [`meshtun_testbed::process::Process`], as the demo's are.
#[derive(Debug)]
pub struct Supervised<'ns> {
    ns: &'ns Netns,
    process: Process,
}

impl<'ns> Supervised<'ns> {
    /// Starts `cmd` (from [`Netns::command`]) logging to `log`; `label` names it in messages.
    pub fn spawn(ns: &'ns Netns, label: String, cmd: Command, log: PathBuf) -> Self {
        let line = describe(&cmd);
        let process = Process::start(label, cmd, &log, |cmd| Ok(ns.spawn(cmd)))
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "started {} (pid {}): {line}",
            process.label(),
            process.pid().unwrap_or_default()
        );
        Self { ns, process }
    }

    /// The log written so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The process id, while the process has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The exit status, if the process has exited (reaping it).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let pid = self.pid()?;
        let status = self.process.exited()?;
        self.ns.forget(pid);
        Some(status)
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
                    self.process.label(),
                    self.log()
                );
            }
            ready().map_err(|why| last = why).is_ok()
        });
        assert!(
            done,
            "{} was not ready within {START_TIMEOUT:?}: {last}; its log:\n{}",
            self.process.label(),
            self.log()
        );
    }

    /// Sends `signal` to the process (by pid), if it has not been reaped.
    pub fn signal(&self, signal: Signal) {
        let _ = self.process.signal(signal);
    }

    /// Waits up to `timeout` for the process to exit by itself; its exit status (reaping it),
    /// or `None` if it is still running (or was reaped before).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let pid = self.pid()?;
        let status = self.process.wait_exit(timeout)?;
        self.ns.forget(pid);
        Some(status)
    }

    /// Kills the process with SIGKILL and reaps it; its exit status, or `None` if it had
    /// already been reaped.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        let pid = self.pid()?;
        let status = self.process.kill();
        self.ns.forget(pid);
        status
    }

    /// Sends SIGTERM and waits up to [`STOP_TIMEOUT`]; if it is still running then, kills it
    /// and returns `None`.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        let pid = self.pid()?;
        let ended = self.process.terminate(STOP_TIMEOUT);
        self.ns.forget(pid);
        match ended {
            Ended::Exited(status) => Some(status),
            Ended::Killed => {
                eprintln!(
                    "{} ignored SIGTERM for {STOP_TIMEOUT:?}; killed it",
                    self.process.label()
                );
                None
            }
            Ended::AlreadyReaped => None,
        }
    }
}

impl Drop for Supervised<'_> {
    fn drop(&mut self) {
        self.terminate();
        if std::thread::panicking() {
            eprintln!(
                "----- log of {} ({}) -----\n{}----- end of log -----",
                self.process.label(),
                self.process.log_path().display(),
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
