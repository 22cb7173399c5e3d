//! The three node daemons: `meshtun up CONFIG` started inside each node's namespace, their
//! logs, reloading one with SIGHUP, and stopping them all by pid.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::nodeconf::NodeFiles;
use super::plan::NodeSpec;
use super::DemoError;

/// How long stopping waits after SIGTERM before SIGKILL.
const TERM_WAIT: Duration = Duration::from_secs(5);

/// How long `meshtun down` may take after a daemon had to be killed.
const DOWN_WAIT: Duration = Duration::from_secs(10);

/// Lines of a daemon's log shown when it exits unexpectedly.
const LOG_TAIL_LINES: usize = 15;

/// One running daemon.
#[derive(Debug)]
struct NodeDaemon {
    node: &'static NodeSpec,
    namespace: String,
    ifname: String,
    log: PathBuf,
    child: Child,
}

/// The running daemons; stopped on drop.
#[derive(Debug)]
pub struct Daemons {
    bin: PathBuf,
    running: Vec<NodeDaemon>,
}

/// What stopping the daemons did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stopped {
    /// Daemons that stopped after SIGTERM.
    pub terminated: usize,
    /// Daemons that had to be killed (their leftovers were removed with `meshtun down`).
    pub killed: Vec<&'static str>,
    /// What went wrong.
    pub problems: Vec<String>,
}

impl Daemons {
    /// No daemons yet; `bin` is the meshtun executable to run.
    pub fn new(bin: PathBuf) -> Self {
        Self {
            bin,
            running: Vec::new(),
        }
    }

    /// Starts `meshtun up` for `node` inside `namespace`, logging to its log file.
    pub fn start(
        &mut self,
        node: &'static NodeSpec,
        namespace: &str,
        ifname: &str,
        files: &NodeFiles,
    ) -> Result<u32, DemoError> {
        let log = File::create(&files.log)
            .map_err(|e| DemoError::io(format!("cannot create {}", files.log.display()), e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| DemoError::io(format!("cannot reopen {}", files.log.display()), e))?;
        let child = Command::new("ip")
            .args(["netns", "exec", namespace])
            .arg(&self.bin)
            .args(["--log", "info", "up"])
            .arg(&files.config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Its own process group: Ctrl-C reaches the demo, which stops the daemons itself.
            .process_group(0)
            .spawn()
            .map_err(|e| DemoError::io(format!("cannot start `meshtun up` for {}", node.id), e))?;
        let pid = child.id();
        self.running.push(NodeDaemon {
            node,
            namespace: namespace.to_owned(),
            ifname: ifname.to_owned(),
            log: files.log.clone(),
            child,
        });
        Ok(pid)
    }

    /// An error naming the first daemon that has exited, with the end of its log.
    pub fn check_alive(&mut self) -> Result<(), DemoError> {
        for daemon in &mut self.running {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                return Err(DemoError::DaemonExited {
                    node: daemon.node.id,
                    status: status.to_string(),
                    log: daemon.log.clone(),
                    tail: log_tail(&daemon.log, LOG_TAIL_LINES),
                });
            }
        }
        Ok(())
    }

    /// Sends SIGHUP to `node`'s daemon (it rereads its configuration); its pid.
    pub fn reload(&self, node: &NodeSpec) -> Result<u32, DemoError> {
        let daemon = self
            .running
            .iter()
            .find(|d| d.node.id == node.id)
            .ok_or_else(|| {
                DemoError::io(
                    format!("cannot reload {}", node.id),
                    std::io::Error::new(std::io::ErrorKind::NotFound, "its daemon is not running"),
                )
            })?;
        let pid = daemon.child.id();
        signal(pid, Signal::SIGHUP)
            .map_err(|e| DemoError::io(format!("cannot send SIGHUP to pid {pid}"), e.into()))?;
        Ok(pid)
    }

    /// Stops every daemon: SIGTERM, up to 5 s, then SIGKILL (and `meshtun down` to remove
    /// what a killed daemon left).
    pub fn stop_all(&mut self) -> Stopped {
        let mut report = Stopped::default();
        for daemon in &self.running {
            // A child not yet reaped keeps its pid: the signal reaches the daemon.
            let _ = signal(daemon.child.id(), Signal::SIGTERM);
        }
        let deadline = Instant::now() + TERM_WAIT;
        for mut daemon in std::mem::take(&mut self.running) {
            match wait_until(&mut daemon.child, deadline) {
                Some(_) => report.terminated += 1,
                None => {
                    let _ = daemon.child.kill();
                    let _ = daemon.child.wait();
                    report.killed.push(daemon.node.id);
                    if let Err(problem) = self.down(&daemon) {
                        report.problems.push(problem);
                    }
                }
            }
        }
        report
    }

    /// Runs `meshtun down IFNAME` in the daemon's namespace.
    fn down(&self, daemon: &NodeDaemon) -> Result<(), String> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &daemon.namespace])
            .arg(&self.bin)
            .args(["down", &daemon.ifname])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run `meshtun down {}`: {e}", daemon.ifname))?;
        match wait_until(&mut child, Instant::now() + DOWN_WAIT) {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(format!(
                "`meshtun down {}` failed ({status})",
                daemon.ifname
            )),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!(
                    "`meshtun down {}` did not finish within {} s",
                    daemon.ifname,
                    DOWN_WAIT.as_secs()
                ))
            }
        }
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        for problem in self.stop_all().problems {
            eprintln!("meshtun demo: {problem}");
        }
    }
}

