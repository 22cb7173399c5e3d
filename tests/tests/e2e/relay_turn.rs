//! The blind relay (issue 15, item 4b): Debian's coturn with `use-auth-secret`, and relay
//! credentials from a real `meshtun-controller` with `[relay]`, used by meshtun's TURN
//! client (`meshtun::relay::RelayClient`) over a UDP socket in the relay's namespace.
//!
//! - `a_gated_node_allocates_with_its_bundle_credentials_and_forged_ones_are_refused`: an
//!   allowed node's bundle carries credentials sealed to it; with them coturn allocates a
//!   relayed address (its log names the node's username), a WireGuard-sized datagram passes
//!   to a peer and back through the channel blind; a password made with another secret,
//!   and the real password with a later expiry written into the username, get 401.
//! - `a_gated_daemon_allocates_from_its_wireguard_socket_and_drops_it_when_denied`: a real
//!   gated daemon allocates on coturn from its WireGuard socket with its bundle's
//!   credentials; `meshtun show` prints the relay, the relayed address and the expiry, and
//!   coturn's log the node's username; denied, the daemon drops the allocation.
//! - `two_wireguard_peers_handshake_and_exchange_data_through_their_allocations`: two
//!   WireGuard peers (boringtun) each with an allocation, talking only through the relayed
//!   addresses: handshake and data pass, unchanged; prints a rough relay rate.
//! - `a_denied_nodes_credentials_stop_working_by_the_end_of_its_epoch`: once the node is
//!   denied, its bundle has no relay credentials; once the last ones expire (the end of the
//!   epoch it was allowed in), coturn refuses a new Allocate with them (401). KNOWN GAP,
//!   pinned here: coturn checks TURN REST credentials only when a session is created
//!   (coturn issues 774 and 1204), so it still accepts the Refresh of an allocation made
//!   before the expiry; the README says what that leaves a denied node.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meshtun::relay::{RelayClient, RelayInbound};
use meshtun_e2e::controller::{benchmark_body, now_ms, Client, ControllerHome, TestNode};
use meshtun_e2e::coturn::Coturn;
use meshtun_e2e::gating::observe::show_gate;
use meshtun_e2e::gating::{Mesh, Timing};
use meshtun_e2e::{require_root, write_0600, Netns};
use meshtun_proto::bundle::{Bundle, Membership, Opener, SignedBundle};
use meshtun_proto::relay::{BundleRelay, RelayPassword, RelaySecret};

const RELAY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const NODE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const PEER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);

/// How long an allocation (401, then the authenticated Allocate) may take.
const ALLOCATE: Duration = Duration::from_secs(5);
/// How long a refused client is watched.
const REFUSED: Duration = Duration::from_secs(3);
/// Epochs of 4 s, published 1 s ahead: credentials expire within seconds.
const SETTINGS: &str = "[epoch]\nlength = 4\nlead = 1\n\
    [relay]\nurls = [\"turn:198.51.100.1:3478\"]\nsecret_file = \"relay.secret\"\n";

/// The allocation lifetime coturn grants the client (it asks for 1800 s, coturn's maximum
/// is 3600 s); the client refreshes 60 s before it ends.
const LIFETIME: Duration = Duration::from_secs(1800);

struct Setup {
    home: ControllerHome,
    ns: Netns,
    node: TestNode,
    client: Client,
    secret: String,
}

fn setup(test: &str) -> Setup {
    let ns = Netns::new(test);
    for ip in [RELAY, NODE, PEER] {
        ns.ip(&["addr", "add", &format!("{ip}/32"), "dev", "lo"]);
    }
    let home = ControllerHome::new(SETTINGS);
    let secret = format!("relay-secret-{}", meshtun_e2e::unique_suffix());
    write_0600(&home.root().join("relay.secret"), &secret);
    let node = TestNode::generate("relayed", 2);
    home.enroll(&node);
    home.init();
    let client = home.client();
    Setup {
        home,
        ns,
        node,
        client,
        secret,
    }
}

