//! `hub_and_spoke` bundles through the engine: the hub forwards, each spoke routes the other
//! spokes through it, and a denied spoke leaves the hub's bundle and every other spoke's
//! routes in the very epoch that denies it.

use std::net::IpAddr;
use std::sync::Arc;

use meshtun_controller::clock::Clock;
use meshtun_controller::engine::{Engine, EngineSettings};
use meshtun_controller::model::{Pin, Policy, Topology};
use meshtun_controller::schedule::Schedule;
use meshtun_controller::store::Store;
use meshtun_controller::testing;
use meshtun_proto::bundle::{Bundle, Membership, SignedBundle};
use meshtun_proto::{EpochId, IdentityKey};

const START_MS: u64 = 1_800_000_000_000;

/// The bundle of `node` for the epoch after `after`.
fn bundle(engine: &Engine, key: &IdentityKey, node: &str, after: Option<EpochId>) -> Bundle {
    let (_, json) = engine.bundle(node, after).expect("a bundle");
    let signed: SignedBundle = serde_json::from_slice(&json).unwrap();
    signed.verify(&key.public()).unwrap()
}

/// Whether `bundle`'s peer `peer` routes `addr`.
fn routes(bundle: &Bundle, peer: &str, addr: &str) -> bool {
    let addr: IpAddr = addr.parse().unwrap();
    bundle
        .peers
        .iter()
        .filter(|p| p.node_id == peer)
        .flat_map(|p| &p.allowed_ips)
        .any(|n| n.contains(&addr))
}

fn peer_ids(bundle: &Bundle) -> Vec<&str> {
    bundle.peers.iter().map(|p| p.node_id.as_str()).collect()
}

#[tokio::test(start_paused = true)]
async fn a_denied_spoke_leaves_the_hub_and_every_route_in_the_epoch_that_denies_it() {
    let store = Arc::new(Store::open_in_memory().unwrap());
    // hub 100.64.0.1, s1 .2, s2 .3, s3 .4
    let ids = ["hub", "s1", "s2", "s3"];
    testing::enroll(&store, &ids);
    for id in ids {
        store.set_pin(id, Some(Pin::Allow)).unwrap();
    }
    let settings = EngineSettings {
        relay: None,
        policy: Policy {
            topology: Topology::HubAndSpoke {
                hubs: vec!["hub".into()],
            },
            ..Policy::default()
        },
        schedule: Schedule::new(60_000, 10_000).unwrap(),
        rotate_on_deny: false,
    };
    let key = IdentityKey::generate();
    let engine = Engine::open(
        store.clone(),
        key.clone(),
        settings,
        Clock::starting_at(START_MS),
    )
    .unwrap();

    let first = engine.rotate_now("test").unwrap();
    let hub = bundle(&engine, &key, "hub", None);
    assert!(hub.forward);
    assert_eq!(peer_ids(&hub), ["s1", "s2", "s3"]);
    let s1 = bundle(&engine, &key, "s1", None);
    assert!(!s1.forward);
    assert_eq!(peer_ids(&s1), ["hub"]);
    assert_eq!(s1.peers[0].forwards_to, ["s2", "s3"]);
    for addr in ["100.64.0.1", "100.64.0.3", "100.64.0.4"] {
        assert!(routes(&s1, "hub", addr), "s1 does not route {addr}");
    }
    assert!(!routes(&s1, "hub", "100.64.0.2"), "s1's own address");

    store.set_pin("s3", Some(Pin::Deny)).unwrap();
    let second = engine.rotate_now("test").unwrap();
    assert!(second > first);
    let hub = bundle(&engine, &key, "hub", Some(first));
    assert_eq!(hub.epoch, second);
    assert_eq!(peer_ids(&hub), ["s1", "s2"]);
    for (spoke, other) in [("s1", "100.64.0.3"), ("s2", "100.64.0.2")] {
        let b = bundle(&engine, &key, spoke, Some(first));
        assert_eq!(b.epoch, second);
        assert!(routes(&b, "hub", other), "{spoke} lost {other}");
        assert!(!routes(&b, "hub", "100.64.0.4"), "{spoke} still routes s3");
        assert!(!b.peers[0].forwards_to.iter().any(|n| n == "s3"));
    }
    let s3 = bundle(&engine, &key, "s3", Some(first));
    assert!(matches!(s3.membership, Membership::Denied { .. }));
    assert!(s3.peers.is_empty() && !s3.forward);
}
