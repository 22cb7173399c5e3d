//! The endpoint over HTTP, and metrics read from a running in-process device.

use std::net::IpAddr;
use std::time::Duration;

use meshtun_proto::{PresharedKey, PrivateKey, PublicKey};
use parking_lot::Mutex;
use tokio::time::timeout;

use super::*;
use crate::device::channel::{ChannelTun, ChannelUdpFactory, Network, TunHandle};
use crate::gate::{GateStatus, MembershipState};
use crate::wgcfg::{DeviceSettings, PeerSettings, PeerStatus};

const WAIT: Duration = Duration::from_secs(5);

fn fixed_status() -> DeviceStatus {
    DeviceStatus {
        name: "wg7".into(),
        private_key: Some(PrivateKey::from_bytes([5; 32])),
        listen_port: 51820,
        fwmark: 0,
        gate: None,
        peers: vec![PeerStatus {
            endpoint_since: None,
            public_key: PublicKey::from_bytes([6; 32]),
            preshared_key: Some(PresharedKey::from_bytes([8; 32])),
            endpoint: None,
            last_handshake: None,
            rx_bytes: 4096,
            tx_bytes: 2048,
            persistent_keepalive: None,
            allowed_ips: Vec::new(),
            gate: None,
        }],
    }
}

fn fixed_source() -> MetricsSource {
    MetricsSource::new(|| {
        Some(DeviceSnapshot {
            status: fixed_status(),
            counters: CounterTotals {
                packets_in: 21,
                ..CounterTotals::default()
            },
        })
    })
}

async fn get(url: &str) -> reqwest::Response {
    timeout(WAIT, reqwest::get(url))
        .await
        .expect("no answer in time")
        .expect("request failed")
}

/// Serves `source` on an ephemeral loopback port; returns the base URL and the server.
async fn start(source: MetricsSource) -> (String, MetricsServer) {
    let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (url, spawn(listener, source))
}

