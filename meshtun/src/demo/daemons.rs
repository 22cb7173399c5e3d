//! The three node daemons: `meshtun up CONFIG` started inside each node's namespace, their
//! logs, reloading one with SIGHUP, and stopping them all by pid. Each is a
//! [`meshtun_testbed::process::Process`], as the e2e tests' daemons are.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use meshtun_testbed::process::Process;
use meshtun_testbed::run::run_ok;
use meshtun_testbed::Netns;
use nix::sys::signal::Signal;

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
    process: Process,
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
    /// The meshtun executable the daemons run.
    pub fn bin(&self) -> &std::path::Path {
        &self.bin
    }

    /// No daemons yet; `bin` is the meshtun executable to run.
    pub fn new(bin: PathBuf) -> Self {
        Self {
            bin,
            running: Vec::new(),
        }
    }

    /// Starts `meshtun up` for `node` inside `ns`, logging to its log file; its pid.
    pub fn start(
        &mut self,
        node: &'static NodeSpec,
        ns: &Netns,
        ifname: &str,
        files: &NodeFiles,
    ) -> Result<u32, DemoError> {
        let mut cmd = ns.command(&self.bin, &["--log", "info", "up"]);
        cmd.arg(&files.config);
        // Its own process group: Ctrl-C reaches the demo, which stops the daemons itself.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let process = Process::spawn(format!("{}'s daemon", node.id), cmd, &files.log)?;
        let pid = process.pid().unwrap_or_default();
        self.running.push(NodeDaemon {
            node,
            namespace: ns.name().to_owned(),
            ifname: ifname.to_owned(),
            process,
        });
        Ok(pid)
    }

    /// An error naming the first daemon that has exited, with the end of its log.
    pub fn check_alive(&mut self) -> Result<(), DemoError> {
        for daemon in &mut self.running {
            if let Some(status) = daemon.process.exited() {
                return Err(DemoError::DaemonExited {
                    node: daemon.node.id,
                    status: status.to_string(),
                    log: daemon.process.log_path().to_owned(),
                    tail: daemon.process.log_tail(LOG_TAIL_LINES),
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
        daemon.process.signal(Signal::SIGHUP)?;
        Ok(daemon.process.pid().unwrap_or_default())
    }

    /// Stops every daemon: SIGTERM to all, up to 5 s, then SIGKILL (and `meshtun down` to
    /// remove what a killed daemon left).
    pub fn stop_all(&mut self) -> Stopped {
        let mut report = Stopped::default();
        for daemon in &self.running {
            let _ = daemon.process.signal(Signal::SIGTERM);
        }
        let deadline = Instant::now() + TERM_WAIT;
        for mut daemon in std::mem::take(&mut self.running) {
            let left = deadline.saturating_duration_since(Instant::now());
            if daemon.process.pid().is_none() || daemon.process.wait_exit(left).is_some() {
                report.terminated += 1;
                continue;
            }
            daemon.process.kill();
            report.killed.push(daemon.node.id);
            if let Err(problem) = self.down(&daemon) {
                report.problems.push(problem);
            }
        }
        report
    }

    /// Runs `meshtun down IFNAME` in the daemon's namespace.
    fn down(&self, daemon: &NodeDaemon) -> Result<(), String> {
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", &daemon.namespace])
            .arg(&self.bin)
            .args(["down", &daemon.ifname]);
        run_ok(&mut cmd, DOWN_WAIT)
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        for problem in self.stop_all().problems {
            eprintln!("meshtun demo: {problem}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshtun_testbed::run::command;

    fn daemon(dir: &std::path::Path, name: &str, script: &str) -> NodeDaemon {
        let log = dir.join(format!("{name}.log"));
        NodeDaemon {
            node: &crate::demo::plan::NODES[0],
            namespace: "none".into(),
            ifname: "none".into(),
            process: Process::spawn(name, command("sh", &["-c", script]), &log).unwrap(),
        }
    }

    #[test]
    fn stopping_terminates_by_pid_and_reports_an_early_exit() {
        let dir = tempfile::tempdir().unwrap();
        // `sh` stands in for the daemon: `ip netns exec` is not run here.
        let mut daemons = Daemons::new(PathBuf::from("/bin/sh"));
        daemons.running.push(daemon(
            dir.path(),
            "a",
            "echo starting; echo failed: no tun device; exit 3",
        ));
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
        daemons
            .running
            .push(daemon(dir.path(), "b", "exec sleep 30"));
        daemons.check_alive().unwrap();
        let started = Instant::now();
        let stopped = daemons.stop_all();
        assert_eq!(stopped.terminated, 1);
        assert!(stopped.killed.is_empty());
        assert!(started.elapsed() < TERM_WAIT);
        assert!(daemons.running.is_empty());
    }
}
