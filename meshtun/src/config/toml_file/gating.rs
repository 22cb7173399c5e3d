//! The `[controller]` and `[benchmark]` sections: raw serde structures and their conversion.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use meshtun_proto::membership::MembershipPublic;
use meshtun_proto::wire::{valid_node_id, MAX_SUITE_VERSION};
use meshtun_proto::IdentityPublic;
use meshtun_proto::KeySet;
use serde::Deserialize;
use toml::Spanned;

use super::Builder;
use crate::config::endpoint::Endpoint;
use crate::config::gating::{
    check_allowed_prefixes, controller_url, default_timeout, BenchmarkSettings,
    BenchmarkSourceConfig, ControllerSettings, GatedKeepalive, LossPolicy, ObserveSettings,
    DEFAULT_CACHE_DIR, DEFAULT_GRACE_SECS, DEFAULT_INTERVAL_SECS, MAX_CONTROLLER_URLS,
    MAX_GRACE_SECS, MAX_INTERVAL_SECS, MAX_OBSERVE_INTERVAL_SECS, MAX_OBSERVE_PEERS,
    MAX_STUN_SERVERS, MAX_TIMEOUT_SECS, MIN_OBSERVE_INTERVAL_SECS,
};
use crate::config::secrets::resolve_key_path;
use crate::config::ConfigError;

/// A string or a list of strings: `url` (one controller URL, or instances to fail over
/// between) and `public_key` (one controller key, or the keys of a rotation).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    /// `url = "https://…"`.
    One(String),
    /// `url = ["https://…", "https://…"]`.
    Many(Vec<String>),
}

impl OneOrMany {
    fn texts(&self) -> Vec<&String> {
        match self {
            Self::One(text) => vec![text],
            Self::Many(texts) => texts.iter().collect(),
        }
    }
}

/// `[controller]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawController {
    url: Option<Spanned<OneOrMany>>,
    public_key: Option<Spanned<OneOrMany>>,
    node_id: Option<Spanned<String>>,
    identity_key_file: Option<Spanned<String>>,
    on_controller_loss: Option<Spanned<String>>,
    grace: Option<Spanned<i64>>,
    cache_file: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    allowed_prefixes: Option<Spanned<Vec<String>>>,
    stun: Option<Spanned<Vec<String>>>,
    keepalive: Option<Spanned<toml::Value>>,
    membership_key: Option<Spanned<String>>,
    observe: Option<Spanned<bool>>,
    observe_interval: Option<Spanned<toml::Value>>,
    observe_peers: Option<Spanned<i64>>,
}

/// `[benchmark]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBenchmark {
    interval: Option<Spanned<i64>>,
    timeout: Option<Spanned<i64>>,
    command: Option<Spanned<Vec<String>>>,
    simulated: Option<Spanned<RawSimulated>>,
    suite_version: Option<Spanned<String>>,
}

/// `simulated = { mean = 0.9, stddev = 0.03 }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSimulated {
    mean: Spanned<f64>,
    stddev: Spanned<f64>,
}