fn unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The node's current bundle, checked with the controller's key.
fn bundle(s: &Setup) -> Bundle {
    let reply = s.client.bundle(&s.node, None).expect("bundle request");
    assert_eq!(reply.status, 200, "bundle: {}", reply.text());
    let signed: SignedBundle = reply.json();
    signed
        .verify(&s.home.controller_key().expect("the controller key"))
        .expect("the bundle verifies")
}

/// Waits (bounded) until `check` holds for the node's bundle; returns that bundle.
fn wait_bundle(s: &Setup, what: &str, check: impl Fn(&Bundle) -> bool) -> Bundle {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let b = bundle(s);
        if check(&b) {
            return b;
        }
        assert!(
            Instant::now() < deadline,
            "no bundle {what} within 15 s: {b:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The relay part of an allowed bundle and its password, opened with the node's key.
fn credentials(s: &Setup, b: &Bundle) -> (BundleRelay, RelayPassword) {
    let relay = b
        .relay
        .clone()
        .expect("an allowed node gets relay credentials");
    let password = Opener::new(&s.node.wg, &b.seal_key.expect("a seal key"))
        .open_relay(b.epoch, &relay)
        .expect("the node opens its relay password");
    (relay, password)
}

/// A TURN client on a UDP socket in the relay's namespace, its clock running `offset`
/// ahead of the real one (to reach the Refresh without waiting half an hour).
struct Driven {
    client: RelayClient,
    socket: UdpSocket,
    offset: Duration,
    /// The STUN message types sent and received, in order.
    sent: Vec<u16>,
    received: Vec<u16>,
}

/// The STUN message type of a datagram (0 for ChannelData and anything else).
fn stun_type(data: &[u8]) -> u16 {
    match data {
        [a, b, ..] if a & 0xc0 == 0 && data.len() >= 20 => u16::from_be_bytes([*a, *b]),
        _ => 0,
    }
}

/// Refresh request and its success response (RFC 8656: method 0x004).
const REFRESH: u16 = 0x0004;
const REFRESH_SUCCESS: u16 = 0x0104;

impl Driven {
    fn new(ns: &Netns, coturn: &Coturn<'_>, username: &str, password: &RelayPassword) -> Self {
        Self::from(ns, NODE, coturn, username, password)
    }

    /// A client on a socket bound to `ip` (an address of `ns`).
    fn from(
        ns: &Netns,
        ip: Ipv4Addr,
        coturn: &Coturn<'_>,
        username: &str,
        password: &RelayPassword,
    ) -> Self {
        let socket = ns.enter(|| UdpSocket::bind(SocketAddr::from((ip, 0))).unwrap());
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let local = socket.local_addr().unwrap();
        let expires = username
            .split_once(':')
            .and_then(|(e, _)| e.parse().ok())
            .unwrap_or(0);
        let client = RelayClient::allocate(
            local,
            coturn.addr(),
            username,
            password,
            expires,
            Instant::now(),
        );
        Self {
            client,
            socket,
            offset: Duration::ZERO,
            sent: Vec::new(),
            received: Vec::new(),
        }
    }

    fn now(&self) -> Instant {
        Instant::now() + self.offset
    }

    /// Runs the client for at most `limit`, or until `done`; whether `done` held.
    fn run(&mut self, limit: Duration, done: impl Fn(&Self) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 2048];
        while Instant::now() < deadline {
            if done(self) {
                return true;
            }
            let now = self.now();
            self.client.poll(now);
            while let Some((to, data)) = self.client.poll_transmit(now) {
                self.sent.push(stun_type(&data));
                self.socket.send_to(&data, to).unwrap();
            }
            if let Ok((n, from)) = self.socket.recv_from(&mut buf) {
                self.received.push(stun_type(&buf[..n]));
                let now = self.now();
                self.client.handle(from, &buf[..n], now);
            }
        }
        done(self)
    }

    fn allocated(&mut self) -> bool {
        self.run(ALLOCATE, |d| d.client.relayed().is_some())
    }
}

fn start_coturn<'ns>(s: &'ns Setup) -> Coturn<'ns> {
    Coturn::start(&s.ns, s.home.root(), IpAddr::V4(RELAY), &s.secret)
}

