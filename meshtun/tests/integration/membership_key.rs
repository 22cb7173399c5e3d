//! The operator's membership key against the real controller, served in-process: a bundle
//! that lists a signed and an unsigned peer gives a node with the key only the signed one
//! (the other named, with the reason, and counted), and a node without the key both.

use std::time::Duration;

use meshtun::config::{ControllerSettings, LossPolicy};
use meshtun::gate::members::NO_SIGNATURE;
use meshtun::gate::{ControllerClient, Gate, GateOptions, MembershipState, SharedGateStatus};
use meshtun_controller::model::Pin;
use meshtun_controller::testing::TestNode;
use meshtun_proto::membership::{MembershipKey, MembershipPublic};
use meshtun_proto::KeySet;
use tokio::sync::mpsc;
use tokio::time::timeout;

use crate::common::{self, Controller};

/// A controller with node-a (the node under test), node-b enrolled with a membership
/// signature and node-c without one, all pinned allowed; node-a needs no signature of its
/// own, it is the recipient.
async fn controller(key: &MembershipKey) -> Controller {
    let c = common::start(common::Options {
        nodes: &["node-a"],
        epoch_ms: 4_000,
        lead_ms: 1_000,
        long_poll: Duration::from_millis(500),
        ..common::Options::default()
    })
    .await;
    let store = c.engine.store();
    store.set_pin("node-a", Some(Pin::Allow)).unwrap();
    for (i, id, signed) in [(1, "node-b", true), (2, "node-c", false)] {
        let node = TestNode::new(id);
        let mut record = node.record(i);
        record.pin = Some(Pin::Allow);
        if signed {
            let sig = key.sign(id, &record.wg_public_key, &record.identity_key);
            record.membership_sig = Some(sig.unwrap());
        }
        store.add_node(&record).unwrap();
    }
    c.engine.refresh_nodes().unwrap();
    c
}

