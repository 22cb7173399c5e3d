//! The server's time limits on one connection (#4): a client that asks for an answer and
//! never reads it is cut off once its writes stall for `request_timeout`. And the one entry
//! point, `serve`: its connection caps counted in the metrics, its supervision of its
//! tasks, and its shutdown.

use std::io::{ErrorKind, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::Router;
use meshtun_controller::config::Limits;
use meshtun_controller::server::{serve, ServeOptions};
use meshtun_controller::service::Begin;
use meshtun_controller::testing::{Fixture, FixtureOptions};
use meshtun_controller::{Epochs, ServeError};

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

/// The address `url` (`http://HOST:PORT`) names.
fn address_of(url: &str) -> std::net::SocketAddr {
    url.trim_start_matches("http://").parse().unwrap()
}

/// Polls until nothing accepts connections on `addr`, for at most 5 s.
async fn wait_closed(addr: std::net::SocketAddr) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// `serve` supervises its tasks: when one dies (here the engine, through a start signal
/// that panics), the controller stops serving at once and `serve` names the task, instead
/// of answering nodes with no engine behind the API.
#[tokio::test]
async fn a_task_that_dies_takes_the_controller_down_and_is_named() {
    let begin: Begin = Box::pin(async { panic!("the engine dies on purpose") });
    let f = Fixture::start(FixtureOptions {
        epochs: Epochs::After(begin),
        ..FixtureOptions::default()
    })
    .await;
    let (api, status) = (address_of(&f.url), address_of(&f.status_url));
    assert!(
        wait_closed(api).await,
        "the API still accepts with its engine dead"
    );
    assert!(
        wait_closed(status).await,
        "the status listener still accepts"
    );
    match f.stop().await {
        Err(ServeError::Task { task, .. }) => assert_eq!(task, "engine"),
        other => panic!("serve ended with {other:?}, not the engine's failure"),
    }
}

/// A connection flood from one address beyond its cap is closed at once, counted in the
/// metrics of whoever runs `serve` (the fixture, the bench and the demo used to drop the
/// count), and the controller answers again once the flood ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_is_capped_and_counted_whoever_serves() {
    const CAP: u32 = 4;
    const FLOOD: u32 = 40;
    let limits = Limits {
        max_connections_per_address: CAP,
        ..Limits::default()
    };
    let f = Fixture::start(FixtureOptions {
        limits,
        ..FixtureOptions::default()
    })
    .await;
    let api = address_of(&f.url);
    let mut held = Vec::new();
    for _ in 0..FLOOD {
        if let Ok(Ok(stream)) =
            tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(api)).await
        {
            held.push(stream);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let refused = loop {
        let request = Request::get("/metrics").body(Body::empty()).unwrap();
        let (_, body) = f.status_request(request).await;
        let refused = refused_by_address(&String::from_utf8_lossy(&body));
        if refused >= u64::from(FLOOD - CAP) || Instant::now() > deadline {
            break refused;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        refused >= u64::from(FLOOD - CAP),
        "{refused} refusals counted for {FLOOD} connections over a cap of {CAP}"
    );
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // Slots free as the server sees each flood connection close: retry until then.
        let answer = reqwest::get(format!("{}/health", f.url)).await;
        if answer.as_ref().is_ok_and(|a| a.status() == StatusCode::OK) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no answer after the flood: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f.stop().await.unwrap();
}

/// The count of connections refused for the per-address cap, from the metrics text.
fn refused_by_address(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.contains("refused_connections") && l.contains("address"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// On shutdown, `serve` returns and nothing listens any more, on either listener, even
/// with the whole schedule running.
#[tokio::test]
async fn shutdown_stops_every_listener_and_task() {
    let f = Fixture::start(FixtureOptions {
        nodes: &["node-a"],
        epochs: Epochs::Scheduled,
        ..FixtureOptions::default()
    })
    .await;
    let (api, status) = (address_of(&f.url), address_of(&f.status_url));
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), f.stop())
        .await
        .expect("serve did not return within 10 s of the shutdown")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    for addr in [api, status] {
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "{addr} still accepts"
        );
    }
}
