//! A daemon handed a socket it must refuse, by `systemd-socket-activate` (the `sd_listen_fds`
//! protocol systemd's `.socket` units use). The well-formed case is
//! [`crate::Daemon::start_socket_activated`].

use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use crate::config::Config;
use crate::netns::Netns;
use crate::process::{Supervised, START_TIMEOUT};

/// The socket `systemd-socket-activate` binds and passes on.
#[derive(Debug, Clone)]
pub enum Passed {
    /// A Unix stream socket at this path.
    Stream(PathBuf),
    /// A Unix datagram socket at this path.
    Datagram(PathBuf),
    /// A TCP socket on this address, inside the namespace.
    Tcp(SocketAddr),
}

impl Passed {
    fn args(&self) -> Vec<String> {
        match self {
            Passed::Stream(path) => vec!["-l".to_owned(), path.to_string_lossy().into_owned()],
            Passed::Datagram(path) => vec![
                "--datagram".to_owned(),
                "-l".to_owned(),
                path.to_string_lossy().into_owned(),
            ],
            Passed::Tcp(addr) => vec!["-l".to_owned(), addr.to_string()],
        }
    }

    /// Knocks once on the socket (which makes `systemd-socket-activate` start the daemon);
    /// whether it could.
    fn knock(&self, ns: &Netns) -> bool {
        match self {
            Passed::Stream(path) => UnixStream::connect(path).is_ok(),
            Passed::Datagram(path) => UnixDatagram::unbound()
                .and_then(|s| s.send_to(b"knock", path))
                .is_ok(),
            Passed::Tcp(addr) => {
                ns.enter(|| TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_ok())
            }
        }
    }
}

/// Runs `meshtun up` for `config` as root in `ns` under `systemd-socket-activate` passing
/// `passed`, knocks on the socket so that the daemon starts, and waits for it to exit. Returns
/// its exit status and log; fails the test if it is still running after `START_TIMEOUT`.
pub fn run_with_passed_socket(
    ns: &Netns,
    config: &Config,
    passed: &Passed,
) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().expect("cannot create a temporary directory");
    let config_path = crate::config::write_secret(
        dir.path(),
        &format!("{}.toml", config.name()),
        &config.to_toml(),
    );
    let bin = crate::meshtun_bin();
    let mut args = passed.args();
    args.extend([
        bin.to_string_lossy().into_owned(),
        "up".to_owned(),
        config_path.to_string_lossy().into_owned(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cmd = ns.command("systemd-socket-activate", &args);
    let log = dir.path().join("meshtun.log");
    let label = format!(
        "meshtun {} given {passed:?} in {}",
        config.name(),
        ns.name()
    );
    let mut process = Supervised::spawn(ns, label, cmd, log);
    let knocked = crate::wait_until(START_TIMEOUT, || {
        process.pid().is_none() || passed.knock(ns)
    });
    assert!(knocked, "cannot reach {passed:?}; log:\n{}", process.log());
    let status = process.wait_exit(START_TIMEOUT);
    let log = process.log();
    let status = status.unwrap_or_else(|| {
        panic!("meshtun given {passed:?} still runs after {START_TIMEOUT:?}; log:\n{log}")
    });
    (status, log)
}
