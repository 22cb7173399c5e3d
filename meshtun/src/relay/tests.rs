//! The relay client against a sans-IO TURN server (`turn-server-proto`): every state, and
//! forged, replayed and off-path messages.

use super::*;
use turn_server_proto::api::{TurnServerApi, TurnServerPollRet};
use turn_server_proto::server::TurnServer;

const LOCAL: &str = "192.0.2.10:51820";
const SERVER: &str = "198.51.100.1:3478";
const RELAYED: &str = "198.51.100.1:49152";
const PEER: &str = "203.0.113.7:40000";
const USER: &str = "1700000060:node-a";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct Net {
    client: RelayClient,
    server: TurnServer,
    t0: Instant,
    now: Instant,
    /// Datagrams the server sent to the peer (relayed address → peer).
    to_peer: Vec<Vec<u8>>,
    /// Every datagram the server sent to the client.
    to_client: Vec<Vec<u8>>,
    /// Every datagram the client sent to the server.
    to_server: Vec<Vec<u8>>,
    /// Whether the server answers at all.
    server_up: bool,
}

impl Net {
    fn new(server_password: &str) -> Self {
        let t0 = Instant::now();
        let mut server = TurnServer::new(TransportType::Udp, addr(SERVER), "meshtun".into());
        server.add_user(USER.into(), server_password.into());
        let password = RelayPassword::new("right-password".into());
        let client = RelayClient::allocate(
            addr(LOCAL),
            addr(SERVER),
            USER,
            &password,
            1_700_000_060,
            t0,
        );
        Self {
            client,
            server,
            t0,
            now: t0,
            to_peer: Vec::new(),
            to_client: Vec::new(),
            to_server: Vec::new(),
            server_up: true,
        }
    }

    fn at(&self) -> turn_client_proto::stun::Instant {
        turn_client_proto::stun::Instant::from_nanos((self.now - self.t0).as_nanos() as i64)
    }

    /// Delivers a datagram from the client to the server.
    fn deliver(&mut self, data: Vec<u8>) {
        self.to_server.push(data.clone());
        if !self.server_up {
            return;
        }
        let at = self.at();
        let reply = self
            .server
            .recv(
                Transmit::new(data, TransportType::Udp, addr(LOCAL), addr(SERVER)),
                at,
            )
            .map(|t| t.build());
        if let Some(t) = reply {
            self.route(t.from, t.to, t.data);
        }
    }

    fn route(&mut self, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        if to == addr(LOCAL) {
            self.to_client.push(data.clone());
            let now = self.now;
            self.client.handle(from, &data, now);
        } else {
            self.to_peer.push(data);
        }
    }

    /// Runs both sides until neither has anything to send, letting the clock run over the
    /// client's 50 ms pacing of requests.
    fn pump(&mut self) {
        for _ in 0..200 {
            let now = self.now;
            let wake = self.client.poll(now);
            let mut moved = false;
            while let Some((to, data)) = self.client.poll_transmit(now) {
                assert_eq!(to, addr(SERVER));
                self.deliver(data);
                moved = true;
            }
            let at = self.at();
            if let TurnServerPollRet::AllocateSocket {
                transport,
                listen_addr,
                client_addr,
                allocation_transport,
                family,
            } = self.server.poll(at)
            {
                self.server.allocated_socket(
                    transport,
                    listen_addr,
                    client_addr,
                    allocation_transport,
                    family,
                    Ok(addr(RELAYED)),
                    at,
                );
                moved = true;
            }
            while let Some(t) = self.server.poll_transmit(at) {
                if self.server_up {
                    self.route(t.from, t.to, t.data);
                    moved = true;
                }
            }
            if !moved {
                match wake {
                    Some(t) if t > now && t - now <= Duration::from_millis(60) => self.now = t,
                    _ => return,
                }
            }
        }
        panic!("the client and the server never settled");
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.pump();
    }

    fn allocated() -> Self {
        let mut net = Self::new("right-password");
        net.pump();
        assert_eq!(
            net.client.state,
            RelayState::Allocated {
                relayed: addr(RELAYED)
            }
        );
        net
    }
}

/// STUN method of a message (0 for anything else).
fn method(data: &[u8]) -> u16 {
    if data.len() < 20 || data[0] & 0xc0 != 0 {
        return 0;
    }
    u16::from_be_bytes([data[0], data[1]]) & 0x3eef
}

