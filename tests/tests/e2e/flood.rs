//! Floods at a daemon's UDP port from a third namespace, "attacker", while A and B hold an
//! established session: (a) 100,000 random datagrams of 0–1500 bytes, a quarter of them with
//! WireGuard message headers and some of those with the exact message sizes; (b) 5,000
//! handshake initiations with a valid mac1 from as many unknown keys. The daemon must stay
//! up with bounded memory, answer the initiation flood with cookie replies once over its
//! handshake rate, and keep the A–B tunnel working during and after the flood.

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519;
use meshtun_e2e::config::Node;
use meshtun_e2e::traffic::{assert_ping, ping_replies};
use meshtun_e2e::{require_root, Daemon, Netns, Veth};
use meshtun_proto::PublicKey;

/// Random datagrams in the garbage flood.
const GARBAGE_DATAGRAMS: usize = 100_000;
/// Handshake initiations, each from a key of its own, in the initiation flood.
const ROGUE_INITIATIONS: usize = 5_000;
/// A flood stops after this long, whatever it has sent.
const FLOOD_TIME_LIMIT: Duration = Duration::from_secs(20);
/// How much the daemon's resident memory may grow over a flood, in KiB.
///
/// The daemon's packet buffers are allocated at start and the warm-up pings have touched
/// them, so a flood should add next to nothing (we see well under 100 KiB): allocator caches
/// at most. A daemon that kept anything per datagram would break the bound: 100 bytes for
/// each of the 100,000 garbage datagrams is ~10 MiB; so would one that kept state per
/// unknown key: 2 KiB (a boringtun `Tunn` alone is about 11 KiB) for each of 5,000
/// initiations is ~10 MiB.
const RSS_GROWTH_LIMIT_KIB: u64 = 8 * 1024;
/// Pings sent through the tunnel during and after a flood, 0.1 s apart.
const PINGS: u32 = 20;
/// How many of them must be answered.
const MIN_REPLIES: u32 = 15;

/// WireGuard message types and sizes.
const HANDSHAKE_INIT: u8 = 1;
const HANDSHAKE_INIT_LEN: usize = 148;
const HANDSHAKE_RESP_LEN: usize = 92;
const COOKIE_REPLY: u8 = 3;
const COOKIE_REPLY_LEN: usize = 64;
const DATA_MIN_LEN: usize = 32;

/// A and B with a session, and an attacker namespace X on a link of its own to A.
struct Net {
    ns_a: Netns,
    ns_b: Netns,
    ns_x: Netns,
    a: Node,
    b: Node,
    /// A's UDP port as the attacker reaches it.
    target: SocketAddr,
    ab: Veth,
}

impl Net {
    fn new(test: &str) -> Self {
        let (ns_a, ns_b, ns_x) = (Netns::new(test), Netns::new(test), Netns::new(test));
        let ab = Veth::connect(&ns_a, &ns_b, 0);
        let ax = Veth::connect(&ns_a, &ns_x, 1);
        let (a, b) = (Node::new("a", 1), Node::new("b", 2));
        let target = SocketAddr::new(ax.a_v4.into(), a.port);
        Self {
            ns_a,
            ns_b,
            ns_x,
            a,
            b,
            target,
            ab,
        }
    }

    fn start(&self) -> (Daemon<'_>, Daemon<'_>) {
        let mut ca = self.a.config();
        ca.peers
            .push(self.b.as_peer().endpoint(self.ab.b_v4.into(), self.b.port));
        let mut cb = self.b.config();
        cb.peers
            .push(self.a.as_peer().endpoint(self.ab.a_v4.into(), self.a.port));
        let da = Daemon::start(&self.ns_a, &ca);
        let db = Daemon::start(&self.ns_b, &cb);
        assert_ping(&self.ns_b, self.a.v4.into());
        assert_ping(&self.ns_a, self.b.v4.into());
        (da, db)
    }

    /// A UDP socket in the attacker's namespace.
    fn attacker_socket(&self) -> UdpSocket {
        let socket = self
            .ns_x
            .enter(|| UdpSocket::bind("0.0.0.0:0"))
            .expect("cannot open a UDP socket in the attacker namespace");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("cannot set a read timeout");
        socket
    }

    /// Pings A's tunnel address from B; the number of replies out of [`PINGS`].
    fn pings_through_tunnel(&self) -> u32 {
        ping_replies(
            &self.ns_b,
            self.a.v4.into(),
            PINGS,
            Duration::from_millis(100),
        )
    }
}

/// What a flood did.
#[derive(Debug)]
struct Flood {
    sent: usize,
    send_errors: usize,
    took: Duration,
}

