//! The TOML configuration file, parsed once into typed values, and `wg-quick` import.
//!
//! A configuration file describes one interface (`meshtun up /etc/meshtun/wg0.toml`):
//!
//! ```toml
//! [interface]
//! name = "wg0"                       # default: the file name without extension
//! private_key_file = "wg0.key"       # or private_key = "<base64>"; relative to this file
//! address = ["100.64.0.1/24", "fd00::1/64"]
//! listen_port = 51820
//! mtu = 1420                         # default 1420
//! fwmark = "0xca6c"                  # integer, "0x..." or "off"
//! dns = ["100.64.0.53", "mesh.internal"]
//! table = "auto"                     # "auto", "off" or a table number
//! post_up = ["echo up %i"]           # pre_up, post_up, pre_down, post_down: string or list
//! scheduling = "normal"              # packet workers' priority: "normal" (default) or "realtime"
//!
//! [[peer]]
//! public_key = "<base64>"
//! preshared_key_file = "peer1.psk"   # or preshared_key = "<base64>"
//! allowed_ips = ["100.64.0.2/32"]
//! endpoint = "peer1.example.net:51820"
//! persistent_keepalive = 25          # seconds, or "off"
//! ```
//!
//! Two optional sections put the interface under a meshtun controller's membership gating
//! ([`ControllerSettings`], [`BenchmarkSettings`]); without them the file is plain
//! `wg-quick`-style meshtun:
//!
//! ```toml
//! [controller]
//! url = "https://192.0.2.10:8700"    # http or https; scheme, host and port only
//! public_key = "<base64 Ed25519>"    # the controller's key, pinned
//! node_id = "node-a"
//! identity_key_file = "node-a.identity"   # default NAME.identity; created 0600 if missing
//! on_controller_loss = "fail_closed" # or "keep_last" (default "fail_closed")
//! grace = 30                         # seconds past the last bundle's end (default 30)
//! cache_file = "/var/lib/meshtun/wg0.bundle"  # default /var/lib/meshtun/NAME.bundle
//!
//! [benchmark]                        # only with [controller]
//! interval = 10                      # seconds (default 10)
//! timeout = 30                       # seconds (default min(3 × interval, 60))
//! command = ["/usr/local/bin/harness", "--json"]  # or: simulated = { mean = 0.9, stddev = 0.03 }
//! suite_version = "suite-1"          # optional
//! ```
//!
//! `NAME` is the interface name. Relative paths, including a `command` program written with a
//! `/`, are relative to the configuration file; a bare program name is looked up in `PATH`.
//!
//! One more optional section serves Prometheus metrics over HTTP ([`MetricsSettings`], see
//! [`crate::metrics`]); without it no port is opened:
//!
//! ```toml
//! [metrics]
//! listen = "127.0.0.1:9586"          # IP address and port; "[::1]:9586" for IPv6
//! ```
//!
//! Every error names the file, the line and the key. Secrets never appear in error messages.
//! [`Config::permission_warnings`] reports secret-holding files that other users can read;
//! the library returns those warnings rather than logging them.

mod check;
mod emit;
mod endpoint;
mod error;
mod gating;
mod identity;
mod import;
mod keys;
mod ownership;
mod secrets;
mod toml_file;
mod values;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use meshtun_proto::{PresharedKey, PrivateKey, PublicKey};

use crate::host::{Dns, Hooks, HostPlan, RouteTable};
use crate::sched::Scheduling;
use crate::wgcfg::{DeviceSettings, PeerSettings};

pub(crate) use emit::TomlText;
pub use endpoint::Endpoint;
pub use error::{ConfigError, ImportError};
pub(crate) use gating::controller_url;
pub use gating::{
    check_allowed_prefixes, default_timeout, BenchmarkSettings, BenchmarkSourceConfig,
    ControllerSettings, GatedKeepalive, LossPolicy, DEFAULT_CACHE_DIR, DEFAULT_GRACE_SECS,
    DEFAULT_INTERVAL_SECS, DEFAULT_STUN_PORT, DEFAULT_TIMEOUT_CAP_SECS, MAX_ALLOWED_PREFIXES,
    MAX_CONTROLLER_URLS, MAX_GRACE_SECS, MAX_INTERVAL_SECS, MAX_STUN_SERVERS, MAX_TIMEOUT_SECS,
    MIN_GATED_PREFIX_V4, MIN_GATED_PREFIX_V6, NAT_KEEPALIVE_SECS,
};
pub use gating::{
    ObserveSettings, DEFAULT_OBSERVE_INTERVAL_SECS, DEFAULT_OBSERVE_PEERS,
    MAX_OBSERVE_INTERVAL_SECS, MAX_OBSERVE_PEERS, MIN_OBSERVE_INTERVAL_SECS,
};
pub use identity::{load_or_create_identity, IdentityFileError, LoadedIdentity};
pub use import::import_wg_quick;
pub use ownership::untrusted_for_root;

/// The largest configuration file meshtun reads, in bytes.
pub const MAX_CONFIG_SIZE: usize = 1024 * 1024;

/// The MTU used when the configuration sets none.
pub const DEFAULT_MTU: u16 = 1420;

