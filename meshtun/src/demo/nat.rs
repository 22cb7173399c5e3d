//! `meshtun demo --nat`: what the NAT story needs besides the base demo. Every node sits
//! behind its own NAT router ([`super::netns`]): node-a and node-b behind cone NATs
//! (`masquerade`), node-c behind a symmetric one (`masquerade random,fully-random`). No
//! node is enrolled with an endpoint: each learns its public (reflexive) address from the
//! controller's STUN server (`[stun]`) and reports it, and the bundles carry candidates.
//! The controller also hands out credentials for a TURN relay (`[relay]`), coturn, which
//! the demo starts in the relay's namespace.
//!
//! What each node sees is read with `meshtun show --json` in its namespace: its reflexive
//! address and NAT kind, and per peer the path (direct, relayed, trying, none) and the
//! endpoint in use. [`NatStory`] records what was seen, for the summary.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use meshtun_testbed::coturn;
use meshtun_testbed::process::{log_tail, Process};
use meshtun_testbed::Netns;
use rand_core::{OsRng, RngCore as _};

use super::controller::Extra;
use super::cutoff::CutOff;
use super::plan::{CONTROLLER_ADDR, RELAY_ADDR, STUN_PORT};
use super::DemoError;

/// The relay's shared secret file, beside the controller's configuration.
const SECRET_FILE: &str = "relay.secret";

/// How long coturn may take to open its listener.
const RELAY_START: Duration = Duration::from_secs(10);

/// How long past the planned time node-c's score drop waits for node-c to be reached
/// (on a slow machine the relay path can open later): then it drops regardless, and the
/// summary says what was not seen.
pub const C_REACH_GRACE: Duration = Duration::from_secs(15);

/// How long one `meshtun show` may take.
const SHOW_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks that the tools the NAT story runs are installed: `nft` for the routers and
/// coturn's `turnserver` for the relay.
pub fn check_tools() -> Result<(), DemoError> {
    check_tools_in(&std::env::var_os("PATH").unwrap_or_default())
}

/// [`check_tools`] on the search path `path`.
fn check_tools_in(path: &std::ffi::OsStr) -> Result<(), DemoError> {
    for (program, tool) in [
        ("nft", "nft (Debian package nftables)"),
        (coturn::PROGRAM, "turnserver (Debian package coturn)"),
    ] {
        if find_on_path(path, program).is_none() {
            return Err(DemoError::MissingTool {
                tool,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{program} is not on PATH"),
                ),
            });
        }
    }
    Ok(())
}