#[test]
fn allocates_after_the_401_with_integrity_and_reports_the_relayed_address() {
    let mut net = Net::new("right-password");
    assert_eq!(net.client.state, RelayState::Allocating);
    assert_eq!(net.client.relayed(), None);
    net.pump();
    // Allocate without credentials, 401 with realm and nonce, Allocate with them.
    assert_eq!(
        net.to_server.iter().filter(|d| method(d) == 0x003).count(),
        2
    );
    assert_eq!(net.client.relayed(), Some(addr(RELAYED)));
    let status = net.client.status();
    assert_eq!(status.last_error, Some(401), "the challenge");
    assert_eq!(status.server, addr(SERVER));
    assert_eq!(status.expires_s, 1_700_000_060);
    assert!(!format!("{:?}", net.client).contains("right-password"));
}

#[test]
fn wrong_credentials_fail_the_allocation() {
    let mut net = Net::new("the-relay-knows-another-password");
    net.pump();
    // The relay's 401 to the authenticated Allocate carries no MESSAGE-INTEGRITY (it cannot:
    // the password differs), so the client does not trust it (a forged 401 cannot end an
    // allocation attempt) and fails when the transaction times out.
    for _ in 0..60 {
        net.advance(Duration::from_secs(1));
    }
    assert_eq!(net.client.state, RelayState::Failed);
    assert_eq!(net.client.status().last_error, Some(401));
    assert_eq!(net.client.poll(net.now), None);
    assert_eq!(net.client.relayed(), None);
    assert_eq!(
        net.client.add_peer(addr(PEER), net.now),
        Err(RelayError::NoAllocation(addr(SERVER)))
    );
}

#[test]
fn forged_offpath_and_replayed_responses_are_dropped() {
    let mut net = Net::new("right-password");
    // Capture the server's answers instead of delivering them.
    let now = net.now;
    net.client.poll(now);
    let (_, first) = net.client.poll_transmit(now).unwrap();
    let at = net.at();
    let challenge = net
        .server
        .recv(
            Transmit::new(first, TransportType::Udp, addr(LOCAL), addr(SERVER)),
            at,
        )
        .unwrap()
        .build()
        .data;
    // The 401 from another address does nothing.
    assert_eq!(
        net.client.handle(addr(PEER), &challenge, now),
        RelayInbound::Dropped
    );
    assert!(
        net.client.poll_transmit(now).is_none(),
        "no retry from a forged source"
    );
    assert_eq!(
        net.client.handle(addr(SERVER), &challenge, now),
        RelayInbound::Handled
    );
    // Requests are paced 50 ms apart.
    let now = now + Duration::from_millis(60);
    net.now = now;
    let at = net.at();
    let (_, second) = net.client.poll_transmit(now).unwrap();
    net.server.recv(
        Transmit::new(second, TransportType::Udp, addr(LOCAL), addr(SERVER)),
        at,
    );
    let TurnServerPollRet::AllocateSocket {
        transport,
        listen_addr,
        client_addr,
        allocation_transport,
        family,
    } = net.server.poll(at)
    else {
        panic!("the server allocates");
    };
    net.server.allocated_socket(
        transport,
        listen_addr,
        client_addr,
        allocation_transport,
        family,
        Ok(addr(RELAYED)),
        at,
    );
    let success = net.server.poll_transmit(at).unwrap().data;
    // A forged success: the relayed address changed, so MESSAGE-INTEGRITY no longer
    // matches (the XOR-RELAYED-ADDRESS value is the last byte before the integrity
    // attributes somewhere in the body: flip every byte in turn).
    for i in 20..success.len() - 8 {
        let mut forged = success.clone();
        forged[i] ^= 0x01;
        net.client.handle(addr(SERVER), &forged, now);
        assert_eq!(net.client.state, RelayState::Allocating, "byte {i} flipped");
    }
    // From another source, the genuine answer is dropped too.
    assert_eq!(
        net.client.handle(addr(PEER), &success, now),
        RelayInbound::Dropped
    );
    assert_eq!(net.client.state, RelayState::Allocating);
    assert_eq!(
        net.client.handle(addr(SERVER), &success, now),
        RelayInbound::Handled
    );
    assert_eq!(net.client.relayed(), Some(addr(RELAYED)));
    // Replayed: its transaction is over.
    assert_ne!(
        net.client.handle(addr(SERVER), &success, now),
        RelayInbound::Handled
    );
    assert_ne!(
        net.client.handle(addr(SERVER), &challenge, now),
        RelayInbound::Handled
    );
    assert_eq!(net.client.relayed(), Some(addr(RELAYED)));
}

