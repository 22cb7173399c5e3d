//! The `[metrics]` endpoint of real daemons: two nodes in two namespaces, one serving on
//! IPv4 loopback and one on IPv6 loopback; after a ping, each reports its peer's handshake
//! and transfer, with the right content type, and no key. A taken port stops the start, and
//! the port closes when the daemon stops.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use meshtun_e2e::config::{write_secret, Metrics, Node};
use meshtun_e2e::traffic::assert_ping;
use meshtun_e2e::{meshtun_in, require_root, uapi_socket, Daemon, Family, Netns, Veth};

const WAIT: Duration = Duration::from_secs(5);

/// An HTTP answer: the status code, the content type and the body.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

/// `GET path` from `addr`, inside `ns`.
fn http_get(ns: &Netns, addr: SocketAddr, path: &str) -> std::io::Result<Answer> {
    ns.enter(|| {
        let mut stream = TcpStream::connect_timeout(&addr, WAIT)?;
        stream.set_read_timeout(Some(WAIT))?;
        stream.set_write_timeout(Some(WAIT))?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes())?;
        let mut raw = String::new();
        stream.read_to_string(&mut raw)?;
        Ok(parse_answer(&raw))
    })
}

fn parse_answer(raw: &str) -> Answer {
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP answer: {raw:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let content_type = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| value.trim().to_owned())
        .unwrap_or_default();
    Answer {
        status,
        content_type,
        body: body.to_owned(),
    }
}

/// The value of the sample written exactly as `series`, if there is one.
fn value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

/// Scrapes `addr` in `ns` and checks what it says about `me` and its one peer `peer`.
fn check_scrape(ns: &Netns, addr: SocketAddr, me: &Node, peer: &Node) {
    let answer = http_get(ns, addr, "/metrics").expect("the metrics endpoint answers");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let body = &answer.body;
    let iface = &me.name;
    let key = &peer.keys.public;
    let series = |name: &str| format!("{name}{{interface=\"{iface}\",public_key=\"{key}\"}}");
    assert_eq!(
        value(body, &format!("meshtun_peers{{interface=\"{iface}\"}}")),
        Some(1.0),
        "{body}"
    );
    let age = value(body, &series("meshtun_peer_last_handshake_age_seconds"));
    assert!(age.is_some_and(|a| (0.0..60.0).contains(&a)), "{body}");
    // At least a handshake message (92 or 148 bytes) and an encrypted packet each way.
    for name in [
        "meshtun_peer_transmit_bytes_total",
        "meshtun_peer_receive_bytes_total",
    ] {
        let bytes = value(body, &series(name));
        assert!(bytes.is_some_and(|b| b >= 92.0 + 32.0), "{name}: {body}");
    }
    let received = value(
        body,
        &format!("meshtun_received_packets_total{{interface=\"{iface}\"}}"),
    );
    assert!(received.is_some_and(|n| n >= 1.0), "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert!(!body.contains("meshtun_gate"), "an ungated node: {body}");
    for secret in [&me.keys.private, &peer.keys.private] {
        assert!(!body.contains(secret.as_str()), "a private key in:\n{body}");
    }
}

#[test]
fn metrics_of_a_running_pair_over_ipv4_and_ipv6_loopback() {
    if !require_root("metrics_of_a_running_pair") {
        return;
    }
    let (ns_a, ns_b) = (Netns::new("metrics_a"), Netns::new("metrics_b"));
    let veth = Veth::connect(&ns_a, &ns_b, 0);
    let (a, b) = (Node::new("ma", 1), Node::new("mb", 2));
    let (listen_a, listen_b): (SocketAddr, SocketAddr) = (
        "127.0.0.1:9586".parse().unwrap(),
        "[::1]:9586".parse().unwrap(),
    );
    let mut ca = a.config();
    ca.peers
        .push(b.as_peer().endpoint(veth.b_addr(Family::V4), b.port));
    ca.metrics = Some(Metrics {
        listen: listen_a.to_string(),
    });
    let mut cb = b.config();
    cb.peers.push(a.as_peer());
    cb.metrics = Some(Metrics {
        listen: listen_b.to_string(),
    });
    let da = Daemon::start(&ns_a, &ca);
    let db = Daemon::start(&ns_b, &cb);

    assert_ping(&ns_a, b.v4.into());
    check_scrape(&ns_a, listen_a, &a, &b);
    check_scrape(&ns_b, listen_b, &b, &a);
    let other = http_get(&ns_a, listen_a, "/debug").expect("the endpoint answers");
    assert_eq!(other.status, 404, "{other:?}");

    da.stop_cleanly();
    db.stop_cleanly();
    for (ns, addr) in [(&ns_a, listen_a), (&ns_b, listen_b)] {
        let after = http_get(ns, addr, "/metrics");
        assert!(
            after.is_err(),
            "{addr} still answers after the daemon stopped: {after:?}"
        );
    }
}

#[test]
fn a_taken_metrics_port_stops_the_start() {
    if !require_root("a_taken_metrics_port_stops_the_start") {
        return;
    }
    let ns = Netns::new("metrics_taken");
    let listen: SocketAddr = "127.0.0.1:9586".parse().unwrap();
    let _taken = ns.enter(|| TcpListener::bind(listen).expect("bind in the namespace"));
    let node = Node::new("mt", 1);
    let mut config = node.config();
    config.metrics = Some(Metrics {
        listen: listen.to_string(),
    });
    let dir = tempfile::tempdir().unwrap();
    let path = write_secret(
        dir.path(),
        &format!("{}.toml", node.name),
        &config.to_toml(),
    );
    let out = meshtun_in(
        &ns,
        &["up", path.to_str().unwrap()],
        Duration::from_secs(10),
    );
    let message = format!("{}{}", out.stderr, out.stdout);
    assert!(
        !out.success(),
        "`meshtun up` started on a taken port:\n{message}"
    );
    assert!(
        message.contains("cannot listen for metrics on 127.0.0.1:9586"),
        "{message}"
    );
    assert!(
        !ns.has_link(&node.name),
        "interface {} left behind",
        node.name
    );
    assert!(
        !uapi_socket(&node.name).exists(),
        "UAPI socket of {} left behind",
        node.name
    );
}
