//! A member floods a daemon whose packet workers run at real-time priority (`[interface]
//! scheduling = "realtime"`): the host must not starve.
//!
//! B runs with `realtime`; A is an ordinary peer; M is a member with a valid session to B
//! (the test holds its key and speaks WireGuard with boringtun's `Tunn`), which floods B
//! with distinct, valid data messages (each must be decrypted and written to the tun device;
//! a replay would be dropped before decryption, which costs B next to nothing). B's threads
//! and a normal-priority "canary" thread of the test share one core (CPU 1); M sends from
//! the other. The canary sleeps 1 ms at a time and records how late it wakes.
//!
//! Asserted: B's workers ran at real time before the flood; the flood kept a worker busy
//! long enough to be demoted (`meshtun_packet_worker_demotions_total` rose); the canary never
//! waited more than [`CANARY_LIMIT`] (a worker kept at real time would hold the core until
//! the kernel's real-time throttling, 950 ms of every second); B still runs, A and B still
//! ping each other, and B's workers are back at real time after the flood.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519;
use meshtun_e2e::config::{KeyPair, Metrics, Node};
use meshtun_e2e::threads::{self, pin_me, pin_process};
use meshtun_e2e::traffic::assert_ping;
use meshtun_e2e::{exclusive, require_root, wait_until, Daemon, Family, Netns, Veth};
use meshtun_proto::PublicKey;

/// Data messages in the flood, each distinct.
const FLOOD_MESSAGES: usize = 600_000;
/// Size of each message's inner packet (IPv4/UDP to B's discard port).
const INNER_LEN: usize = 256;
/// The flood stops after this long, whatever it has sent.
const FLOOD_TIME_LIMIT: Duration = Duration::from_secs(5);
/// The longest the canary may wait beyond its 1 ms sleep.
const CANARY_LIMIT: Duration = Duration::from_millis(250);
/// The core B and the canary share.
const SHARED_CPU: usize = 1;
/// The core M floods from.
const FLOOD_CPU: usize = 0;

/// The value of metric `name` (with whatever labels) that `listen` serves in `ns`.
fn metric(ns: &Netns, listen: SocketAddr, name: &str) -> f64 {
    let text = ns.enter(|| {
        let mut stream = TcpStream::connect_timeout(&listen, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("cannot reach the metrics on {listen}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("a timeout");
        let request =
            format!("GET /metrics HTTP/1.1\r\nHost: {listen}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).expect("the request");
        let mut raw = String::new();
        stream.read_to_string(&mut raw).expect("the answer");
        raw
    });
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(name)?;
            let value = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once("} ")?.1,
                None => rest.strip_prefix(' ')?,
            };
            value.trim().parse().ok()
        })
        .unwrap_or_else(|| panic!("no {name} in the metrics:\n{text}"))
}

/// An IPv4/UDP packet of `len` bytes from `src` to `dst` port 9, with a valid header checksum.
fn inner_packet(src: [u8; 4], dst: [u8; 4], len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&u16::try_from(len).expect("a short packet").to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    let sum: u32 = p[..20]
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    let folded = (sum & 0xffff) + (sum >> 16);
    let checksum = !u16::try_from((folded & 0xffff) + (folded >> 16)).expect("folded");
    p[10..12].copy_from_slice(&checksum.to_be_bytes());
    p[20..22].copy_from_slice(&40000u16.to_be_bytes());
    p[22..24].copy_from_slice(&9u16.to_be_bytes());
    p[24..26].copy_from_slice(&u16::try_from(len - 20).expect("short").to_be_bytes());
    p
}

/// M's session with B: a handshake over `socket`, then `count` data messages encrypted in
/// advance, each carrying `inner`.
fn session_and_flood(
    m: &KeyPair,
    b_public: &str,
    socket: &UdpSocket,
    inner: &[u8],
    count: usize,
) -> Vec<Vec<u8>> {
    let secret: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(&m.private)
        .ok()
        .and_then(|k| k.try_into().ok())
        .expect("M's private key is 32 bytes of base64");
    let secret = x25519::StaticSecret::from(secret);
    let peer = x25519::PublicKey::from(PublicKey::from_base64(b_public).expect("B's key"));
    let mut tunn = Tunn::new(secret, peer, None, None, 7, None);
    let mut out = vec![0u8; 2048];
    let TunnResult::WriteToNetwork(init) = tunn.format_handshake_initiation(&mut out, false) else {
        panic!("boringtun made no handshake initiation");
    };
    socket.send(init).expect("the initiation");
    let mut buf = vec![0u8; 2048];
    let n = socket.recv(&mut buf).expect("B answers M's initiation");
    match tunn.decapsulate(None, &buf[..n], &mut out) {
        TunnResult::WriteToNetwork(keepalive) => {
            socket.send(keepalive).expect("the keepalive");
        }
        TunnResult::Done => {}
        other => panic!("M cannot complete the handshake: {other:?}"),
    }
    (0..count)
        .map(|_| match tunn.encapsulate(inner, &mut out) {
            TunnResult::WriteToNetwork(data) => data.to_vec(),
            other => panic!("no data message: {other:?}"),
        })
        .collect()
}

