//! The optional `[controller]` and `[benchmark]` sections: membership gating by a
//! meshtun controller.
//!
//! ```toml
//! [controller]
//! url = "https://192.0.2.10:8700"          # http or https, no path
//! public_key = "<base64 Ed25519>"          # the controller's key, pinned; a list of up
//!                                          # to 4 while the key is rotated
//! node_id = "node-a"
//! identity_key_file = "node-a.identity"    # default: NAME.identity beside this file
//! on_controller_loss = "fail_closed"       # or "keep_last"; default "fail_closed"
//! grace = 30                               # seconds, default 30
//! cache_file = "/var/lib/meshtun/wg0.bundle"  # default: /var/lib/meshtun/NAME.bundle
//! ca_file = "controller-ca.pem"            # optional: trust this CA (PEM) for https
//! allowed_prefixes = ["100.64.0.0/24", "fd00:64::/64"]  # where gated peers may route;
//!                                          # default: the interface addresses' prefixes
//! stun = ["192.0.2.10:3478", "stun.example.net:3478"]  # STUN servers (at most 4, [] for
//!                                          # none); default: the first url's host, port 3478
//! keepalive = 25                           # seconds for gated peers, or "off" (0); default:
//!                                          # 25 behind a NAT (as STUN shows), else off
//! membership_key = "<base64 Ed25519>"      # optional: the operator's membership key; gated
//!                                          # peers without its signature are refused
//! observe = false                          # sign and submit peer observations; default off
//! observe_interval = "30s"                 # between rounds: 5 s to 1 h ("90s", "2m", or
//!                                          # whole seconds); default 30 s
//! observe_peers = 16                       # gated peers observed per round (1-256); default 16
//!
//! [benchmark]
//! interval = 10                            # seconds, default 10
//! timeout = 30                             # seconds, default min(3 × interval, 60)
//! command = ["/usr/local/bin/harness", "--json"]   # exactly one of command / simulated
//! # simulated = { mean = 0.9, stddev = 0.03 }
//! suite_version = "sim-1"                  # optional
//! ```
//!
//! `NAME` is the interface name. Relative paths (`identity_key_file`, `cache_file`, and a
//! `command` program written with a `/`) are relative to the configuration file's directory;
//! a program without a `/` is looked up in `PATH`.
//!
//! The controller URL must have no path, query or credentials: requests are signed over their
//! exact path, so the controller must answer at the root of the URL.

use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use meshtun_proto::membership::MembershipPublic;
use meshtun_proto::KeySet;

use super::endpoint::Endpoint;

/// The directory of the default bundle cache (`/var/lib/meshtun/NAME.bundle`).
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/meshtun";

/// Seconds after the last bundle's `not_after` before the loss rule applies, by default.
pub const DEFAULT_GRACE_SECS: u64 = 30;

/// The longest `grace`, in seconds (one day).
pub const MAX_GRACE_SECS: u64 = 86_400;

/// The shortest IPv4 prefix a gated peer may route, and in `allowed_prefixes`: shorter ones
/// are a default route or pieces of one.
pub const MIN_GATED_PREFIX_V4: u8 = 8;

/// The shortest IPv6 prefix a gated peer may route, and in `allowed_prefixes`.
pub const MIN_GATED_PREFIX_V6: u8 = 16;

/// The most prefixes `allowed_prefixes` may list.
pub const MAX_ALLOWED_PREFIXES: usize = 64;

/// Seconds between benchmark runs, by default.
pub const DEFAULT_INTERVAL_SECS: u64 = 10;

/// The longest benchmark `interval`, in seconds (one day).
pub const MAX_INTERVAL_SECS: u64 = 86_400;

/// The longest default benchmark timeout, in seconds: the default is
/// `min(3 × interval, DEFAULT_TIMEOUT_CAP_SECS)`.
pub const DEFAULT_TIMEOUT_CAP_SECS: u64 = 60;

/// The longest benchmark `timeout`, in seconds (one hour).
pub const MAX_TIMEOUT_SECS: u64 = 3_600;

/// What the daemon does once the controller has not delivered a valid bundle for
/// `grace` seconds past the last bundle's `not_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LossPolicy {
    /// Remove every gated peer: no bundle, no mesh (`"fail_closed"`, the default).
    #[default]
    FailClosed,
    /// Keep the last bundle's peers and keys until a newer bundle arrives (`"keep_last"`).
    KeepLast,
}

