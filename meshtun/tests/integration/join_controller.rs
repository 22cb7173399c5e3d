//! `meshtun join` against the real controller, served in-process on 127.0.0.1: the written
//! configuration, what the controller records, and the refusals an operator can meet.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use meshtun::config::{load_or_create_identity, BenchmarkSourceConfig, Config};
use meshtun::gate::{ClientError, ControllerClient};
use meshtun::join::{join, JoinError, JoinOptions};
use meshtun_proto::enroll::enrollment_key;
use meshtun_proto::wire::{Benchmark, Scores, Ticket};

use crate::common;

use common::{now_ms, Controller};

/// A controller with no nodes, serving its real API on an ephemeral loopback port.
async fn controller() -> Controller {
    common::start(common::Options::default()).await
}

/// Invites, as `meshtun-controller invite` issues them.
trait Invite {
    /// Issues an invite for `node` and returns its ticket.
    fn invite(&self, node: &str, addresses: Option<&[IpNet]>, endpoint: Option<&str>) -> Ticket;
}

impl Invite for Controller {
    /// Issues an invite for `node` (as `meshtun-controller invite` does) and returns its
    /// ticket.
    fn invite(&self, node: &str, addresses: Option<&[IpNet]>, endpoint: Option<&str>) -> Ticket {
        let token = format!("token-of-{node}-{}", now_ms());
        let expires_ms = now_ms() + 3_600_000;
        self.engine
            .store()
            .create_invite(node, &token, expires_ms, addresses, endpoint)
            .unwrap();
        Ticket {
            url: self.url.clone(),
            controller_key: self.key.public(),
            enroll_key: enrollment_key(&self.key).public_key(),
            node_id: node.into(),
            token,
            expires_ms,
            membership_key: None,
        }
    }
}

