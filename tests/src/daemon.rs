//! A `meshtun up` daemon running in a namespace.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::config::Config;
use crate::netns::Netns;
use crate::process::{uapi_answers, uapi_get, Supervised};
use crate::run::wait_timeout;

/// The log filter the daemons under test run with (their logs are printed if a test fails).
const LOG_FILTER: &str = "info,meshtun=debug";

/// `meshtun up CONFIG` running in a namespace, stopped with SIGTERM on drop.
///
/// Its stderr goes to a log file in a private temporary directory (with the 0600 config);
/// the log is printed if the test panics while the daemon is alive. If the daemon leaves
/// runtime files behind (it was killed, or crashed), the drop runs `meshtun down` in its
/// namespace to remove them, unless another daemon for the same interface answers by then.
#[derive(Debug)]
pub struct Daemon<'ns> {
    ns: &'ns Netns,
    name: String,
    config_path: PathBuf,
    bin: PathBuf,
    dirs: RuntimeDirs,
    // Dropped before `_dir`, which holds its log.
    process: Supervised<'ns>,
    _dir: TempDir,
}

impl<'ns> Daemon<'ns> {
    /// Writes `config`, starts `meshtun up` on it inside `ns`, and waits until the daemon
    /// answers on its UAPI socket; fails the test with the daemon's log if it exits first.
    pub fn start(ns: &'ns Netns, config: &Config) -> Self {
        Self::start_with(ns, config, "", || check_up(ns, config))
    }

    /// Like [`Daemon::start`], with `sections` (more TOML, such as `[controller]` and
    /// `[benchmark]`) appended to the configuration file, waiting until `ready` returns `Ok`
    /// instead of checking the configured peers (a gated daemon's peers come from its
    /// controller).
    pub fn start_with(
        ns: &'ns Netns,
        config: &Config,
        sections: &str,
        ready: impl FnMut() -> Result<(), String>,
    ) -> Self {
        Self::launch(ns, config, sections, &[], ready)
    }

    /// Like [`Daemon::start_with`], with `env` added to the daemon's environment.
    pub fn start_with_env(
        ns: &'ns Netns,
        config: &Config,
        sections: &str,
        env: &[(&str, &str)],
        ready: impl FnMut() -> Result<(), String>,
    ) -> Self {
        Self::launch(ns, config, sections, env, ready)
    }

    /// Like [`Daemon::start`], with `env` added to the daemon's environment (such as
    /// `MESHTUN_NO_OFFLOAD`).
    pub fn start_env(ns: &'ns Netns, config: &Config, env: &[(&str, &str)]) -> Self {
        Self::launch(ns, config, "", env, || check_up(ns, config))
    }

    /// Like [`Daemon::start`], with its UAPI socket in a private directory (`--uapi-dir`)
    /// and meshtun's default state directory: how interfaces of one name run side by side in
    /// several namespaces (the socket path names the interface alone).
    pub fn start_private_uapi(ns: &'ns Netns, config: &Config) -> Self {
        let dir = tempfile::tempdir().expect("cannot create a temporary directory");
        let mut dirs = RuntimeDirs::shared();
        dirs.uapi = dir.path().join("uapi");
        std::fs::create_dir(&dirs.uapi).expect("cannot create the UAPI directory");
        let uapi = dirs.uapi.clone();
        let args = ["--uapi-dir", uapi.to_str().expect("a UTF-8 path")];
        let text = config.to_toml();
        Self::launch_text(ns, config, &text, (dirs, dir), &args, &[], || {
            check_up_in(ns, config, &uapi)
        })
    }

    fn launch(
        ns: &'ns Netns,
        config: &Config,
        sections: &str,
        env: &[(&str, &str)],
        ready: impl FnMut() -> Result<(), String>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("cannot create a temporary directory");
        let text = config.to_toml() + sections;
        Self::launch_text(
            ns,
            config,
            &text,
            (RuntimeDirs::shared(), dir),
            &[],
            env,
            ready,
        )
    }

    /// Starts `meshtun ARGS up` on `text`, the configuration of `config`, inside `ns`;
    /// the daemon keeps `dirs` and the temporary directory `dir`.
    fn launch_text(
        ns: &'ns Netns,
        config: &Config,
        text: &str,
        (dirs, dir): (RuntimeDirs, TempDir),
        args: &[&str],
        env: &[(&str, &str)],
        ready: impl FnMut() -> Result<(), String>,
    ) -> Self {
        let config_path =
            crate::config::write_secret(dir.path(), &format!("{}.toml", config.name()), text);
        let log = dir.path().join(format!("{}.log", config.name()));
        let bin = crate::meshtun_bin();
        let path = config_path.to_string_lossy();
        let mut full = args.to_vec();
        full.extend(["up", &path]);
        let mut cmd = ns.command(&bin.to_string_lossy(), &full);
        cmd.env("MESHTUN_LOG", LOG_FILTER);
        cmd.envs(env.iter().copied());
        let label = format!("meshtun {} in {}", config.name(), ns.name());
        let mut process = Supervised::spawn(ns, label, cmd, log);
        process.wait_ready(ready);
        Self {
            ns,
            name: config.name().to_owned(),
            config_path,
            bin,
            dirs,
            process,
            _dir: dir,
        }
    }

