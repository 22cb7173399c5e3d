//! The TOML front end: serde structures mirroring the file, then typed values with lines.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::{Spanned, Value};
use zeroize::Zeroizing;

use super::check::{self, Lines, PeerLines};
use super::keys::{Ctx, Dialect, Field, Section};
use super::secrets::{read_key_file, resolve_key_path};
use super::values::{self, Scalar};
use super::{
    Config, ConfigError, Endpoint, InterfaceConfig, MetricsSettings, PeerConfig, DEFAULT_MTU,
};
use crate::host::{Dns, Hooks};

mod gating;
mod locate;

/// The whole file. Sections not listed here are errors.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocument {
    interface: Option<Spanned<RawInterface>>,
    #[serde(default)]
    peer: Vec<Spanned<RawPeer>>,
    controller: Option<Spanned<gating::RawController>>,
    benchmark: Option<Spanned<gating::RawBenchmark>>,
    metrics: Option<Spanned<RawMetrics>>,
}

/// `[metrics]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<Spanned<String>>,
}

/// `[interface]`, with the line of every value kept for messages.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    name: Option<Spanned<String>>,
    private_key: Option<Spanned<SecretString>>,
    private_key_file: Option<Spanned<String>>,
    #[serde(default)]
    address: Vec<Spanned<String>>,
    listen_port: Option<Spanned<u16>>,
    mtu: Option<Spanned<i64>>,
    fwmark: Option<Spanned<Value>>,
    #[serde(default)]
    dns: Vec<Spanned<String>>,
    table: Option<Spanned<Value>>,
    scheduling: Option<Spanned<String>>,
    pre_up: Option<Spanned<Value>>,
    post_up: Option<Spanned<Value>>,
    pre_down: Option<Spanned<Value>>,
    post_down: Option<Spanned<Value>>,
}

/// One `[[peer]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    public_key: Option<Spanned<String>>,
    preshared_key: Option<Spanned<SecretString>>,
    preshared_key_file: Option<Spanned<String>>,
    #[serde(default)]
    allowed_ips: Vec<Spanned<String>>,
    endpoint: Option<Spanned<String>>,
    persistent_keepalive: Option<Spanned<Value>>,
}

/// A string holding a key, wiped from memory when dropped.
struct SecretString(Zeroizing<String>);

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|text| SecretString(Zeroizing::new(text)))
    }
}

/// Parses and validates a TOML configuration; see [`Config::parse`].
pub(super) fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let ctx = Ctx {
        path,
        dialect: Dialect::Toml,
    };
    let doc: RawDocument =
        toml::from_str(text).map_err(|err| locate::toml_error(text, path, &err))?;
    let Some(interface) = doc.interface else {
        let path = path.to_path_buf();
        let nothing = doc.peer.is_empty()
            && doc.controller.is_none()
            && doc.benchmark.is_none()
            && doc.metrics.is_none();
        return Err(if nothing {
            ConfigError::Empty { path }
        } else {
            ConfigError::MissingInterface { path }
        });
    };
    let mut builder = Builder {
        text,
        ctx,
        lines: Lines::default(),
        secret_files: Vec::new(),
    };
    let interface = builder.interface(interface)?;
    let peers = doc
        .peer
        .into_iter()
        .enumerate()
        .map(|(index, peer)| builder.peer(index, peer))
        .collect::<Result<Vec<_>, _>>()?;
    let controller = doc
        .controller
        .map(|raw| builder.controller(raw, &interface.name))
        .transpose()?;
    let benchmark = match doc.benchmark {
        None => None,
        Some(raw) if controller.is_none() => {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                line: builder.line(&raw),
                key: "benchmark".into(),
                reason: "[benchmark] needs a [controller] section: the scores are submitted \
                         to the controller"
                    .into(),
            })
        }
        Some(raw) => Some(builder.benchmark(raw)?),
    };
    let metrics = doc.metrics.map(|raw| builder.metrics(raw)).transpose()?;
    let config = Config {
        path: path.to_path_buf(),
        interface,
        peers,
        controller,
        benchmark,
        metrics,
        secret_files: builder.secret_files,
    };
    check::finish(config, &builder.lines, &ctx)
}

/// Converts the raw sections, recording lines and secret-holding files on the way.
struct Builder<'a> {
    text: &'a str,
    ctx: Ctx<'a>,
    lines: Lines,
    secret_files: Vec<PathBuf>,
}

