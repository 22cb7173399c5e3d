//! Writing a [`Config`] as meshtun TOML, for `meshtun import`.
//!
//! Values are rendered by the `toml` crate, so strings are always correctly quoted. The text
//! parses back to the same configuration.

use std::path::Path;

use toml::Value;

use super::{Config, PeerConfig, DEFAULT_MTU};
use crate::host::{Hooks, RouteTable};

/// The TOML text for `config`, headed by comments: where it came from, and `notes`.
pub(super) fn to_toml(config: &Config, notes: &[String], source: &Path) -> String {
    let source = source.display().to_string();
    let mut out = format!(
        "# meshtun configuration converted from {} by `meshtun import`.\n\
         # It holds the private key: keep it readable by root only (chmod 600).\n",
        source.escape_debug()
    );
    for note in notes {
        out.push_str(&format!("# {}\n", note.escape_debug()));
    }
    interface(&mut out, config);
    for peer in &config.peers {
        self::peer(&mut out, peer);
    }
    out
}

fn line(out: &mut String, key: &str, value: Value) {
    out.push_str(&format!("{key} = {value}\n"));
}

fn string(text: &str) -> Value {
    Value::String(text.to_owned())
}

fn strings<T: ToString>(items: impl IntoIterator<Item = T>) -> Value {
    Value::Array(
        items
            .into_iter()
            .map(|item| Value::String(item.to_string()))
            .collect(),
    )
}

fn interface(out: &mut String, config: &Config) {
    let interface = &config.interface;
    out.push_str("\n[interface]\n");
    line(out, "name", string(&interface.name));
    line(
        out,
        "private_key",
        string(&interface.private_key.to_base64()),
    );
    if !interface.addresses.is_empty() {
        line(out, "address", strings(&interface.addresses));
    }
    if let Some(port) = interface.listen_port {
        line(out, "listen_port", Value::Integer(port.into()));
    }
    if interface.mtu != DEFAULT_MTU {
        line(out, "mtu", Value::Integer(interface.mtu.into()));
    }
    if let Some(mark) = interface.fwmark {
        line(out, "fwmark", string(&format!("{mark:#x}")));
    }
    if !interface.dns.is_empty() {
        let servers = interface.dns.servers.iter().map(ToString::to_string);
        line(
            out,
            "dns",
            strings(servers.chain(interface.dns.search.iter().cloned())),
        );
    }
    match interface.table {
        RouteTable::Auto => {}
        RouteTable::Off => line(out, "table", string("off")),
        RouteTable::Id(id) => line(out, "table", Value::Integer(id.into())),
    }
    hooks(out, &interface.hooks);
}

fn hooks(out: &mut String, hooks: &Hooks) {
    let all = [
        ("pre_up", &hooks.pre_up),
        ("post_up", &hooks.post_up),
        ("pre_down", &hooks.pre_down),
        ("post_down", &hooks.post_down),
    ];
    for (key, commands) in all {
        match commands.as_slice() {
            [] => {}
            [one] => line(out, key, string(one)),
            many => line(out, key, strings(many)),
        }
    }
}

fn peer(out: &mut String, peer: &PeerConfig) {
    out.push_str("\n[[peer]]\n");
    line(out, "public_key", string(&peer.public_key.to_base64()));
    if let Some(psk) = &peer.preshared_key {
        line(out, "preshared_key", string(&psk.to_base64()));
    }
    if !peer.allowed_ips.is_empty() {
        line(out, "allowed_ips", strings(&peer.allowed_ips));
    }
    if let Some(endpoint) = &peer.endpoint {
        line(out, "endpoint", string(&endpoint.to_string()));
    }
    if let Some(seconds) = peer.persistent_keepalive {
        line(out, "persistent_keepalive", Value::Integer(seconds.into()));
    }
}
