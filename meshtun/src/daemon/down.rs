//! `meshtun down NAME|CONFIG`: stop the daemon serving an interface, or clean up after one
//! that crashed.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{pidfile, DaemonError, Options};
use crate::config::Config;
use crate::host::{self, netns, Hooks};
use meshtun_proto::report::Chain;

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
            tracing::warn!("not running the down hooks: {}", Chain(&e));
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

/// The daemon serving `ifname` in this network namespace: the process listening on its UAPI
/// socket (the kernel tells who, so no file can name another process), else the one in a
/// pid file this user wrote. A process in another namespace is never it: the UAPI socket is
/// named after the interface alone, so an interface of the same name elsewhere may hold it.
fn server(opts: &Options, ifname: &str) -> Server {
    let socket = crate::uapi::socket_path_in(&opts.uapi_dir, ifname);
    #[cfg(target_os = "linux")]
    if let Some(pid) = socket_holder(&socket) {
        if !netns::same_as_current(pid.unsigned_abs()) {
            tracing::warn!(
                "{} is served by process {pid} in another network namespace: not this \
                 namespace's {ifname}, left alone",
                socket.display()
            );
        } else if is_meshtun(pid) {
            return Server::Daemon(pid);
        } else {
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|comm| comm.trim().to_owned())
                .unwrap_or_else(|_| "an unknown process".to_owned());
            return Server::Other { pid, name };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
    match pidfile::read(&opts.state_dir, ifname).filter(|p| is_meshtun(*p)) {
        Some(pid) if netns::same_as_current(pid.unsigned_abs()) => Server::Daemon(pid),
        Some(pid) => {
            tracing::warn!(
                "the pid file of {ifname} names meshtun process {pid}, which is in another \
                 network namespace (or cannot be inspected): not signalling it"
            );
            Server::None
        }
        None => Server::None,
    }
}

/// The process listening on the UAPI socket at `socket`, as the kernel reports it.
#[cfg(target_os = "linux")]
fn socket_holder(socket: &Path) -> Option<i32> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
    getsockopt(&stream, PeerCredentials)
        .ok()
        .map(|creds| creds.pid())
}

/// Stops the daemon for `target` in this network namespace, waiting for it to undo its
/// setup, or cleans up after one that crashed there.
pub async fn down(target: &str, opts: &Options) -> Result<DownOutcome, DaemonError> {
    let ours = opts.in_this_netns()?;
    let result = down_here(target, &ours).await;
    netns::remove_if_empty(&opts.state_dir, &ours.state_dir);
    result
}

/// [`down`] with the state directory of this namespace.
async fn down_here(target: &str, opts: &Options) -> Result<DownOutcome, DaemonError> {
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
    let stale_pid_file = std::fs::remove_file(pidfile::path(&opts.state_dir, &ifname)).is_ok();
    // A dead socket at the shared path may be another namespace's, left for its own `down`
    // (or replaced by the next start): it is removed only when a state or pid file says that
    // this namespace's daemon did not stop cleanly.
    let socket = crate::uapi::socket_path_in(&opts.uapi_dir, &ifname);
    let stale_socket = (cleaned || stale_pid_file)
        && socket.exists()
        && std::os::unix::net::UnixStream::connect(&socket).is_err();
    if stale_socket {
        let _ = std::fs::remove_file(&socket);
    }
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
