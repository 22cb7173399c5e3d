//! The configuration file `meshtun join` writes: the sections, with short comments for the
//! operator, checked by parsing the text back.

use std::path::Path;

use crate::config::{
    BenchmarkSettings, BenchmarkSourceConfig, Config, ControllerSettings, InterfaceConfig,
    TomlText, DEFAULT_GRACE_SECS,
};

/// Everything the written file holds.
#[derive(Debug, Clone)]
pub(super) struct Draft {
    /// `[interface]`.
    pub(super) interface: InterfaceConfig,
    /// `[controller]`.
    pub(super) controller: ControllerSettings,
    /// `[benchmark]`; without it the section is written commented out.
    pub(super) benchmark: Option<BenchmarkSettings>,
    /// Where the controller tells other nodes to reach this one, for a comment.
    pub(super) endpoint: Option<String>,
}

impl Draft {
    /// The file's text, for the file at `path`.
    pub(super) fn render(&self, path: &Path) -> String {
        let mut out = TomlText::default();
        self.header(&mut out, path);
        self.notes(&mut out);
        out.interface(&self.interface);
        out.comment(
            "Peers come from the controller's signed bundles; add [[peer]] sections only\n\
             for peers outside the mesh.",
        );
        out.controller(&self.controller, path, &self.interface.name);
        let loss = "on_controller_loss = \"fail_closed\"";
        let grace = format!("grace = {DEFAULT_GRACE_SECS}");
        out.comment(&format!(
            "{loss:<34}  # or \"keep_last\": keep the last peers while the controller is \
             unreachable\n\
             {grace:<34}  # seconds past the last bundle's end before that applies"
        ));
        match &self.benchmark {
            Some(benchmark) => out.benchmark(benchmark),
            None => no_benchmark(&mut out),
        }
        out.finish()
    }

    /// The file's text, parsed back and compared with this draft: `Err` with the reason if
    /// it does not load, or loads as something else.
    pub(super) fn render_checked(&self, path: &Path) -> Result<String, String> {
        let text = self.render(path);
        let parsed = Config::parse(&text, path).map_err(|e| e.to_string())?;
        let same = parsed.interface == self.interface
            && parsed.peers.is_empty()
            && parsed.controller.as_ref() == Some(&self.controller)
            && parsed.benchmark == self.benchmark;
        if same {
            Ok(text)
        } else {
            Err(
                "the written file would not read back as the settings meant (a path that \
                 is not UTF-8?)"
                    .into(),
            )
        }
    }

    fn header(&self, out: &mut TomlText, path: &Path) {
        let path = path.display();
        out.comment(&format!(
            "meshtun configuration for node {node}, written by `meshtun join` when the node\n\
             enrolled at the controller {url}.\n\
             It holds the WireGuard private key: keep it readable by root only (chmod 600).\n\
             Check it with `meshtun check {path}`;\n\
             start the node with `meshtun up {path}`.",
            node = self.controller.node_id,
            url = self.controller.urls[0],
        ));
    }

    fn notes(&self, out: &mut TomlText) {
        let public = self.interface.private_key.public_key();
        out.note("interface.private_key", format!("public key {public}"));
        out.note(
            "interface.address",
            "the overlay addresses the controller recorded for this node",
        );
        let port = match &self.endpoint {
            Some(endpoint) => format!(
                "UDP port; other nodes are told to reach this node at {}",
                endpoint.escape_debug()
            ),
            None => "UDP port; no endpoint is enrolled, so other nodes wait for this node to \
                     reach them"
                .into(),
        };
        out.note("interface.listen_port", port);
        out.note(
            "controller",
            "Membership gating: every epoch the controller decides from benchmark scores which\n\
             nodes may be in the mesh, and sends this node its peers and their preshared keys.",
        );
        out.note("controller.url", "from the ticket");
        out.note(
            "controller.public_key",
            "the controller's key, pinned: bundles must be signed with it",
        );
        out.note("controller.node_id", "this node's id at the controller");
        out.note(
            "controller.allowed_prefixes",
            "the overlay's prefixes, pinned at join: routes from the controller outside them\n\
             are refused",
        );
        out.note(
            "controller.identity_key_file",
            "this node's Ed25519 key (chmod 600); it signs the node's requests",
        );
        out.note(
            "benchmark",
            "How this node measures the scores it submits every interval (default 10 s);\n\
             without scores the controller denies it membership.",
        );
        let source = match self.benchmark.as_ref().map(|b| &b.source) {
            Some(BenchmarkSourceConfig::Simulated { .. }) => {
                "scores drawn from N(mean, stddev): for tests, not for production"
            }
            _ => "run without a shell; it prints the scores as JSON",
        };
        out.note("benchmark.command", source);
        out.note("benchmark.simulated", source);
    }
}