#[test]
fn a_peer_gets_a_permission_and_a_channel_and_data_passes_blind_both_ways() {
    let mut net = Net::allocated();
    net.client.add_peer(addr(PEER), net.now).unwrap();
    net.client.add_peer(addr(PEER), net.now).unwrap();
    net.pump();
    assert!(
        net.to_server.iter().any(|d| method(d) == 0x008),
        "CreatePermission"
    );
    assert!(
        net.to_server.iter().any(|d| method(d) == 0x009),
        "ChannelBind"
    );
    assert_eq!(net.client.status().channels, 1);
    // A WireGuard datagram out: ChannelData with a 4-byte header, forwarded verbatim.
    let wg = [4u8, 0, 0, 0, 9, 9, 9, 9, 1, 2, 3, 4, 5, 6, 7, 8];
    let (to, framed) = net.client.send(addr(PEER), &wg, net.now).unwrap();
    assert_eq!(to, addr(SERVER));
    assert!(is_channel_data(&framed));
    assert_eq!(&framed[4..], &wg);
    net.deliver(framed);
    assert_eq!(net.to_peer.last().map(Vec::as_slice), Some(&wg[..]));
    // And back: the peer's datagram to the relayed address reaches us from `PEER`.
    let at = net.at();
    let back = net
        .server
        .recv(
            Transmit::new(wg.to_vec(), TransportType::Udp, addr(PEER), addr(RELAYED)),
            at,
        )
        .unwrap()
        .build();
    assert_eq!(back.to, addr(LOCAL));
    assert!(is_channel_data(&back.data));
    assert_eq!(
        net.client.handle(back.from, &back.data, net.now),
        RelayInbound::PeerData {
            peer: addr(PEER),
            data: wg.to_vec()
        }
    );
    // The same ChannelData from anywhere but the relay is dropped.
    assert_eq!(
        net.client.handle(addr(PEER), &back.data, net.now),
        RelayInbound::Dropped
    );
    // A peer without permission cannot be sent to.
    assert_eq!(
        net.client.send(addr("192.0.2.99:1"), &wg, net.now),
        Err(RelayError::NoPermission(addr(SERVER), addr("192.0.2.99:1")))
    );
}

#[test]
fn refresh_keeps_the_allocation_past_its_lifetime() {
    let mut net = Net::allocated();
    net.client.add_peer(addr(PEER), net.now).unwrap();
    net.pump();
    let before = net.to_server.len();
    // Step past the granted lifetime in 1-minute steps.
    for _ in 0..70 {
        net.advance(Duration::from_secs(60));
    }
    let sent = &net.to_server[before..];
    assert!(sent.iter().any(|d| method(d) == 0x004), "Refresh sent");
    assert!(
        sent.iter().any(|d| method(d) == 0x008),
        "permission refreshed"
    );
    assert!(sent.iter().any(|d| method(d) == 0x009), "channel refreshed");
    assert_eq!(net.client.relayed(), Some(addr(RELAYED)));
    assert!(net.client.send(addr(PEER), &[4, 0, 0, 0], net.now).is_ok());
}

#[test]
fn a_confirmed_permission_is_news_once_and_its_refreshes_are_not() {
    let mut net = Net::allocated();
    let ip = addr(PEER).ip();
    net.client.permit(ip, net.now).unwrap();
    // Requested, not yet confirmed: nothing to retry through it.
    assert!(net.client.take_granted().is_empty());
    net.pump();
    assert_eq!(net.client.take_granted(), vec![ip]);
    assert!(net.client.take_granted().is_empty(), "taken once");
    // Asking again, and the state machine's refreshes, are not news.
    net.client.permit(ip, net.now).unwrap();
    for _ in 0..12 {
        net.advance(Duration::from_secs(60));
    }
    assert!(net.client.take_granted().is_empty());
}

#[test]
fn an_allocation_whose_refreshes_go_unanswered_fails() {
    let mut net = Net::allocated();
    net.server_up = false;
    let mut gave_up = false;
    for _ in 0..100 {
        net.now += Duration::from_secs(60);
        if net.client.poll(net.now).is_none() {
            gave_up = true;
            break;
        }
        while net.client.poll_transmit(net.now).is_some() {}
    }
    assert!(gave_up, "the client stops once the allocation has expired");
    assert_eq!(net.client.state, RelayState::Failed);
    assert_eq!(net.client.relayed(), None);
}