impl LossPolicy {
    /// The spelling in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            LossPolicy::FailClosed => "fail_closed",
            LossPolicy::KeepLast => "keep_last",
        }
    }
}

/// The `[controller]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerSettings {
    /// The base URLs of the controller's instances (`http` or `https`, no trailing slash, no
    /// path), in order of preference: the node uses one at a time and moves to the next when
    /// it stops answering. Never empty; at most [`MAX_CONTROLLER_URLS`].
    pub urls: Vec<String>,
    /// The controller's Ed25519 public keys: bundles must be signed with one of them, and
    /// requests name the first. Several only while the controller key is rotated.
    pub public_keys: KeySet,
    /// This node's id at the controller.
    pub node_id: String,
    /// The file holding this node's Ed25519 identity seed (base64); created with mode 0600
    /// on first start by [`super::load_or_create_identity`].
    pub identity_key_file: PathBuf,
    /// What to do when the controller is lost.
    pub on_controller_loss: LossPolicy,
    /// How long past the last bundle's `not_after` before [`Self::on_controller_loss`] applies.
    pub grace: Duration,
    /// Where the last verified signed bundle is kept (mode 0600).
    pub cache_file: PathBuf,
    /// A PEM file of CA certificates to trust for an `https` controller, beside the system's
    /// web roots (for a controller with a private CA or a self-signed certificate).
    pub ca_file: Option<PathBuf>,
    /// The prefixes gated peers' networks must lie inside, pinned at join. `None`: the
    /// prefixes of the interface's own addresses (see
    /// [`GatedLimits`](crate::gate::merge::GatedLimits)).
    pub allowed_prefixes: Option<Vec<IpNet>>,
    /// The STUN servers asked for this node's reflexive address (`stun`, at most
    /// [`MAX_STUN_SERVERS`]; empty: none). `None`: the default, the first controller URL's
    /// host on port [`DEFAULT_STUN_PORT`] (see [`Self::stun_servers`]).
    pub stun: Option<Vec<Endpoint>>,
    /// The persistent keepalive of gated peers (`keepalive`).
    pub keepalive: GatedKeepalive,
    /// The public half of the operator's membership key (`membership_key`): when set, a
    /// gated peer is taken from a bundle only with a valid membership signature over its
    /// node id, WireGuard key and identity key ([`meshtun_proto::membership`]).
    pub membership_key: Option<MembershipPublic>,
    /// Peer observations (`observe`, `observe_interval`, `observe_peers`).
    pub observe: ObserveSettings,
}

/// Peer observations, as `[controller] observe`, `observe_interval` and `observe_peers` set
/// them: every `interval`, this node probes up to `peers` of its gated peers through the
/// tunnel and submits a signed statement of what it saw of each (`crate::gate::observe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObserveSettings {
    /// Whether observations are made and submitted (`observe`; off by default: the
    /// controller's policy decides whether it uses them).
    pub enabled: bool,
    /// Time between two rounds (`observe_interval`).
    pub interval: Duration,
    /// The most gated peers observed in one round (`observe_peers`).
    pub peers: usize,
}

impl Default for ObserveSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            interval: Duration::from_secs(DEFAULT_OBSERVE_INTERVAL_SECS),
            peers: DEFAULT_OBSERVE_PEERS,
        }
    }
}

/// Seconds between two observation rounds, by default.
pub const DEFAULT_OBSERVE_INTERVAL_SECS: u64 = 30;

/// The shortest `observe_interval`, in seconds.
pub const MIN_OBSERVE_INTERVAL_SECS: u64 = 5;

/// The longest `observe_interval`, in seconds (one hour).
pub const MAX_OBSERVE_INTERVAL_SECS: u64 = 3_600;

/// Gated peers observed per round, by default.
pub const DEFAULT_OBSERVE_PEERS: usize = 16;

/// The most gated peers `observe_peers` may ask for in one round.
pub const MAX_OBSERVE_PEERS: usize = 256;

/// The persistent keepalive of gated peers, as `[controller] keepalive` sets it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GatedKeepalive {
    /// Not set: [`NAT_KEEPALIVE_SECS`] while this node is behind a NAT, else off (see
    /// `crate::gate::keepalive`).
    #[default]
    Auto,
    /// `keepalive = 0` or `"off"`.
    Off,
    /// `keepalive = SECONDS`.
    Every(u16),
}

