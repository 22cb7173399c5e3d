//! `meshtun down NAME|CONFIG`: stop the daemon serving an interface, or clean up after one
//! that crashed.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{pidfile, DaemonError, Options};
use crate::config::Config;
use crate::host::{self, Hooks};

/// How long `down` waits for the daemon to finish its teardown.
const STOP_WAIT: Duration = Duration::from_secs(20);

/// What `down` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownOutcome {
    /// The daemon with this pid stopped.
    Stopped(i32),
    /// No daemon was running; leftovers of a crashed run were removed.
    CleanedUp,
    /// No daemon was running and nothing was left behind.
    NotRunning,
}

/// Where `meshtun down NAME` looks for the configuration of `NAME`, for its down hooks.
const CONFIG_DIR: &str = "/etc/meshtun";

/// The interface a `down` target names (a configuration file, or an interface name), and
/// the configuration's hooks for a crash cleanup: those of the file given, or of
/// `/etc/meshtun/NAME.toml` if there is one. As root, hooks are taken only from a file no
/// other user can change; otherwise they are left out, with a warning saying why.
fn target_of(target: &str) -> Result<(String, Hooks), DaemonError> {
    let path = Path::new(target);
    let explicit = target.contains('/') || target.ends_with(".toml") || path.is_file();
    let (ifname, config_path) = if explicit {
        (Config::load(path)?.interface.name, path.to_owned())
    } else {
        host::validate_ifname(target)?;
        (
            target.to_owned(),
            Path::new(CONFIG_DIR).join(format!("{target}.toml")),
        )
    };
    Ok((ifname, hooks_from(&config_path)))
}

/// The down hooks of the configuration at `path`, if it exists, parses and may be trusted.
fn hooks_from(path: &Path) -> Hooks {
    if !path.exists() {
        return Hooks::default();
    }
    if let Some(why) = crate::config::untrusted_for_root(path) {
        tracing::warn!(
            "not running the down hooks of {}: {why} (as root, meshtun takes commands only \
             from a file that no other user can change)",
            path.display()
        );
        return Hooks::default();
    }
    match Config::load(path) {
        Ok(config) => config.host_plan().hooks,
        Err(e) => {
            tracing::warn!("not running the down hooks: {e}");
            Hooks::default()
        }
    }
}

/// True if `pid` is a live meshtun process (guards against a reused pid).
fn is_meshtun(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmd| String::from_utf8_lossy(&cmd).contains("meshtun"))
        // Without /proc (macOS) trust the pid file.
        .unwrap_or(true)
}

/// Who serves `ifname`'s UAPI socket.
enum Server {
    /// A meshtun daemon, by pid.
    Daemon(i32),
    /// Another process listens on the socket: the service manager under socket activation
    /// (the daemon only accepts on it), or another WireGuard implementation.
    Other { pid: i32, name: String },
    /// Nobody answers.
    None,
}

/// The daemon serving `ifname`: the process listening on its UAPI socket (the kernel tells
/// who, so no file can name another process), else the one in a pid file this user wrote.
fn server(opts: &Options, ifname: &str) -> Server {
    let socket = crate::uapi::socket_path_in(&opts.uapi_dir, ifname);
    #[cfg(target_os = "linux")]
    if let Ok(stream) = std::os::unix::net::UnixStream::connect(&socket) {
        use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
        if let Ok(creds) = getsockopt(&stream, PeerCredentials) {
            let pid = creds.pid();
            if is_meshtun(pid) {
                return Server::Daemon(pid);
            }
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|comm| comm.trim().to_owned())
                .unwrap_or_else(|_| "an unknown process".to_owned());
            return Server::Other { pid, name };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
    match pidfile::read(&opts.state_dir, ifname).filter(|p| is_meshtun(*p)) {
        Some(pid) => Server::Daemon(pid),
        None => Server::None,
    }
}

/// Stops the daemon for `target`, waiting for it to undo its setup.
pub async fn down(target: &str, opts: &Options) -> Result<DownOutcome, DaemonError> {
    let (ifname, hooks) = target_of(target)?;
    let pid = match server(opts, &ifname) {
        Server::Daemon(pid) => Some(pid),
        Server::Other { pid, name } => {
            let socket = crate::uapi::socket_path_in(&opts.uapi_dir, &ifname);
            return Err(DaemonError::Failed {
                reason: format!(
                    "its UAPI socket {} is held by {name} (pid {pid}), not by a meshtun \
                     daemon; under systemd, which creates the socket (meshtun@.socket), stop \
                     the interface with `systemctl stop meshtun@{ifname}`",
                    socket.display()
                ),
                ifname,
            });
        }
        Server::None => None,
    };
    if let Some(pid) = pid {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + STOP_WAIT;
        while is_meshtun(pid) {
            if tokio::time::Instant::now() >= deadline {
                return Err(DaemonError::StillRunning {
                    ifname,
                    pid,
                    seconds: STOP_WAIT.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        return Ok(DownOutcome::Stopped(pid));
    }
    let cleaned = host::cleanup_stale(&ifname, &opts.state_dir, &hooks).await?;
    let socket = crate::uapi::socket_path_in(&opts.uapi_dir, &ifname);
    let stale_socket = socket.exists() && std::os::unix::net::UnixStream::connect(&socket).is_err();
    if stale_socket {
        let _ = std::fs::remove_file(&socket);
    }
    let _ = std::fs::remove_file(pidfile::path(&opts.state_dir, &ifname));
    Ok(if cleaned || stale_socket {
        DownOutcome::CleanedUp
    } else {
        DownOutcome::NotRunning
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_name_is_an_interface() {
        assert_eq!(target_of("mt-no-such0").unwrap().0, "mt-no-such0");
        assert!(target_of("bad name!").is_err());
    }

    #[test]
    fn our_own_process_is_a_meshtun_process_only_by_name() {
        // The test binary's name contains "meshtun" (it is the meshtun crate's test).
        assert!(is_meshtun(std::process::id() as i32));
        assert!(!is_meshtun(i32::MAX));
    }
}
