//! coturn (Debian's `turnserver`), the TURN relay of issue 15 item 4b, as the e2e tests and
//! `meshtun demo --nat` run it inside one of their namespaces: in the foreground (no
//! daemonizing), configured by a 0600 file in a directory of the caller's (the shared
//! secret stays off the command line), logging to standard output, which the caller sends
//! to [`LOG_FILE`] in that directory.
//!
//! The relay uses the TURN REST API credentials meshtun's controller mints
//! (`use-auth-secret` with `static-auth-secret`). Starting and supervising the process is
//! the caller's ([`command`], then [`is_listening`] on its log).

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, Netns};

/// The program.
pub const PROGRAM: &str = "turnserver";

/// The UDP port coturn listens on.
pub const TURN_PORT: u16 = 3478;

/// The relayed ports coturn hands out (a small range: few allocations are made).
pub const RELAY_PORTS: (u16, u16) = (49152, 49407);

/// The realm the relay names in its 401 challenges.
pub const REALM: &str = "meshtun.test";

/// The configuration file, in the caller's directory.
pub const CONFIG_FILE: &str = "turnserver.conf";

/// The log file the caller should send coturn's output to, in the same directory.
pub const LOG_FILE: &str = "turnserver.log";

/// The configuration: listening and relaying on `ip`, the shared secret `secret`, its
/// user database at `db`.
pub fn config_text(ip: IpAddr, secret: &str, db: &Path) -> String {
    format!(
        "listening-ip={ip}\nrelay-ip={ip}\nlistening-port={TURN_PORT}\n\
         min-port={}\nmax-port={}\nuse-auth-secret\nstatic-auth-secret={secret}\n\
         realm={REALM}\nfingerprint\nno-tls\nno-dtls\nno-tcp-relay\nno-cli\n\
         no-software-attribute\nuserdb={}\nlog-file=stdout\nsimple-log\nverbose\n",
        RELAY_PORTS.0,
        RELAY_PORTS.1,
        db.display()
    )
}

/// Writes the configuration into `dir` (mode 0600, never over an existing file: it holds
/// the secret); its path.
pub fn write_config(dir: &Path, ip: IpAddr, secret: &str) -> Result<PathBuf, Error> {
    use std::io::Write as _;
    let path = dir.join(CONFIG_FILE);
    let text = config_text(ip, secret, &dir.join("turndb"));
    let what = |verb: &str| format!("cannot {verb} {}", path.display());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::io(what("create"), e))?;
    file.write_all(text.as_bytes())
        .map_err(|e| Error::io(what("write"), e))?;
    Ok(path)
}

/// The command that runs coturn in `ns` on the configuration file `config`.
pub fn command(ns: &Netns, config: &Path) -> Command {
    ns.command(PROGRAM, &[std::ffi::OsStr::new("-c"), config.as_os_str()])
}

/// Where coturn listens, given the `ip` of its configuration.
pub fn addr(ip: IpAddr) -> SocketAddr {
    SocketAddr::new(ip, TURN_PORT)
}

/// The line coturn logs once its UDP listener on `addr` is open.
pub fn listening_line(addr: SocketAddr) -> String {
    format!("UDP listener opened on: {addr}")
}

/// Whether coturn's log `text` says its UDP listener on `addr` is open.
pub fn is_listening(text: &str, addr: SocketAddr) -> bool {
    text.contains(&listening_line(addr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn the_configuration_is_private_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 20));
        let path = write_config(dir.path(), ip, "s3cret").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("static-auth-secret=s3cret\n"), "{text}");
        assert!(text.contains("listening-ip=192.0.2.20\n"), "{text}");
        let err = write_config(dir.path(), ip, "other").unwrap_err();
        assert!(err.to_string().contains(CONFIG_FILE), "{err}");
        let at = addr(ip);
        assert!(is_listening(
            "0: : UDP listener opened on: 192.0.2.20:3478\n",
            at
        ));
        assert!(!is_listening("0: : starting\n", at));
    }
}
