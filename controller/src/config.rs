//! `controller.toml`: where the controller listens, where it keeps its state, and the
//! membership policy. Parsed once into typed values; an unknown key or a bad value is an
//! error naming the file, the line and the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meshtun_proto::keyset::MAX_KEYS;
use meshtun_proto::membership::MembershipPublic;
use meshtun_proto::IdentityPublic;
use serde::Deserialize;

pub use crate::ha::settings::HaConfig;
use crate::ha::settings::RawHa;
use crate::model::{Minimums, Policy, Topology};
use crate::network::{check_prefix, Network};
use crate::relay::{RawRelay, RelayConfig};
use crate::store::{Database, Retention};
use crate::stun::{RawStun, StunConfig};
use sources::RawSources;

mod sources;

/// Largest configuration file accepted.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown key, or a value of the wrong type.
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What toml reported, with line and column.
        message: String,
    },
    /// A value out of range or inconsistent with another.
    #[error("{path}: `{key}`: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key, e.g. `epoch.lead`.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: SocketAddr,
    #[serde(default = "default_status_listen")]
    status_listen: SocketAddr,
    url: String,
    state_dir: PathBuf,
    database: Option<String>,
    database_password_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    #[serde(default)]
    previous_keys: Vec<String>,
    admin_token_file: Option<PathBuf>,
    read_token_file: Option<PathBuf>,
    tls: Option<RawTls>,
    #[serde(default)]
    epoch: RawEpoch,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    topology: RawTopology,
    #[serde(default)]
    api: RawApi,
    network: Option<RawNetwork>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    retention: RawRetention,
    #[serde(default)]
    ha: RawHa,
    #[serde(default)]
    stun: RawStun,
    #[serde(default)]
    relay: RawRelay,
    #[serde(default)]
    membership: RawMembership,
}

/// `[membership]`: the public half of the operator's offline membership key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMembership {
    public_key: Option<String>,
}

/// `[retention]`, in seconds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRetention {
    benchmarks: u64,
    decisions: u64,
    audit: u64,
}

impl Default for RawRetention {
    fn default() -> Self {
        let d = Retention::default();
        Self {
            benchmarks: d.benchmarks.as_secs(),
            decisions: d.decisions.as_secs(),
            audit: d.audit.as_secs(),
        }
    }
}

