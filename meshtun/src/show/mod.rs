//! `meshtun show`: the state of running interfaces, read from their UAPI sockets and printed
//! as `wg show` does ([`render_text`]), or as JSON ([`InterfaceView`]). Secrets are never
//! printed.
//!
//! For a gated interface it adds the membership, the epoch, the controller's last contact
//! and each gated peer's node and key age; and, unless told not to, it probes every peer
//! over the tunnel ([`crate::probe`]) and reports whether it answered.
//!
//! On a terminal the states are in colour ([`render_styled`], [`use_colour`]); `--watch`
//! draws the report again every second ([`Watch`]).

mod json;
mod paint;
mod text;
mod watch;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

pub use json::{GateView, InterfaceView, PeerGateView, PeerView, ReflexiveView};
pub use text::{render_styled, render_text};
pub use watch::{Watch, CLEAR, HEADER, PERIOD};

use meshtun_proto::PublicKey;

use crate::probe::{self, Reachability};
use crate::uapi::{self, UapiError};
use crate::wgcfg::DeviceStatus;

/// Why `show` could not read an interface.
#[derive(Debug, thiserror::Error)]
pub enum ShowError {
    /// The socket directory could not be listed.
    #[error("cannot list {dir}")]
    List {
        /// The directory.
        dir: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No daemon serves this interface.
    #[error("no meshtun or WireGuard daemon serves interface {0} (is it up?)")]
    NotRunning(String),
    /// Talking to the daemon failed.
    #[error("interface {name}")]
    Uapi {
        /// The interface.
        name: String,
        /// Why.
        #[source]
        source: UapiError,
    },
}

/// When `show` paints its text (`--color`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorWhen {
    /// When stdout is a terminal, `NO_COLOR` is unset or empty and `TERM` is not `dumb`
    /// (`CLICOLOR_FORCE` forces it).
    #[default]
    Auto,
    /// Always, even into a pipe or a file.
    Always,
    /// Never.
    Never,
}

/// Whether `show` paints what it writes to `stdout`, for `--color when`.
pub fn use_colour(when: ColorWhen, stdout: &std::io::Stdout) -> bool {
    match when {
        ColorWhen::Always => true,
        ColorWhen::Never => false,
        ColorWhen::Auto => {
            use std::io::IsTerminal as _;
            auto_colour(stdout.is_terminal(), |name| std::env::var_os(name))
        }
    }
}

/// The `auto` rule, with the environment given: never with `NO_COLOR` set and not empty;
/// always with `CLICOLOR_FORCE` set, not empty and not `0`; otherwise on a terminal whose
/// `TERM` is not `dumb`. (A CI environment changes nothing: its logs are not terminals.)
fn auto_colour(terminal: bool, env: impl Fn(&str) -> Option<std::ffi::OsString>) -> bool {
    let set = |name: &str| env(name).filter(|v| !v.is_empty());
    if set("NO_COLOR").is_some() {
        return false;
    }
    if set("CLICOLOR_FORCE").is_some_and(|v| v != "0") {
        return true;
    }
    terminal && env("TERM").is_none_or(|t| t != "dumb")
}

#[cfg(test)]
mod colour_tests {
    use super::auto_colour;
    use std::ffi::OsString;

    fn decide(terminal: bool, vars: &[(&str, &str)]) -> bool {
        auto_colour(terminal, |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        })
    }

    #[test]
    fn auto_paints_a_terminal_unless_told_not_to_whatever_ci_says() {
        assert!(decide(true, &[("TERM", "xterm-256color")]));
        assert!(decide(true, &[]));
        assert!(!decide(false, &[("TERM", "xterm")]));
        assert!(!decide(false, &[("CI", "true")]), "CI is not a terminal");
        assert!(!decide(true, &[("TERM", "dumb"), ("CI", "true")]));
        assert!(!decide(true, &[("NO_COLOR", "1")]));
        assert!(
            decide(true, &[("NO_COLOR", "")]),
            "an empty NO_COLOR is unset"
        );
        assert!(decide(false, &[("CLICOLOR_FORCE", "1")]));
        assert!(!decide(false, &[("CLICOLOR_FORCE", "0")]));
        assert!(!decide(true, &[("NO_COLOR", "1"), ("CLICOLOR_FORCE", "1")]));
    }
}