/// A parsed and validated configuration file.
///
/// Build one with [`Config::load`] or [`Config::parse`]. After loading, call
/// [`Config::permission_warnings`] and show its messages to the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file the configuration came from (used in messages).
    pub path: PathBuf,
    /// The `[interface]` section.
    pub interface: InterfaceConfig,
    /// The `[[peer]]` sections, in file order.
    pub peers: Vec<PeerConfig>,
    /// The `[controller]` section: membership gating by a controller, if set.
    pub controller: Option<ControllerSettings>,
    /// The `[benchmark]` section: how this node measures the scores it submits, if set
    /// (only with `[controller]`).
    pub benchmark: Option<BenchmarkSettings>,
    /// The `[metrics]` section: where to serve Prometheus metrics, if set.
    pub metrics: Option<MetricsSettings>,
    /// Files that hold secrets: the configuration file itself when it has an inline key,
    /// every key file it names, and the identity key file of `[controller]`.
    secret_files: Vec<PathBuf>,
}

/// The `[interface]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceConfig {
    /// Interface name (at most 15 bytes).
    pub name: String,
    /// The interface's private key.
    pub private_key: PrivateKey,
    /// Interface addresses, host bits kept (`100.64.0.1/24`).
    pub addresses: Vec<IpNet>,
    /// UDP listen port; `None` picks a free one.
    pub listen_port: Option<u16>,
    /// Link MTU.
    pub mtu: u16,
    /// Firewall mark for encrypted packets; `None` when off.
    pub fwmark: Option<u32>,
    /// Name servers and search domains.
    pub dns: Dns,
    /// Where the routes for the peers' allowed IPs go.
    pub table: RouteTable,
    /// Commands run around bringing the interface up and down.
    pub hooks: Hooks,
    /// The packet workers' CPU priority (`scheduling = "realtime"` or `"normal"`).
    pub scheduling: Scheduling,
}

/// The `[metrics]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsSettings {
    /// The address `GET /metrics` is served on (an IP address and a non-zero port).
    pub listen: SocketAddr,
}

/// One `[[peer]]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's public key.
    pub public_key: PublicKey,
    /// Optional preshared key (never all zero).
    pub preshared_key: Option<PresharedKey>,
    /// Allowed networks, normalised to their network address, unique across all peers.
    pub allowed_ips: Vec<IpNet>,
    /// The configured endpoint, not yet resolved.
    pub endpoint: Option<Endpoint>,
    /// Keepalive interval in seconds; `None` when off.
    pub persistent_keepalive: Option<u16>,
}

impl Config {
    /// Reads and parses a configuration file, and the key files it names.
    ///
    /// Files larger than [`MAX_CONFIG_SIZE`] are refused.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = secrets::read_config_file(path)?;
        Config::parse(&text, path)
    }

    /// Parses configuration text that came from `path`.
    ///
    /// `path` names the file in error messages, gives the default interface name (its stem)
    /// and is the base for relative `private_key_file` and `preshared_key_file` paths, which
    /// are read here.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        if text.len() > MAX_CONFIG_SIZE {
            return Err(ConfigError::TooLarge {
                path: path.to_path_buf(),
                limit: MAX_CONFIG_SIZE,
            });
        }
        toml_file::parse(text, path)
    }

    /// Warnings for secret-holding files (the configuration file with an inline key, and the
    /// key files) that group or others may read or write. Each message names the file, its
    /// mode and the fix. Empty on platforms without Unix permissions.
    pub fn permission_warnings(&self) -> Vec<String> {
        secrets::permission_warnings(&self.secret_files)
    }

    /// The device configuration, with every peer endpoint resolved.
    ///
    /// Name resolution may block; an endpoint that does not resolve is an error naming the
    /// peer and the endpoint.
    pub fn device_settings(&self) -> Result<DeviceSettings, ConfigError> {
        let peers = self
            .peers
            .iter()
            .enumerate()
            .map(|(index, peer)| self.peer_settings(index, peer))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DeviceSettings {
            private_key: self.interface.private_key.clone(),
            listen_port: self.interface.listen_port,
            fwmark: self.interface.fwmark,
            peers,
        })
    }

    fn peer_settings(&self, index: usize, peer: &PeerConfig) -> Result<PeerSettings, ConfigError> {
        let endpoint = match &peer.endpoint {
            None => None,
            Some(endpoint) => Some(endpoint.resolve().map_err(|source| ConfigError::Resolve {
                path: self.path.clone(),
                peer: index + 1,
                public_key: peer.public_key,
                endpoint: endpoint.to_string(),
                source,
            })?),
        };
        Ok(PeerSettings {
            probes: Vec::new(),
            public_key: peer.public_key,
            preshared_key: peer.preshared_key.clone(),
            endpoint,
            allowed_ips: peer.allowed_ips.clone(),
            persistent_keepalive: peer.persistent_keepalive,
            forward: false,
        })
    }

    /// What the host setup applies: addresses, MTU, DNS, hooks, and one route for each
    /// distinct allowed-IP network of any peer.
    pub fn host_plan(&self) -> HostPlan {
        let mut seen = HashSet::new();
        let routes = self
            .peers
            .iter()
            .flat_map(|peer| peer.allowed_ips.iter().copied())
            .filter(|net| seen.insert(*net))
            .collect();
        HostPlan {
            ifname: self.interface.name.clone(),
            addresses: self.interface.addresses.clone(),
            mtu: self.interface.mtu,
            table: self.interface.table,
            fwmark: self.interface.fwmark,
            routes,
            dns: self.interface.dns.clone(),
            hooks: self.interface.hooks.clone(),
            existing_link: false,
        }
    }
}

#[cfg(test)]
mod tests;
