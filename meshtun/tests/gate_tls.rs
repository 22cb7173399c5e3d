//! A controller behind TLS with a private certificate: the node trusts it through the
//! `ca_file` of its `[controller]` section, and only then.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshtun::config::{ControllerSettings, LossPolicy};
use meshtun::gate::{ClientError, ControllerClient};
use meshtun_controller::api::{router, Api};
use meshtun_controller::auth::NonceCache;
use meshtun_controller::clock::Clock;
use meshtun_controller::config::TlsFiles;
use meshtun_controller::engine::{Engine, EngineSettings};
use meshtun_controller::model::{NodeRecord, Policy};
use meshtun_controller::schedule::Schedule;
use meshtun_controller::store::Store;
use meshtun_controller::tls::{acceptor, TlsListener};
use meshtun_proto::wire::{Benchmark, Scores};
use meshtun_proto::{IdentityKey, PrivateKey};
use zeroize::Zeroizing;

#[tokio::test]
async fn a_private_ca_is_trusted_through_ca_file_and_only_then() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let files = TlsFiles {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    };
    std::fs::write(&files.cert, cert.cert.pem()).unwrap();
    std::fs::write(&files.key, cert.signing_key.serialize_pem()).unwrap();

    let store = Arc::new(Store::open_in_memory().unwrap());
    let (wg, identity) = (PrivateKey::generate(), IdentityKey::generate());
    store
        .add_node(&NodeRecord {
            id: "node-a".into(),
            wg_public_key: wg.public_key(),
            identity_key: identity.public(),
            addresses: vec!["100.64.0.1/24".parse().unwrap()],
            endpoint: None,
            pin: None,
            enrolled_ms: 0,
        })
        .unwrap();
    let key = IdentityKey::generate();
    let settings = EngineSettings {
        policy: Policy::default(),
        schedule: Schedule::new(60_000, 10_000).unwrap(),
        rotate_on_deny: true,
    };
    let engine = Arc::new(Engine::open(store, key.clone(), settings, Clock::system()).unwrap());
    let api = Arc::new(Api {
        engine,
        nonces: NonceCache::new(30_000),
        admin_token: Zeroizing::new("admin".into()),
        long_poll: Duration::from_millis(300),
    });
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let listener = TlsListener::new(tcp, acceptor(&files).unwrap()).unwrap();
    tokio::spawn(async move { axum::serve(listener, router(api)).await });

    let settings = |ca_file| ControllerSettings {
        url: format!("https://localhost:{port}"),
        public_key: key.public(),
        node_id: "node-a".into(),
        identity_key_file: dir.path().join("node-a.identity"),
        on_controller_loss: LossPolicy::FailClosed,
        grace: Duration::from_secs(30),
        cache_file: dir.path().join("node-a.bundle"),
        ca_file,
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let benchmark = |seq| Benchmark {
        suite_version: "suite-1".into(),
        scores: Scores {
            overall: 0.9,
            refusal: 0.9,
            honesty: 0.9,
            policy: 0.9,
        },
        measured_at_ms: now,
        seq,
    };

    let trusting = ControllerClient::from_settings(
        &settings(Some(files.cert.clone())),
        identity.clone(),
        wg.clone(),
    )
    .unwrap();
    trusting.submit_benchmark(&benchmark(1)).await.unwrap();

    let untrusting =
        ControllerClient::from_settings(&settings(None), identity.clone(), wg.clone()).unwrap();
    let err = untrusting
        .submit_benchmark(&benchmark(2))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Http { .. }), "{err}");

    let bad = dir.path().join("not-a-ca.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let err =
        ControllerClient::from_settings(&settings(Some(bad.clone())), identity, wg).unwrap_err();
    assert!(matches!(err, ClientError::CaFile { .. }), "{err}");
    assert!(err.to_string().contains("not-a-ca.pem"), "{err}");
}