    /// Like [`Daemon::start`], as the unprivileged user [`UNPRIVILEGED_UID`] (through
    /// `setpriv`, as systemd's `User=` and `AmbientCapabilities=` do, or by the daemon's own
    /// `--user`) with the capabilities `privilege` says.
    ///
    /// Its state, pid and UAPI socket directories are private ones (`--state-dir`,
    /// `--uapi-dir`) owned by that user, except the UAPI one with [`Privilege::SwitchUser`]
    /// (root's, as the daemon leaves it), and so is its configuration file. (Under systemd
    /// the UAPI socket comes from `meshtun@.socket`: [`Daemon::start_socket_activated`].) With [`Privilege::NoCapability`] the tun device must
    /// exist already, owned by that user
    /// (`ip tuntap add NAME mode tun user UID`).
    pub fn start_unprivileged(ns: &'ns Netns, config: &Config, privilege: Privilege) -> Self {
        let dir = tempfile::tempdir().expect("cannot create a temporary directory");
        let mut dirs = RuntimeDirs::private(dir.path());
        dirs.per_netns = privilege == Privilege::SwitchUser;
        if dirs.per_netns {
            // Root's, as meshtun creates /run/meshtun: the daemon must give its user a way in.
            std::fs::set_permissions(
                &dirs.state,
                <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o700),
            )
            .expect("cannot make the state directory private");
        }
        let config_path = crate::config::write_secret(
            dir.path(),
            &format!("{}.toml", config.name()),
            &config.to_toml(),
        );
        // Switching itself, the daemon starts as root and gives its state directory to
        // the user; the UAPI directory stays root's.
        if privilege != Privilege::SwitchUser {
            for path in [dir.path(), &dirs.state, &dirs.uapi, &config_path] {
                give_to_unprivileged_user(path);
            }
        }
        let log = dir.path().join(format!("{}.log", config.name()));
        let bin = crate::meshtun_bin();
        let uid = UNPRIVILEGED_UID.to_string();
        let mut args = match privilege {
            Privilege::SwitchUser => vec![],
            _ => vec![
                format!("--reuid={uid}"),
                format!("--regid={uid}"),
                "--clear-groups".to_owned(),
            ],
        };
        args.extend(privilege.setpriv_caps().iter().map(|&a| a.to_owned()));
        args.push(bin.to_string_lossy().into_owned());
        args.extend(dirs.args());
        args.push("up".to_owned());
        match privilege {
            Privilege::NetAdmin => {}
            Privilege::NoCapability => args.push("--existing-tun".to_owned()),
            Privilege::SwitchUser => {
                args.extend(["--user".to_owned(), UNPRIVILEGED_USER.to_owned()]);
            }
        }
        args.push(config_path.to_string_lossy().into_owned());
        let (program, rest) = match privilege {
            Privilege::SwitchUser => {
                let (program, rest) = args.split_first().expect("the binary comes first");
                (program.as_str(), rest)
            }
            _ => ("setpriv", &args[..]),
        };
        let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
        let mut cmd = ns.command(program, &rest);
        cmd.env("MESHTUN_LOG", LOG_FILTER);
        let label = format!("meshtun {} (uid {uid}) in {}", config.name(), ns.name());
        let mut process = Supervised::spawn(ns, label, cmd, log);
        process.wait_ready(|| check_up_in(ns, config, &dirs.uapi));
        Self {
            ns,
            name: config.name().to_owned(),
            config_path,
            bin,
            dirs,
            process,
            _dir: dir,
        }
    }

    /// Like [`Daemon::start_unprivileged`] with [`Privilege::NetAdmin`], as systemd runs it
    /// with `meshtun@.socket`: `systemd-socket-activate`, as root, binds the UAPI socket at
    /// its usual place in the root-owned [`crate::UAPI_DIR`] and passes it to the daemon (the
    /// `sd_listen_fds` protocol) on the first connection, which the readiness check makes.
    /// The daemon, uid [`UNPRIVILEGED_UID`], has a private state directory and cannot write
    /// the socket directory.
    pub fn start_socket_activated(ns: &'ns Netns, config: &Config) -> Self {
        let dir = tempfile::tempdir().expect("cannot create a temporary directory");
        let dirs = RuntimeDirs {
            state: dir.path().join("state"),
            uapi: PathBuf::from(crate::UAPI_DIR),
            per_netns: false,
        };
        std::fs::create_dir(&dirs.state).expect("cannot create the state directory");
        let config_path = crate::config::write_secret(
            dir.path(),
            &format!("{}.toml", config.name()),
            &config.to_toml(),
        );
        for path in [dir.path(), &dirs.state, &config_path] {
            give_to_unprivileged_user(path);
        }
        let bin = crate::meshtun_bin();
        let uid = UNPRIVILEGED_UID.to_string();
        let socket = dirs.socket(config.name());
        let mut args = vec![
            "-l".to_owned(),
            socket.to_string_lossy().into_owned(),
            "setpriv".to_owned(),
            format!("--reuid={uid}"),
            format!("--regid={uid}"),
            "--clear-groups".to_owned(),
        ];
        args.extend(
            Privilege::NetAdmin
                .setpriv_caps()
                .iter()
                .map(|&a| a.to_owned()),
        );
        args.push(bin.to_string_lossy().into_owned());
        args.extend(dirs.args());
        args.extend(["up".to_owned(), config_path.to_string_lossy().into_owned()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = ns.command("systemd-socket-activate", &args);
        cmd.env("MESHTUN_LOG", LOG_FILTER);
        let log = dir.path().join(format!("{}.log", config.name()));
        let label = format!(
            "socket-activated meshtun {} (uid {uid}) in {}",
            config.name(),
            ns.name()
        );
        let mut process = Supervised::spawn(ns, label, cmd, log);
        process.wait_ready(|| check_up_in(ns, config, &dirs.uapi));
        Self {
            ns,
            name: config.name().to_owned(),
            config_path,
            bin,
            dirs,
            process,
            _dir: dir,
        }
    }

    /// The daemon's UAPI socket.
    pub fn uapi_socket(&self) -> PathBuf {
        self.dirs.socket(&self.name)
    }

    /// The directory of the daemon's state and pid files: that of its namespace under the
    /// state directory it was given, or (started unprivileged, so that it cannot see pid 1's
    /// namespace) that directory itself.
    pub fn state_dir(&self) -> PathBuf {
        if self.dirs.per_netns {
            self.ns.state_dir_under(&self.dirs.state)
        } else {
            self.dirs.state.clone()
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

    /// Rewrites the configuration file with `text` exactly (it may be invalid, to test a
    /// failing reload) and sends SIGHUP.
    pub fn reload_text(&self, text: &str) {
        let dir = self
            .config_path
            .parent()
            .expect("the config file is in a directory");
        let file = self
            .config_path
            .file_name()
            .expect("the config file has a name")
            .to_string_lossy();
        crate::config::write_secret(dir, &file, text);
        self.process.signal(Signal::SIGHUP);
    }

    /// Sends `signal` to the daemon (by pid), if it has not been reaped.
    pub fn signal(&self, signal: Signal) {
        self.process.signal(signal);
    }

    /// Kills the daemon with SIGKILL, as a crash would, and reaps it; returns its exit status.
    /// The daemon undoes nothing: rules, its state and pid files and its UAPI socket stay
    /// until `meshtun down` or the next `meshtun up` removes them (or this guard's drop).
    /// Fails the test if the daemon had already exited.
    pub fn kill(&mut self) -> ExitStatus {
        self.assert_running();
        self.process
            .kill()
            .expect("a running daemon has an exit status once killed")
    }

    /// Waits up to `timeout` for the daemon to exit by itself (after `meshtun down`, say);
    /// its exit status, or `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.process.wait_exit(timeout)
    }

    /// The daemon's resident set size (`VmRSS` in `/proc/PID/status`) in KiB; `None` once it
    /// has exited.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        parse_vm_rss_kib(&status)
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
            socket_left: self.uapi_socket().exists(),
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
    check_up_in(ns, config, Path::new(crate::UAPI_DIR))
}

/// Like [`check_up`], for a daemon whose UAPI sockets are in `uapi_dir`.
fn check_up_in(ns: &Netns, config: &Config, uapi_dir: &Path) -> Result<(), String> {
    let socket = uapi_dir.join(format!("{}.sock", config.name()));
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

/// The user id unprivileged daemons run as (`nobody`; its group id is the same number).
pub const UNPRIVILEGED_UID: u32 = 65534;

/// The name of the user [`UNPRIVILEGED_UID`].
pub const UNPRIVILEGED_USER: &str = "nobody";

/// The capabilities of a daemon started with [`Daemon::start_unprivileged`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    /// CAP_NET_ADMIN alone: it creates its tun device and sets addresses and routes.
    NetAdmin,
    /// None at all: it attaches to a tun device created beforehand (`--existing-tun`).
    NoCapability,
    /// Started as root with `--user`: it switches to the user itself, keeping CAP_NET_ADMIN.
    SwitchUser,
}

impl Privilege {
    /// The `setpriv` options that leave the daemon with exactly these capabilities.
    fn setpriv_caps(self) -> &'static [&'static str] {
        match self {
            Privilege::NetAdmin => &[
                "--inh-caps=-all,+net_admin",
                "--ambient-caps=-all,+net_admin",
                "--bounding-set=-all,+net_admin",
            ],
            Privilege::NoCapability => &["--inh-caps=-all", "--bounding-set=-all"],
            Privilege::SwitchUser => &[],
        }
    }
}

/// Where a daemon keeps its state and pid files and its UAPI socket.
#[derive(Debug, Clone)]
struct RuntimeDirs {
    state: PathBuf,
    uapi: PathBuf,
    /// Started as root, the daemon keys its files by network namespace (a subdirectory of
    /// `state`); unprivileged, it cannot tell its namespace from the initial one.
    per_netns: bool,
}

impl RuntimeDirs {
    /// meshtun's defaults, shared by every daemon run as root.
    fn shared() -> Self {
        Self {
            state: PathBuf::from(crate::STATE_DIR),
            uapi: PathBuf::from(crate::UAPI_DIR),
            per_netns: true,
        }
    }

    /// Directories of its own under `base` (created here).
    fn private(base: &Path) -> Self {
        let dirs = Self {
            state: base.join("state"),
            uapi: base.join("uapi"),
            per_netns: false,
        };
        for dir in [&dirs.state, &dirs.uapi] {
            std::fs::create_dir(dir)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        }
        dirs
    }

    /// The UAPI socket of interface `name`.
    fn socket(&self, name: &str) -> PathBuf {
        self.uapi.join(format!("{name}.sock"))
    }

    /// The `meshtun` options naming these directories.
    fn args(&self) -> Vec<String> {
        vec![
            "--state-dir".to_owned(),
            self.state.to_string_lossy().into_owned(),
            "--uapi-dir".to_owned(),
            self.uapi.to_string_lossy().into_owned(),
        ]
    }
}

/// Makes `path` owned by [`UNPRIVILEGED_UID`] and its group.
fn give_to_unprivileged_user(path: &Path) {
    let id = Some(nix::unistd::Uid::from_raw(UNPRIVILEGED_UID));
    let gid = Some(nix::unistd::Gid::from_raw(UNPRIVILEGED_UID));
    nix::unistd::chown(path, id, gid).unwrap_or_else(|e| {
        panic!(
            "cannot chown {} to uid {UNPRIVILEGED_UID}: {e}",
            path.display()
        )
    });
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

/// The `VmRSS` value of a `/proc/PID/status` text, in KiB.
fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line.split_whitespace().skip(1);
    let value = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(value)
}

impl Daemon<'_> {
    /// Runs `meshtun down NAME` in the daemon's namespace if its state or pid file is still
    /// there and no other daemon serves the interface; never panics (it runs in `drop`).
    fn clean_up_leftovers(&self) {
        let socket = self.uapi_socket();
        if uapi_answers(&socket) {
            return;
        }
        let dir = self.state_dir();
        let files = [
            dir.join(format!("{}.json", self.name)),
            dir.join(format!("{}.pid", self.name)),
        ];
        if files.iter().any(|f| f.exists()) {
            eprintln!("running `meshtun down {}` to clean up after it", self.name);
            let bin = self.bin.to_string_lossy();
            let mut args = self.dirs.args();
            args.extend(["down".to_owned(), self.name.clone()]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut cmd = self.ns.command(&bin, &args);
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Ok(mut child) = cmd.spawn() {
                if wait_timeout(&mut child, Duration::from_secs(30)).is_none() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        // Keep the shared socket directory clean even if the daemon left its socket behind;
        // tests that check clean shutdown call `stop` and look before this runs.
        if socket.exists() && !uapi_answers(&socket) {
            eprintln!("removing {} left behind by meshtun", socket.display());
            let _ = std::fs::remove_file(socket);
        }
    }
}

impl Drop for Daemon<'_> {
    fn drop(&mut self) {
        self.process.terminate();
        self.clean_up_leftovers();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_kib() {
        let status = "Name:\tmeshtun\nVmPeak:\t  900 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss_kib(status), Some(12345));
        assert_eq!(parse_vm_rss_kib("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss_kib("VmRSS:\t12 MB\n"), None);
    }

    #[test]
    fn own_rss_is_reported() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(parse_vm_rss_kib(&status).is_some_and(|kib| kib > 0));
    }
}