fn client(c: &Controller, key: Option<MembershipPublic>) -> ControllerClient {
    let node = &c.nodes[0];
    ControllerClient::new(
        &c.url,
        KeySet::one(c.key.public()),
        &node.id,
        node.identity.clone(),
        node.wg.clone(),
    )
    .unwrap()
    .with_membership_key(key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_signed_peer_is_taken_and_the_unsigned_one_is_named() {
    let key = MembershipKey::generate();
    let c = controller(&key).await;
    c.engine.step().unwrap();
    let wait = Duration::from_secs(2);

    let with_key = client(&c, Some(key.public()));
    let bundle = with_key.fetch_bundle(None, wait).await.unwrap().unwrap();
    assert!(bundle.is_allowed());
    let ids: Vec<&str> = bundle.peers.iter().map(|p| p.node_id.as_str()).collect();
    assert_eq!(ids, ["node-b"]);
    assert_eq!(bundle.refused.len(), 1);
    assert_eq!(bundle.refused[0].node_id, "node-c");
    assert_eq!(bundle.refused[0].reason, NO_SIGNATURE);

    // The same bundle, to a node configured without the key: both peers.
    let without = client(&c, None);
    let bundle = without.fetch_bundle(None, wait).await.unwrap().unwrap();
    assert_eq!(bundle.peers.len(), 2);
    assert!(bundle.refused.is_empty());

    // Another membership key signed nothing here: every peer is refused.
    let other = client(&c, Some(MembershipKey::generate().public()));
    let bundle = other.fetch_bundle(None, wait).await.unwrap().unwrap();
    assert!(bundle.peers.is_empty());
    assert_eq!(bundle.refused.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gating_tasks_apply_the_signed_peer_and_count_the_refused_one() {
    let key = MembershipKey::generate();
    let c = controller(&key).await;
    let dir = tempfile::tempdir().unwrap();
    let node = &c.nodes[0];
    let settings = ControllerSettings {
        urls: vec![c.url.clone()],
        public_keys: KeySet::one(c.key.public()),
        node_id: node.id.clone(),
        identity_key_file: dir.path().join("node-a.identity"),
        on_controller_loss: LossPolicy::FailClosed,
        grace: Duration::from_secs(1),
        cache_file: dir.path().join("node-a.bundle"),
        ca_file: None,
        allowed_prefixes: None,
        stun: None,
        keepalive: Default::default(),
        membership_key: Some(key.public()),
        observe: Default::default(),
    };
    let options = GateOptions {
        controller: settings.clone(),
        benchmark: None,
        wg_private: node.wg.clone(),
    };
    let client =
        ControllerClient::from_settings(&settings, node.identity.clone(), node.wg.clone()).unwrap();
    let status = SharedGateStatus::default();
    let (tx, mut updates) = mpsc::channel(8);
    let _gate = Gate::start(&options, client, None, status.clone(), tx);
    c.engine.step().unwrap();
    let update = loop {
        let update = timeout(Duration::from_secs(5), updates.recv())
            .await
            .expect("no update in time")
            .expect("the gate stopped");
        if update.membership == MembershipState::Allowed {
            break update;
        }
    };
    let ids: Vec<&str> = update.peers.iter().map(|p| p.node_id.as_str()).collect();
    assert_eq!(ids, ["node-b"]);
    assert_eq!(status.lock().membership_refused, 1);
}

/// `meshtun join` with a ticket naming the membership key, against a controller that
/// requires it: the first run stops asking for the signature and enrolls nothing; a
/// signature for other keys is refused before anything is sent; with the right one the node
/// enrolls with it and its configuration names the membership key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_asks_for_the_signature_then_enrolls_with_it() {
    use meshtun::join::{join, JoinError, JoinOptions};
    use meshtun_proto::enroll::enrollment_key;
    use meshtun_proto::wire::Ticket;

    let key = MembershipKey::generate();
    let c = common::start(common::Options {
        membership_key: Some(key.public()),
        ..common::Options::default()
    })
    .await;
    let expires_ms = common::now_ms() + 3_600_000;
    c.engine
        .store()
        .create_invite("node-d", "token-of-node-d", expires_ms, None, None)
        .unwrap();
    let ticket = Ticket {
        url: c.url.clone(),
        controller_key: c.key.public(),
        enroll_key: enrollment_key(&c.key).public_key(),
        node_id: "node-d".into(),
        token: "token-of-node-d".into(),
        expires_ms,
        membership_key: Some(key.public()),
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wg0.toml");
    let options = |membership_sig| JoinOptions {
        ticket: ticket.clone(),
        config: Some(path.clone()),
        interface: "wg0".into(),
        listen_port: 51820,
        addresses: vec!["100.64.0.4/24".parse().unwrap()],
        endpoint: None,
        benchmark: None,
        force: false,
        membership_sig,
    };
    let (wg_key, identity) = match join(&options(None)).await.unwrap_err() {
        JoinError::SignatureNeeded {
            wg_key, identity, ..
        } => (wg_key, identity),
        other => panic!("not asked for a signature: {other}"),
    };
    assert!(c.engine.store().node("node-d").unwrap().is_none());
    assert!(!path.exists());

    let wrong = key.sign("node-e", &wg_key, &identity).unwrap();
    let refused = join(&options(Some(wrong))).await.unwrap_err();
    assert!(
        matches!(refused, JoinError::MembershipSig { .. }),
        "{refused}"
    );
    assert!(c.engine.store().node("node-d").unwrap().is_none());

    let good = key.sign("node-d", &wg_key, &identity).unwrap();
    let joined = join(&options(Some(good))).await.unwrap();
    assert_eq!(joined.wg_public_key, wg_key);
    let node = c.engine.store().node("node-d").unwrap().unwrap();
    assert_eq!(node.membership_sig, Some(good));
    let (config, _, _) = meshtun::daemon::check(&path).await.unwrap();
    assert_eq!(
        config.controller.unwrap().membership_key,
        Some(key.public())
    );
    assert!(!dir.path().join("wg0.toml.pending-key").exists());
}

/// A client for `node` with the membership key `key`.
fn node_client(c: &Controller, node: &TestNode, key: &MembershipKey) -> ControllerClient {
    ControllerClient::new(
        &c.url,
        KeySet::one(c.key.public()),
        &node.id,
        node.identity.clone(),
        node.wg.clone(),
    )
    .unwrap()
    .with_membership_key(Some(key.public()))
}

/// Hub and spoke: a hub with the membership key leaves the unsigned spoke out of its peers,
/// so it never forwards to it, even though the controller routes the signed spoke's traffic
/// for it through the hub (the hub's allowed IPs in the spoke's bundle).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_with_the_key_does_not_peer_with_the_unsigned_spoke() {
    use meshtun_controller::model::{Policy, Topology};

    let key = MembershipKey::generate();
    let c = common::start(common::Options {
        policy: Policy {
            topology: Topology::HubAndSpoke {
                hubs: vec!["hub".into()],
            },
            ..Policy::default()
        },
        long_poll: Duration::from_millis(500),
        ..common::Options::default()
    })
    .await;
    let store = c.engine.store();
    let mut nodes = Vec::new();
    for (i, id, signed) in [(0, "hub", true), (1, "s1", true), (2, "s2", false)] {
        let node = TestNode::new(id);
        let mut record = node.record(i);
        record.pin = Some(Pin::Allow);
        if signed {
            let sig = key.sign(id, &record.wg_public_key, &record.identity_key);
            record.membership_sig = Some(sig.unwrap());
        }
        store.add_node(&record).unwrap();
        nodes.push((node, record));
    }
    c.engine.refresh_nodes().unwrap();
    c.engine.step().unwrap();
    let wait = Duration::from_secs(2);

    let hub = node_client(&c, &nodes[0].0, &key);
    let bundle = hub.fetch_bundle(None, wait).await.unwrap().unwrap();
    assert!(bundle.forward, "the hub's bundle says it forwards");
    let ids: Vec<&str> = bundle.peers.iter().map(|p| p.node_id.as_str()).collect();
    assert_eq!(ids, ["s1"]);
    assert_eq!(bundle.refused.len(), 1);
    assert_eq!(bundle.refused[0].node_id, "s2");

    // The signed spoke routes s2's address through the hub, whose peers do not include s2:
    // the hub has no peer to forward it to.
    let s1 = node_client(&c, &nodes[1].0, &key);
    let s1_bundle = s1.fetch_bundle(None, wait).await.unwrap().unwrap();
    let ids: Vec<&str> = s1_bundle.peers.iter().map(|p| p.node_id.as_str()).collect();
    assert_eq!(ids, ["hub"], "refused: {:?}", s1_bundle.refused);
    let s2_address = nodes[2].1.addresses[0].addr();
    assert!(
        s1_bundle.peers[0]
            .allowed_ips
            .iter()
            .any(|net| net.contains(&s2_address)),
        "the controller routes s2 through the hub: {:?}",
        s1_bundle.peers[0].allowed_ips
    );
    assert!(bundle
        .peers
        .iter()
        .all(|p| p.allowed_ips.iter().all(|net| !net.contains(&s2_address))));
}
