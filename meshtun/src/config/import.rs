//! `meshtun import`: converting a `wg-quick` configuration (`/etc/wireguard/wg0.conf`) into
//! meshtun's TOML.
//!
//! The INI dialect is the one `wg-quick` and `wg setconf` read together: `[Interface]` and
//! `[Peer]` sections, `Key = Value` lines, everything after `#` a comment, keys and section
//! names case-insensitive, `Address`, `DNS` and `AllowedIPs` comma lists that may repeat,
//! and repeatable hook keys. Values go through the same checks as the TOML file, so a file
//! that imports also loads.

use std::collections::HashMap;
use std::path::Path;

use super::check::{self, Lines, PeerLines};
use super::emit;
use super::keys::{Ctx, Dialect, Field, Section};
use super::values::{self, Scalar};
use super::{
    Config, ConfigError, Endpoint, ImportError, InterfaceConfig, PeerConfig, DEFAULT_MTU,
    MAX_CONFIG_SIZE,
};
use crate::host::{Dns, Hooks, RouteTable};
use crate::sched::Scheduling;

/// Converts the `wg-quick` file `text`, read from `path`, into meshtun TOML text.
///
/// The interface is named after the file (`wg0.conf` gives `wg0`). `SaveConfig` has no
/// meshtun equivalent and becomes a comment. The result holds the private key: write it
/// with mode 0600.
pub fn import_wg_quick(text: &str, path: &Path) -> Result<String, ImportError> {
    let (config, notes) = parse_wg_quick(text, path)?;
    Ok(emit::to_toml(&config, &notes, path))
}

/// One `Key = Value` line.
#[derive(Debug, Clone, Copy)]
struct Entry<'a> {
    line: usize,
    field: Field,
    value: &'a str,
}

/// One section's lines.
#[derive(Debug, Default)]
struct RawSection<'a> {
    header: usize,
    entries: Vec<Entry<'a>>,
}

/// The file split into sections, before any value is converted.
#[derive(Debug, Default)]
struct RawFile<'a> {
    interface: Option<RawSection<'a>>,
    peers: Vec<RawSection<'a>>,
    notes: Vec<String>,
}

/// Parses and validates a `wg-quick` file; returns the configuration and notes for the
/// output's header comment.
pub(super) fn parse_wg_quick(
    text: &str,
    path: &Path,
) -> Result<(Config, Vec<String>), ImportError> {
    if text.len() > MAX_CONFIG_SIZE {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_CONFIG_SIZE,
        }
        .into());
    }
    let raw = split_sections(text, path)?;
    let ctx = Ctx {
        path,
        dialect: Dialect::WgQuick,
    };
    let Some(interface) = &raw.interface else {
        let path = path.to_path_buf();
        return Err(if raw.peers.is_empty() {
            ConfigError::Empty { path }
        } else {
            ConfigError::MissingInterface { path }
        }
        .into());
    };
    let mut lines = Lines {
        interface: interface.header,
        ..Lines::default()
    };
    let interface = convert_interface(interface, &ctx, &mut lines)?;
    let mut peers = Vec::with_capacity(raw.peers.len());
    for (index, section) in raw.peers.iter().enumerate() {
        let (peer, peer_lines) = convert_peer(index, section, &ctx)?;
        peers.push(peer);
        lines.peers.push(peer_lines);
    }
    let config = Config {
        path: path.to_path_buf(),
        interface,
        peers,
        controller: None,
        benchmark: None,
        metrics: None,
        secret_files: Vec::new(),
    };
    Ok((check::finish(config, &lines, &ctx)?, raw.notes))
}

fn syntax(path: &Path, line: usize, reason: impl Into<String>) -> ImportError {
    ImportError::Syntax {
        path: path.to_path_buf(),
        line,
        reason: reason.into(),
    }
}