fn options(ticket: Ticket, config: PathBuf, addresses: &[&str]) -> JoinOptions {
    JoinOptions {
        ticket,
        config: Some(config),
        interface: "wg0".into(),
        listen_port: 51820,
        addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
        endpoint: Some("192.0.2.4:51820".into()),
        benchmark: Some(BenchmarkSourceConfig::Simulated {
            mean: 0.9,
            stddev: 0.02,
        }),
        force: false,
        membership_sig: None,
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn benchmark(seq: u64) -> Benchmark {
    Benchmark {
        suite_version: "sim-1".into(),
        scores: Scores {
            overall: 0.9,
            refusal: 0.9,
            honesty: 0.9,
            policy: 0.9,
        },
        measured_at_ms: now_ms(),
        seq,
    }
}

#[tokio::test]
async fn join_writes_a_private_working_config_and_the_controller_lists_the_node() {
    let c = controller().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("etc/wg0.toml");
    let ticket = c.invite("node-d", None, None);
    let joined = join(&options(ticket.clone(), path.clone(), &["100.64.0.4/24"]))
        .await
        .unwrap();
    assert_eq!(joined.path, path);
    assert_eq!(joined.node_id, "node-d");
    assert!(joined.identity_created);
    assert!(joined.benchmark);
    assert!(joined.notes.is_empty(), "{:?}", joined.notes);

    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir.path().join("etc/wg0.identity")), 0o600);
    let (config, settings, warnings) = meshtun::daemon::check(&path).await.unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(settings.peers.is_empty());
    assert_eq!(config.interface.name, "wg0");
    assert_eq!(config.interface.listen_port, Some(51820));
    assert_eq!(
        config.interface.addresses,
        vec!["100.64.0.4/24".parse::<IpNet>().unwrap()]
    );
    let gating = config.controller.clone().unwrap();
    assert_eq!(gating.urls, std::slice::from_ref(&c.url));
    assert_eq!(gating.public_keys.keys(), [c.key.public()]);
    assert_eq!(gating.node_id, "node-d");
    assert_eq!(
        gating.identity_key_file,
        dir.path().join("etc/wg0.identity")
    );
    assert_eq!(
        config.benchmark.unwrap().source,
        BenchmarkSourceConfig::Simulated {
            mean: 0.9,
            stddev: 0.02
        }
    );

    // The controller lists the node with the keys in the configuration.
    let identity = load_or_create_identity(&gating.identity_key_file).unwrap();
    assert!(!identity.created);
    let nodes = c.engine.store().nodes().unwrap();
    let [node] = nodes.as_slice() else {
        panic!("one node expected: {nodes:?}")
    };
    assert_eq!(node.id, "node-d");
    assert_eq!(
        node.wg_public_key,
        config.interface.private_key.public_key()
    );
    assert_eq!(node.wg_public_key, joined.wg_public_key);
    assert_eq!(node.identity_key, identity.key.public());
    assert_eq!(node.addresses, config.interface.addresses);
    assert_eq!(node.endpoint.as_deref(), Some("192.0.2.4:51820"));

    // The node can talk to the controller with what the file holds.
    let client = ControllerClient::from_settings(
        &gating,
        identity.key,
        config.interface.private_key.clone(),
    )
    .unwrap();
    client.submit_benchmark(&benchmark(1)).await.unwrap();

    // The ticket works once: a second join with it is refused and writes no configuration.
    let other = dir.path().join("other/wg0.toml");
    let err = join(&options(ticket.clone(), other.clone(), &["100.64.0.9/24"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, JoinError::Enroll { error, .. }
            if matches!(&**error, ClientError::Forbidden { reason, .. } if reason.contains("already used"))),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("enrolling node node-d at http://127.0.0.1:"),
        "{message}"
    );
    assert!(
        message.contains("No configuration was written"),
        "{message}"
    );
    assert!(message.contains("other/wg0.identity is kept"), "{message}");
    assert!(!message.contains(&ticket.token), "{message}");
    assert!(!other.exists());
    assert_eq!(c.engine.store().nodes().unwrap().len(), 1);
}

#[tokio::test]
async fn an_existing_config_is_kept_unless_forced_and_a_forced_rejoin_reuses_the_identity() {
    let c = controller().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wg0.toml");
    let first = join(&options(
        c.invite("node-d", None, None),
        path.clone(),
        &["100.64.0.4/24"],
    ))
    .await
    .unwrap();
    let written = std::fs::read_to_string(&path).unwrap();

    // A second node's ticket does not overwrite the file, and its invite stays unused.
    let ticket_e = c.invite("node-e", None, None);
    let err = join(&options(ticket_e.clone(), path.clone(), &["100.64.0.5/24"]))
        .await
        .unwrap_err();
    assert!(matches!(err, JoinError::ConfigExists { .. }), "{err}");
    assert!(
        err.to_string().contains("already exists; pass --force"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), written);
    assert_eq!(c.engine.store().node("node-e").unwrap(), None);

    // The admin removes node-d and invites it again; a forced join replaces the file with a
    // new WireGuard key and the same identity.
    assert!(c.engine.store().remove_node("node-d").unwrap());
    let again = JoinOptions {
        force: true,
        ..options(
            c.invite("node-d", None, None),
            path.clone(),
            &["100.64.0.4/24"],
        )
    };
    let second = join(&again).await.unwrap();
    assert!(!second.identity_created);
    assert_eq!(second.identity_public, first.identity_public);
    assert_ne!(second.wg_public_key, first.wg_public_key);
    assert_eq!(mode(&path), 0o600);
    let config = Config::load(&path).unwrap();
    assert_eq!(
        config.interface.private_key.public_key(),
        second.wg_public_key
    );
    let node = c.engine.store().node("node-d").unwrap().unwrap();
    assert_eq!(node.wg_public_key, second.wg_public_key);
}

#[tokio::test]
async fn the_invite_decides_the_addresses_and_a_node_without_one_gets_the_next_free_one() {
    let c = controller().await;
    let dir = tempfile::tempdir().unwrap();

    // The admin assigned the address and endpoint: the configuration has them.
    let assigned: Vec<IpNet> = vec!["100.64.0.6/24".parse().unwrap()];
    let ticket = c.invite("node-f", Some(&assigned), Some("198.51.100.6:51820"));
    let path = dir.path().join("f/wg0.toml");
    let joined = join(&options(ticket, path.clone(), &[])).await.unwrap();
    assert_eq!(joined.addresses, assigned);
    assert_eq!(joined.endpoint.as_deref(), Some("198.51.100.6:51820"));
    assert!(
        joined
            .notes
            .iter()
            .any(|n| n.contains("198.51.100.6:51820")),
        "{:?}",
        joined.notes
    );
    let config = Config::load(&path).unwrap();
    assert_eq!(config.interface.addresses, assigned);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("reach this node at 198.51.100.6:51820"),
        "{text}"
    );

    // Neither the invite nor the request gives an address: the controller assigns the next
    // free one of its overlay, and the configuration pins the overlay's prefix.
    let ticket = c.invite("node-g", None, None);
    let path = dir.path().join("g/wg0.toml");
    let mut bare = options(ticket, path.clone(), &[]);
    bare.benchmark = None;
    let joined = join(&bare).await.unwrap();
    let node = c.engine.store().node("node-g").unwrap().unwrap();
    assert_eq!(node.identity_key, joined.identity_public);
    assert_eq!(
        node.addresses,
        vec!["100.64.0.1/10".parse::<IpNet>().unwrap()]
    );
    assert_eq!(joined.addresses, node.addresses);
    assert!(
        joined
            .notes
            .iter()
            .any(|n| n.contains("denies this node membership")),
        "{:?}",
        joined.notes
    );
    let config = Config::load(&path).unwrap();
    assert_eq!(config.interface.addresses, node.addresses);
    assert_eq!(
        config.controller.unwrap().allowed_prefixes,
        Some(vec!["100.64.0.0/10".parse().unwrap()])
    );
    assert_eq!(config.benchmark, None);
}