fn signal(pid: u32, signal: Signal) -> nix::Result<()> {
    let pid = i32::try_from(pid).map_err(|_| nix::errno::Errno::ESRCH)?;
    kill(Pid::from_raw(pid), signal)
}

/// Waits for `child` until `deadline`; its status, or `None` if it is still running.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<std::process::ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) | Err(_) => return None,
        }
    }
}

/// The last `lines` lines of a log file (empty if it cannot be read).
pub(super) fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Follows a log file as it grows, line by line.
#[derive(Debug)]
pub struct LogFollower {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

/// The most a follower reads in one poll.
const FOLLOW_CHUNK: u64 = 256 * 1024;

impl LogFollower {
    /// Follows `path` from its start.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            offset: 0,
            partial: Vec::new(),
        }
    }

    /// The complete lines written since the last call.
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
    fn stopping_terminates_by_pid_and_reports_an_early_exit() {
        let dir = tempfile::tempdir().unwrap();
        // `sh` stands in for the daemon: `ip netns exec` is not run here.
        let mut daemons = Daemons::new(PathBuf::from("/bin/sh"));
        let node = &crate::demo::plan::NODES[0];
        let log = dir.path().join("a.log");
        std::fs::write(&log, "starting\nfailed: no tun device\n").unwrap();
        let child = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        daemons.running.push(NodeDaemon {
            node,
            namespace: "none".into(),
            ifname: "none".into(),
            log,
            child,
        });
        let mut exited = None;
        for _ in 0..500 {
            exited = daemons.check_alive().err();
            if exited.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let text = exited.expect("the exit is noticed within 5 s").to_string();
        assert!(
            text.contains("node-a") && text.contains("exit status: 3"),
            "{text}"
        );
        assert!(text.contains("failed: no tun device"), "{text}");

        daemons.running.clear();
        let child = Command::new("sleep").arg("30").spawn().unwrap();
        daemons.running.push(NodeDaemon {
            node,
            namespace: "none".into(),
            ifname: "none".into(),
            log: dir.path().join("b.log"),
            child,
        });
        daemons.check_alive().unwrap();
        let started = Instant::now();
        let stopped = daemons.stop_all();
        assert_eq!(stopped.terminated, 1);
        assert!(stopped.killed.is_empty());
        assert!(started.elapsed() < TERM_WAIT);
        assert!(daemons.running.is_empty());
    }
}
