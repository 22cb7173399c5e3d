//! The API over TLS: a client that trusts the certificate gets answers, and a client that
//! connects and never handshakes does not hold up anyone else.

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use std::sync::Arc;

use meshtun_controller::config::{Limits, TlsFiles};
use meshtun_controller::server::{serve, ServeOptions};
use meshtun_controller::tls::acceptor;

#[tokio::test]
async fn serves_over_tls_and_a_stalled_client_blocks_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let files = TlsFiles {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    };
    std::fs::write(&files.cert, cert.cert.pem()).unwrap();
    std::fs::write(&files.key, cert.signing_key.serialize_pem()).unwrap();

    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let options = ServeOptions {
        limits: Limits::default(),
        tls: Some(acceptor(&files).unwrap()),
        on_refused: Arc::new(|_| {}),
    };
    let app = Router::new().route("/health", get(|| async { "ok\n" }));
    tokio::spawn(serve(tcp, app, options, std::future::pending()));

    // A client that connects and says nothing.
    let _silent = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();

    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let body = client
        .get(format!("https://localhost:{port}/health"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "ok\n");

    // A client that does not trust the certificate is refused by its own TLS check.
    let untrusting = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    assert!(untrusting
        .get(format!("https://localhost:{port}/health"))
        .send()
        .await
        .is_err());
}

#[test]
fn bad_pem_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let files = TlsFiles {
        cert: dir.path().join("missing.pem"),
        key: dir.path().join("key.pem"),
    };
    let err = acceptor(&files).err().unwrap().to_string();
    assert!(err.contains("missing.pem"), "{err}");
    std::fs::write(&files.cert, "not a certificate").unwrap();
    let err = acceptor(&files).err().unwrap().to_string();
    assert!(err.contains("missing.pem"), "{err}");
}
