//! Debian's `wireguard-go` running in a namespace: the reference peer for interoperability.

use tempfile::TempDir;

use crate::config::{write_secret, Config};
use crate::netns::Netns;
use crate::process::Supervised;

/// `wireguard-go NAME` in the foreground inside a namespace, configured from a [`Config`] with
/// `wg setconf` and `ip`; stopped with SIGTERM on drop.
#[derive(Debug)]
pub struct WgGo<'ns> {
    ns: &'ns Netns,
    name: String,
    // Dropped before `dir`, which holds its log.
    process: Supervised<'ns>,
    dir: TempDir,
}

impl<'ns> WgGo<'ns> {
    /// Starts wireguard-go for `config.interface.name` in `ns`, waits for its UAPI socket,
    /// then applies keys, port and peers (`wg setconf`), addresses (IPv6 `nodad`), MTU, and a
    /// route for each peer's allowed IPs, and brings the interface up.
    pub fn start(ns: &'ns Netns, config: &Config) -> Self {
        let dir = tempfile::tempdir().expect("cannot create a temporary directory");
        let name = config.name().to_owned();
        let mut cmd = ns.command("env", &["WG_PROCESS_FOREGROUND=1", "wireguard-go", &name]);
        cmd.env("LOG_LEVEL", "debug");
        let log = dir.path().join(format!("{name}.log"));
        let label = format!("wireguard-go {name} in {}", ns.name());
        let mut process = Supervised::spawn(ns, label, cmd, log);
        process.wait_for_uapi(&crate::uapi_socket(&name));
        let wg = Self {
            ns,
            name,
            process,
            dir,
        };
        wg.configure(config);
        wg
    }

    fn configure(&self, config: &Config) {
        let conf = write_secret(self.dir.path(), "wg.conf", &config.to_wg_conf());
        self.ns
            .ok(&["wg", "setconf", &self.name, &conf.to_string_lossy()]);
        for addr in &config.interface.address {
            let mut args = vec!["addr", "add", addr, "dev", &self.name];
            if addr.contains(':') {
                args.push("nodad");
            }
            self.ns.ip(&args);
        }
        if let Some(mtu) = config.interface.mtu {
            self.ns
                .ip(&["link", "set", &self.name, "mtu", &mtu.to_string()]);
        }
        self.ns.ip(&["link", "set", &self.name, "up"]);
        for peer in &config.peers {
            for net in &peer.allowed_ips {
                self.ns.ip(&["route", "replace", net, "dev", &self.name]);
            }
        }
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A private directory for files such as preshared keys (removed on drop).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The process id, while the process runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// wireguard-go's log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

impl Drop for WgGo<'_> {
    fn drop(&mut self) {
        self.process.terminate();
        let socket = crate::uapi_socket(&self.name);
        if socket.exists() {
            let _ = std::fs::remove_file(socket);
        }
    }
}