/// Splits the file into sections of known keys.
fn split_sections<'a>(text: &'a str, path: &Path) -> Result<RawFile<'a>, ImportError> {
    let mut file = RawFile::default();
    let mut current: Option<Section> = None;
    for (index, raw_line) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw_line.split('#').next().unwrap_or_default().trim();
        if content.is_empty() {
            continue;
        }
        if content.starts_with('[') {
            current = Some(open_section(&mut file, content, line, path)?);
            continue;
        }
        let Some((key, value)) = content.split_once('=') else {
            return Err(syntax(
                path,
                line,
                "expected `Key = Value`, a [Section] header or a comment",
            ));
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
            // Not quoted: a line like this may be a pasted key.
            return Err(syntax(
                path,
                line,
                "expected `Key = Value` with a key made of letters",
            ));
        }
        let Some(section) = current else {
            return Err(syntax(
                path,
                line,
                format!("`{key}` comes before any [Interface] or [Peer] section"),
            ));
        };
        if section == Section::Interface && key.eq_ignore_ascii_case("SaveConfig") {
            save_config(&mut file, value, line, path)?;
            continue;
        }
        let Some(field) = Field::from_wg_quick(key, section) else {
            return Err(ImportError::UnknownKey {
                path: path.to_path_buf(),
                line,
                key: key.to_owned(),
                section: match section {
                    Section::Interface => "Interface".into(),
                    Section::Peer(_) => "Peer".into(),
                },
            });
        };
        let entry = Entry { line, field, value };
        let target = match section {
            Section::Interface => file.interface.as_mut(),
            Section::Peer(index) => file.peers.get_mut(index),
        };
        if let Some(target) = target {
            target.entries.push(entry);
        }
    }
    Ok(file)
}

/// Handles a `[...]` line and returns the section it opens.
fn open_section(
    file: &mut RawFile<'_>,
    content: &str,
    line: usize,
    path: &Path,
) -> Result<Section, ImportError> {
    let name = content
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .map(str::trim)
        .ok_or_else(|| {
            syntax(
                path,
                line,
                "a section header must look like [Interface] or [Peer]",
            )
        })?;
    let section = RawSection {
        header: line,
        entries: Vec::new(),
    };
    if name.eq_ignore_ascii_case("Interface") {
        if let Some(first) = &file.interface {
            return Err(syntax(
                path,
                line,
                format!(
                    "a second [Interface] section (the first is on line {})",
                    first.header
                ),
            ));
        }
        file.interface = Some(section);
        Ok(Section::Interface)
    } else if name.eq_ignore_ascii_case("Peer") {
        file.peers.push(section);
        Ok(Section::Peer(file.peers.len() - 1))
    } else {
        Err(syntax(
            path,
            line,
            format!(
                "unknown section [{}]; expected [Interface] or [Peer]",
                name.escape_debug()
            ),
        ))
    }
}

/// `SaveConfig` has no equivalent: meshtun never rewrites its configuration.
fn save_config(
    file: &mut RawFile<'_>,
    value: &str,
    line: usize,
    path: &Path,
) -> Result<(), ImportError> {
    match value {
        "true" => {
            file.notes.push(format!(
                "SaveConfig = true (line {line}) was dropped: meshtun never writes its configuration back."
            ));
            Ok(())
        }
        "false" => Ok(()),
        _ => Err(syntax(path, line, "`SaveConfig` must be true or false")),
    }
}

