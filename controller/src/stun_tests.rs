use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use meshtun_proto::stun::{binding_request, parse_binding_response, TransactionId};

use super::*;

fn source(n: u32) -> SocketAddr {
    // 198.18.0.0/15 (benchmarking): never routed, only ever a label here.
    SocketAddr::new(Ipv4Addr::from(0xc612_0000 | (n & 0x1_ffff)).into(), 40_000)
}

#[test]
fn a_binding_request_is_answered_with_its_source() {
    let mut admission = Admission::new(StunLimits::default(), Instant::now());
    let id = TransactionId::random();
    let from: SocketAddr = "203.0.113.5:51820".parse().unwrap();
    let (answer, outcome) = admission.handle(from, &binding_request(id), Instant::now());
    assert_eq!(outcome, Outcome::Answered);
    let answer = answer.unwrap();
    assert!(answer.len() <= 52);
    let parsed = parse_binding_response(&answer).unwrap();
    assert_eq!((parsed.transaction, parsed.mapped), (id, from));
}

#[test]
fn a_mapped_ipv4_source_is_answered_as_ipv4() {
    let mut admission = Admission::new(StunLimits::default(), Instant::now());
    let from: SocketAddr = "[::ffff:203.0.113.5]:4000".parse().unwrap();
    let request = binding_request(TransactionId::random());
    let (answer, _) = admission.handle(from, &request, Instant::now());
    let parsed = parse_binding_response(&answer.unwrap()).unwrap();
    assert_eq!(parsed.mapped, "203.0.113.5:4000".parse().unwrap());
}

#[test]
fn garbage_and_other_messages_get_no_answer() {
    let mut admission = Admission::new(StunLimits::default(), Instant::now());
    let from = source(1);
    let id = TransactionId::random();
    let mut allocate = binding_request(id);
    allocate[1] = 0x03;
    let response = binding_success(id, from);
    let mut wireguard = vec![0u8; 148];
    wireguard[0] = 1;
    for datagram in [
        &b""[..],
        b"hello",
        &[0u8; 20],
        &allocate,
        &response,
        &wireguard,
        &binding_request(id)[..20],
    ] {
        let (answer, outcome) = admission.handle(from, datagram, Instant::now());
        assert!(answer.is_none(), "answered {datagram:02x?}");
        assert_eq!(outcome, Outcome::Malformed);
    }
    assert_eq!(
        admission.sources(),
        0,
        "garbage must not take a table entry"
    );
}

#[test]
fn a_flood_from_one_source_gets_at_most_its_rate() {
    let limits = StunLimits::default();
    let start = Instant::now();
    let mut admission = Admission::new(limits, start);
    let request = binding_request(TransactionId::random());
    let mut answered = 0;
    // 10 000 requests spread over 2 s.
    for k in 0..10_000u32 {
        let now = start + Duration::from_micros(u64::from(k) * 200);
        if admission.handle(source(7), &request, now).0.is_some() {
            answered += 1;
        }
    }
    let most = limits.per_source_burst + 2.0 * limits.per_source_rate;
    assert!(
        f64::from(answered) <= most,
        "{answered} answers, at most {most}"
    );
    assert!(answered >= 8, "the burst is answered");
}

#[test]
fn spraying_spoofed_sources_keeps_the_table_bounded_and_the_rate_global() {
    let limits = StunLimits {
        max_sources: 1000,
        ..StunLimits::default()
    };
    let start = Instant::now();
    let mut admission = Admission::new(limits, start);
    let request = binding_request(TransactionId::random());
    let mut answered = 0u32;
    let mut full = 0u32;
    // 100 000 distinct sources in 1 s.
    for k in 0..100_000u32 {
        let now = start + Duration::from_micros(u64::from(k) * 10);
        let (answer, outcome) = admission.handle(source(k), &request, now);
        answered += u32::from(answer.is_some());
        full += u32::from(outcome == Outcome::TableFull);
        assert!(admission.sources() <= limits.max_sources);
    }
    assert!(answered <= 2 * limits.rate, "{answered} answers in 1 s");
    assert!(full > 90_000, "{full} refused for a full table");
    // Once the sources are idle, the table makes room again.
    let later = start + Duration::from_secs(30);
    let (answer, outcome) = admission.handle(source(200_000), &request, later);
    assert_eq!(outcome, Outcome::Answered);
    assert!(answer.is_some());
    assert!(admission.sources() <= 1);
}

