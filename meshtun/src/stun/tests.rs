use meshtun_proto::stun::{binding_success, parse_binding_request};

use super::*;

fn servers() -> Vec<String> {
    vec!["stun-a.example:3478".into(), "stun-b.example:3478".into()]
}

const A: &str = "192.0.2.10:3478";
const B: &str = "192.0.2.20:3478";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A client with both servers resolved, and the first two requests it sends.
fn started(now: Instant) -> (StunClient, Transmit, Transmit) {
    let mut client = StunClient::new(&servers(), now);
    assert_eq!(client.poll_transmit(now), None, "nothing resolved yet");
    client.set_address(0, Some(addr(A)), now);
    client.set_address(1, Some(addr(B)), now);
    let first = client.poll_transmit(now).unwrap();
    let second = client.poll_transmit(now).unwrap();
    assert_eq!(client.poll_transmit(now), None);
    (client, first, second)
}

fn answer(request: &Transmit, mapped: &str) -> Vec<u8> {
    let id = parse_binding_request(&request.datagram).unwrap();
    binding_success(id, addr(mapped))
}

#[test]
fn each_server_is_asked_with_its_own_random_transaction() {
    let now = Instant::now();
    let (_, first, second) = started(now);
    assert_eq!((first.to, second.to), (addr(A), addr(B)));
    let (a, b) = (
        parse_binding_request(&first.datagram).unwrap(),
        parse_binding_request(&second.datagram).unwrap(),
    );
    assert_ne!(a, b);
}

#[test]
fn equal_answers_mean_an_endpoint_independent_mapping() {
    let now = Instant::now();
    let (mut client, first, second) = started(now);
    let mapped = "203.0.113.9:40001";
    assert_eq!(
        client.handle(addr(A), &answer(&first, mapped), now, 1),
        Handled::Answered
    );
    assert_eq!(
        client.status().kind,
        NatKind::Unknown,
        "one answer compares nothing"
    );
    assert_eq!(
        client.handle(addr(B), &answer(&second, mapped), now, 2),
        Handled::Answered
    );
    let status = client.status();
    assert_eq!(status.kind, NatKind::EndpointIndependent);
    assert_eq!(status.reflexive.len(), 2);
    assert_eq!(status.reflexive[0].address, addr(mapped));
    assert_eq!(status.reflexive[0].server, "stun-a.example:3478");
}

#[test]
fn different_answers_mean_an_endpoint_dependent_nat() {
    let now = Instant::now();
    let (mut client, first, second) = started(now);
    client.handle(addr(A), &answer(&first, "203.0.113.9:40001"), now, 1);
    client.handle(addr(B), &answer(&second, "203.0.113.9:40002"), now, 1);
    assert_eq!(client.status().kind, NatKind::EndpointDependent);
}

#[test]
fn forged_responses_are_dropped() {
    let now = Instant::now();
    let (mut client, first, _) = started(now);
    // An unknown transaction id, from the right server.
    let forged = binding_success(TransactionId::random(), addr("198.51.100.66:666"));
    assert_eq!(
        client.handle(addr(A), &forged, now, 1),
        Handled::UnknownTransaction
    );
    // The right transaction id (seen on path), from another address, even server B's.
    let planted = answer(&first, "198.51.100.66:666");
    for from in ["198.51.100.66:3478", B, "192.0.2.10:3479"] {
        assert_eq!(
            client.handle(addr(from), &planted, now, 1),
            Handled::WrongSource,
            "from {from}"
        );
    }
    // Garbage and a request.
    assert_eq!(client.handle(addr(A), b"junk", now, 1), Handled::Malformed);
    assert_eq!(
        client.handle(addr(A), &first.datagram, now, 1),
        Handled::Malformed
    );
    assert!(client.status().reflexive.is_empty(), "nothing planted");
    assert_eq!(client.rejected(), 6);
    // The genuine answer still counts, once.
    let genuine = answer(&first, "203.0.113.9:40001");
    assert_eq!(client.handle(addr(A), &genuine, now, 1), Handled::Answered);
    assert_eq!(
        client.handle(addr(A), &genuine, now, 1),
        Handled::UnknownTransaction,
        "a replayed answer matches nothing"
    );
    assert_eq!(
        client.status().reflexive[0].address,
        addr("203.0.113.9:40001")
    );
}