impl Builder<'_> {
    /// An error about `section.key` at `line`.
    fn gating_error(
        &self,
        line: usize,
        section: &str,
        key: &str,
        reason: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.ctx.path.to_path_buf(),
            line,
            key: format!("{section}.{key}"),
            reason: reason.into(),
        }
    }

    /// Converts an optional value of `section.key`.
    fn gating_value<T, U>(
        &self,
        section: &str,
        key: &str,
        value: &Option<Spanned<T>>,
        convert: impl FnOnce(&T) -> Result<U, String>,
    ) -> Result<Option<U>, ConfigError> {
        let Some(value) = value else {
            return Ok(None);
        };
        convert(value.get_ref())
            .map(Some)
            .map_err(|reason| self.gating_error(self.line(value), section, key, reason))
    }

    /// Converts a required value of `section.key`; `header` is the section's line.
    fn gating_required<T, U>(
        &self,
        header: usize,
        (section, key): (&str, &str),
        value: &Option<Spanned<T>>,
        convert: impl FnOnce(&T) -> Result<U, String>,
    ) -> Result<U, ConfigError> {
        self.gating_value(section, key, value, convert)?
            .ok_or_else(|| self.gating_error(header, section, key, "missing: this key is required"))
    }

    /// Converts `[controller]`; `interface` is the interface name, for default file names.
    pub(super) fn controller(
        &mut self,
        raw: Spanned<RawController>,
        interface: &str,
    ) -> Result<ControllerSettings, ConfigError> {
        let header = self.line(&raw);
        let raw = raw.into_inner();
        let at = "controller";
        let config = self.ctx.path;
        let urls = self.gating_required(header, (at, "url"), &raw.url, controller_urls)?;
        let public_keys =
            self.gating_required(header, (at, "public_key"), &raw.public_key, controller_keys)?;
        let node_id =
            self.gating_required(header, (at, "node_id"), &raw.node_id, |n| node_id(n))?;
        let identity_key_file = self
            .gating_value(at, "identity_key_file", &raw.identity_key_file, |f| {
                file_path(config, f)
            })?
            .unwrap_or_else(|| resolve_key_path(config, &format!("{interface}.identity")));
        let on_controller_loss = self
            .gating_value(at, "on_controller_loss", &raw.on_controller_loss, |p| {
                loss_policy(p)
            })?
            .unwrap_or_default();
        let grace = self
            .gating_value(at, "grace", &raw.grace, |g| seconds(*g, 0, MAX_GRACE_SECS))?
            .unwrap_or(Duration::from_secs(DEFAULT_GRACE_SECS));
        let cache_file = self
            .gating_value(at, "cache_file", &raw.cache_file, |f| file_path(config, f))?
            .unwrap_or_else(|| Path::new(DEFAULT_CACHE_DIR).join(format!("{interface}.bundle")));
        let ca_file = self.gating_value(at, "ca_file", &raw.ca_file, |f| file_path(config, f))?;
        let allowed_prefixes =
            self.gating_value(at, "allowed_prefixes", &raw.allowed_prefixes, |list| {
                allowed_prefixes(list)
            })?;
        let stun = self.gating_value(at, "stun", &raw.stun, |list| stun_servers(list))?;
        let keepalive = self
            .gating_value(at, "keepalive", &raw.keepalive, gated_keepalive)?
            .unwrap_or_default();
        let membership_key = self.gating_value(at, "membership_key", &raw.membership_key, |k| {
            MembershipPublic::from_base64(k).map_err(|e| e.to_string())
        })?;
        let observe = self.observe(&raw)?;
        self.note_secret_file(identity_key_file.clone());
        Ok(ControllerSettings {
            urls,
            public_keys,
            node_id,
            identity_key_file,
            on_controller_loss,
            grace,
            cache_file,
            ca_file,
            allowed_prefixes,
            stun,
            keepalive,
            membership_key,
            observe,
        })
    }

    /// `observe`, `observe_interval` and `observe_peers` of `[controller]`.
    fn observe(&self, raw: &RawController) -> Result<ObserveSettings, ConfigError> {
        let at = "controller";
        let defaults = ObserveSettings::default();
        let enabled = self.gating_value(at, "observe", &raw.observe, |on| Ok(*on))?;
        let interval = self.gating_value(at, "observe_interval", &raw.observe_interval, |v| {
            observe_interval(v)
        })?;
        let peers = self.gating_value(at, "observe_peers", &raw.observe_peers, |n| {
            usize::try_from(*n)
                .ok()
                .filter(|n| (1..=MAX_OBSERVE_PEERS).contains(n))
                .ok_or_else(|| {
                    format!("{n} is out of range: it must be a number of peers from 1 to {MAX_OBSERVE_PEERS}")
                })
        })?;
        Ok(ObserveSettings {
            enabled: enabled.unwrap_or(defaults.enabled),
            interval: interval.unwrap_or(defaults.interval),
            peers: peers.unwrap_or(defaults.peers),
        })
    }

    /// Converts `[benchmark]`.
    pub(super) fn benchmark(
        &self,
        raw: Spanned<RawBenchmark>,
    ) -> Result<BenchmarkSettings, ConfigError> {
        let header = self.line(&raw);
        let raw = raw.into_inner();
        let at = "benchmark";
        let interval = self
            .gating_value(at, "interval", &raw.interval, |i| {
                seconds(*i, 1, MAX_INTERVAL_SECS)
            })?
            .unwrap_or(Duration::from_secs(DEFAULT_INTERVAL_SECS));
        let timeout = self
            .gating_value(at, "timeout", &raw.timeout, |t| {
                seconds(*t, 1, MAX_TIMEOUT_SECS)
            })?
            .unwrap_or_else(|| default_timeout(interval));
        let source = match (&raw.command, &raw.simulated) {
            (None, None) => Err(self.gating_error(
                header,
                at,
                "command",
                "missing: set `command` (the harness to run) or `simulated`",
            )),
            (Some(_), Some(simulated)) => Err(self.gating_error(
                self.line(simulated),
                at,
                "simulated",
                "set either `command` or `simulated`, not both",
            )),
            (Some(command), None) => command_argv(self.ctx.path, command.get_ref())
                .map(BenchmarkSourceConfig::Command)
                .map_err(|reason| self.gating_error(self.line(command), at, "command", reason)),
            (None, Some(simulated)) => self.simulated(simulated.get_ref()),
        }?;
        let suite_version = self.gating_value(at, "suite_version", &raw.suite_version, |v| {
            suite_version(v)
        })?;
        Ok(BenchmarkSettings {
            interval,
            timeout,
            source,
            suite_version,
        })
    }

    fn simulated(&self, raw: &RawSimulated) -> Result<BenchmarkSourceConfig, ConfigError> {
        let check = |value: &Spanned<f64>, key: &str| {
            let v = *value.get_ref();
            if v.is_finite() && (0.0..=1.0).contains(&v) {
                Ok(v)
            } else {
                Err(self.gating_error(
                    self.line(value),
                    "benchmark",
                    &format!("simulated.{key}"),
                    format!("{v} is out of range: it must be a number in [0, 1]"),
                ))
            }
        };
        Ok(BenchmarkSourceConfig::Simulated {
            mean: check(&raw.mean, "mean")?,
            stddev: check(&raw.stddev, "stddev")?,
        })
    }
}