#[tokio::test]
async fn scrape_over_http_gives_openmetrics_text() {
    let gate = Arc::new(Mutex::new(GateStatus {
        node_id: "node-a".into(),
        loss_policy: "keep_last",
        membership: MembershipState::Lost,
        cutoffs: 2,
        membership_refused: 4,
        ..GateStatus::default()
    }));
    let (url, server) = start(fixed_source().with_gate(gate.clone())).await;
    let response = get(&format!("{url}/metrics")).await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers().get("content-type").unwrap();
    assert_eq!(content_type, CONTENT_TYPE);
    let text = response.text().await.unwrap();
    let peer = PublicKey::from_bytes([6; 32]).to_base64();
    assert!(
        text.contains("meshtun_peers{interface=\"wg7\"} 1\n"),
        "{text}"
    );
    assert!(text.contains(&format!(
        "meshtun_peer_receive_bytes_total{{interface=\"wg7\",public_key=\"{peer}\"}} 4096\n"
    )));
    assert!(text.contains("meshtun_received_packets_total{interface=\"wg7\"} 21\n"));
    assert!(text.contains("meshtun_gate_membership{interface=\"wg7\",state=\"lost\"} 1\n"));
    assert!(text.contains("meshtun_gate_cutoffs_total{interface=\"wg7\"} 2\n"));
    assert!(
        text.contains("meshtun_gate_membership_refused_total{interface=\"wg7\"} 4\n"),
        "{text}"
    );
    assert!(!text.contains(&PresharedKey::from_bytes([8; 32]).to_base64()));
    assert!(!text.contains(&PrivateKey::from_bytes([5; 32]).to_base64()));
    // Values are read at each scrape.
    gate.lock().cutoffs = 3;
    let text = get(&format!("{url}/metrics")).await.text().await.unwrap();
    assert!(
        text.contains("meshtun_gate_cutoffs_total{interface=\"wg7\"} 3\n"),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn only_get_metrics_is_served() {
    let (url, server) = start(fixed_source()).await;
    for path in ["/", "/metrics/", "/debug", "/v1/status"] {
        assert_eq!(get(&format!("{url}{path}")).await.status(), 404, "{path}");
    }
    let client = reqwest::Client::new();
    let post = timeout(WAIT, client.post(format!("{url}/metrics")).send())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(post.status(), 405);
    server.stop().await;
}

#[tokio::test]
async fn a_device_that_is_gone_answers_503() {
    let (url, server) = start(MetricsSource::new(|| None)).await;
    assert_eq!(get(&format!("{url}/metrics")).await.status(), 503);
    server.stop().await;
}

#[tokio::test]
async fn dropping_the_server_closes_the_port() {
    let (url, server) = start(fixed_source()).await;
    assert_eq!(get(&format!("{url}/metrics")).await.status(), 200);
    drop(server);
    let mut refused = false;
    for _ in 0..50 {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        if timeout(WAIT, client.get(format!("{url}/metrics")).send())
            .await
            .unwrap()
            .is_err()
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "{url} still answers after the server was dropped");
}

#[tokio::test]
async fn stop_is_bounded_by_a_client_that_never_finishes_its_request() {
    use tokio::io::AsyncWriteExt as _;
    let (url, server) = start(fixed_source()).await;
    let addr = url.trim_start_matches("http://");
    let mut stuck = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Half a request head; the server, having accepted the connection, waits for the rest.
    let half: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: x\r\n";
    stuck.write_all(half).await.unwrap();
    // Not a wait for a condition this test can observe (nothing outside the server shows
    // that it accepted the connection): a loopback accept takes far less than this.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    timeout(STOP_TIMEOUT + WAIT, server.stop())
        .await
        .expect("stop did not return");
    assert!(started.elapsed() <= STOP_TIMEOUT + Duration::from_secs(1));
}

#[tokio::test]
async fn a_taken_port_is_an_error_naming_the_address() {
    let taken = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let addr = taken.local_addr().unwrap();
    let error = bind(addr).await.unwrap_err();
    let message = meshtun_proto::report::describe(&error);
    assert!(
        message.starts_with(&format!("cannot listen for metrics on {addr}: ")),
        "{message}"
    );
}

/// A device on the in-memory network at 192.0.2.`host`, with `peers`.
fn device(
    net: &Network,
    host: u8,
    key: &PrivateKey,
    peers: Vec<PeerSettings>,
) -> (Arc<Device<ChannelTun, ChannelUdpFactory>>, TunHandle) {
    let (tun, handle) = ChannelTun::pair();
    let settings = DeviceSettings {
        private_key: key.clone(),
        listen_port: Some(51820),
        fwmark: None,
        peers,
    };
    let ip = IpAddr::from([192, 0, 2, host]);
    let device = Device::start("mt-metrics", tun, net.host(ip), 1420, &settings).unwrap();
    (Arc::new(device), handle)
}

fn peer_of(key: &PrivateKey, inner: &str, endpoint: Option<&str>) -> PeerSettings {
    PeerSettings {
        probes: Vec::new(),
        public_key: key.public_key(),
        preshared_key: None,
        endpoint: endpoint.map(|e| e.parse().unwrap()),
        allowed_ips: vec![inner.parse().unwrap()],
        persistent_keepalive: None,
        forward: false,
    }
}

/// An IPv4 packet from 100.64.0.1 to 100.64.0.2 with a correct length field.
fn packet() -> Vec<u8> {
    let payload = b"metrics";
    let total = 20 + payload.len();
    let mut p = vec![0x45, 0, 0, total as u8, 0, 0, 0, 0, 64, 17, 0, 0];
    p.extend_from_slice(&[100, 64, 0, 1, 100, 64, 0, 2]);
    p.extend_from_slice(payload);
    p
}

#[tokio::test]
async fn a_running_device_reports_its_handshake_and_traffic() {
    let net = Network::new();
    let (ka, kb) = (
        PrivateKey::from_bytes([11; 32]),
        PrivateKey::from_bytes([12; 32]),
    );
    let (alice, alice_tun) = device(
        &net,
        1,
        &ka,
        vec![peer_of(&kb, "100.64.0.2/32", Some("192.0.2.2:51820"))],
    );
    let (_bob, mut bob_tun) = device(&net, 2, &kb, vec![peer_of(&ka, "100.64.0.1/32", None)]);
    // Bytes on the wire each way, as the network sees them.
    let wire = Arc::new(Mutex::new((0usize, 0usize)));
    let seen = wire.clone();
    net.set_tap(move |src, _, datagram| {
        let mut seen = seen.lock();
        if src.ip() == IpAddr::from([192, 0, 2, 1]) {
            seen.0 += datagram.len();
        } else {
            seen.1 += datagram.len();
        }
        true
    });
    alice_tun.to_device.send(packet()).await.unwrap();
    let delivered = timeout(WAIT, bob_tun.from_device.recv()).await.unwrap();
    assert_eq!(delivered, Some(packet()));
    let source = MetricsSource::for_device(&alice);
    let text = source.render().expect("the device runs");
    let (sent, received) = *wire.lock();
    let bob = kb.public_key().to_base64();
    let series = |name: &str| format!("{name}{{interface=\"mt-metrics\",public_key=\"{bob}\"}}");
    assert!(
        text.contains("meshtun_peers{interface=\"mt-metrics\"} 1\n"),
        "{text}"
    );
    assert!(text.contains(&format!(
        "{} ",
        series("meshtun_peer_last_handshake_age_seconds")
    )));
    let tx = format!("{} {sent}\n", series("meshtun_peer_transmit_bytes_total"));
    assert!(text.contains(&tx), "{tx} in:\n{text}");
    let rx = format!(
        "{} {received}\n",
        series("meshtun_peer_receive_bytes_total")
    );
    assert!(text.contains(&rx), "{rx} in:\n{text}");
    assert!(text.contains("meshtun_sent_packets_total{interface=\"mt-metrics\"} 1\n"));
    // The source holds the device weakly: once the daemon drops it, scrapes answer 503.
    drop(alice);
    assert!(source.render().is_none());
}