/// Whether a client with these credentials is refused: never allocated, and 401 seen.
fn refused(s: &Setup, coturn: &Coturn<'_>, username: &str, password: &RelayPassword) -> bool {
    let mut attempt = Driven::new(&s.ns, coturn, username, password);
    let allocated = attempt.run(REFUSED, |d| d.client.relayed().is_some());
    eprintln!("{username}: {:?}", attempt.client.status());
    !allocated && attempt.client.status().last_error == Some(401)
}

#[test]
fn a_gated_node_allocates_with_its_bundle_credentials_and_forged_ones_are_refused() {
    if !require_root(
        "a_gated_node_allocates_with_its_bundle_credentials_and_forged_ones_are_refused",
    ) {
        return;
    }
    let s = setup("relay_allocate");
    let mut controller = s.home.serve("info", &s.home.root().join("controller.log"));
    controller.wait_ready();
    let coturn = start_coturn(&s);
    let reply = s
        .client
        .submit_benchmark(&s.node, benchmark_body(1, 0.9, now_ms()))
        .unwrap();
    assert_eq!(reply.status, 201, "{}", reply.text());
    let b = wait_bundle(&s, "allowed with relay credentials", |b| {
        b.membership == Membership::Allowed && b.relay.is_some()
    });
    let (relay, password) = credentials(&s, &b);
    assert_eq!(relay.urls, ["turn:198.51.100.1:3478"]);
    assert_eq!(relay.username, format!("{}:relayed", relay.expires_s));
    assert_eq!(relay.expires_s, b.not_after_ms.div_ceil(1000));
    assert!(
        !s.home.root().join("controller.log").exists()
            || !std::fs::read_to_string(s.home.root().join("controller.log"))
                .unwrap()
                .contains(password.expose()),
        "the controller never logs a relay password"
    );

    let started = Instant::now();
    let mut node = Driven::new(&s.ns, &coturn, &relay.username, &password);
    assert!(
        node.allocated(),
        "no allocation within {ALLOCATE:?}: {:?}; coturn's log:\n{}",
        node.client.status(),
        coturn.log()
    );
    eprintln!("allocated in {:?}", started.elapsed());
    let relayed = node.client.relayed().unwrap();
    assert_eq!(relayed.ip(), IpAddr::V4(RELAY));
    assert!(
        coturn
            .log()
            .contains(&format!("username=<{}>", relay.username)),
        "coturn's log does not show the node's allocation:\n{}",
        coturn.log()
    );

    // A peer's datagram through the channel, both ways, byte for byte.
    let peer =
        s.ns.enter(|| UdpSocket::bind(SocketAddr::from((PEER, 0))).unwrap());
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let now = node.now();
    node.client.add_peer(peer_addr, now).unwrap();
    assert!(
        node.run(ALLOCATE, |d| d.client.status().channels == 1),
        "no channel: {:?}",
        node.client.status()
    );
    let mut wg = vec![4u8, 0, 0, 0];
    wg.extend((0..1400u32).map(|i| i as u8));
    let (to, framed) = node.client.send(peer_addr, &wg, node.now()).unwrap();
    node.socket.send_to(&framed, to).unwrap();
    let mut buf = vec![0u8; 2048];
    let (n, from) = peer
        .recv_from(&mut buf)
        .expect("the peer gets the datagram");
    assert_eq!(from, relayed, "it comes from the relayed address");
    assert_eq!(
        &buf[..n],
        &wg[..],
        "unchanged: the relay adds and reads nothing"
    );
    peer.send_to(&wg, relayed).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut back = None;
    while back.is_none() && Instant::now() < deadline {
        if let Ok((n, from)) = node.socket.recv_from(&mut buf) {
            let now = node.now();
            if let RelayInbound::PeerData { peer, data } = node.client.handle(from, &buf[..n], now)
            {
                back = Some((peer, data));
            }
        }
    }
    assert_eq!(
        back,
        Some((peer_addr, wg.clone())),
        "the peer's answer comes back"
    );

    // Forged: another secret; the real password with a later expiry in the username.
    let (user, forged) = RelaySecret::new("not-the-secret").mint("relayed", unix_s() + 3600);
    assert!(refused(&s, &coturn, &user, &forged), "{}", coturn.log());
    let longer = format!("{}:relayed", relay.expires_s + 3600);
    assert!(refused(&s, &coturn, &longer, &password), "{}", coturn.log());
    assert!(coturn.log().contains("401"), "{}", coturn.log());
}