/// What `show` reports about one interface.
#[derive(Debug, Clone)]
pub struct Report {
    /// The interface's status, as its daemon reported it.
    pub status: DeviceStatus,
    /// Each peer's reachability, in the order of `status.peers`; `None` if not probed.
    pub reachability: Option<Vec<Reachability>>,
}

impl Report {
    /// The reachability of peer `index`, if peers were probed.
    pub fn peer_reachability(&self, index: usize) -> Option<&Reachability> {
        self.reachability.as_ref().and_then(|r| r.get(index))
    }
}

/// The interfaces with a UAPI socket in `dir`, sorted by name.
pub fn interfaces(dir: &Path) -> Result<Vec<String>, ShowError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ShowError::List {
                dir: dir.to_owned(),
                source,
            })
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".sock").map(str::to_owned)
        })
        .collect();
    names.sort();
    Ok(names)
}

/// Reads the status of interface `name` from its UAPI socket in `dir`.
pub async fn fetch(dir: &Path, name: &str) -> Result<DeviceStatus, ShowError> {
    let path = uapi::socket_path_in(dir, name);
    if !path.exists() {
        return Err(ShowError::NotRunning(name.to_owned()));
    }
    let err = |source| ShowError::Uapi {
        name: name.to_owned(),
        source,
    };
    let reply = uapi::request_get(&path).await.map_err(err)?;
    uapi::parse_get_reply(name, &reply).map_err(err)
}

/// Reads interface `name` and, if `probe_timeout` is set, probes its peers, waiting that
/// long for replies. `local` holds this host's addresses, which are never probed.
///
/// A probe may start a handshake, so after probing the status is read again: the report
/// shows the state the probe left (a peer that appeared meanwhile shows as not probed).
pub async fn report(
    dir: &Path,
    name: &str,
    probe_timeout: Option<Duration>,
    local: &HashSet<IpAddr>,
) -> Result<Report, ShowError> {
    let status = fetch(dir, name).await?;
    let Some(timeout) = probe_timeout else {
        return Ok(Report {
            status,
            reachability: None,
        });
    };
    let probed = probe::probe_peers(name, &status.peers, local, timeout).await;
    let mut by_key: HashMap<PublicKey, Reachability> = status
        .peers
        .iter()
        .map(|peer| peer.public_key)
        .zip(probed)
        .collect();
    let status = fetch(dir, name).await.unwrap_or(status);
    let reachability = status
        .peers
        .iter()
        .map(|peer| {
            by_key
                .remove(&peer.public_key)
                .unwrap_or_else(|| Reachability::Unknown {
                    address: None,
                    reason: "the peer was added while probing".to_owned(),
                })
        })
        .collect();
    Ok(Report {
        status,
        reachability: Some(reachability),
    })
}

