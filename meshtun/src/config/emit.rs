//! Writing configuration sections as meshtun TOML, for `meshtun import` and `meshtun join`.
//!
//! Values are rendered by the `toml` crate, so strings are always correctly quoted. The text
//! parses back to the same configuration. Comments can introduce a section or follow a key
//! ([`TomlText::note`]); they are cleaned of control characters, so no comment can end early
//! and inject a key.

use std::collections::HashMap;
use std::path::Path;

use toml::Value;

use super::gating::default_timeout;
use super::gating::ObserveSettings;
use super::{
    BenchmarkSettings, BenchmarkSourceConfig, Config, ControllerSettings, GatedKeepalive,
    InterfaceConfig, PeerConfig, DEFAULT_CACHE_DIR, DEFAULT_GRACE_SECS, DEFAULT_INTERVAL_SECS,
    DEFAULT_MTU,
};
use crate::host::{Hooks, RouteTable};
use crate::sched::Scheduling;

/// The column trailing comments start at, when the key and value leave room.
const NOTE_COLUMN: usize = 36;

/// The TOML text for `config`, headed by comments: where it came from, and `notes`.
pub(super) fn to_toml(config: &Config, notes: &[String], source: &Path) -> String {
    let source = source.display().to_string();
    let mut out = TomlText::default();
    out.comment(&format!(
        "meshtun configuration converted from {} by `meshtun import`.\n\
         It holds the private key: keep it readable by root only (chmod 600).",
        source.escape_debug()
    ));
    for note in notes {
        out.comment(&note.escape_debug().to_string());
    }
    out.interface(&config.interface);
    for peer in &config.peers {
        out.peer(peer);
    }
    out.finish()
}

/// TOML text under construction, with optional comments by section and key.
#[derive(Debug, Default)]
pub(crate) struct TomlText {
    out: String,
    /// The section being written (`interface`, `peer`, `controller`, `benchmark`).
    section: &'static str,
    /// Comments: `"section"` introduces a section, `"section.key"` follows a key.
    notes: HashMap<String, String>,
}

/// `text` on one line: control characters (newlines among them) become spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

impl TomlText {
    /// Sets the comment written above `[section]` (for `at = "section"`) or after the key
    /// (for `at = "section.key"`).
    pub(crate) fn note(&mut self, at: &str, text: impl Into<String>) {
        self.notes.insert(at.to_owned(), text.into());
    }

    /// Writes `text` as comment lines, one `#` line per line of text.
    pub(crate) fn comment(&mut self, text: &str) {
        for line in text.split('\n') {
            let line = one_line(line);
            let line = line.trim_end();
            if line.is_empty() {
                self.out.push_str("#\n");
            } else {
                self.out.push_str(&format!("# {line}\n"));
            }
        }
    }

    /// Writes a blank line.
    pub(crate) fn blank(&mut self) {
        self.out.push('\n');
    }

    /// The text written so far.
    pub(crate) fn finish(self) -> String {
        self.out
    }

    /// Starts `[name]` (or `[[name]]` if `array`), after a blank line and its comment.
    fn section(&mut self, name: &'static str, array: bool) {
        self.section = name;
        self.blank();
        if let Some(intro) = self.notes.get(name).cloned() {
            self.comment(&intro);
        }
        if array {
            self.out.push_str(&format!("[[{name}]]\n"));
        } else {
            self.out.push_str(&format!("[{name}]\n"));
        }
    }

    /// Writes `key = value`, followed by its comment if it has one.
    fn line(&mut self, key: &str, value: Value) {
        let line = format!("{key} = {value}");
        match self.notes.get(&format!("{}.{key}", self.section)) {
            None => self.out.push_str(&line),
            Some(note) => {
                let pad = NOTE_COLUMN.saturating_sub(line.chars().count()).max(2);
                self.out
                    .push_str(&format!("{line}{:pad$}# {}", "", one_line(note)));
            }
        }
        self.out.push('\n');
    }