#[test]
fn a_denied_nodes_credentials_stop_working_by_the_end_of_its_epoch() {
    if !require_root("a_denied_nodes_credentials_stop_working_by_the_end_of_its_epoch") {
        return;
    }
    let s = setup("relay_denied");
    let mut controller = s.home.serve("info", &s.home.root().join("controller.log"));
    controller.wait_ready();
    let coturn = start_coturn(&s);
    let reply = s
        .client
        .submit_benchmark(&s.node, benchmark_body(1, 0.9, now_ms()))
        .unwrap();
    assert_eq!(reply.status, 201, "{}", reply.text());
    let b = wait_bundle(&s, "allowed with relay credentials", |b| {
        b.membership == Membership::Allowed && b.relay.is_some()
    });
    let (relay, password) = credentials(&s, &b);
    let mut node = Driven::new(&s.ns, &coturn, &relay.username, &password);
    assert!(
        node.allocated(),
        "{:?}\n{}",
        node.client.status(),
        coturn.log()
    );

    // Denied: the next bundle carries no credentials.
    let reply = s
        .client
        .submit_benchmark(&s.node, benchmark_body(2, 0.1, now_ms()))
        .unwrap();
    assert_eq!(reply.status, 201, "{}", reply.text());
    let denied = wait_bundle(&s, "denied", |b| {
        matches!(b.membership, Membership::Denied { .. })
    });
    assert_eq!(
        denied.relay, None,
        "a denied node gets no relay credentials"
    );

    // The last credentials it got expire with the epoch they were issued for.
    let newest = bundle(&s);
    assert!(newest.relay.is_none());
    let wait = Duration::from_secs(relay.expires_s + 1)
        .saturating_sub(SystemTime::now().duration_since(UNIX_EPOCH).unwrap());
    assert!(
        wait <= Duration::from_secs(10),
        "credentials live {wait:?} more"
    );
    eprintln!("credentials expire in {wait:?}");
    std::thread::sleep(wait);

    // A new Allocate with them is refused.
    assert!(
        refused(&s, &coturn, &relay.username, &password),
        "{}",
        coturn.log()
    );

    // KNOWN GAP: the Refresh of the allocation made before the expiry (reached by running
    // the client's clock ahead) is still accepted by coturn 4.6. When the relay sessions of
    // denied nodes are cancelled (coturn's admin interface), this assertion flips.
    let before = node.sent.len();
    node.offset = LIFETIME - Duration::from_secs(50);
    let refreshed = node.run(REFUSED, |d| {
        d.sent[before..].contains(&REFRESH) && d.received.contains(&REFRESH_SUCCESS)
    });
    assert!(
        refreshed,
        "coturn no longer accepts the expired Refresh: the gap is closed, update the README \
         and this test: sent {:x?}, received {:x?}, {:?}\n{}",
        node.sent,
        node.received,
        node.client.status(),
        coturn.log()
    );
    assert!(
        coturn.log().contains(&format!(
            "refreshed, realm=<meshtun.test>, username=<{}>",
            relay.username
        )),
        "{}",
        coturn.log()
    );
}