/// Comma-separated items, trimmed, empty ones skipped (as `wg-quick` splits them).
fn items(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

/// Refuses a second occurrence of a key that may appear only once.
fn once(
    seen: &mut HashMap<&'static str, usize>,
    entry: &Entry<'_>,
    section: Section,
    ctx: &Ctx<'_>,
) -> Result<(), ConfigError> {
    if entry.field.repeatable_in_wg_quick() {
        return Ok(());
    }
    match seen.insert(entry.field.wg_quick_name(), entry.line) {
        Some(first) => Err(ctx.invalid(
            entry.line,
            section,
            entry.field,
            format!("set twice (first on line {first})"),
        )),
        None => Ok(()),
    }
}

fn convert_interface(
    raw: &RawSection<'_>,
    ctx: &Ctx<'_>,
    lines: &mut Lines,
) -> Result<InterfaceConfig, ConfigError> {
    let at = Section::Interface;
    let stem = ctx
        .path
        .file_stem()
        .and_then(|stem| stem.to_str())
        .unwrap_or("");
    let name = values::interface_name(stem).map_err(|reason| {
        ctx.invalid(
            raw.header,
            at,
            Field::Name,
            format!("the file name cannot name the interface: {reason}"),
        )
    })?;
    let mut seen = HashMap::new();
    let mut private_key = None;
    let mut addresses = Vec::new();
    let mut listen_port = None;
    let mut mtu = DEFAULT_MTU;
    let mut fwmark = None;
    let mut dns = Dns::default();
    let mut table = RouteTable::Auto;
    let mut hooks = Hooks::default();
    for entry in &raw.entries {
        once(&mut seen, entry, at, ctx)?;
        let fail = |reason: String| ctx.invalid(entry.line, at, entry.field, reason);
        let value = entry.value;
        match entry.field {
            Field::PrivateKey => private_key = Some(values::private_key(value).map_err(fail)?),
            Field::Address => {
                for item in items(value) {
                    addresses.push(values::interface_address(item).map_err(fail)?);
                }
            }
            Field::ListenPort => listen_port = Some(values::port(value).map_err(fail)?),
            Field::Mtu => {
                mtu = values::integer(value).and_then(values::mtu).map_err(fail)?;
                lines.mtu = Some(entry.line);
            }
            Field::Fwmark => fwmark = values::fwmark(Scalar::Str(value)).map_err(fail)?,
            Field::Dns => {
                for item in items(value) {
                    values::dns_entry(item, &mut dns).map_err(fail)?;
                }
            }
            Field::Table => table = values::table(Scalar::Str(value)).map_err(fail)?,
            Field::PreUp | Field::PostUp | Field::PreDown | Field::PostDown => {
                add_hook(&mut hooks, entry.field, value).map_err(fail)?;
            }
            _ => return Err(fail("not an [Interface] key".into())),
        }
    }
    let private_key = private_key.ok_or_else(|| {
        ctx.invalid(
            raw.header,
            at,
            Field::PrivateKey,
            "missing: meshtun needs the interface's private key in the file \
             (after importing, `private_key_file` can point to a key file instead)",
        )
    })?;
    Ok(InterfaceConfig {
        name,
        private_key,
        addresses,
        listen_port,
        mtu,
        fwmark,
        dns,
        table,
        hooks,
        scheduling: Scheduling::default(),
    })
}

/// Appends a hook command; an empty one is skipped, as `wg-quick` runs nothing for it.
fn add_hook(hooks: &mut Hooks, field: Field, command: &str) -> Result<(), String> {
    if command.is_empty() {
        return Ok(());
    }
    let list = match field {
        Field::PreUp => &mut hooks.pre_up,
        Field::PostUp => &mut hooks.post_up,
        Field::PreDown => &mut hooks.pre_down,
        _ => &mut hooks.post_down,
    };
    list.push(values::hook(command)?);
    Ok(())
}

fn convert_peer(
    index: usize,
    raw: &RawSection<'_>,
    ctx: &Ctx<'_>,
) -> Result<(PeerConfig, PeerLines), ConfigError> {
    let at = Section::Peer(index);
    let mut seen = HashMap::new();
    let mut public_key = None;
    let mut lines = PeerLines::default();
    let mut preshared_key = None;
    let mut allowed_ips = Vec::new();
    let mut endpoint = None;
    let mut persistent_keepalive = None;
    for entry in &raw.entries {
        once(&mut seen, entry, at, ctx)?;
        let fail = |reason: String| ctx.invalid(entry.line, at, entry.field, reason);
        let value = entry.value;
        match entry.field {
            Field::PublicKey => {
                public_key = Some(values::public_key(value).map_err(fail)?);
                lines.public_key = entry.line;
            }
            Field::PresharedKey => {
                preshared_key = Some(values::preshared_key(value).map_err(fail)?)
            }
            Field::AllowedIps => {
                for item in items(value) {
                    let net = values::allowed_ip(item).map_err(fail)?;
                    allowed_ips.push(net);
                    lines.allowed_ips.push((net, entry.line));
                }
            }
            Field::Endpoint => endpoint = Some(value.parse::<Endpoint>().map_err(fail)?),
            Field::PersistentKeepalive => {
                persistent_keepalive = values::keepalive(Scalar::Str(value)).map_err(fail)?;
            }
            _ => return Err(fail("not a [Peer] key".into())),
        }
    }
    let public_key = public_key.ok_or_else(|| {
        ctx.invalid(
            raw.header,
            at,
            Field::PublicKey,
            "missing: every peer needs a public key",
        )
    })?;
    let peer = PeerConfig {
        public_key,
        preshared_key,
        allowed_ips,
        endpoint,
        persistent_keepalive,
    };
    Ok((peer, lines))
}

#[cfg(test)]
mod tests;