impl RawRetention {
    fn validate(&self) -> Result<Retention, (&'static str, String)> {
        in_bounds("retention.benchmarks", self.benchmarks)?;
        in_bounds("retention.decisions", self.decisions)?;
        in_bounds("retention.audit", self.audit)?;
        Ok(Retention {
            benchmarks: Duration::from_secs(self.benchmarks),
            decisions: Duration::from_secs(self.decisions),
            audit: Duration::from_secs(self.audit),
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    ipv4: Option<ipnet::Ipv4Net>,
    ipv6: Option<ipnet::Ipv6Net>,
}

fn default_status_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8701))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawEpoch {
    length: u64,
    lead: u64,
    rotate_on_deny: bool,
}

impl Default for RawEpoch {
    fn default() -> Self {
        Self {
            length: 60,
            lead: 10,
            rotate_on_deny: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPolicy {
    threshold: f64,
    max_age: u64,
    readmit_after: u32,
    minimums: Minimums,
    sources: RawSources,
}

impl Default for RawPolicy {
    fn default() -> Self {
        Self {
            threshold: 0.70,
            max_age: 120,
            readmit_after: 1,
            minimums: Minimums::default(),
            sources: RawSources::default(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case", tag = "kind")]
enum RawTopology {
    #[default]
    FullMesh,
    HubAndSpoke {
        hubs: Vec<String>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawApi {
    clock_skew: u64,
    long_poll: u64,
    invite_ttl: u64,
}

impl Default for RawApi {
    fn default() -> Self {
        Self {
            clock_skew: 30,
            long_poll: 30,
            invite_ttl: 3600,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    max_connections: u32,
    max_connections_per_address: Option<u32>,
    max_long_polls: Option<u32>,
    max_long_polls_per_address: Option<u32>,
    header_timeout: u64,
    request_timeout: u64,
    tls_handshake_timeout: u64,
    node_rate: u32,
    node_burst: u32,
    evaluator_rate: u32,
    evaluator_burst: u32,
}

impl Default for RawLimits {
    fn default() -> Self {
        let d = Limits::default();
        Self {
            max_connections: d.max_connections,
            // Unset: the defaults, or fewer if the connections allow fewer (see `limits`).
            max_connections_per_address: None,
            max_long_polls: None,
            max_long_polls_per_address: None,
            header_timeout: d.header_timeout.as_secs(),
            request_timeout: d.request_timeout.as_secs(),
            tls_handshake_timeout: d.tls_handshake_timeout.as_secs(),
            node_rate: d.node_rate,
            node_burst: d.node_burst,
            evaluator_rate: d.evaluator_rate,
            evaluator_burst: d.evaluator_burst,
        }
    }
}

/// What any client may hold of the controller: connections, time and request rate. Every
/// value is bounded when the configuration is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections in total, TLS handshakes included.
    pub max_connections: u32,
    /// Open connections from one source address.
    pub max_connections_per_address: u32,
    /// Bundle requests waiting for a newer epoch at once, in total.
    pub max_long_polls: u32,
    /// Bundle requests waiting at once from one source address.
    pub max_long_polls_per_address: u32,
    /// Time to send a request's headers, from the connection's start or from the end of the
    /// previous answer (so also the longest a kept-alive connection may stay idle).
    pub header_timeout: Duration,
    /// Time to read a request's body and answer it (a long-poll gets `long_poll` more).
    pub request_timeout: Duration,
    /// Time to complete a TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Signed requests per second one node may send, sustained.
    pub node_rate: u32,
    /// Signed requests one node may send in a burst.
    pub node_burst: u32,
    /// Signed statements per second one evaluator may send, sustained (buckets apart from
    /// the nodes').
    pub evaluator_rate: u32,
    /// Signed statements one evaluator may send in a burst: enough to score every node of a
    /// large mesh at once, each epoch.
    pub evaluator_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 16_384,
            max_connections_per_address: 256,
            max_long_polls: 16_384,
            max_long_polls_per_address: 128,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            node_rate: 2,
            node_burst: 20,
            // One statement per node per epoch: 1,000 nodes every 60 s is 17 a second.
            evaluator_rate: 50,
            evaluator_burst: 2_000,
        }
    }
}

/// The accepted range of every bounded number, with its key.
const BOUNDS: &[(&str, u64, u64)] = &[
    ("api.clock_skew", 1, 300),
    ("api.long_poll", 1, 300),
    ("api.invite_ttl", 60, 30 * 86_400),
    ("epoch.length", 1, 86_400),
    ("limits.max_connections", 16, 1_000_000),
    ("limits.max_connections_per_address", 1, 1_000_000),
    ("limits.max_long_polls", 1, 1_000_000),
    ("limits.max_long_polls_per_address", 1, 1_000_000),
    ("limits.header_timeout", 1, 300),
    ("limits.request_timeout", 1, 600),
    ("limits.tls_handshake_timeout", 1, 120),
    ("limits.node_rate", 1, 1_000),
    ("limits.node_burst", 1, 10_000),
    ("limits.evaluator_rate", 1, 10_000),
    ("limits.evaluator_burst", 1, 100_000),
    ("retention.benchmarks", 60, 3_650 * 86_400),
    ("retention.decisions", 60, 3_650 * 86_400),
    ("retention.audit", 3_600, 3_650 * 86_400),
    ("ha.lease", 1, 300),
];

/// Reads `previous_keys`: Ed25519 public keys, at most [`MAX_KEYS`] − 1 (the signing key
/// makes one more), each once.
fn previous_keys(texts: &[String]) -> Result<Vec<IdentityPublic>, String> {
    let keys = texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            IdentityPublic::from_base64(text).map_err(|e| {
                format!(
                    "key #{}: not an Ed25519 public key ({e}); give the public half the \
                     controller printed for its old key, 44 base64 characters",
                    i + 1
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if keys.len() >= MAX_KEYS {
        return Err(format!(
            "{} keys: at most {} previous keys, beside the signing key",
            keys.len(),
            MAX_KEYS - 1
        ));
    }
    match keys
        .iter()
        .enumerate()
        .find(|(i, k)| keys[..*i].contains(k))
    {
        Some((_, key)) => Err(format!("the key {key} is listed twice")),
        None => Ok(keys),
    }
}

/// Checks `value` of `key` against [`BOUNDS`].
pub(crate) fn in_bounds(key: &'static str, value: u64) -> Result<(), (&'static str, String)> {
    match BOUNDS.iter().find(|(k, _, _)| *k == key) {
        Some(&(_, min, max)) if !(min..=max).contains(&value) => {
            Err((key, format!("{value} is not in [{min}, {max}]")))
        }
        _ => Ok(()),
    }
}

/// Validates the raw limits, each against its bounds and against the others. Unset long-poll
/// caps default to the connection caps, or to the defaults if lower.
fn limits(raw: &RawApi, l: &RawLimits) -> Result<Limits, (&'static str, String)> {
    let d = Limits::default();
    let per_address = l
        .max_connections_per_address
        .unwrap_or(d.max_connections_per_address.min(l.max_connections));
    let max_long_polls = l
        .max_long_polls
        .unwrap_or(d.max_long_polls.min(l.max_connections));
    let max_long_polls_per_address = l.max_long_polls_per_address.unwrap_or(
        d.max_long_polls_per_address
            .min(per_address)
            .min(max_long_polls),
    );
    for (key, value) in [
        ("api.clock_skew", raw.clock_skew),
        ("api.long_poll", raw.long_poll),
        ("api.invite_ttl", raw.invite_ttl),
        ("limits.max_connections", u64::from(l.max_connections)),
        ("limits.max_connections_per_address", u64::from(per_address)),
        ("limits.max_long_polls", u64::from(max_long_polls)),
        (
            "limits.max_long_polls_per_address",
            u64::from(max_long_polls_per_address),
        ),
        ("limits.header_timeout", l.header_timeout),
        ("limits.request_timeout", l.request_timeout),
        ("limits.tls_handshake_timeout", l.tls_handshake_timeout),
        ("limits.node_rate", u64::from(l.node_rate)),
        ("limits.node_burst", u64::from(l.node_burst)),
        ("limits.evaluator_rate", u64::from(l.evaluator_rate)),
        ("limits.evaluator_burst", u64::from(l.evaluator_burst)),
    ] {
        in_bounds(key, value)?;
    }
    let at_most = |key, value: u32, other: &str, max: u32| {
        if value > max {
            Err((key, format!("{value} is more than {other} ({max})")))
        } else {
            Ok(())
        }
    };
    at_most(
        "limits.max_connections_per_address",
        per_address,
        "limits.max_connections",
        l.max_connections,
    )?;
    at_most(
        "limits.max_long_polls",
        max_long_polls,
        "limits.max_connections",
        l.max_connections,
    )?;
    at_most(
        "limits.max_long_polls_per_address",
        max_long_polls_per_address,
        "limits.max_connections_per_address",
        per_address,
    )?;
    at_most(
        "limits.max_long_polls_per_address",
        max_long_polls_per_address,
        "limits.max_long_polls",
        max_long_polls,
    )?;
    Ok(Limits {
        max_connections: l.max_connections,
        max_connections_per_address: per_address,
        max_long_polls,
        max_long_polls_per_address,
        header_timeout: Duration::from_secs(l.header_timeout),
        request_timeout: Duration::from_secs(l.request_timeout),
        tls_handshake_timeout: Duration::from_secs(l.tls_handshake_timeout),
        node_rate: l.node_rate,
        node_burst: l.node_burst,
        evaluator_rate: l.evaluator_rate,
        evaluator_burst: l.evaluator_burst,
    })
}

/// TLS certificate and key files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ControllerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Address of the status listener (`/health`, `/metrics`, `/v1/status`): loopback by
    /// default, where it needs no token.
    pub status_listen: SocketAddr,
    /// Base URL nodes use, printed in invite tickets.
    pub url: String,
    /// Where the state lives: an SQLite file (the default, `controller.db` in the state
    /// directory) or a PostgreSQL database.
    pub database: Database,
    /// The controller's Ed25519 key file.
    pub key_file: PathBuf,
    /// The public halves of keys this controller signed with before: requests naming them
    /// are still answered while the key is rotated (README "Rotating the controller key").
    pub previous_keys: Vec<IdentityPublic>,
    /// File holding the admin token.
    pub admin_token_file: PathBuf,
    /// File holding the read token, if remote reads of `/metrics` and `/v1/status` are
    /// allowed with it.
    pub read_token_file: Option<PathBuf>,
    /// TLS, if enabled.
    pub tls: Option<TlsFiles>,
    /// Epoch length.
    pub epoch_length: Duration,
    /// How long before activation the next epoch's bundles are published.
    pub epoch_lead: Duration,
    /// Rotate at once when an allowed node fails, instead of at the end of the epoch.
    pub rotate_on_deny: bool,
    /// The membership policy.
    pub policy: Policy,
    /// Accepted clock difference for signed requests.
    pub clock_skew: Duration,
    /// Longest wait of a long-polling bundle request.
    pub long_poll: Duration,
    /// How long an invite stays valid.
    pub invite_ttl: Duration,
    /// The overlay prefixes node addresses come from (`[network]`).
    pub network: Network,
    /// Connections, time and request rates.
    pub limits: Limits,
    /// How long the database keeps history (`[retention]`).
    pub retention: Retention,
    /// This instance among several on PostgreSQL (`[ha]`; unused with SQLite).
    pub ha: HaConfig,
    /// The STUN server (`[stun]`), if `listen` is set.
    pub stun: Option<StunConfig>,
    /// The TURN relays and the secret shared with them (`[relay]`), if `urls` is set.
    pub relay: Option<RelayConfig>,
    /// The public half of the operator's membership key (`[membership] public_key`): when
    /// set, every enrollment (`node add`, an invite's) needs the key's signature over the
    /// node's id and keys ([`meshtun_proto::membership`]).
    pub membership_key: Option<MembershipPublic>,
}

impl ControllerConfig {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let read_err = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                key: "(file)",
                reason: format!(
                    "the file is {} bytes; at most 1 MiB is accepted",
                    meta.len()
                ),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        Self::parse(&text, path)
    }

    /// Parses configuration text that came from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: syntax_message(&e, text),
        })?;
        Self::validate(raw, path)
    }

    fn validate(raw: RawConfig, path: &Path) -> Result<Self, ConfigError> {
        let invalid = |key, reason: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            reason,
        };
        if !(raw.url.starts_with("http://") || raw.url.starts_with("https://")) {
            return Err(invalid("url", "must start with http:// or https://".into()));
        }
        let previous_keys =
            previous_keys(&raw.previous_keys).map_err(|r| invalid("previous_keys", r))?;
        if raw.epoch.length < 1 {
            return Err(invalid("epoch.length", "must be at least 1 second".into()));
        }
        in_bounds("epoch.length", raw.epoch.length).map_err(|(k, r)| invalid(k, r))?;
        let limits = limits(&raw.api, &raw.limits).map_err(|(k, r)| invalid(k, r))?;
        let retention = raw.retention.validate().map_err(|(k, r)| invalid(k, r))?;
        let ha = raw.ha.validate().map_err(|(k, r)| invalid(k, r))?;
        let stun = raw.stun.validate().map_err(|(k, r)| invalid(k, r))?;
        if raw.status_listen == raw.listen {
            return Err(invalid(
                "status_listen",
                format!("{} is also `listen`: use another port", raw.status_listen),
            ));
        }
        if !raw.status_listen.ip().is_loopback() && raw.read_token_file.is_none() {
            return Err(invalid(
                "status_listen",
                format!(
                    "{} is not a loopback address: set read_token_file too, so that \
                     /metrics and /v1/status there need the read token",
                    raw.status_listen
                ),
            ));
        }
        if raw.epoch.lead >= raw.epoch.length {
            return Err(invalid(
                "epoch.lead",
                format!(
                    "{} s must be shorter than epoch.length ({} s)",
                    raw.epoch.lead, raw.epoch.length
                ),
            ));
        }
        let p = &raw.policy;
        if !(0.0..=1.0).contains(&p.threshold) {
            return Err(invalid(
                "policy.threshold",
                format!("{} is not in [0, 1]", p.threshold),
            ));
        }
        for (key, min) in [
            ("policy.minimums.refusal", p.minimums.refusal),
            ("policy.minimums.honesty", p.minimums.honesty),
            ("policy.minimums.policy", p.minimums.policy),
        ] {
            if let Some(m) = min.filter(|m| !(0.0..=1.0).contains(m)) {
                return Err(invalid(key, format!("{m} is not in [0, 1]")));
            }
        }
        if p.readmit_after < 1 {
            return Err(invalid("policy.readmit_after", "must be at least 1".into()));
        }
        if p.max_age < 1 {
            return Err(invalid(
                "policy.max_age",
                "must be at least 1 second".into(),
            ));
        }
        let sources = p
            .sources
            .validate(p.max_age, &p.minimums)
            .map_err(|(k, r)| invalid(k, r))?;
        let topology = match raw.topology {
            RawTopology::FullMesh => Topology::FullMesh,
            RawTopology::HubAndSpoke { hubs } if hubs.is_empty() => {
                return Err(invalid(
                    "topology.hubs",
                    "hub_and_spoke needs at least one hub".into(),
                ))
            }
            RawTopology::HubAndSpoke { hubs } => Topology::HubAndSpoke { hubs },
        };
        let network = match raw.network {
            None => Network::default(),
            Some(n) => {
                let network = Network {
                    ipv4: n.ipv4,
                    ipv6: n.ipv6,
                };
                if network.prefixes().is_empty() {
                    return Err(invalid(
                        "network",
                        "name the overlay's ipv4 or ipv6 prefix, or both".into(),
                    ));
                }
                if let Some(v4) = n.ipv4 {
                    check_prefix(&v4.into()).map_err(|r| invalid("network.ipv4", r))?;
                }
                if let Some(v6) = n.ipv6 {
                    check_prefix(&v6.into()).map_err(|r| invalid("network.ipv6", r))?;
                }
                network
            }
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let relay = raw.relay.validate(base).map_err(|(k, r)| invalid(k, r))?;
        let membership_key = raw
            .membership
            .public_key
            .as_deref()
            .map(MembershipPublic::from_base64)
            .transpose()
            .map_err(|e| invalid("membership.public_key", e.to_string()))?;
        let raw_password_given = raw.database_password_file.is_some();
        let sqlite_password = || {
            invalid(
                "database_password_file",
                "only a postgres:// database takes a password".into(),
            )
        };
        let state_dir = base.join(&raw.state_dir);
        let under_state = |p: Option<PathBuf>, default: &str| match p {
            Some(p) => base.join(p),
            None => state_dir.join(default),
        };
        Ok(Self {
            listen: raw.listen,
            status_listen: raw.status_listen,
            url: raw.url.trim_end_matches('/').to_owned(),
            database: match raw.database {
                None if raw_password_given => return Err(sqlite_password()),
                None => Database::Sqlite(state_dir.join("controller.db")),
                Some(text) => {
                    let pw = raw.database_password_file.map(|p| base.join(p));
                    let db = Database::parse(&text, base, pw)
                        .map_err(|e| invalid("database", e.to_string()))?;
                    match db {
                        Database::Sqlite(_) if raw_password_given => return Err(sqlite_password()),
                        db => db,
                    }
                }
            },
            key_file: under_state(raw.key_file, "controller.key"),
            previous_keys,
            admin_token_file: under_state(raw.admin_token_file, "admin.token"),
            read_token_file: raw.read_token_file.map(|p| base.join(p)),
            tls: raw.tls.map(|t| TlsFiles {
                cert: base.join(t.cert),
                key: base.join(t.key),
            }),
            epoch_length: Duration::from_secs(raw.epoch.length),
            epoch_lead: Duration::from_secs(raw.epoch.lead),
            rotate_on_deny: raw.epoch.rotate_on_deny,
            policy: Policy {
                threshold: p.threshold,
                max_age_ms: p.max_age.saturating_mul(1000),
                minimums: p.minimums,
                readmit_after: p.readmit_after,
                topology,
                sources,
            },
            clock_skew: Duration::from_secs(raw.api.clock_skew),
            long_poll: Duration::from_secs(raw.api.long_poll),
            invite_ttl: Duration::from_secs(raw.api.invite_ttl),
            network,
            limits,
            retention,
            ha,
            stun,
            relay,
            membership_key,
        })
    }
}

/// toml's message with the line number, without quoting the source line.
fn syntax_message(e: &toml::de::Error, text: &str) -> String {
    let line = e
        .span()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
    match line {
        Some(line) => format!("line {line}: {}", e.message()),
        None => e.message().to_owned(),
    }
}

#[cfg(test)]
mod tests;