/// The relay on the gated mesh's bridge.
const BRIDGE_RELAY: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 251);

/// The relay part of `meshtun show --json` for node `id` (null without one).
fn shown_relay(mesh: &Mesh, id: &str) -> serde_json::Value {
    let node = mesh.node(id);
    show_gate(&node.ns, &node.iface)["relay"].clone()
}

/// Waits (bounded) until `check` holds for what `meshtun show` says of the relay.
fn wait_shown(mesh: &Mesh, what: &str, check: impl Fn(&serde_json::Value) -> bool) {
    let mut last = serde_json::Value::Null;
    let ok = meshtun_e2e::wait_until(Duration::from_secs(20), || {
        last = shown_relay(mesh, "a");
        check(&last)
    });
    assert!(ok, "`meshtun show` never showed the relay {what}: {last}");
}

#[test]
fn a_gated_daemon_allocates_from_its_wireguard_socket_and_drops_it_when_denied() {
    if !require_root("a_gated_daemon_allocates_from_its_wireguard_socket_and_drops_it_when_denied")
    {
        return;
    }
    let mesh = Mesh::new("relay_daemon", Timing::default(), &["a"]);
    let secret = format!("relay-secret-{}", meshtun_e2e::unique_suffix());
    write_0600(&mesh.home().root().join("relay.secret"), &secret);
    mesh.add_controller_settings(
        0,
        &format!(
            "[relay]\nurls = [\"turn:{BRIDGE_RELAY}:3478\"]\nsecret_file = \"relay.secret\"\n"
        ),
    );
    let relay_ns = mesh.attach(251);
    let dir = mesh.dir().join("coturn");
    std::fs::create_dir(&dir).unwrap();
    let coturn = Coturn::start(&relay_ns, &dir, IpAddr::V4(BRIDGE_RELAY), &secret);
    let _ctl = mesh.start_controller();
    let started = Instant::now();
    let daemon = mesh.start_node("a", Vec::new());

    wait_shown(&mesh, "allocated", |r| r["state"] == "allocated");
    eprintln!("daemon start to allocation: {:?}", started.elapsed());
    let relay = shown_relay(&mesh, "a");
    assert_eq!(relay["server"], format!("{BRIDGE_RELAY}:3478"));
    let relayed: SocketAddr = relay["relayed"].as_str().unwrap().parse().unwrap();
    assert_eq!(relayed.ip(), IpAddr::V4(BRIDGE_RELAY));
    let text = {
        let node = mesh.node("a");
        meshtun_e2e::meshtun_in(
            &node.ns,
            &["show", &node.iface, "--no-probe"],
            Duration::from_secs(10),
        )
        .expect_success()
    };
    assert!(
        text.contains(&format!("  relayed address: {relayed}")),
        "{text}"
    );
    // coturn saw the node's username.
    let log = coturn.log();
    assert!(
        log.lines()
            .any(|l| l.contains("new, realm=<meshtun.test>, username=<") && l.contains(":a>")),
        "{log}"
    );

    // The password (recomputed here from the shared secret) appears in no output.
    let username = format!("{}:a", relay["expires_s"]);
    let password = RelaySecret::new(&secret).password(&username);
    for (what, out) in [
        ("the daemon's log", daemon.log()),
        ("meshtun show", text.clone()),
        ("meshtun show --json", relay.to_string()),
    ] {
        assert!(
            !out.contains(password.expose()),
            "{what} shows the relay password"
        );
    }

    // Denied: the next bundle has no credentials and the daemon drops its allocation.
    mesh.set_score("a", 0.1);
    wait_shown(&mesh, "dropped once denied", serde_json::Value::is_null);
}

/// Sends `datagram` to `peer` through `from`'s allocation.
fn relay_send(from: &mut Driven, peer: SocketAddr, datagram: &[u8]) {
    let (to, framed) = from
        .client
        .send(peer, datagram, from.now())
        .unwrap_or_else(|e| panic!("not relayed: {e}"));
    from.socket.send_to(&framed, to).unwrap();
}