#[test]
fn peers_are_bounded() {
    let mut net = Net::allocated();
    for i in 0..MAX_RELAY_PEERS {
        // Two ports per address: peers behind one NAT share a permission.
        let peer = SocketAddr::from(([203, 0, 113, (i / 2) as u8], 1000 + i as u16));
        net.client.add_peer(peer, net.now).unwrap();
    }
    assert_eq!(
        net.client.add_peer(addr("192.0.2.200:1"), net.now),
        Err(RelayError::TooManyPeers(addr(SERVER)))
    );
}

#[test]
fn channel_data_is_told_from_wireguard_and_stun() {
    let mut chan = vec![0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4];
    assert!(is_channel_data(&chan));
    chan[0] = 0x7f;
    assert!(is_channel_data(&chan));
    chan.extend_from_slice(&[0, 0, 0]);
    assert!(is_channel_data(&chan), "padded to 4 bytes");
    chan.push(0);
    assert!(!is_channel_data(&chan), "longer than its padding");
    assert!(
        !is_channel_data(&[0x40, 0, 0, 8, 1, 2, 3, 4]),
        "shorter than its length"
    );
    for wg_type in 1u8..=4 {
        let mut wg = vec![wg_type, 0, 0, 0];
        wg.resize(148, 7);
        assert!(!is_channel_data(&wg), "WireGuard type {wg_type}");
    }
    let stun = meshtun_proto::stun::binding_request(meshtun_proto::stun::TransactionId::random());
    assert!(!is_channel_data(&stun));
    assert!(!is_channel_data(&[0x40, 0, 0]));
    assert!(!is_channel_data(&[0x80, 0, 0, 0]));
}

#[test]
fn credentials_open_from_the_bundle_only_with_the_nodes_key() {
    use meshtun_proto::bundle::{Bundle, Membership, Sealer, BUNDLE_VERSION};
    use meshtun_proto::relay::{BundleRelay, RelaySecret};
    use meshtun_proto::PrivateKey;
    let key = PrivateKey::generate();
    let sealer = Sealer::new(&key.public_key()).unwrap();
    let (username, password) = RelaySecret::new("north-wind-secret").mint("node-a", 61);
    let mut bundle = Bundle {
        version: BUNDLE_VERSION,
        node_id: "node-a".into(),
        recipient: key.public_key(),
        epoch: 7,
        activation_ms: 1_000,
        not_after_ms: 61_000,
        issued_ms: 500,
        decided_ms: 400,
        membership: Membership::Allowed,
        seal_key: Some(sealer.ephemeral()),
        peers: Vec::new(),
        forward: false,
        relay: Some(BundleRelay {
            urls: vec!["turn:198.51.100.1:3478".into()],
            sealed_password: sealer.seal_relay(7, &username, &password),
            username: username.clone(),
            expires_s: 61,
        }),
    };
    let opened = RelayCredentials::open(&bundle, &key).unwrap().unwrap();
    assert_eq!(opened.server, "198.51.100.1:3478");
    assert_eq!(opened.username, username);
    assert_eq!(opened.password, password);
    assert!(!format!("{opened:?}").contains(password.expose()));
    assert_eq!(
        RelayCredentials::open(&bundle, &PrivateKey::generate()),
        Err(RelayError::Credentials(7)),
        "another node's key"
    );
    bundle.relay.as_mut().unwrap().urls = vec!["turns:198.51.100.1:5349".into()];
    assert!(matches!(
        RelayCredentials::open(&bundle, &key),
        Err(RelayError::Url(_))
    ));
    bundle.relay = None;
    assert_eq!(RelayCredentials::open(&bundle, &key), Ok(None));
}

/// A writer for a captured log.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<parking_lot::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_password_is_never_logged_even_at_trace_level() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let mut net = Net::allocated();
        net.client.add_peer(addr(PEER), net.now).unwrap();
        for _ in 0..40 {
            net.advance(Duration::from_secs(60));
        }
        let _ = net.client.send(addr(PEER), &[4, 0, 0, 0], net.now);
        let mut wrong = Net::new("the-relay-knows-another-password");
        wrong.pump();
    });
    let log = String::from_utf8_lossy(&captured.0.lock()).into_owned();
    assert!(log.len() > 1000, "the crates logged: {} bytes", log.len());
    assert!(
        !log.contains("right-password"),
        "the password is in the log"
    );
}