/// How fast a flood goes: as fast as it can, or `burst` datagrams every `every`.
#[derive(Debug, Clone, Copy)]
enum Pace {
    Unpaced,
    Bursts { burst: usize, every: Duration },
}

/// Sends each datagram to `target` at `pace` until they run out or [`FLOOD_TIME_LIMIT`] has
/// passed.
fn flood(
    socket: &UdpSocket,
    target: SocketAddr,
    datagrams: impl Iterator<Item = Vec<u8>>,
    pace: Pace,
) -> Flood {
    let start = Instant::now();
    let (mut sent, mut send_errors) = (0, 0);
    for (n, datagram) in datagrams.enumerate() {
        if n % 100 == 0 && start.elapsed() > FLOOD_TIME_LIMIT {
            break;
        }
        if let Pace::Bursts { burst, every } = pace {
            if n > 0 && n % burst == 0 {
                // Pacing, not a wait: the flood's shape.
                std::thread::sleep(every);
            }
        }
        match socket.send_to(&datagram, target) {
            Ok(_) => sent += 1,
            // A full queue (ENOBUFS) under a flood is expected; go on.
            Err(_) => send_errors += 1,
        }
    }
    Flood {
        sent,
        send_errors,
        took: start.elapsed(),
    }
}

/// `count` random datagrams of 0–1500 bytes; a quarter start with a WireGuard message header
/// (type 1–4, three zero bytes), and half of those have that message's exact size.
fn garbage(seed: u64, count: usize) -> impl Iterator<Item = Vec<u8>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..count).map(move |_| {
        let typed = rng.u8(..4) == 0;
        let kind = rng.u8(1..=4);
        let len = if typed && rng.bool() {
            match kind {
                1 => HANDSHAKE_INIT_LEN,
                2 => HANDSHAKE_RESP_LEN,
                3 => COOKIE_REPLY_LEN,
                _ => rng.usize(DATA_MIN_LEN..=1500),
            }
        } else {
            rng.usize(0..=1500)
        };
        let mut datagram: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(len).collect();
        if typed && len >= 4 {
            datagram[..4].copy_from_slice(&[kind, 0, 0, 0]);
        }
        datagram
    })
}

/// `count` handshake initiations to `victim`, each from a fresh random key (so unknown to the
/// victim) with a valid mac1, and their sender indices.
fn rogue_initiations(victim: &str, seed: u64, count: usize) -> (Vec<Vec<u8>>, HashSet<u32>) {
    let victim = PublicKey::from_base64(victim).expect("the victim's public key is valid");
    let victim = x25519::PublicKey::from(victim);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut indices = HashSet::new();
    let initiations = (0..count)
        .map(|n| {
            let mut secret = [0u8; 32];
            rng.fill(&mut secret);
            let index = u32::try_from(n).expect("fewer than 2^24 initiations");
            let mut tunn = Tunn::new(
                x25519::StaticSecret::from(secret),
                victim,
                None,
                None,
                index,
                None,
            );
            let mut buf = [0u8; HANDSHAKE_INIT_LEN];
            let TunnResult::WriteToNetwork(init) =
                tunn.format_handshake_initiation(&mut buf, false)
            else {
                panic!("boringtun made no handshake initiation");
            };
            assert_eq!(init.len(), HANDSHAKE_INIT_LEN);
            assert_eq!(init[0], HANDSHAKE_INIT);
            let sender = u32::from_le_bytes([init[4], init[5], init[6], init[7]]);
            indices.insert(sender);
            init.to_vec()
        })
        .collect();
    (initiations, indices)
}

/// What came back to the attacker.
#[derive(Debug, Default)]
struct Replies {
    /// Cookie replies (type 3, 64 bytes) addressed to one of the initiations' sender indices.
    cookies: usize,
    /// Anything else.
    other: usize,
}

/// Reads replies on `socket` until `done` is set and a read has timed out, or until twice
/// [`FLOOD_TIME_LIMIT`] has passed.
fn collect_replies(
    socket: &UdpSocket,
    indices: &HashSet<u32>,
    done: &std::sync::atomic::AtomicBool,
) -> Replies {
    let start = Instant::now();
    let mut replies = Replies::default();
    let mut buf = [0u8; 2048];
    while start.elapsed() < 2 * FLOOD_TIME_LIMIT {
        match socket.recv(&mut buf) {
            Ok(len) => {
                let is_cookie = len == COOKIE_REPLY_LEN
                    && buf[..4] == [COOKIE_REPLY, 0, 0, 0]
                    && indices.contains(&u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]));
                if is_cookie {
                    replies.cookies += 1;
                } else {
                    replies.other += 1;
                }
            }
            Err(_) if done.load(std::sync::atomic::Ordering::Acquire) => break,
            Err(_) => {}
        }
    }
    replies
}