/// The next datagram a peer sent `to` through its allocation, within `limit`.
fn relay_recv(to: &mut Driven, limit: Duration) -> Option<(SocketAddr, Vec<u8>)> {
    let deadline = Instant::now() + limit;
    let mut buf = vec![0u8; 2048];
    while Instant::now() < deadline {
        let now = to.now();
        to.client.poll(now);
        while let Some((dst, data)) = to.client.poll_transmit(now) {
            to.socket.send_to(&data, dst).unwrap();
        }
        if let Ok((n, from)) = to.socket.recv_from(&mut buf) {
            if let RelayInbound::PeerData { peer, data } = to.client.handle(from, &buf[..n], now) {
                return Some((peer, data));
            }
        }
    }
    None
}

/// A minimal IPv4/UDP packet from 100.64.0.1 to 100.64.0.2 with `len` bytes in all.
fn inner_packet(len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[100, 64, 0, 1]);
    p[16..20].copy_from_slice(&[100, 64, 0, 2]);
    p
}

/// Two WireGuard peers (boringtun's `Tunn`), each with its own allocation on coturn, talk
/// only through the relayed addresses: handshake and data pass, and the datagrams that
/// arrive are byte for byte the ones sent (the relay reads and changes nothing). Prints
/// the datagram rate through the two allocations against a direct path on this machine.
#[test]
fn two_wireguard_peers_handshake_and_exchange_data_through_their_allocations() {
    use boringtun::noise::{Tunn, TunnResult};
    use boringtun::x25519;
    if !require_root("two_wireguard_peers_handshake_and_exchange_data_through_their_allocations") {
        return;
    }
    let ns = Netns::new("relay_wg");
    for ip in [RELAY, NODE, PEER] {
        ns.ip(&["addr", "add", &format!("{ip}/32"), "dev", "lo"]);
    }
    let dir = tempfile::tempdir().unwrap();
    let secret = format!("relay-secret-{}", meshtun_e2e::unique_suffix());
    let coturn = Coturn::start(&ns, dir.path(), IpAddr::V4(RELAY), &secret);
    let mint = |id: &str| RelaySecret::new(&secret).mint(id, unix_s() + 600);
    let ((ua, pa), (ub, pb)) = (mint("a"), mint("b"));
    let mut a = Driven::from(&ns, NODE, &coturn, &ua, &pa);
    let mut b = Driven::from(&ns, PEER, &coturn, &ub, &pb);
    assert!(a.allocated() && b.allocated(), "{}", coturn.log());
    let (ra, rb) = (a.client.relayed().unwrap(), b.client.relayed().unwrap());
    a.client.add_peer(rb, a.now()).unwrap();
    b.client.add_peer(ra, b.now()).unwrap();
    for d in [&mut a, &mut b] {
        assert!(
            d.run(ALLOCATE, |d| d.client.status().channels == 1),
            "no channel: {:?}\n{}",
            d.client.status(),
            coturn.log()
        );
    }

    let key = || {
        let mut k = [0u8; 32];
        fastrand::fill(&mut k);
        x25519::StaticSecret::from(k)
    };
    let (ska, skb) = (key(), key());
    let (pka, pkb) = (x25519::PublicKey::from(&ska), x25519::PublicKey::from(&skb));
    let mut ta = Tunn::new(ska, pkb, None, None, 1, None);
    let mut tb = Tunn::new(skb, pka, None, None, 2, None);
    let mut out = vec![0u8; 2048];
    let TunnResult::WriteToNetwork(init) = ta.format_handshake_initiation(&mut out, false) else {
        panic!("no initiation");
    };
    relay_send(&mut a, rb, init);
    let (from, init) = relay_recv(&mut b, Duration::from_secs(2)).expect("the initiation");
    assert_eq!(from, ra, "it comes from a's relayed address");
    let TunnResult::WriteToNetwork(response) = tb.decapsulate(Some(from.ip()), &init, &mut out)
    else {
        panic!("b does not answer the initiation");
    };
    relay_send(&mut b, ra, response);
    let (_, response) = relay_recv(&mut a, Duration::from_secs(2)).expect("the response");
    let mut out2 = vec![0u8; 2048];
    match ta.decapsulate(Some(rb.ip()), &response, &mut out2) {
        TunnResult::WriteToNetwork(keepalive) => relay_send(&mut a, rb, keepalive),
        TunnResult::Done => {}
        other => panic!("a refuses the response: {other:?}"),
    }
    let packet = inner_packet(1200);
    let TunnResult::WriteToNetwork(data) = ta.encapsulate(&packet, &mut out) else {
        panic!("no session");
    };
    let sent = data.to_vec();
    relay_send(&mut a, rb, &sent);
    let mut got = None;
    while let Some((_, d)) = relay_recv(&mut b, Duration::from_secs(2)) {
        if d.len() == sent.len() {
            got = Some(d);
            break;
        }
        let _ = tb.decapsulate(Some(ra.ip()), &d, &mut out2); // the keepalive
    }
    let got = got.expect("the data message");
    assert_eq!(got, sent, "unchanged by the relay");
    match tb.decapsulate(Some(ra.ip()), &got, &mut out2) {
        TunnResult::WriteToTunnelV4(inner, src) => {
            assert_eq!(inner, &packet[..]);
            assert_eq!(src, Ipv4Addr::new(100, 64, 0, 1));
        }
        other => panic!("b does not open the data: {other:?}"),
    }

    // Rate: 1400-byte datagrams, 32 at a time, for at most 2 s or 20,000 datagrams.
    let payload = vec![4u8; 1400];
    let relayed = rate(&mut |_| relay_send(&mut a, rb, &payload), &mut b, true);
    let direct_to = b.socket.local_addr().unwrap();
    let direct = rate(
        &mut |_| {
            a.socket.send_to(&payload, direct_to).unwrap();
        },
        &mut b,
        false,
    );
    eprintln!(
        "1400-byte datagrams per second through two allocations: {relayed:.0}; direct: {direct:.0}"
    );
    assert!(relayed > 0.0);
}