#[test]
fn lost_requests_are_sent_again_with_backoff_then_the_answer_is_forgotten() {
    let start = Instant::now();
    let mut client = StunClient::new(&servers()[..1], start);
    client.set_address(0, Some(addr(A)), start);
    let first = client.poll_transmit(start).unwrap();
    // Answered once, so that giving up later forgets it.
    client.handle(addr(A), &answer(&first, "203.0.113.9:1"), start, 1);
    assert_eq!(client.poll_timeout(), Some(start + REFRESH));
    assert_eq!(client.poll_transmit(start + REFRESH / 2), None);
    let mut now = start + REFRESH;
    let refresh = client.poll_transmit(now).unwrap();
    let id = parse_binding_request(&refresh.datagram).unwrap();
    let mut gaps = Vec::new();
    loop {
        let next = client.poll_timeout().unwrap();
        gaps.push(next - now);
        now = next;
        match client.poll_transmit(now) {
            Some(again) => {
                assert_eq!(
                    parse_binding_request(&again.datagram).unwrap(),
                    id,
                    "same transaction"
                );
                assert_eq!(again.to, addr(A));
            }
            None => break,
        }
    }
    let ms: Vec<u128> = gaps.iter().map(|d| d.as_millis()).collect();
    assert_eq!(ms, [500, 1000, 2000, 4000, 8000]);
    assert!(
        client.status().reflexive.is_empty(),
        "a silent server's answer is dropped"
    );
    assert_eq!(client.poll_timeout(), Some(now + REFRESH));
}

#[test]
fn a_late_answer_within_the_transaction_still_counts() {
    let now = Instant::now();
    let (mut client, first, _) = started(now);
    let later = now + FIRST_RTO * 3;
    let again = client.poll_transmit(later).unwrap();
    assert_eq!(again.datagram, first.datagram);
    assert_eq!(
        client.handle(addr(A), &answer(&first, "203.0.113.9:5"), later, 1),
        Handled::Answered
    );
}

#[test]
fn refresh_now_and_new_addresses_ask_at_once() {
    let now = Instant::now();
    let (mut client, first, second) = started(now);
    client.handle(addr(A), &answer(&first, "203.0.113.9:5"), now, 1);
    client.handle(addr(B), &answer(&second, "203.0.113.9:5"), now, 1);
    let soon = now + Duration::from_secs(1);
    assert_eq!(client.poll_transmit(soon), None);
    client.refresh_now(soon);
    assert!(client.poll_transmit(soon).is_some());
    assert!(client.poll_transmit(soon).is_some());
    assert_eq!(
        client.status().reflexive.len(),
        2,
        "answers kept until replaced"
    );
    client.set_address(1, Some(addr("192.0.2.30:3478")), soon);
    assert_eq!(
        client.status().reflexive.len(),
        1,
        "a moved server's answer is dropped"
    );
    assert_eq!(
        client.poll_transmit(soon).unwrap().to,
        addr("192.0.2.30:3478")
    );
}

#[test]
fn two_names_for_one_server_prove_nothing() {
    let now = Instant::now();
    let mut client = StunClient::new(&servers(), now);
    client.set_address(0, Some(addr(A)), now);
    client.set_address(1, Some(addr(A)), now);
    let first = client.poll_transmit(now).unwrap();
    let second = client.poll_transmit(now).unwrap();
    client.handle(addr(A), &answer(&first, "203.0.113.9:5"), now, 1);
    client.handle(addr(A), &answer(&second, "203.0.113.9:5"), now, 1);
    assert_eq!(client.status().kind, NatKind::Unknown);
}

#[test]
fn at_most_four_servers_are_asked() {
    let names: Vec<String> = (0..10).map(|k| format!("s{k}.example:3478")).collect();
    let client = StunClient::new(&names, Instant::now());
    assert_eq!(client.names().count(), MAX_SERVERS);
}