/// Runs `attack` while B pings A through the tunnel, then pings again; asserts the daemon
/// survived with bounded memory and the tunnel kept working. Returns what `attack` returned.
fn under_attack<T: Send>(net: &Net, what: &str, attack: impl FnOnce() -> T + Send) -> T {
    let (mut da, _db) = net.start();
    // Some traffic first, so that the steady state's buffers are in place.
    let warm_up = net.pings_through_tunnel();
    assert!(
        warm_up >= MIN_REPLIES,
        "only {warm_up}/{PINGS} replies before the flood"
    );
    let rss_before = da.rss_kib().expect("A's VmRSS");

    let (result, during) = std::thread::scope(|s| {
        let pinging = s.spawn(|| net.pings_through_tunnel());
        let result = attack();
        let during = pinging
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (result, during)
    });
    da.assert_running();
    let after = net.pings_through_tunnel();
    da.assert_running();
    let rss_after = da.rss_kib().expect("A's VmRSS");
    eprintln!(
        "{what}: A's VmRSS {rss_before} KiB before, {rss_after} KiB after \
         ({:+} KiB); ping replies {during}/{PINGS} during, {after}/{PINGS} after",
        rss_after as i64 - rss_before as i64
    );
    assert!(
        rss_after < rss_before + RSS_GROWTH_LIMIT_KIB,
        "{what}: A's memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    assert!(
        during >= MIN_REPLIES,
        "{what}: only {during}/{PINGS} ping replies through the tunnel during the flood"
    );
    assert!(
        after >= MIN_REPLIES,
        "{what}: only {after}/{PINGS} ping replies through the tunnel after the flood"
    );
    result
}

#[test]
fn flood_of_garbage_datagrams() {
    if !require_root("flood_of_garbage_datagrams") {
        return;
    }
    let _exclusive = meshtun_e2e::exclusive();
    let net = Net::new("flood_garbage");
    let socket = net.attacker_socket();
    let seed = 0x6d65_7368_7475_6e01;
    let report = under_attack(&net, "garbage flood", || {
        flood(
            &socket,
            net.target,
            garbage(seed, GARBAGE_DATAGRAMS),
            Pace::Unpaced,
        )
    });
    eprintln!(
        "garbage flood (seed {seed:#x}): {} datagrams sent ({} send errors) in {:?}",
        report.sent, report.send_errors, report.took
    );
    assert!(
        report.sent > GARBAGE_DATAGRAMS / 2,
        "the flood itself failed: {report:?}"
    );
}

#[test]
fn flood_of_handshake_initiations_from_unknown_keys() {
    if !require_root("flood_of_handshake_initiations_from_unknown_keys") {
        return;
    }
    let _exclusive = meshtun_e2e::exclusive();
    let net = Net::new("flood_init");
    let (initiations, indices) = rogue_initiations(&net.a.keys.public, 7, ROGUE_INITIATIONS);
    let socket = net.attacker_socket();
    let reader = socket
        .try_clone()
        .expect("cannot clone the attacker socket");
    let done = std::sync::atomic::AtomicBool::new(false);
    let (report, replies) = under_attack(&net, "initiation flood", || {
        std::thread::scope(|s| {
            let reading = s.spawn(|| collect_replies(&reader, &indices, &done));
            // 2,500 a second for two seconds, 25 times the daemon's handshake rate: long
            // enough for the pings to run under the flood.
            let pace = Pace::Bursts {
                burst: 100,
                every: Duration::from_millis(40),
            };
            let report = flood(&socket, net.target, initiations.into_iter(), pace);
            done.store(true, std::sync::atomic::Ordering::Release);
            let replies = reading
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            (report, replies)
        })
    });
    eprintln!(
        "initiation flood: {} initiations sent ({} send errors) in {:?}; back to the \
         attacker: {} cookie replies, {} other datagrams",
        report.sent, report.send_errors, report.took, replies.cookies, replies.other
    );
    assert!(
        report.sent > ROGUE_INITIATIONS / 2,
        "the flood itself failed: {report:?}"
    );
    assert!(
        replies.cookies >= 1,
        "no cookie reply to {} initiations: {replies:?}",
        report.sent
    );
    assert_eq!(
        replies.other, 0,
        "unexpected replies to unknown keys: {replies:?}"
    );
}
