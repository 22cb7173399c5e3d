//! coturn (Debian's `turnserver`), the TURN relay of issue 15 item 4b, run by a test inside
//! one of its namespaces: in the foreground (no daemonizing), configured by a 0600 file in
//! the test's directory (the shared secret stays off the command line), logging to stdout,
//! which goes to the test's directory; stopped by pid on drop.
//!
//! The relay uses the TURN REST API credentials meshtun's controller mints
//! (`use-auth-secret` with `static-auth-secret`).

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use crate::netns::Netns;
use crate::process::Supervised;

/// The UDP port coturn listens on.
pub const TURN_PORT: u16 = 3478;

/// The relayed ports coturn hands out (a small range: a test makes few allocations).
pub const RELAY_PORTS: (u16, u16) = (49152, 49407);

/// The realm the relay names in its 401 challenges.
pub const REALM: &str = "meshtun.test";

/// A running coturn.
#[derive(Debug)]
pub struct Coturn<'ns> {
    process: Supervised<'ns>,
    addr: SocketAddr,
    config: PathBuf,
}

impl<'ns> Coturn<'ns> {
    /// Starts coturn in `ns`, listening and relaying on `ip` (an address of `ns`) with the
    /// shared secret `secret`; its files go to `dir`. Waits until its UDP listener is open.
    pub fn start(ns: &'ns Netns, dir: &Path, ip: IpAddr, secret: &str) -> Self {
        let config = dir.join("turnserver.conf");
        let db = dir.join("turndb");
        let text = format!(
            "listening-ip={ip}\nrelay-ip={ip}\nlistening-port={TURN_PORT}\n\
             min-port={}\nmax-port={}\nuse-auth-secret\nstatic-auth-secret={secret}\n\
             realm={REALM}\nfingerprint\nno-tls\nno-dtls\nno-tcp-relay\nno-cli\n\
             no-software-attribute\nuserdb={}\nlog-file=stdout\nsimple-log\nverbose\n",
            RELAY_PORTS.0,
            RELAY_PORTS.1,
            db.display()
        );
        write_private(&config, &text);
        let config_arg = config.display().to_string();
        let cmd = ns.command("turnserver", &["-c", &config_arg]);
        let mut process =
            Supervised::spawn(ns, "coturn".to_owned(), cmd, dir.join("turnserver.log"));
        let addr = SocketAddr::new(ip, TURN_PORT);
        let opened = format!("UDP listener opened on: {addr}");
        process.wait_ready(|| {
            if process_log_contains(dir, &opened) {
                Ok(())
            } else {
                Err(format!("its log does not say {opened:?} yet"))
            }
        });
        Self {
            process,
            addr,
            config,
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Its configuration file (mode 0600: it holds the secret).
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// The pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }
}

fn process_log_contains(dir: &Path, needle: &str) -> bool {
    std::fs::read_to_string(dir.join("turnserver.log")).is_ok_and(|log| log.contains(needle))
}

fn write_private(path: &Path, text: &str) {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    file.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}