/// [`report`] for each of `names`, all at once; the reports come back in the same order.
pub async fn reports(
    dir: &Path,
    names: &[String],
    probe_timeout: Option<Duration>,
) -> Result<Vec<Report>, ShowError> {
    let local = match probe_timeout {
        Some(_) => probe::local_addresses(),
        None => HashSet::new(),
    };
    let all = names
        .iter()
        .map(|name| report(dir, name, probe_timeout, &local));
    futures::future::join_all(all).await.into_iter().collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use meshtun_proto::{PresharedKey, PrivateKey};

    use super::*;
    use crate::gate::MembershipState;
    use crate::wgcfg::{DeviceGate, PeerGate, PeerStatus};

    /// Unix time, in seconds, that the fixed status below is shown at.
    pub(crate) const NOW_SECS: u64 = 1_700_000_000;

    fn peer(handshake_secs: Option<u64>, allowed: &str) -> PeerStatus {
        PeerStatus {
            endpoint_since: None,
            public_key: PrivateKey::generate().public_key(),
            preshared_key: Some(PresharedKey::generate()),
            endpoint: Some("192.0.2.2:51820".parse().unwrap()),
            last_handshake: handshake_secs.map(|s| UNIX_EPOCH + Duration::from_secs(s)),
            rx_bytes: 2048,
            tx_bytes: 100,
            persistent_keepalive: Some(25),
            allowed_ips: vec![allowed.parse().unwrap()],
            gate: None,
        }
    }

    /// An ungated interface with one peer.
    pub(crate) fn status() -> DeviceStatus {
        DeviceStatus {
            name: "wg0".into(),
            private_key: Some(PrivateKey::generate()),
            listen_port: 51820,
            fwmark: 0xca6c,
            peers: vec![peer(Some(NOW_SECS - 65), "100.64.0.2/32")],
            gate: None,
        }
    }

    /// A gated interface: a static peer, and a gated one whose key is 4 s old.
    pub(crate) fn gated_status(membership: MembershipState) -> DeviceStatus {
        let mut status = status();
        status.gate = Some(DeviceGate {
            forward: false,
            membership_refused: 0,
            observing: None,
            node_id: "node-a".into(),
            controller_url: "http://192.0.2.1:8080".into(),
            controller_key: "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=".into(),
            loss_policy: "fail_closed".into(),
            membership,
            epoch: Some(42),
            epoch_not_after_ms: Some((NOW_SECS + 7) * 1000),
            next_epoch: None,
            controller_last_contact_ms: Some((NOW_SECS - 2) * 1000),
            controller_error: None,
            nat: crate::wgcfg::NatStatus::default(),
            relay: None,
        });
        let mut gated = peer(None, "100.64.0.3/32");
        gated.gate = Some(PeerGate {
            forwards_to: Vec::new(),
            node_id: "node-b".into(),
            psk_since_ms: (NOW_SECS - 4) * 1000,
            psk_epoch: Some(42),
        });
        status.peers.push(gated);
        status
    }

    /// Probed: the first peer answered in 0.6 ms, the second did not.
    pub(crate) fn probed(status: DeviceStatus) -> Report {
        let mut reachability = vec![Reachability::Reachable {
            address: "100.64.0.2".parse().unwrap(),
            rtt: Duration::from_micros(600),
        }];
        if status.peers.len() > 1 {
            reachability.push(Reachability::Unreachable {
                address: "100.64.0.3".parse().unwrap(),
                timeout: Duration::from_secs(1),
            });
        }
        Report {
            status,
            reachability: Some(reachability),
        }
    }

    #[test]
    fn interfaces_are_the_sockets_in_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["wg1.sock", "wg0.sock", "notes.txt"] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        assert_eq!(interfaces(dir.path()).unwrap(), ["wg0", "wg1"]);
        let missing = dir.path().join("missing");
        assert!(interfaces(&missing).unwrap().is_empty());
    }

    /// Serves `status` on a UAPI socket in a temporary directory.
    struct Fixed(DeviceStatus);

    impl crate::uapi::UapiHandler for Fixed {
        async fn get(&self) -> DeviceStatus {
            self.0.clone()
        }

        async fn set(&self, _: crate::wgcfg::DeviceUpdate) -> Result<(), UapiError> {
            Err(UapiError::Rejected("read-only test device".into()))
        }
    }

    #[tokio::test]
    async fn report_reads_the_gate_over_the_socket_and_probes_every_peer() {
        let dir = tempfile::tempdir().unwrap();
        // No such interface exists here, so the probe reports why it could not bind to it.
        let name = "mtshow0";
        let socket = crate::uapi::bind_in(dir.path(), name).unwrap();
        let status = gated_status(MembershipState::Allowed);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(crate::uapi::serve(
            socket,
            std::sync::Arc::new(Fixed(status.clone())),
            async move {
                let _ = stopped.await;
            },
        ));

        let plain = report(dir.path(), name, None, &HashSet::new())
            .await
            .unwrap();
        assert!(plain.reachability.is_none());
        assert_eq!(plain.status.gate, status.gate);
        let node = plain.status.peers[1]
            .gate
            .as_ref()
            .map(|g| g.node_id.as_str());
        assert_eq!(node, Some("node-b"));

        let timeout = Some(Duration::from_millis(100));
        let probed = report(dir.path(), name, timeout, &HashSet::new())
            .await
            .unwrap();
        let reachability = probed.reachability.unwrap();
        assert_eq!(reachability.len(), status.peers.len());
        for (result, peer) in reachability.iter().zip(&status.peers) {
            let expected = Some(peer.allowed_ips[0].addr());
            match result {
                Reachability::Unknown { address, reason } => {
                    assert_eq!(*address, expected);
                    assert!(reason.contains("ICMP socket"), "{reason}");
                }
                other => panic!("{other:?}"),
            }
        }
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_missing_interface_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let err = report(dir.path(), "wg9", None, &HashSet::new())
            .await
            .unwrap_err();
        assert!(matches!(err, ShowError::NotRunning(ref name) if name == "wg9"));
        assert!(err.to_string().contains("wg9"));
    }
}