/// The keepalive interval of gated peers behind a NAT, unless `keepalive` says otherwise:
/// wg's customary 25 s, under the shortest UDP mapping timeouts of common NATs (30 s).
pub const NAT_KEEPALIVE_SECS: u16 = 25;

/// STUN servers listed at most.
pub const MAX_STUN_SERVERS: usize = 4;

/// The STUN port (RFC 8489), of the default server.
pub const DEFAULT_STUN_PORT: u16 = 3478;

impl ControllerSettings {
    /// The STUN servers in force: those listed, or the first controller URL's host on port
    /// [`DEFAULT_STUN_PORT`].
    pub fn stun_servers(&self) -> Vec<Endpoint> {
        if let Some(list) = &self.stun {
            return list.clone();
        }
        let host = self
            .urls
            .first()
            .and_then(|url| reqwest::Url::parse(url).ok())
            .and_then(|url| url.host_str().map(str::to_owned));
        host.map(|host| Endpoint {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: DEFAULT_STUN_PORT,
        })
        .into_iter()
        .collect()
    }
}

/// Where benchmark scores come from.
#[derive(Debug, Clone, PartialEq)]
pub enum BenchmarkSourceConfig {
    /// Run this program (no shell) and read JSON scores from its standard output.
    Command(Vec<String>),
    /// Draw scores from a normal distribution, clamped to `[0, 1]`.
    Simulated {
        /// The mean, in `[0, 1]`.
        mean: f64,
        /// The standard deviation, in `[0, 1]`.
        stddev: f64,
    },
}

// The parser admits only finite `mean` and `stddev`, for which `==` is an equivalence.
impl Eq for BenchmarkSourceConfig {}

/// The `[benchmark]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchmarkSettings {
    /// Time between the starts of two runs.
    pub interval: Duration,
    /// How long one run of the command may take before it is killed.
    pub timeout: Duration,
    /// Where the scores come from.
    pub source: BenchmarkSourceConfig,
    /// The suite version to report: for `simulated`, the label (default `"simulated"`); for
    /// `command`, used when the harness prints none.
    pub suite_version: Option<String>,
}

/// The benchmark timeout when the configuration sets none: `min(3 × interval, 60 s)`.
pub fn default_timeout(interval: Duration) -> Duration {
    (interval * 3).min(Duration::from_secs(DEFAULT_TIMEOUT_CAP_SECS))
}

/// Checks `allowed_prefixes`: 1 to [`MAX_ALLOWED_PREFIXES`] networks without host bits,
/// none shorter than [`MIN_GATED_PREFIX_V4`] / [`MIN_GATED_PREFIX_V6`].
pub fn check_allowed_prefixes(prefixes: &[IpNet]) -> Result<(), String> {
    if prefixes.is_empty() {
        return Err(
            "the list is empty, so no gated peer could be reached; list the \
                    overlay's prefixes, or leave the key out to allow the interface's own"
                .into(),
        );
    }
    if prefixes.len() > MAX_ALLOWED_PREFIXES {
        return Err(format!(
            "{} prefixes; at most {MAX_ALLOWED_PREFIXES} are accepted",
            prefixes.len()
        ));
    }
    for net in prefixes {
        if net.trunc() != *net {
            return Err(format!(
                "{net} has host bits set; write the network, {}",
                net.trunc()
            ));
        }
        let min = match net {
            IpNet::V4(_) => MIN_GATED_PREFIX_V4,
            IpNet::V6(_) => MIN_GATED_PREFIX_V6,
        };
        if net.prefix_len() < min {
            return Err(format!(
                "{net} is shorter than /{min}: gated peers may not route a default route \
                 or large parts of the address space"
            ));
        }
    }
    Ok(())
}

/// The most controller URLs a node may list.
pub const MAX_CONTROLLER_URLS: usize = 8;

/// Checks a controller base URL: `http` or `https`, a host, and nothing after it; returns it
/// without the trailing slash.
pub(crate) fn controller_url(text: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "`{text}` has scheme `{}`; the controller is reached over http or https",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{text}` has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the URL must not hold credentials".into());
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "`{text}` has a path, query or fragment; give only scheme, host and port \
             (requests are signed over their exact path, so the controller must answer at the root)"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests;