    /// Writes the `[interface]` section; keys at their defaults are left out.
    pub(crate) fn interface(&mut self, interface: &InterfaceConfig) {
        self.section("interface", false);
        self.line("name", string(&interface.name));
        self.line("private_key", string(&interface.private_key.to_base64()));
        if !interface.addresses.is_empty() {
            self.line("address", strings(&interface.addresses));
        }
        if let Some(port) = interface.listen_port {
            self.line("listen_port", Value::Integer(port.into()));
        }
        if interface.mtu != DEFAULT_MTU {
            self.line("mtu", Value::Integer(interface.mtu.into()));
        }
        if let Some(mark) = interface.fwmark {
            self.line("fwmark", string(&format!("{mark:#x}")));
        }
        if !interface.dns.is_empty() {
            let servers = interface.dns.servers.iter().map(ToString::to_string);
            let search = interface.dns.search.iter().cloned();
            self.line("dns", strings(servers.chain(search)));
        }
        match interface.table {
            RouteTable::Auto => {}
            RouteTable::Off => self.line("table", string("off")),
            RouteTable::Id(id) => self.line("table", Value::Integer(id.into())),
        }
        if interface.scheduling != Scheduling::default() {
            self.line("scheduling", string(interface.scheduling.as_str()));
        }
        self.hooks(&interface.hooks);
    }

    fn hooks(&mut self, hooks: &Hooks) {
        let all = [
            ("pre_up", &hooks.pre_up),
            ("post_up", &hooks.post_up),
            ("pre_down", &hooks.pre_down),
            ("post_down", &hooks.post_down),
        ];
        for (key, commands) in all {
            match commands.as_slice() {
                [] => {}
                [one] => self.line(key, string(one)),
                many => self.line(key, strings(many)),
            }
        }
    }

    /// Writes one `[[peer]]` section.
    pub(crate) fn peer(&mut self, peer: &PeerConfig) {
        self.section("peer", true);
        self.line("public_key", string(&peer.public_key.to_base64()));
        if let Some(psk) = &peer.preshared_key {
            self.line("preshared_key", string(&psk.to_base64()));
        }
        if !peer.allowed_ips.is_empty() {
            self.line("allowed_ips", strings(&peer.allowed_ips));
        }
        if let Some(endpoint) = &peer.endpoint {
            self.line("endpoint", string(&endpoint.to_string()));
        }
        if let Some(seconds) = peer.persistent_keepalive {
            self.line("persistent_keepalive", Value::Integer(seconds.into()));
        }
    }

    /// Writes the `[controller]` section of the file at `config_path` for the interface
    /// `interface`; keys at their defaults are left out, and files beside the configuration
    /// are written by name.
    pub(crate) fn controller(
        &mut self,
        settings: &ControllerSettings,
        config_path: &Path,
        interface: &str,
    ) {
        self.section("controller", false);
        match settings.urls.as_slice() {
            [one] => self.line("url", string(one)),
            many => {
                self.line("url", strings(many));
            }
        }
        match settings.public_keys.keys() {
            [one] => self.line("public_key", string(&one.to_base64())),
            many => self.line("public_key", strings(many)),
        }
        self.line("node_id", string(&settings.node_id));
        self.line(
            "identity_key_file",
            string(&file_name_or_path(&settings.identity_key_file, config_path)),
        );
        if settings.on_controller_loss != super::LossPolicy::default() {
            self.line(
                "on_controller_loss",
                string(settings.on_controller_loss.as_str()),
            );
        }
        if settings.grace.as_secs() != DEFAULT_GRACE_SECS {
            self.line("grace", seconds(settings.grace.as_secs()));
        }
        let default_cache = Path::new(DEFAULT_CACHE_DIR).join(format!("{interface}.bundle"));
        if settings.cache_file != default_cache {
            self.line(
                "cache_file",
                string(&file_name_or_path(&settings.cache_file, config_path)),
            );
        }
        if let Some(ca) = &settings.ca_file {
            self.line("ca_file", string(&file_name_or_path(ca, config_path)));
        }
        if let Some(prefixes) = &settings.allowed_prefixes {
            self.line("allowed_prefixes", strings(prefixes));
        }
        if let Some(servers) = &settings.stun {
            self.line("stun", strings(servers));
        }
        match settings.keepalive {
            GatedKeepalive::Auto => {}
            GatedKeepalive::Off => self.line("keepalive", Value::Integer(0)),
            GatedKeepalive::Every(s) => self.line("keepalive", Value::Integer(s.into())),
        }
        if let Some(key) = &settings.membership_key {
            self.line("membership_key", string(&key.to_base64()));
        }
        self.observe(&settings.observe);
    }