impl Builder<'_> {
    fn line<T>(&self, value: &Spanned<T>) -> usize {
        locate::line_of(self.text, value.span().start)
    }

    /// Converts one value, turning a failure into an error naming the key and line.
    fn convert<T, U>(
        &self,
        section: Section,
        field: Field,
        value: &Spanned<T>,
        convert: impl FnOnce(&T) -> Result<U, String>,
    ) -> Result<U, ConfigError> {
        convert(value.get_ref())
            .map_err(|reason| self.ctx.invalid(self.line(value), section, field, reason))
    }

    /// Converts an optional value.
    fn optional<T, U>(
        &self,
        section: Section,
        field: Field,
        value: &Option<Spanned<T>>,
        convert: impl FnOnce(&T) -> Result<U, String>,
    ) -> Result<Option<U>, ConfigError> {
        value
            .as_ref()
            .map(|value| self.convert(section, field, value, convert))
            .transpose()
    }

    /// Converts every entry of a list.
    fn each<T, U>(
        &self,
        section: Section,
        field: Field,
        values: &[Spanned<T>],
        mut convert: impl FnMut(&T) -> Result<U, String>,
    ) -> Result<Vec<U>, ConfigError> {
        values
            .iter()
            .map(|value| self.convert(section, field, value, &mut convert))
            .collect()
    }

    fn interface(&mut self, raw: Spanned<RawInterface>) -> Result<InterfaceConfig, ConfigError> {
        let header = self.line(&raw);
        self.lines.interface = header;
        let raw = raw.into_inner();
        let at = Section::Interface;
        let name = match self.optional(at, Field::Name, &raw.name, |n| values::interface_name(n))? {
            Some(name) => name,
            None => self.default_name(header)?,
        };
        let private_key = self
            .secret(
                at,
                (Field::PrivateKey, raw.private_key),
                (Field::PrivateKeyFile, raw.private_key_file),
                values::private_key,
            )?
            .ok_or_else(|| {
                let reason = "missing: set `private_key` (base64) or `private_key_file`";
                self.ctx.invalid(header, at, Field::PrivateKey, reason)
            })?;
        self.lines.mtu = raw.mtu.as_ref().map(|mtu| self.line(mtu));
        let mut dns = Dns::default();
        self.each(at, Field::Dns, &raw.dns, |e| values::dns_entry(e, &mut dns))?;
        let hooks = |field, value| {
            Ok::<_, ConfigError>(
                self.optional(at, field, value, hook_list)?
                    .unwrap_or_default(),
            )
        };
        Ok(InterfaceConfig {
            name,
            private_key,
            addresses: self.each(at, Field::Address, &raw.address, |a| {
                values::interface_address(a)
            })?,
            listen_port: raw.listen_port.map(Spanned::into_inner),
            mtu: self
                .optional(at, Field::Mtu, &raw.mtu, |m| values::mtu(*m))?
                .unwrap_or(DEFAULT_MTU),
            fwmark: self
                .optional(at, Field::Fwmark, &raw.fwmark, |v| {
                    values::fwmark(scalar(v)?)
                })?
                .flatten(),
            dns,
            table: self
                .optional(at, Field::Table, &raw.table, |v| values::table(scalar(v)?))?
                .unwrap_or_default(),
            scheduling: self
                .optional(at, Field::Scheduling, &raw.scheduling, |v| {
                    values::scheduling(v)
                })?
                .unwrap_or_default(),
            hooks: Hooks {
                pre_up: hooks(Field::PreUp, &raw.pre_up)?,
                post_up: hooks(Field::PostUp, &raw.post_up)?,
                pre_down: hooks(Field::PreDown, &raw.pre_down)?,
                post_down: hooks(Field::PostDown, &raw.post_down)?,
            },
        })
    }

    /// The interface name when `name` is not set: the file's stem, as `wg-quick` does.
    fn default_name(&self, header: usize) -> Result<String, ConfigError> {
        let stem = self
            .ctx
            .path
            .file_stem()
            .and_then(|stem| stem.to_str())
            .unwrap_or("");
        values::interface_name(stem).map_err(|reason| {
            self.ctx.invalid(
                header,
                Section::Interface,
                Field::Name,
                format!("not set, and the file name cannot be the interface name: {reason}"),
            )
        })
    }

    /// A key given inline or in a file (at most one of the two). Records the file holding it.
    fn secret<T>(
        &mut self,
        section: Section,
        (inline_field, inline): (Field, Option<Spanned<SecretString>>),
        (file_field, file): (Field, Option<Spanned<String>>),
        decode: fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match (inline, file) {
            (None, None) => Ok(None),
            (Some(_), Some(file)) => Err(self.ctx.invalid(
                self.line(&file),
                section,
                file_field,
                format!(
                    "set either `{}` or `{}`, not both",
                    inline_field.toml_name(),
                    file_field.toml_name()
                ),
            )),
            (Some(inline), None) => {
                let key = self.convert(section, inline_field, &inline, |text| decode(&text.0))?;
                self.note_secret_file(self.ctx.path.to_path_buf());
                Ok(Some(key))
            }
            (None, Some(written)) => {
                let (file, key) = self.key_from_file(section, file_field, &written, decode)?;
                self.note_secret_file(file);
                Ok(Some(key))
            }
        }
    }

    /// Reads and decodes a key file named by `written`, relative to the configuration file.
    fn key_from_file<T>(
        &self,
        section: Section,
        field: Field,
        written: &Spanned<String>,
        decode: fn(&str) -> Result<T, String>,
    ) -> Result<(PathBuf, T), ConfigError> {
        let line = self.line(written);
        let file = resolve_key_path(self.ctx.path, written.get_ref());
        let text = read_key_file(&file).map_err(|source| ConfigError::KeyFile {
            path: self.ctx.path.to_path_buf(),
            line,
            key: self.ctx.key(section, field),
            file: file.clone(),
            source,
        })?;
        match decode(&text) {
            Ok(key) => Ok((file, key)),
            Err(reason) => {
                let reason = format!("{}: {reason}", file.display());
                Err(self.ctx.invalid(line, section, field, reason))
            }
        }
    }

    fn note_secret_file(&mut self, file: PathBuf) {
        if !self.secret_files.contains(&file) {
            self.secret_files.push(file);
        }
    }

    /// Converts `[metrics]`.
    fn metrics(&self, raw: Spanned<RawMetrics>) -> Result<MetricsSettings, ConfigError> {
        let header = self.line(&raw);
        let invalid = |line, reason: String| ConfigError::Invalid {
            path: self.ctx.path.to_path_buf(),
            line,
            key: "metrics.listen".into(),
            reason,
        };
        let Some(listen) = raw.into_inner().listen else {
            let reason = "missing: set the address to serve /metrics on, e.g. \"127.0.0.1:9586\"";
            return Err(invalid(header, reason.into()));
        };
        values::metrics_listen(listen.get_ref())
            .map(|listen| MetricsSettings { listen })
            .map_err(|reason| invalid(self.line(&listen), reason))
    }

    fn peer(&mut self, index: usize, raw: Spanned<RawPeer>) -> Result<PeerConfig, ConfigError> {
        let header = self.line(&raw);
        let raw = raw.into_inner();
        let at = Section::Peer(index);
        let Some(public_key) = &raw.public_key else {
            return Err(self.ctx.invalid(
                header,
                at,
                Field::PublicKey,
                "missing: every peer needs a public key",
            ));
        };
        let mut lines = PeerLines {
            public_key: self.line(public_key),
            allowed_ips: Vec::new(),
        };
        let public_key =
            self.convert(at, Field::PublicKey, public_key, |k| values::public_key(k))?;
        let preshared_key = self.secret(
            at,
            (Field::PresharedKey, raw.preshared_key),
            (Field::PresharedKeyFile, raw.preshared_key_file),
            values::preshared_key,
        )?;
        let allowed_ips = self.each(at, Field::AllowedIps, &raw.allowed_ips, |e| {
            values::allowed_ip(e)
        })?;
        lines.allowed_ips = allowed_ips
            .iter()
            .zip(&raw.allowed_ips)
            .map(|(net, entry)| (*net, self.line(entry)))
            .collect();
        let endpoint = self.optional(at, Field::Endpoint, &raw.endpoint, |e| {
            e.parse::<Endpoint>()
        })?;
        let persistent_keepalive = self
            .optional(
                at,
                Field::PersistentKeepalive,
                &raw.persistent_keepalive,
                |v| values::keepalive(scalar(v)?),
            )?
            .flatten();
        self.lines.peers.push(lines);
        Ok(PeerConfig {
            public_key,
            preshared_key,
            allowed_ips,
            endpoint,
            persistent_keepalive,
        })
    }
}

/// A hook: one command string or a list of them.
fn hook_list(value: &Value) -> Result<Vec<String>, String> {
    match value {
        Value::String(command) => Ok(vec![values::hook(command)?]),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(command) => values::hook(command),
                other => Err(format!(
                    "expected a command string, found {}",
                    other.type_str()
                )),
            })
            .collect(),
        other => Err(format!(
            "expected a command string or a list of them, found {}",
            other.type_str()
        )),
    }
}

/// A TOML integer or string, for keys that accept both.
fn scalar(value: &Value) -> Result<Scalar<'_>, String> {
    match value {
        Value::Integer(n) => Ok(Scalar::Int(*n)),
        Value::String(text) => Ok(Scalar::Str(text)),
        other => Err(format!(
            "expected an integer or a string, found {}",
            other.type_str()
        )),
    }
}
