//! A `meshtun up` daemon running in a namespace.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::config::Config;
use crate::netns::Netns;
use crate::process::{uapi_get, Supervised};

/// The log filter the daemons under test run with (their logs are printed if a test fails).
const LOG_FILTER: &str = "info,meshtun=debug";

/// `meshtun up CONFIG` running in a namespace, stopped with SIGTERM on drop.
///
/// Its stderr goes to a log file in a private temporary directory (with the 0600 config);
/// the log is printed if the test panics while the daemon is alive.
#[derive(Debug)]
pub struct Daemon<'ns> {
    ns: &'ns Netns,
    name: String,
    config_path: PathBuf,
    // Dropped before `_dir`, which holds its log.
    process: Supervised<'ns>,
    _dir: TempDir,
}

impl<'ns> Daemon<'ns> {
    /// Writes `config`, starts `meshtun up` on it inside `ns`, and waits until the daemon
    /// answers on its UAPI socket; fails the test with the daemon's log if it exits first.
    pub fn start(ns: &'ns Netns, config: &Config) -> Self {
        let dir = tempfile::tempdir().expect("cannot create a temporary directory");
        let config_path = config.write_toml(dir.path());
        let log = dir.path().join(format!("{}.log", config.name()));
        let bin = crate::meshtun_bin();
        let mut cmd = ns.command(
            &bin.to_string_lossy(),
            &["up", &config_path.to_string_lossy()],
        );
        cmd.env("MESHTUN_LOG", LOG_FILTER);
        let label = format!("meshtun {} in {}", config.name(), ns.name());
        let mut process = Supervised::spawn(ns, label, cmd, log);
        process.wait_ready(|| check_up(ns, config));
        Self {
            ns,
            name: config.name().to_owned(),
            config_path,
            process,
            _dir: dir,
        }
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace the daemon runs in.
    pub fn ns(&self) -> &'ns Netns {
        self.ns
    }

    /// The configuration file the daemon was started with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The process id, while the process runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Rewrites the configuration file with `config` and sends SIGHUP to reload it.
    pub fn reload(&self, config: &Config) {
        assert_eq!(
            config.name(),
            self.name,
            "a reload cannot rename the interface"
        );
        let dir = self
            .config_path
            .parent()
            .expect("the config file is in a directory");
        config.write_toml(dir);
        self.process.signal(Signal::SIGHUP);
    }

    /// Stops the daemon with SIGTERM and reports how it went. Fails the test if the daemon
    /// had already exited.
    pub fn stop(mut self) -> Stopped {
        if let Some(status) = self.process.exited() {
            panic!(
                "meshtun {} had already exited ({status}); its log:\n{}",
                self.name,
                self.log()
            );
        }
        let status = self.process.terminate();
        Stopped {
            status,
            socket_left: crate::uapi_socket(&self.name).exists(),
            link_left: self.ns.has_link(&self.name),
            log: self.log(),
        }
    }

    /// Stops the daemon and asserts a clean shutdown: exit status 0 after SIGTERM, no UAPI
    /// socket and no interface left behind.
    pub fn stop_cleanly(self) {
        let name = self.name.clone();
        let stopped = self.stop();
        assert!(
            stopped.status.is_some_and(|s| s.success())
                && !stopped.socket_left
                && !stopped.link_left,
            "meshtun {name} did not shut down cleanly on SIGTERM (exit: {:?}, socket left: {}, \
             interface left: {}); its log:\n{}",
            stopped.status,
            stopped.socket_left,
            stopped.link_left,
            stopped.log
        );
    }

    /// Asserts the daemon is still running (it did not crash during the test).
    pub fn assert_running(&mut self) {
        if let Some(status) = self.process.exited() {
            panic!(
                "meshtun {} exited unexpectedly ({status}); its log:\n{}",
                self.name,
                self.log()
            );
        }
    }
}

/// Whether the daemon for `config` is up: its UAPI socket answers with the configured listen
/// port and number of peers, and its interface has the configured addresses.
fn check_up(ns: &Netns, config: &Config) -> Result<(), String> {
    let socket = crate::uapi_socket(config.name());
    let reply = uapi_get(&socket).ok_or_else(|| format!("{} does not answer", socket.display()))?;
    if let Some(port) = config.interface.listen_port {
        let want = format!("listen_port={port}");
        if !reply.lines().any(|l| l == want) {
            return Err(format!("the UAPI does not report {want} yet"));
        }
    }
    let peers = reply
        .lines()
        .filter(|l| l.starts_with("public_key="))
        .count();
    if peers != config.peers.len() {
        return Err(format!(
            "the UAPI reports {peers} peers, the config has {}",
            config.peers.len()
        ));
    }
    let addrs = ns.run(&["ip", "-o", "addr", "show", "dev", config.name()]);
    match config
        .interface
        .address
        .iter()
        .find(|a| !addrs.stdout.contains(&format!(" {a} ")))
    {
        Some(missing) => Err(format!("{} lacks address {missing}", config.name())),
        None => Ok(()),
    }
}

/// How a daemon stopped by [`Daemon::stop`] went away.
#[derive(Debug)]
pub struct Stopped {
    /// Its exit status; `None` if it ignored SIGTERM and had to be killed.
    pub status: Option<ExitStatus>,
    /// Whether its UAPI socket was still there afterwards.
    pub socket_left: bool,
    /// Whether its interface still existed afterwards.
    pub link_left: bool,
    /// Its whole log.
    pub log: String,
}

impl Drop for Daemon<'_> {
    fn drop(&mut self) {
        self.process.terminate();
        // Keep the shared socket directory clean even if the daemon left its socket behind;
        // tests that check clean shutdown call `stop` and look before this runs.
        let socket = crate::uapi_socket(&self.name);
        if socket.exists() {
            eprintln!("removing {} left behind by meshtun", socket.display());
            let _ = std::fs::remove_file(socket);
        }
    }
}