    /// The observation keys of `[controller]` that are not at their defaults.
    fn observe(&mut self, observe: &ObserveSettings) {
        let defaults = ObserveSettings::default();
        if observe.enabled != defaults.enabled {
            self.line("observe", Value::Boolean(observe.enabled));
        }
        if observe.interval != defaults.interval {
            let text = humantime::format_duration(observe.interval).to_string();
            self.line("observe_interval", string(&text));
        }
        if observe.peers != defaults.peers {
            let peers = i64::try_from(observe.peers).unwrap_or(i64::MAX);
            self.line("observe_peers", Value::Integer(peers));
        }
    }

    /// Writes the `[benchmark]` section; keys at their defaults are left out.
    pub(crate) fn benchmark(&mut self, settings: &BenchmarkSettings) {
        self.section("benchmark", false);
        if settings.interval.as_secs() != DEFAULT_INTERVAL_SECS {
            self.line("interval", seconds(settings.interval.as_secs()));
        }
        if settings.timeout != default_timeout(settings.interval) {
            self.line("timeout", seconds(settings.timeout.as_secs()));
        }
        match &settings.source {
            BenchmarkSourceConfig::Command(argv) => self.line("command", strings(argv)),
            BenchmarkSourceConfig::Simulated { mean, stddev } => {
                self.line("simulated", simulated(*mean, *stddev))
            }
        }
        if let Some(version) = &settings.suite_version {
            self.line("suite_version", string(version));
        }
    }
}

/// `simulated = { mean = …, stddev = … }` as an inline table.
pub(crate) fn simulated(mean: f64, stddev: f64) -> Value {
    let mut table = toml::Table::new();
    table.insert("mean".into(), Value::Float(mean));
    table.insert("stddev".into(), Value::Float(stddev));
    Value::Table(table)
}

/// The name of `file` if it lies in the configuration's directory (where relative names
/// resolve), else the whole path.
fn file_name_or_path(file: &Path, config_path: &Path) -> String {
    let beside = file
        .parent()
        .is_some_and(|dir| Some(dir) == config_path.parent());
    match file.file_name() {
        Some(name) if beside => name.to_string_lossy().into_owned(),
        _ => file.to_string_lossy().into_owned(),
    }
}

