//! `meshtun down NAME|CONFIG`: stop the daemon serving an interface, or clean up after one
//! that crashed.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{pidfile, DaemonError, Options};
use crate::config::Config;
use crate::host;

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

/// The interface a `down` target names: a configuration file, or an interface name.
fn interface_of(target: &str) -> Result<String, DaemonError> {
    let path = Path::new(target);
    if target.contains('/') || target.ends_with(".toml") || path.is_file() {
        Ok(Config::load(path)?.interface.name)
    } else {
        host::validate_ifname(target)?;
        Ok(target.to_owned())
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

/// Stops the daemon for `target`, waiting for it to undo its setup.
pub async fn down(target: &str, opts: &Options) -> Result<DownOutcome, DaemonError> {
    let ifname = interface_of(target)?;
    if let Some(pid) = pidfile::read(&opts.state_dir, &ifname).filter(|p| is_meshtun(*p)) {
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
    let cleaned = host::cleanup_stale(&ifname, &opts.state_dir).await?;
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
        assert_eq!(interface_of("wg0").unwrap(), "wg0");
        assert!(interface_of("bad name!").is_err());
    }

    #[test]
    fn our_own_process_is_a_meshtun_process_only_by_name() {
        // The test binary's name contains "meshtun" (it is the meshtun crate's test).
        assert!(is_meshtun(std::process::id() as i32));
        assert!(!is_meshtun(i32::MAX));
    }
}
