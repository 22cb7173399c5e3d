//! coturn (Debian's `turnserver`), the TURN relay of issue 15 item 4b, run by a test inside
//! one of its namespaces as [`meshtun_testbed::coturn`] (shared with `meshtun demo --nat`)
//! describes: configured by a 0600 file in the test's directory, logging to that directory;
//! stopped by pid on drop.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use meshtun_testbed::coturn;

use crate::netns::Netns;
use crate::process::Supervised;

pub use coturn::{REALM, RELAY_PORTS, TURN_PORT};

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
        let config = coturn::write_config(dir, ip, secret).unwrap_or_else(|e| panic!("{e}"));
        let cmd = coturn::command(ns, &config);
        let mut process =
            Supervised::spawn(ns, "coturn".to_owned(), cmd, dir.join(coturn::LOG_FILE));
        let addr = coturn::addr(ip);
        let log = dir.join(coturn::LOG_FILE);
        process.wait_ready(|| {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if coturn::is_listening(&text, addr) {
                Ok(())
            } else {
                Err(format!(
                    "its log does not say {:?} yet",
                    coturn::listening_line(addr)
                ))
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