/// Datagrams per second that reach `to` (through its allocation if `relayed`), sent 32 at
/// a time without pacing for at most 2 s or 20,000 datagrams, until the last one arrived
/// (the rest is lost on the way).
fn rate(send: &mut dyn FnMut(usize), to: &mut Driven, relayed: bool) -> f64 {
    let started = Instant::now();
    let (mut sent, mut received) = (0usize, 0usize);
    let mut buf = vec![0u8; 2048];
    to.socket.set_nonblocking(true).unwrap();
    while sent < 20_000 && started.elapsed() < Duration::from_secs(2) {
        for _ in 0..32 {
            send(sent);
            sent += 1;
        }
        while let Ok((n, from)) = to.socket.recv_from(&mut buf) {
            received += arrived(to, &buf[..n], from, relayed);
        }
    }
    let mut last = Instant::now();
    to.socket.set_nonblocking(false).unwrap();
    to.socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while let Ok((n, from)) = to.socket.recv_from(&mut buf) {
        received += arrived(to, &buf[..n], from, relayed);
        last = Instant::now();
    }
    // Until the last datagram arrived.
    let elapsed = last.duration_since(started).as_secs_f64();
    eprintln!("sent {sent}, received {received} in {elapsed:.2} s");
    received as f64 / elapsed
}

/// 1 if `datagram` is a peer's datagram (through the relay if `relayed`).
fn arrived(to: &mut Driven, datagram: &[u8], from: SocketAddr, relayed: bool) -> usize {
    let now = to.now();
    usize::from(
        !relayed
            || matches!(
                to.client.handle(from, datagram, now),
                RelayInbound::PeerData { .. }
            ),
    )
}
