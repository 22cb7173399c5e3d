//! The server's time limits on one connection (#4): a client that asks for an answer and
//! never reads it is cut off once its writes stall for `request_timeout`.

use std::io::{ErrorKind, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use meshtun_controller::config::Limits;
use meshtun_controller::server::{serve, ServeOptions};

/// An answer far larger than the socket buffers on both sides.
const BIG: usize = 64 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_answer_is_cut_off_4() {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let limits = Limits {
        request_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let options = ServeOptions {
        limits,
        tls: None,
        on_refused: Arc::new(|_| {}),
    };
    let app = Router::new().route("/big", get(|| async { vec![b'x'; BIG] }));
    tokio::spawn(serve(tcp, app, options, std::future::pending()));

    let received = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        // Read nothing while the server's writes stall, well past request_timeout.
        std::thread::sleep(Duration::from_secs(3));
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let started = Instant::now();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0usize;
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return (total, true),
                Ok(n) => total += n,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return (total, true),
                Err(_) => return (total, false),
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "still reading after 20 s"
            );
        }
    })
    .await
    .unwrap();
    let (total, closed) = received;
    assert!(closed, "the connection was still open after {total} bytes");
    assert!(
        total < BIG,
        "the whole answer ({total} bytes) was delivered to a client that did not read"
    );
}
