//! A controller behind TLS with a private certificate: the node trusts it through the
//! `ca_file` of its `[controller]` section, and only then.

use std::time::Duration;

use meshtun::config::{ControllerSettings, LossPolicy};
use meshtun::gate::{ClientError, ControllerClient};
use meshtun_controller::config::TlsFiles;

use crate::common;

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

    let c = common::start(common::Options {
        nodes: &["node-a"],
        tls: Some(files.clone()),
        ..common::Options::default()
    })
    .await;
    let (wg, identity, key) = (
        c.nodes[0].wg.clone(),
        c.nodes[0].identity.clone(),
        c.key.clone(),
    );
    let url = c.url.clone();

    let settings = |ca_file| ControllerSettings {
        urls: vec![url.clone()],
        public_keys: meshtun_proto::KeySet::one(key.public()),
        node_id: "node-a".into(),
        identity_key_file: dir.path().join("node-a.identity"),
        on_controller_loss: LossPolicy::FailClosed,
        grace: Duration::from_secs(30),
        cache_file: dir.path().join("node-a.bundle"),
        ca_file,
        allowed_prefixes: None,
        stun: None,
        keepalive: Default::default(),
        membership_key: None,
        observe: Default::default(),
    };
    let benchmark = |seq| common::benchmark(0.9, seq);

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