/// What the canary saw: its longest wait past the 1 ms sleep, and how often it woke.
#[derive(Debug)]
struct Canary {
    worst: Duration,
    wakes: u64,
}

fn canary(cpu: usize, done: &AtomicBool) -> Canary {
    pin_me(cpu);
    let (mut worst, mut wakes) = (Duration::ZERO, 0);
    let start = Instant::now();
    while !done.load(Ordering::Acquire) && start.elapsed() < FLOOD_TIME_LIMIT * 3 {
        let before = Instant::now();
        std::thread::sleep(Duration::from_millis(1));
        worst = worst.max(before.elapsed().saturating_sub(Duration::from_millis(1)));
        wakes += 1;
    }
    Canary { worst, wakes }
}

#[test]
fn a_members_flood_cannot_take_a_core_from_a_real_time_daemon() {
    if !require_root("a_members_flood_cannot_take_a_core_from_a_real_time_daemon") {
        return;
    }
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    assert!(cpus >= 2, "the test needs 2 cores, this machine has {cpus}");
    let _alone = exclusive();
    let (ns_a, ns_b, ns_m) = (
        Netns::new("rtf_a"),
        Netns::new("rtf_b"),
        Netns::new("rtf_m"),
    );
    let ab = Veth::connect(&ns_a, &ns_b, 0);
    let mb = Veth::connect(&ns_m, &ns_b, 1);
    let (a, b, m) = (Node::new("a", 1), Node::new("b", 2), Node::new("m", 3));
    let metrics: SocketAddr = "127.0.0.1:9586".parse().expect("an address");
    let mut ca = a.config();
    ca.peers
        .push(b.as_peer().endpoint(ab.b_addr(Family::V4), b.port));
    let mut cb = b.config();
    cb.interface.scheduling = Some("realtime".into());
    cb.peers
        .push(a.as_peer().endpoint(ab.a_addr(Family::V4), a.port));
    cb.peers.push(m.as_peer());
    cb.metrics = Some(Metrics {
        listen: metrics.to_string(),
    });
    let da = Daemon::start(&ns_a, &ca);
    let mut db = Daemon::start(&ns_b, &cb);
    assert_ping(&ns_a, b.v4.into());
    let pid_b = db.pid().expect("B runs");
    assert!(
        wait_until(Duration::from_secs(5), || {
            assert_ping(&ns_a, b.v4.into());
            threads::realtime(pid_b) >= 1
        }),
        "B's workers do not run at real time before the flood"
    );
    pin_process(pid_b, SHARED_CPU);

    // M's session, and its flood encrypted in advance.
    let target = SocketAddr::new(mb.b_addr(Family::V4), b.port);
    let socket = ns_m.enter(|| {
        let s = UdpSocket::bind(SocketAddr::new(mb.a_addr(Family::V4), 0)).expect("M's socket");
        s.connect(target).expect("connect to B");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("a timeout");
        s
    });
    let inner = inner_packet(m.v4.octets(), b.v4.octets(), INNER_LEN);
    let flood = session_and_flood(&m.keys, &b.keys.public, &socket, &inner, FLOOD_MESSAGES);
    let demoted_before = metric(&ns_b, metrics, "meshtun_packet_worker_demotions_total");

    let done = AtomicBool::new(false);
    let (canary, sent, took) = std::thread::scope(|s| {
        let watching = s.spawn(|| canary(SHARED_CPU, &done));
        std::thread::sleep(Duration::from_millis(100));
        pin_me(FLOOD_CPU);
        let start = Instant::now();
        let mut sent = 0usize;
        for message in &flood {
            if start.elapsed() >= FLOOD_TIME_LIMIT {
                break;
            }
            if socket.send(message).is_ok() {
                sent += 1;
            }
        }
        let took = start.elapsed();
        std::thread::sleep(Duration::from_millis(100));
        done.store(true, Ordering::Release);
        (watching.join().expect("the canary"), sent, took)
    });
    drop(flood);
    let demoted = metric(&ns_b, metrics, "meshtun_packet_worker_demotions_total") - demoted_before;
    eprintln!(
        "M sent {sent} data messages in {took:?} ({:.0}/s); B's workers were demoted {demoted} \
         times; the canary woke {} times and waited at most {:?} past its 1 ms sleep",
        sent as f64 / took.as_secs_f64(),
        canary.wakes,
        canary.worst
    );
    assert!(
        canary.worst <= CANARY_LIMIT,
        "a normal-priority thread on B's core waited {:?} during the flood (limit {CANARY_LIMIT:?})",
        canary.worst
    );
    assert!(
        demoted >= 1.0,
        "the flood never kept a worker of B busy for 50 ms: it proves nothing about starvation"
    );
    db.assert_running();
    assert_ping(&ns_a, b.v4.into());
    assert_ping(&ns_b, a.v4.into());
    assert!(
        wait_until(Duration::from_secs(5), || {
            assert_ping(&ns_a, b.v4.into());
            threads::realtime(pid_b) >= 1
        }),
        "B's workers are not back at real time after the flood"
    );
    da.stop_cleanly();
    db.stop_cleanly();
}