/// The `[benchmark]` section commented out, with why and how to set it.
fn no_benchmark(out: &mut TomlText) {
    out.blank();
    out.comment(
        "No [benchmark] section yet: this node submits no scores, so the controller denies it\n\
         membership until it does. Uncomment [benchmark] and one of the two sources, then\n\
         start meshtun (or send a running one SIGHUP to reread this file):\n\
         [benchmark]\n\
         command = [\"/usr/local/bin/harness\", \"--json\"]  # prints the scores as JSON; no shell\n\
         simulated = { mean = 0.9, stddev = 0.03 }       # or simulated scores, for tests",
    );
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use meshtun_proto::{IdentityKey, PrivateKey};

    use super::*;
    use crate::config::{default_timeout, LossPolicy, DEFAULT_MTU};
    use crate::host::{Dns, Hooks, RouteTable};

    fn draft(dir: &Path, benchmark: Option<BenchmarkSourceConfig>) -> Draft {
        let interval = Duration::from_secs(10);
        Draft {
            interface: InterfaceConfig {
                name: "wg0".into(),
                private_key: PrivateKey::generate(),
                addresses: vec![
                    "100.64.0.4/24".parse().unwrap(),
                    "fd00::4/64".parse().unwrap(),
                ],
                listen_port: Some(51820),
                mtu: DEFAULT_MTU,
                fwmark: None,
                dns: Dns::default(),
                table: RouteTable::Auto,
                hooks: Hooks::default(),
                scheduling: crate::sched::Scheduling::default(),
            },
            controller: ControllerSettings {
                urls: vec!["http://192.0.2.10:8700".into()],
                public_keys: meshtun_proto::KeySet::one(IdentityKey::generate().public()),
                node_id: "node-d".into(),
                identity_key_file: dir.join("wg0.identity"),
                on_controller_loss: LossPolicy::FailClosed,
                grace: Duration::from_secs(DEFAULT_GRACE_SECS),
                cache_file: Path::new(crate::config::DEFAULT_CACHE_DIR).join("wg0.bundle"),
                ca_file: None,
                allowed_prefixes: Some(vec![
                    "100.64.0.0/24".parse().unwrap(),
                    "fd00::/64".parse().unwrap(),
                ]),
                stun: None,
                keepalive: Default::default(),
                membership_key: None,
                observe: Default::default(),
            },
            benchmark: benchmark.map(|source| BenchmarkSettings {
                interval,
                timeout: default_timeout(interval),
                source,
                suite_version: None,
            }),
            endpoint: Some("192.0.2.4:51820".into()),
        }
    }

    #[test]
    fn a_command_benchmark_is_written_and_reads_back() {
        let dir = Path::new("/etc/meshtun");
        let path = dir.join("wg0.toml");
        let command = vec!["/usr/local/bin/harness".into(), "--suite=a b".into()];
        let draft = draft(dir, Some(BenchmarkSourceConfig::Command(command.clone())));
        let text = draft.render_checked(&path).unwrap();
        let config = Config::parse(&text, &path).unwrap();
        assert_eq!(config.interface, draft.interface);
        let controller = config.controller.unwrap();
        assert_eq!(controller.node_id, "node-d");
        assert_eq!(controller.identity_key_file, dir.join("wg0.identity"));
        assert_eq!(
            config.benchmark.unwrap().source,
            BenchmarkSourceConfig::Command(command)
        );
        assert!(
            text.contains("identity_key_file = \"wg0.identity\""),
            "{text}"
        );
        assert!(
            text.contains("# run without a shell; it prints the scores as JSON"),
            "{text}"
        );
    }

    #[test]
    fn the_file_explains_itself_to_the_operator() {
        let dir = Path::new("/etc/meshtun");
        let path = dir.join("wg0.toml");
        let sim = BenchmarkSourceConfig::Simulated {
            mean: 0.9,
            stddev: 0.02,
        };
        let draft = draft(dir, Some(sim.clone()));
        let text = draft.render_checked(&path).unwrap();
        let public = draft.interface.private_key.public_key().to_base64();
        for expected in [
            "# meshtun configuration for node node-d, written by `meshtun join`",
            "enrolled at the controller http://192.0.2.10:8700.",
            "keep it readable by root only (chmod 600)",
            "`meshtun up /etc/meshtun/wg0.toml`",
            &format!("# public key {public}"),
            "# UDP port; other nodes are told to reach this node at 192.0.2.4:51820",
            "\n# Membership gating:",
            "[controller]\nurl = ",
            "# on_controller_loss = \"fail_closed\"",
            "simulated = { mean = 0.9, stddev = 0.02 }",
            "# scores drawn from N(mean, stddev)",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert_eq!(
            Config::parse(&text, &path)
                .unwrap()
                .benchmark
                .unwrap()
                .source,
            sim
        );
    }

    #[test]
    fn without_a_benchmark_the_section_is_commented_out_and_the_file_still_loads() {
        let dir = Path::new("/etc/meshtun");
        let path = dir.join("wg0.toml");
        let mut draft = draft(dir, None);
        draft.endpoint = None;
        let text = draft.render_checked(&path).unwrap();
        assert!(text.contains("# No [benchmark] section yet"), "{text}");
        assert!(text.contains("\n# [benchmark]\n# command = "), "{text}");
        assert!(text.contains("no endpoint is enrolled"), "{text}");
        let config = Config::parse(&text, &path).unwrap();
        assert!(config.controller.is_some());
        assert_eq!(config.benchmark, None);
        // Uncommenting the section and one source gives a valid file.
        let enabled = text
            .replace("# [benchmark]\n", "[benchmark]\n")
            .replace("# simulated = {", "simulated = {");
        let config = Config::parse(&enabled, &path).unwrap();
        assert!(matches!(
            config.benchmark.unwrap().source,
            BenchmarkSourceConfig::Simulated { .. }
        ));
    }

    #[test]
    fn an_endpoint_cannot_break_out_of_its_comment() {
        let dir = Path::new("/etc/meshtun");
        let mut draft = draft(dir, None);
        draft.endpoint = Some("192.0.2.4:51820\n[interface]\nmtu = 1280".into());
        let text = draft.render_checked(&dir.join("wg0.toml")).unwrap();
        assert!(!text.contains("\nmtu = 1280"), "{text}");
    }
}