/// A whole number of seconds in `[min, max]`.
fn seconds(value: i64, min: u64, max: u64) -> Result<Duration, String> {
    match u64::try_from(value) {
        Ok(secs) if (min..=max).contains(&secs) => Ok(Duration::from_secs(secs)),
        _ => Err(format!(
            "{value} is out of range: it must be a number of seconds from {min} to {max}"
        )),
    }
}

/// `allowed_prefixes`: networks in CIDR form, checked by [`check_allowed_prefixes`].
fn allowed_prefixes(list: &[String]) -> Result<Vec<IpNet>, String> {
    let nets = list
        .iter()
        .map(|text| {
            text.parse::<IpNet>().map_err(|_| {
                format!(
                    "`{}` is not a network in CIDR form (such as \"100.64.0.0/24\")",
                    text.escape_debug()
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_allowed_prefixes(&nets)?;
    Ok(nets)
}

/// The controller's Ed25519 public keys: one, or up to [`meshtun_proto::keyset::MAX_KEYS`] during a key
/// rotation, the first being the one requests name.
fn controller_keys(raw: &OneOrMany) -> Result<KeySet, String> {
    let keys = raw
        .texts()
        .into_iter()
        .enumerate()
        .map(|(i, text)| {
            IdentityPublic::from_base64(text).map_err(|e| {
                let which = match raw {
                    OneOrMany::One(_) => String::new(),
                    OneOrMany::Many(_) => format!("key #{}: ", i + 1),
                };
                format!(
                    "{which}not an Ed25519 public key ({e}); use the key \
                     `meshtun-controller init` printed, 44 base64 characters"
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    KeySet::new(keys).map_err(|e| e.to_string())
}

fn node_id(text: &str) -> Result<String, String> {
    if valid_node_id(text) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "`{}` is not a valid node id: 1 to 64 characters from a-z 0-9 - _ ., \
             starting with a letter or digit",
            text.escape_debug()
        ))
    }
}

fn loss_policy(text: &str) -> Result<LossPolicy, String> {
    [LossPolicy::FailClosed, LossPolicy::KeepLast]
        .into_iter()
        .find(|p| p.as_str() == text)
        .ok_or_else(|| {
            format!(
                "`{}` is not a policy: use \"fail_closed\" or \"keep_last\"",
                text.escape_debug()
            )
        })
}

/// A file path, relative to the configuration file's directory.
fn file_path(config: &Path, text: &str) -> Result<PathBuf, String> {
    if text.is_empty() || text.contains('\0') {
        return Err("expected a file path".into());
    }
    Ok(resolve_key_path(config, text))
}

/// The harness command line: a program and its arguments, no shell.
fn command_argv(config: &Path, argv: &[String]) -> Result<Vec<String>, String> {
    let Some(program) = argv.first() else {
        return Err("the command is empty; give the program and its arguments".into());
    };
    if program.trim().is_empty() {
        return Err("the program name is empty".into());
    }
    if argv.iter().any(|arg| arg.contains('\0')) {
        return Err("an argument contains a NUL character".into());
    }
    let mut out = argv.to_vec();
    if program.contains('/') {
        let resolved = resolve_key_path(config, program);
        let resolved = resolved.to_str().ok_or_else(|| {
            format!(
                "the program `{}` resolves to a path that is not UTF-8; give an absolute path",
                program.escape_debug()
            )
        })?;
        if let Some(first) = out.first_mut() {
            *first = resolved.to_owned();
        }
    }
    Ok(out)
}

fn suite_version(text: &str) -> Result<String, String> {
    if text.is_empty()
        || text.len() > MAX_SUITE_VERSION
        || !text.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(format!(
            "`{}` is not a suite version: 1 to {MAX_SUITE_VERSION} printable ASCII characters, no spaces",
            text.escape_debug()
        ));
    }
    Ok(text.to_owned())
}

/// The controller URLs of `url`: one or more, at most [`MAX_CONTROLLER_URLS`], each once.
fn controller_urls(raw: &OneOrMany) -> Result<Vec<String>, String> {
    let texts = raw.texts();
    if texts.is_empty() {
        return Err("the list is empty: give at least one controller URL".to_owned());
    }
    if texts.len() > MAX_CONTROLLER_URLS {
        return Err(format!(
            "{} URLs: at most {MAX_CONTROLLER_URLS} controller instances can be listed",
            texts.len()
        ));
    }
    let mut urls: Vec<String> = Vec::with_capacity(texts.len());
    for text in texts {
        let url = controller_url(text)?;
        if urls.contains(&url) {
            return Err(format!("`{url}` is listed twice"));
        }
        urls.push(url);
    }
    Ok(urls)
}

/// `stun`: at most [`MAX_STUN_SERVERS`] `host:port` entries, none twice.
fn stun_servers(list: &[String]) -> Result<Vec<Endpoint>, String> {
    if list.len() > MAX_STUN_SERVERS {
        return Err(format!(
            "{} servers: at most {MAX_STUN_SERVERS} STUN servers can be listed",
            list.len()
        ));
    }
    let mut servers: Vec<Endpoint> = Vec::with_capacity(list.len());
    for text in list {
        let server: Endpoint = text.parse()?;
        if servers.contains(&server) {
            return Err(format!("`{server}` is listed twice"));
        }
        servers.push(server);
    }
    Ok(servers)
}

/// `observe_interval`: a duration with its unit (`"30s"`, `"2m"`, `"1h"`) or whole seconds,
/// from [`MIN_OBSERVE_INTERVAL_SECS`] to [`MAX_OBSERVE_INTERVAL_SECS`].
fn observe_interval(value: &toml::Value) -> Result<Duration, String> {
    let (min, max) = (MIN_OBSERVE_INTERVAL_SECS, MAX_OBSERVE_INTERVAL_SECS);
    let interval = match value {
        toml::Value::Integer(secs) => seconds(*secs, min, max)?,
        toml::Value::String(text) => humantime::parse_duration(text).map_err(|e| {
            format!(
                "`{}` is not a duration ({e}): write it with its unit, such as \"30s\" or \"2m\"",
                text.escape_debug()
            )
        })?,
        other => {
            return Err(format!(
                "expected a duration such as \"30s\", or whole seconds, not a {}",
                other.type_str()
            ))
        }
    };
    if interval < Duration::from_secs(min) || interval > Duration::from_secs(max) {
        return Err(format!(
            "{} is out of range: it must be from {min} s to {max} s (1 h)",
            humantime::format_duration(interval)
        ));
    }
    Ok(interval)
}

/// `keepalive`: seconds, or `"off"` (0 is off too), as a peer's `persistent_keepalive`.
fn gated_keepalive(value: &toml::Value) -> Result<GatedKeepalive, String> {
    let seconds = crate::config::values::keepalive(super::scalar(value)?)?;
    Ok(seconds.map_or(GatedKeepalive::Off, GatedKeepalive::Every))
}