fn seconds(secs: u64) -> Value {
    Value::Integer(i64::try_from(secs).unwrap_or(i64::MAX))
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use meshtun_proto::{IdentityKey, PrivateKey};

    use super::*;
    use crate::config::LossPolicy;
    use crate::host::Dns;

    fn interface() -> InterfaceConfig {
        InterfaceConfig {
            name: "wg0".into(),
            private_key: PrivateKey::generate(),
            addresses: vec!["100.64.0.4/24".parse().unwrap()],
            listen_port: Some(51820),
            mtu: DEFAULT_MTU,
            fwmark: None,
            dns: Dns::default(),
            table: RouteTable::Auto,
            hooks: Hooks::default(),
            scheduling: Scheduling::default(),
        }
    }

    fn controller(dir: &Path) -> ControllerSettings {
        ControllerSettings {
            urls: vec!["https://192.0.2.10:8700".into()],
            public_keys: meshtun_proto::KeySet::one(IdentityKey::generate().public()),
            node_id: "node-a".into(),
            identity_key_file: dir.join("wg0.identity"),
            on_controller_loss: LossPolicy::KeepLast,
            grace: Duration::from_secs(90),
            cache_file: dir.join("cache/wg0.bundle"),
            ca_file: None,
            allowed_prefixes: Some(vec!["100.64.0.0/24".parse().unwrap()]),
            stun: None,
            keepalive: Default::default(),
            membership_key: None,
            observe: ObserveSettings {
                enabled: true,
                interval: Duration::from_secs(90),
                peers: 8,
            },
        }
    }

    #[test]
    fn gated_sections_parse_back_to_the_same_settings() {
        let path = Path::new("/etc/meshtun/wg0.toml");
        let interface = interface();
        let controller = controller(Path::new("/etc/meshtun"));
        let benchmarks = [
            BenchmarkSettings {
                interval: Duration::from_secs(DEFAULT_INTERVAL_SECS),
                timeout: default_timeout(Duration::from_secs(DEFAULT_INTERVAL_SECS)),
                source: BenchmarkSourceConfig::Command(vec![
                    "/usr/local/bin/harness".into(),
                    "--suite=a b".into(),
                    "it's \"quoted\"".into(),
                ]),
                suite_version: None,
            },
            BenchmarkSettings {
                interval: Duration::from_secs(30),
                timeout: Duration::from_secs(5),
                source: BenchmarkSourceConfig::Simulated {
                    mean: 0.9,
                    stddev: 0.0,
                },
                suite_version: Some("sim-2".into()),
            },
        ];
        for benchmark in benchmarks {
            let mut out = TomlText::default();
            out.interface(&interface);
            out.controller(&controller, path, "wg0");
            out.benchmark(&benchmark);
            let text = out.finish();
            let parsed = Config::parse(&text, path).unwrap();
            assert_eq!(parsed.interface, interface);
            assert_eq!(parsed.controller.as_ref(), Some(&controller), "{text}");
            assert_eq!(parsed.benchmark.as_ref(), Some(&benchmark), "{text}");
            assert!(
                text.contains("identity_key_file = \"wg0.identity\"\n"),
                "{text}"
            );
            assert!(text.contains("cache_file = \"/etc/meshtun/cache/wg0.bundle\"\n"));
        }
        // Several instances and keys are written as lists, and read back in order.
        let mut several = controller.clone();
        several.urls.push("https://192.0.2.11:8700".into());
        several.public_keys = meshtun_proto::KeySet::new(vec![
            *controller.public_keys.primary(),
            IdentityKey::generate().public(),
        ])
        .unwrap();
        let mut out = TomlText::default();
        out.interface(&interface);
        out.controller(&several, path, "wg0");
        let text = out.finish();
        let parsed = Config::parse(&text, path).unwrap();
        assert_eq!(parsed.controller.as_ref(), Some(&several), "{text}");
    }

    #[test]
    fn defaults_are_left_out() {
        let path = Path::new("/etc/meshtun/wg0.toml");
        let controller = ControllerSettings {
            on_controller_loss: LossPolicy::FailClosed,
            grace: Duration::from_secs(DEFAULT_GRACE_SECS),
            cache_file: Path::new(DEFAULT_CACHE_DIR).join("wg0.bundle"),
            ca_file: None,
            identity_key_file: "/var/lib/meshtun/wg0.identity".into(),
            observe: ObserveSettings::default(),
            ..controller(Path::new("/etc/meshtun"))
        };
        let mut out = TomlText::default();
        out.controller(&controller, path, "wg0");
        let text = out.finish();
        for absent in ["on_controller_loss", "grace", "cache_file", "observe"] {
            assert!(!text.contains(absent), "{absent} in {text}");
        }
        assert!(text.contains("identity_key_file = \"/var/lib/meshtun/wg0.identity\"\n"));
    }

    #[test]
    fn comments_introduce_sections_and_follow_keys_on_one_line() {
        let mut out = TomlText::default();
        out.comment("first line\n\nthird line");
        out.note("interface", "the interface\nin two lines");
        out.note("interface.name", "a note\nwith = \"an injected key\"");
        out.interface(&interface());
        let text = out.finish();
        assert!(text.starts_with(
            "# first line\n#\n# third line\n\n# the interface\n# in two lines\n[interface]\n"
        ));
        let name = text.lines().find(|l| l.starts_with("name = ")).unwrap();
        assert_eq!(name.find('#'), Some(NOTE_COLUMN), "{text}");
        assert!(
            name.ends_with("# a note with = \"an injected key\""),
            "{text}"
        );
        assert!(!text.contains("\nwith"), "{text}");
        let parsed = Config::parse(&text, Path::new("wg0.toml")).unwrap();
        assert_eq!(parsed.interface.name, "wg0");
    }
}