#[test]
fn the_global_rate_holds_across_sources() {
    let limits = StunLimits {
        rate: 50,
        ..StunLimits::default()
    };
    let start = Instant::now();
    let mut admission = Admission::new(limits, start);
    let request = binding_request(TransactionId::random());
    let answered = (0..500u32)
        .filter(|k| admission.handle(source(*k), &request, start).0.is_some())
        .count();
    assert_eq!(answered, 50);
}

#[tokio::test]
async fn a_udp_client_gets_its_own_address_and_attackers_nothing() {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server = socket.local_addr().unwrap();
    let answered = Arc::new(AtomicUsize::new(0));
    let seen = answered.clone();
    let record = move |outcome: Outcome, _sources: usize| {
        if outcome == Outcome::Answered {
            seen.fetch_add(1, Ordering::Relaxed);
        }
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(socket, StunLimits::default(), record, async move {
        let _ = stopped.await;
    }));
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mine = client.local_addr().unwrap();
    let id = TransactionId::random();
    client.send_to(&binding_request(id), server).await.unwrap();
    let mut buf = [0u8; 600];
    let (len, from) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
        .await
        .expect("no answer")
        .unwrap();
    assert_eq!(from, server);
    let parsed = parse_binding_response(&buf[..len]).unwrap();
    assert_eq!((parsed.transaction, parsed.mapped), (id, mine));

    // A flood of 2 000 requests and garbage: at most the per-source burst is answered.
    for k in 0..2_000u32 {
        let datagram = if k % 2 == 0 {
            binding_request(TransactionId::random())
        } else {
            vec![0x17; 64]
        };
        let _ = client.send_to(&datagram, server).await;
    }
    let mut replies = 0;
    while let Ok(Ok(_)) =
        tokio::time::timeout(Duration::from_millis(300), client.recv_from(&mut buf)).await
    {
        replies += 1;
    }
    let limits = StunLimits::default();
    // The first request spent one token; the flood took under a second.
    assert!(
        f64::from(replies) <= limits.per_source_burst + limits.per_source_rate,
        "{replies} answers to a flood"
    );
    assert_eq!(answered.load(Ordering::Relaxed), 1 + replies as usize);
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the server did not stop")
        .unwrap();
}

#[test]
fn the_stun_section_is_off_unless_listen_is_set() {
    let path = std::path::Path::new("controller.toml");
    let base = "listen = \"127.0.0.1:8700\"\nurl = \"http://127.0.0.1:8700\"\nstate_dir = \"s\"\n";
    let parse =
        |extra: &str| crate::config::ControllerConfig::parse(&format!("{base}{extra}"), path);
    assert_eq!(parse("").unwrap().stun, None);
    let on = parse("[stun]\nlisten = \"0.0.0.0:3478\"\n")
        .unwrap()
        .stun
        .unwrap();
    assert_eq!(on.listen, "0.0.0.0:3478".parse().unwrap());
    assert_eq!(on.limits, StunLimits::default());
    let rated = parse("[stun]\nlisten = \"[::]:3478\"\nrate = 20\n").unwrap();
    assert_eq!(rated.stun.unwrap().limits.rate, 20);
    for (extra, key) in [
        ("[stun]\nlisten = \"0.0.0.0:3478\"\nrate = 0\n", "stun.rate"),
        (
            "[stun]\nlisten = \"0.0.0.0:3478\"\nrate = 100001\n",
            "stun.rate",
        ),
        ("[stun]\nrate = 10\n", "stun.rate"),
    ] {
        let error = parse(extra).unwrap_err().to_string();
        assert!(error.contains(key), "{extra:?}: {error}");
    }
    assert!(
        parse("[stun]\nport = 3478\n").is_err(),
        "unknown keys are refused"
    );
}
