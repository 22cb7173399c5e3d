//! `controller.toml`: where the controller listens, where it keeps its state, and the
//! membership policy. Parsed once into typed values; an unknown key or a bad value is an
//! error naming the file, the line and the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::model::{Minimums, Policy, Topology};
use crate::network::{check_prefix, Network};

/// Largest configuration file accepted.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
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
    url: String,
    state_dir: PathBuf,
    database: Option<PathBuf>,
    key_file: Option<PathBuf>,
    admin_token_file: Option<PathBuf>,
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    ipv4: Option<ipnet::Ipv4Net>,
    ipv6: Option<ipnet::Ipv6Net>,
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
}

impl Default for RawPolicy {
    fn default() -> Self {
        Self {
            threshold: 0.70,
            max_age: 120,
            readmit_after: 1,
            minimums: Minimums::default(),
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
    /// Base URL nodes use, printed in invite tickets.
    pub url: String,
    /// SQLite database file.
    pub database: PathBuf,
    /// The controller's Ed25519 key file.
    pub key_file: PathBuf,
    /// File holding the admin token.
    pub admin_token_file: PathBuf,
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
        if raw.epoch.length < 1 {
            return Err(invalid("epoch.length", "must be at least 1 second".into()));
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
        let state_dir = base.join(&raw.state_dir);
        let under_state = |p: Option<PathBuf>, default: &str| match p {
            Some(p) => base.join(p),
            None => state_dir.join(default),
        };
        Ok(Self {
            listen: raw.listen,
            url: raw.url.trim_end_matches('/').to_owned(),
            database: under_state(raw.database, "controller.db"),
            key_file: under_state(raw.key_file, "controller.key"),
            admin_token_file: under_state(raw.admin_token_file, "admin.token"),
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
            },
            clock_skew: Duration::from_secs(raw.api.clock_skew),
            long_poll: Duration::from_secs(raw.api.long_poll),
            invite_ttl: Duration::from_secs(raw.api.invite_ttl),
            network,
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
mod tests {
    use super::*;

    const MINIMAL: &str =
        "listen = \"127.0.0.1:8700\"\nurl = \"http://127.0.0.1:8700\"\nstate_dir = \"state\"\n";

    fn parse(text: &str) -> Result<ControllerConfig, ConfigError> {
        ControllerConfig::parse(text, Path::new("/etc/meshtun/controller.toml"))
    }

    #[test]
    fn defaults_follow_the_seeds() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.policy.threshold, 0.70);
        assert_eq!(c.policy.max_age_ms, 120_000);
        assert_eq!(c.epoch_length, Duration::from_secs(60));
        assert_eq!(c.epoch_lead, Duration::from_secs(10));
        assert!(c.rotate_on_deny);
        assert_eq!(c.database, Path::new("/etc/meshtun/state/controller.db"));
        assert_eq!(c.policy.topology, Topology::FullMesh);
        assert_eq!(c.network, Network::default());
    }

    #[test]
    fn the_network_section_names_the_overlay() {
        let c = parse(&format!(
            "{MINIMAL}[network]\nipv4 = \"100.64.0.0/24\"\nipv6 = \"fd00:64::/64\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.network.prefixes(),
            vec![
                "100.64.0.0/24".parse().unwrap(),
                "fd00:64::/64".parse().unwrap()
            ]
        );
        let err = |t: &str| parse(&format!("{MINIMAL}{t}")).unwrap_err().to_string();
        assert!(err("[network]\n").contains("`network`"));
        assert!(err("[network]\nipv4 = \"0.0.0.0/1\"\n").contains("`network.ipv4`"));
        assert!(err("[network]\nipv4 = \"100.64.0.1/24\"\n").contains("host bits"));
        assert!(err("[network]\nipv6 = \"::/0\"\n").contains("`network.ipv6`"));
        assert!(err("[network]\nipv4 = \"mesh\"\n").contains("line 5"));
    }

    #[test]
    fn every_section_parses() {
        let text = format!(
            "{MINIMAL}[epoch]\nlength = 10\nlead = 3\nrotate_on_deny = false\n[policy]\nthreshold = 0.8\nmax_age = 30\nreadmit_after = 3\n[policy.minimums]\nhonesty = 0.5\n[topology]\nkind = \"hub_and_spoke\"\nhubs = [\"hub-1\"]\n[api]\nclock_skew = 10\nlong_poll = 5\ninvite_ttl = 60\n[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n"
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.policy.minimums.honesty, Some(0.5));
        assert_eq!(
            c.policy.topology,
            Topology::HubAndSpoke {
                hubs: vec!["hub-1".into()]
            }
        );
        assert_eq!(c.tls.unwrap().cert, Path::new("/etc/meshtun/c.pem"));
        assert_eq!(c.policy.readmit_after, 3);
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let err = |t: &str| parse(t).unwrap_err().to_string();
        assert!(err(&format!("{MINIMAL}bogus = 1\n")).contains("line 4"));
        assert!(err(&format!("{MINIMAL}bogus = 1\n")).contains("bogus"));
        assert!(
            err(&format!("{MINIMAL}[epoch]\nlength = 10\nlead = 10\n")).contains("`epoch.lead`")
        );
        assert!(
            err(&format!("{MINIMAL}[policy]\nthreshold = 1.5\n")).contains("`policy.threshold`")
        );
        assert!(err(&format!(
            "{MINIMAL}[topology]\nkind = \"hub_and_spoke\"\nhubs = []\n"
        ))
        .contains("`topology.hubs`"));
        assert!(err("listen = \"nowhere\"\n").contains("line 1"));
        assert!(err(&MINIMAL.replace("http://", "ftp://")).contains("`url`"));
    }
}