/// The executable `program` in a directory of the search path `path`, if any.
fn find_on_path(path: &std::ffi::OsStr, program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::split_paths(path)
        .map(|dir| dir.join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A fresh relay secret: 32 random bytes, hex.
pub fn relay_secret() -> zeroize::Zeroizing<String> {
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(bytes.as_mut());
    zeroize::Zeroizing::new(hex::encode(bytes.as_ref()))
}

/// The controller's `[stun]` and `[relay]` tables, and the secret file they name.
pub fn controller_extra(secret: &zeroize::Zeroizing<String>) -> Extra {
    let relay = coturn::addr(IpAddr::V4(RELAY_ADDR));
    Extra {
        tables: format!(
            "\n[stun]\nlisten = \"{CONTROLLER_ADDR}:{STUN_PORT}\"\n\n\
             [relay]\nurls = [\"turn:{relay}\"]\nsecret_file = \"{SECRET_FILE}\"\n"
        ),
        private_files: vec![(SECRET_FILE, secret.clone())],
    }
}

/// Starts coturn in `ns` on [`RELAY_ADDR`] with `secret`, its files in `dir` (created);
/// waits until its UDP listener is open.
pub fn start_relay(ns: &Netns, dir: &Path, secret: &str) -> Result<Process, DemoError> {
    std::fs::create_dir(dir)
        .map_err(|e| DemoError::io(format!("cannot create {}", dir.display()), e))?;
    let ip = IpAddr::V4(RELAY_ADDR);
    let config = coturn::write_config(dir, ip, secret)?;
    let log = dir.join(coturn::LOG_FILE);
    let cmd = coturn::command(ns, &config);
    let mut process = Process::start("coturn", cmd, &log, |cmd| ns.spawn(cmd))?;
    let addr = coturn::addr(ip);
    let deadline = std::time::Instant::now() + RELAY_START;
    loop {
        if coturn::is_listening(&process.log(), addr) {
            return Ok(process);
        }
        let exited = process.exited();
        if exited.is_some() || std::time::Instant::now() >= deadline {
            let why = exited.map_or_else(
                || format!("did not open {addr} within {} s", RELAY_START.as_secs()),
                |status| format!("exited ({status})"),
            );
            process.kill();
            return Err(DemoError::Controller(format!(
                "the relay (coturn) {why}; the end of {}:\n{}",
                log.display(),
                log_tail(&log, 8)
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `meshtun show IFNAME --json --no-probe`, run with `bin` in namespace `ns`; the first
/// interface's view.
pub fn show(bin: &Path, ns: &str, ifname: &str) -> Result<serde_json::Value, DemoError> {
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(bin)
        .args(["show", ifname, "--json", "--no-probe"]);
    let out = meshtun_testbed::run::run_ok(&mut cmd, SHOW_TIMEOUT)?;
    let mut views: serde_json::Value = serde_json::from_str(&out).map_err(|e| {
        DemoError::Controller(format!(
            "`meshtun show --json` in {ns} printed no JSON: {e}"
        ))
    })?;
    Ok(views
        .get_mut(0)
        .map(serde_json::Value::take)
        .unwrap_or_default())
}

/// What a node says of its own address: the first reflexive address and the NAT's kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reflexive {
    /// The address the STUN server saw.
    pub address: String,
    /// The server that saw it.
    pub server: String,
    /// The NAT's kind as the node judges it.
    pub nat: String,
}

impl Reflexive {
    /// From `meshtun show --json`'s interface view; `None` before the first STUN answer.
    pub fn from_view(view: &serde_json::Value) -> Option<Self> {
        let gate = view.get("gate")?;
        let first = gate.get("reflexive")?.as_array()?.first()?;
        Some(Self {
            address: first.get("address")?.as_str()?.to_owned(),
            server: first.get("server")?.as_str()?.to_owned(),
            nat: gate
                .get("nat")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("unknown")
                .to_owned(),
        })
    }
}

/// What a node says of its path to one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPath {
    /// The peer's node id.
    pub peer: String,
    /// `direct`, `relayed`, `trying` or `none` (as `meshtun show` says).
    pub path: String,
    /// The endpoint in use, if any.
    pub endpoint: Option<SocketAddr>,
}

impl PeerPath {
    /// Every gated peer of `meshtun show --json`'s interface view.
    pub fn all_from_view(view: &serde_json::Value) -> Vec<Self> {
        let Some(peers) = view.get("peers").and_then(serde_json::Value::as_array) else {
            return Vec::new();
        };
        peers
            .iter()
            .filter_map(|p| {
                let peer = p.get("gate")?.get("node_id")?.as_str()?.to_owned();
                let path = p
                    .get("path")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("none")
                    .to_owned();
                let endpoint = p
                    .get("endpoint")
                    .and_then(serde_json::Value::as_str)
                    .and_then(|e| e.parse().ok());
                Some(Self {
                    peer,
                    path,
                    endpoint,
                })
            })
            .collect()
    }

    /// The path in words: `direct to 192.0.2.2:51820`, `relayed via 192.0.2.20:3478`,
    /// `trying (no endpoint yet)`.
    pub fn describe(&self) -> String {
        match (self.path.as_str(), self.endpoint) {
            ("relayed", Some(at)) => format!("relayed via {at}"),
            ("direct", Some(at)) => format!("direct to {at}"),
            (path, Some(at)) => format!("{path} (endpoint {at})"),
            (path, None) => format!("{path} (no endpoint yet)"),
        }
    }
}

/// What the NAT story has shown so far (times since the demo started).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NatStory {
    /// Each node's reflexive address, as first seen.
    pub reflexive: BTreeMap<String, Reflexive>,
    /// node-a and node-b on a direct path, each at the other's router: when, and what each
    /// showed (a→b, b→a).
    pub ab_direct: Option<(Duration, PeerPath, PeerPath)>,
    /// What node-a and node-b (and node-c) showed of their paths to node-c, last seen
    /// before its denial: `(viewer, path)`.
    pub c_paths: Vec<(String, PeerPath)>,
    /// The epoch that denied node-c after it had been allowed: its number and when it was
    /// decided (Unix ms).
    pub c_denied: Option<(u64, u64)>,
    /// node-c's cut-off, counted from its score's drop.
    pub cut: CutOff,
}

impl NatStory {
    /// Whether every path to and from node-c has been seen working (`relayed` or
    /// `direct`): then its denial cuts something off.
    pub fn c_reached(&self) -> bool {
        self.c_paths.len() == 4
            && self
                .c_paths
                .iter()
                .all(|(_, p)| p.path == "relayed" || p.path == "direct")
    }

    /// The steps not seen.
    pub fn missing(&self) -> Vec<&'static str> {
        [
            (
                self.reflexive.len() == 3,
                "every node's reflexive address learnt through STUN",
            ),
            (
                self.ab_direct.is_some(),
                "node-a and node-b on a direct path, each at the other's router",
            ),
            (
                !self.c_paths.is_empty(),
                "node-c's path as the nodes saw it",
            ),
            (
                self.c_denied.is_some(),
                "node-c denied after it had been allowed",
            ),
            (
                self.cut.in_time(),
                "node-a and node-b dropping node-c within 1 s of the decision",
            ),
            (
                self.cut.silent.is_some(),
                "node-c cut off from everyone after its denial",
            ),
        ]
        .into_iter()
        .filter(|(seen, _)| !seen)
        .map(|(_, what)| what)
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> serde_json::Value {
        serde_json::json!({
            "name": "mt0",
            "gate": {
                "reflexive": [{"server": "192.0.2.10:3478", "address": "192.0.2.1:51820", "age_ms": 40}],
                "nat": "endpoint-independent"
            },
            "peers": [
                {"public_key": "x", "endpoint": "192.0.2.2:51820", "path": "direct",
                 "gate": {"node_id": "node-b"}},
                {"public_key": "y", "endpoint": null, "path": "trying",
                 "gate": {"node_id": "node-c"}},
                {"public_key": "z", "endpoint": "192.0.2.9:51820", "path": "direct"}
            ]
        })
    }

    #[test]
    fn the_reflexive_address_and_paths_are_read_from_show() {
        let v = view();
        let r = Reflexive::from_view(&v).unwrap();
        assert_eq!(r.address, "192.0.2.1:51820");
        assert_eq!(r.server, "192.0.2.10:3478");
        assert_eq!(r.nat, "endpoint-independent");
        assert_eq!(
            Reflexive::from_view(&serde_json::json!({"gate": {"reflexive": []}})),
            None
        );
        let paths = PeerPath::all_from_view(&v);
        assert_eq!(paths.len(), 2, "only gated peers");
        assert_eq!(paths[0].describe(), "direct to 192.0.2.2:51820");
        assert_eq!(paths[1].describe(), "trying (no endpoint yet)");
        let relayed = PeerPath {
            peer: "node-c".into(),
            path: "relayed".into(),
            endpoint: Some("192.0.2.20:3478".parse().unwrap()),
        };
        assert_eq!(relayed.describe(), "relayed via 192.0.2.20:3478");
        assert!(PeerPath::all_from_view(&serde_json::Value::Null).is_empty());
    }

    #[test]
    fn node_c_counts_as_reached_only_when_all_four_paths_work() {
        let path = |from: &str, to: &str, kind: &str| {
            (
                from.to_owned(),
                PeerPath {
                    peer: to.into(),
                    path: kind.into(),
                    endpoint: Some("192.0.2.20:3478".parse().unwrap()),
                },
            )
        };
        let mut story = NatStory::default();
        assert!(!story.c_reached(), "nothing seen");
        story.c_paths = vec![
            path("node-a", "node-c", "relayed"),
            path("node-b", "node-c", "relayed"),
            path("node-c", "node-a", "relayed"),
            path("node-c", "node-b", "trying"),
        ];
        assert!(!story.c_reached(), "one path still trying");
        story.c_paths[3].1.path = "direct".into();
        assert!(story.c_reached());
        story.c_paths.pop();
        assert!(!story.c_reached(), "a path not seen");
    }

    #[test]
    fn every_step_is_missing_at_first() {
        assert_eq!(NatStory::default().missing().len(), 6);
    }

    #[test]
    fn a_missing_turnserver_or_nft_is_named() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().as_os_str();
        let err = check_tools_in(path).unwrap_err();
        assert!(
            matches!(err, DemoError::MissingTool { tool, .. } if tool.starts_with("nft")),
            "{err}"
        );
        let make = |name: &str, mode: u32| {
            let file = dir.path().join(name);
            std::fs::write(&file, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        make("nft", 0o755);
        // Present but not executable does not count.
        make("turnserver", 0o644);
        let err = check_tools_in(path).unwrap_err();
        assert!(
            err.to_string()
                .contains("turnserver (Debian package coturn)"),
            "{err}"
        );
        make("turnserver", 0o755);
        assert!(check_tools_in(path).is_ok());
    }

    #[test]
    fn the_controller_gets_stun_and_the_relay_with_a_private_secret() {
        let secret = relay_secret();
        assert_eq!(secret.len(), 64);
        assert_ne!(*secret, *relay_secret());
        let extra = controller_extra(&secret);
        let table: toml::Table = extra.tables.parse().unwrap();
        assert_eq!(table["stun"]["listen"].as_str(), Some("192.0.2.10:3478"));
        assert_eq!(
            table["relay"]["urls"][0].as_str(),
            Some("turn:192.0.2.20:3478")
        );
        assert_eq!(extra.private_files[0].0, SECRET_FILE);
        assert!(!format!("{extra:?}").contains(secret.as_str()));
    }
}
