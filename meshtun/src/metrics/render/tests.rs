//! The text of fixed snapshots: names, help, units, labels and values, and no secret.

use std::time::{Duration, UNIX_EPOCH};

use meshtun_proto::{PresharedKey, PrivateKey};

use super::*;
use crate::gate::{GatedPeerInfo, MembershipState};
use crate::wgcfg::{NatKind, NatStatus, PeerStatus, Reflexive};

/// The scrape time: 2023-11-14T22:13:20Z.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn now_ms() -> u64 {
    1_700_000_000_000
}

fn private() -> PrivateKey {
    PrivateKey::from_bytes([1; 32])
}

fn psk() -> PresharedKey {
    PresharedKey::from_bytes([9; 32])
}

fn gated_key() -> PublicKey {
    PublicKey::from_bytes([2; 32])
}

fn static_key() -> PublicKey {
    PublicKey::from_bytes([3; 32])
}

fn peer(public_key: PublicKey, rx: u64, tx: u64, handshake: Option<SystemTime>) -> PeerStatus {
    PeerStatus {
        endpoint_since: None,
        public_key,
        preshared_key: Some(psk()),
        endpoint: Some("192.0.2.2:51820".parse().unwrap()),
        last_handshake: handshake,
        rx_bytes: rx,
        tx_bytes: tx,
        persistent_keepalive: None,
        allowed_ips: vec!["100.64.0.2/32".parse().unwrap()],
        gate: None,
    }
}

/// Interface wg0: a gated peer with a handshake 5.5 s ago, a static one with none yet.
fn status() -> DeviceStatus {
    DeviceStatus {
        name: "wg0".into(),
        private_key: Some(private()),
        listen_port: 51820,
        fwmark: 0,
        gate: None,
        peers: vec![
            peer(
                gated_key(),
                1234,
                5678,
                Some(now() - Duration::from_millis(5500)),
            ),
            peer(static_key(), 0, 148, None),
        ],
    }
}

fn counters() -> CounterTotals {
    CounterTotals {
        packets_in: 11,
        bytes_in: 1234,
        packets_out: 13,
        dropped_invalid: 3,
        dropped_source: 4,
        dropped_no_route: 5,
        dropped_no_endpoint: 6,
        dropped_queue_full: 8,
        cookies_sent: 7,
        forwarded: 9,
        dropped_forward: 10,
    }
}

/// Allowed in epoch 42, listing the gated peer as node-b with a key in use for 90 s.
fn gate() -> GateStatus {
    GateStatus {
        forward: false,
        node_id: "node-a".into(),
        controller_url: "http://192.0.2.10:8700".into(),
        controller_key: Some(meshtun_proto::IdentityPublic::from_bytes([3; 32])),
        loss_policy: "fail_closed",
        grace_ms: 20_000,
        failovers: 1,
        membership: MembershipState::Allowed,
        epoch: Some(42),
        activation_ms: Some(now_ms() - 60_000),
        not_after_ms: Some(now_ms() + 30_000),
        next_epoch: None,
        last_contact_ms: Some(now_ms() - 2_500),
        last_error: None,
        last_benchmark_ms: Some(now_ms() - 4_000),
        benchmarks_submitted: 17,
        benchmark_failures: 2,
        bundles_applied: 5,
        peers: vec![GatedPeerInfo {
            forwards_to: Vec::new(),
            node_id: "node-b".into(),
            public_key: gated_key(),
            psk_since_ms: now_ms() - 90_000,
            psk_epoch: Some(41),
        }],
        cutoffs: 3,
        cutoff_seconds_sum: 3.75,
        cutoff_seconds_count: 3,
        // 0.5 s, 2 s and 1.25 s.
        cutoff_buckets: [0, 0, 0, 1, 0, 2, 0],
        last_cutoff_seconds: Some(1.25),
        recent_cutoffs: Default::default(),
        nat: NatStatus {
            reflexive: vec![Reflexive {
                server: "192.0.2.10:3478".into(),
                address: "203.0.113.7:40001".parse().unwrap(),
                at_ms: now_ms() - 5_000,
            }],
            kind: NatKind::EndpointIndependent,
        },
        stun_rejected: 4,
        membership_refused: 0,
        observations_sent: 12,
        observations_refused: 2,
        observations_failed: 1,
        observing: None,
        relay: Some(crate::wgcfg::RelayShown {
            server: "198.51.100.1:3478".parse().unwrap(),
            relayed: Some("198.51.100.1:49152".parse().unwrap()),
            expires_s: now_ms() / 1000 + 30,
            state: "allocated".into(),
        }),
    }
}

/// The value of the sample written exactly as `series` (name and labels), if there is one.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{series}: bad value {v}"))
        })
}

fn expect(text: &str, series: &str, want: f64) {
    match value(text, series) {
        Some(got) => assert_eq!(got, want, "{series}"),
        None => panic!("no sample {series} in:\n{text}"),
    }
}

fn peer_series(name: &str, key: PublicKey, node: Option<&str>) -> String {
    let node = node
        .map(|n| format!(",node_id=\"{n}\""))
        .unwrap_or_default();
    format!(
        "{name}{{interface=\"wg0\",public_key=\"{}\"{node}}}",
        key.to_base64()
    )
}

#[test]
fn device_metrics_have_their_values_and_labels() {
    let text = render(&status(), counters(), None, now());
    expect(&text, "meshtun_peers{interface=\"wg0\"}", 2.0);
    let gated = |name| peer_series(name, gated_key(), None);
    let other = |name| peer_series(name, static_key(), None);
    expect(&text, &gated("meshtun_peer_receive_bytes_total"), 1234.0);
    expect(&text, &gated("meshtun_peer_transmit_bytes_total"), 5678.0);
    expect(&text, &other("meshtun_peer_receive_bytes_total"), 0.0);
    expect(&text, &other("meshtun_peer_transmit_bytes_total"), 148.0);
    expect(
        &text,
        &gated("meshtun_peer_last_handshake_age_seconds"),
        5.5,
    );
    assert_eq!(
        value(&text, &other("meshtun_peer_last_handshake_age_seconds")),
        None
    );
    let device = |name: &str| format!("meshtun_{name}{{interface=\"wg0\"}}");
    expect(&text, &device("received_packets_total"), 11.0);
    expect(&text, &device("received_bytes_total"), 1234.0);
    expect(&text, &device("sent_packets_total"), 13.0);
    expect(&text, &device("cookie_replies_total"), 7.0);
    for (reason, count) in [
        ("invalid", 3.0),
        ("source", 4.0),
        ("no_route", 5.0),
        ("no_endpoint", 6.0),
        ("queue_full", 8.0),
    ] {
        let series =
            format!("meshtun_dropped_packets_total{{interface=\"wg0\",reason=\"{reason}\"}}");
        expect(&text, &series, count);
    }
    assert!(!text.contains("meshtun_gate"), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[test]
fn every_family_has_help_type_and_its_unit() {
    let text = render(&status(), counters(), Some(gate()), now());
    for (family, kind) in [
        ("meshtun_peers", "gauge"),
        ("meshtun_peer_receive_bytes", "counter"),
        ("meshtun_peer_last_handshake_age_seconds", "gauge"),
        ("meshtun_dropped_packets", "counter"),
        ("meshtun_gate", "info"),
        ("meshtun_gate_membership", "gauge"),
        ("meshtun_gate_cutoffs", "counter"),
        ("meshtun_gate_decision_to_cutoff_seconds", "histogram"),
        ("meshtun_gate_psk_age_seconds", "gauge"),
    ] {
        assert!(
            text.contains(&format!("\n# TYPE {family} {kind}\n")),
            "{family}: {text}"
        );
        assert!(text.contains(&format!("# HELP {family} ")), "{family}");
    }
    assert!(text.contains("# UNIT meshtun_peer_receive_bytes bytes\n"));
    assert!(text.contains("# UNIT meshtun_gate_decision_to_cutoff_seconds seconds\n"));
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with("meshtun_"), "{line}");
        assert!(line.contains("interface=\"wg0\""), "{line}");
    }
}

#[test]
fn gating_metrics_report_membership_times_and_cutoffs() {
    let text = render(&status(), counters(), Some(gate()), now());
    let gate = |name: &str| format!("meshtun_gate_{name}{{interface=\"wg0\"}}");
    expect(
        &text,
        "meshtun_gate_info{interface=\"wg0\",node_id=\"node-a\",controller_url=\"http://192.0.2.10:8700\",controller_key=\"AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=\",loss_policy=\"fail_closed\"}",
        1.0,
    );
    for (state, on) in [
        ("pending", 0.0),
        ("allowed", 1.0),
        ("denied", 0.0),
        ("lost", 0.0),
    ] {
        let series = format!("meshtun_gate_membership{{interface=\"wg0\",state=\"{state}\"}}");
        expect(&text, &series, on);
    }
    expect(&text, &gate("epoch"), 42.0);
    expect(&text, &gate("controller_contact_age_seconds"), 2.5);
    expect(&text, &gate("bundle_remaining_seconds"), 30.0);
    expect(&text, &gate("grace_remaining_seconds"), 50.0);
    expect(&text, &gate("peers"), 1.0);
    expect(&text, &gate("benchmarks_submitted_total"), 17.0);
    expect(&text, &gate("benchmark_failures_total"), 2.0);
    expect(&text, &gate("bundles_applied_total"), 5.0);
    expect(&text, &gate("controller_failovers_total"), 1.0);
    expect(&text, &gate("cutoffs_total"), 3.0);
    for (outcome, count) in [("sent", 12.0), ("refused", 2.0), ("failed", 1.0)] {
        let series =
            format!("meshtun_gate_observations_total{{interface=\"wg0\",outcome=\"{outcome}\"}}");
        expect(&text, &series, count);
    }
    expect(&text, &gate("decision_to_cutoff_seconds_sum"), 3.75);
    expect(&text, &gate("decision_to_cutoff_seconds_count"), 3.0);
    let inf = "meshtun_gate_decision_to_cutoff_seconds_bucket{interface=\"wg0\",le=\"+Inf\"}";
    expect(&text, inf, 3.0);
    let bucket = |le: &str| {
        format!("meshtun_gate_decision_to_cutoff_seconds_bucket{{interface=\"wg0\",le=\"{le}\"}}")
    };
    for (le, n) in [
        ("0.25", 0.0),
        ("0.5", 1.0),
        ("1.0", 1.0),
        ("2.5", 3.0),
        ("5.0", 3.0),
    ] {
        expect(&text, &bucket(le), n);
    }
    expect(&text, &gate("last_decision_to_cutoff_seconds"), 1.25);
    let psk_age = format!(
        "meshtun_gate_psk_age_seconds{{interface=\"wg0\",public_key=\"{}\",node_id=\"node-b\"}}",
        gated_key().to_base64()
    );
    expect(&text, &psk_age, 90.0);
    // The gated peer's device metrics carry its node id; the static peer's do not.
    let gated = peer_series(
        "meshtun_peer_receive_bytes_total",
        gated_key(),
        Some("node-b"),
    );
    expect(&text, &gated, 1234.0);
    let other = peer_series("meshtun_peer_receive_bytes_total", static_key(), None);
    expect(&text, &other, 0.0);
}

#[test]
fn a_fresh_denied_node_reports_no_times_and_a_past_bundle_end_is_negative() {
    let mut status = gate();
    status.membership = MembershipState::Denied {
        reason: "score 0.41 below 0.80".into(),
    };
    status.epoch = None;
    status.last_contact_ms = None;
    status.last_cutoff_seconds = None;
    status.not_after_ms = Some(now_ms() - 4_000);
    status.peers.clear();
    let text = render(&self::status(), counters(), Some(status), now());
    let membership =
        |s: &str| format!("meshtun_gate_membership{{interface=\"wg0\",state=\"{s}\"}}");
    expect(&text, &membership("denied"), 1.0);
    expect(&text, &membership("allowed"), 0.0);
    expect(
        &text,
        "meshtun_gate_bundle_remaining_seconds{interface=\"wg0\"}",
        -4.0,
    );
    // 4 s into its 20 s grace.
    expect(
        &text,
        "meshtun_gate_grace_remaining_seconds{interface=\"wg0\"}",
        16.0,
    );
    for absent in [
        "meshtun_gate_epoch{",
        "meshtun_gate_controller_contact_age_seconds{",
        "meshtun_gate_last_decision_to_cutoff_seconds{",
        "meshtun_gate_psk_age_seconds{",
    ] {
        assert!(!text.contains(absent), "{absent} in:\n{text}");
    }
    // The reason is free text from the controller: it is logged, never a label.
    assert!(!text.contains("score 0.41"));
}

#[test]
fn no_secret_appears() {
    let text = render(&status(), counters(), Some(gate()), now());
    for secret in [
        private().to_base64(),
        private().to_hex(),
        psk().to_base64(),
        psk().to_hex(),
    ] {
        assert!(!text.contains(&secret), "secret in:\n{text}");
    }
    // The public keys are there, so the check above looks at the right text.
    assert!(text.contains(&gated_key().to_base64()));
}

#[test]
fn ages_never_go_negative_when_the_clock_steps_back() {
    let mut status = status();
    status.peers.truncate(1);
    if let Some(peer) = status.peers.first_mut() {
        peer.last_handshake = Some(now() + Duration::from_secs(3));
    }
    let mut gate = gate();
    gate.last_contact_ms = Some(now_ms() + 3_000);
    let text = render(&status, counters(), Some(gate), now());
    let handshake = peer_series(
        "meshtun_peer_last_handshake_age_seconds",
        gated_key(),
        Some("node-b"),
    );
    expect(&text, &handshake, 0.0);
    expect(
        &text,
        "meshtun_gate_controller_contact_age_seconds{interface=\"wg0\"}",
        0.0,
    );
}

#[test]
fn stun_metrics_give_the_reflexive_address_and_the_nat_kind() {
    let text = render(&status(), counters(), Some(gate()), now());
    expect(
        &text,
        "meshtun_stun_reflexive_age_seconds{interface=\"wg0\",server=\"192.0.2.10:3478\",address=\"203.0.113.7:40001\"}",
        5.0,
    );
    expect(
        &text,
        "meshtun_nat{interface=\"wg0\",kind=\"endpoint_independent\"}",
        1.0,
    );
    expect(
        &text,
        "meshtun_nat{interface=\"wg0\",kind=\"endpoint_dependent\"}",
        0.0,
    );
    expect(&text, "meshtun_stun_rejected_total{interface=\"wg0\"}", 4.0);
}

#[test]
fn relay_metrics_give_the_allocation_and_the_credentials_expiry() {
    let text = render(&status(), counters(), Some(gate()), now());
    expect(
        &text,
        "meshtun_relay_allocated{interface=\"wg0\",server=\"198.51.100.1:3478\",relayed=\"198.51.100.1:49152\"}",
        1.0,
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("meshtun_relay_credentials_expiry_seconds{interface=\"wg0\"}"))
        .unwrap_or_else(|| panic!("no expiry:\n{text}"));
    let left: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((28.0..=30.0).contains(&left), "{line}");
}

/// The gated peer's path and the age of its endpoint; a static peer has neither.
#[test]
fn a_gated_peers_path_and_endpoint_age_are_reported() {
    let mut device = status();
    device.peers[0].endpoint_since = Some(now() - Duration::from_secs(40));
    let text = render(&device, counters(), Some(gate()), now());
    let series = |name: &str, extra: &str| {
        format!(
            "{name}{{interface=\"wg0\",public_key=\"{}\",node_id=\"node-b\"{extra}}}",
            gated_key().to_base64()
        )
    };
    expect(&text, &series("meshtun_peer_path", ",path=\"direct\""), 1.0);
    expect(
        &text,
        &series("meshtun_peer_endpoint_age_seconds", ""),
        40.0,
    );
    let static_key = static_key().to_base64();
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("meshtun_peer_path") && l.contains(&static_key)),
        "{text}"
    );
}

/// A peer reached through the relay (a relayed endpoint, or an address on the relay server:
/// the peer's own allocation) is `relayed`, with the relay server as `via`.
#[test]
fn a_relayed_peers_path_names_the_relay() {
    for endpoint in [
        crate::wgcfg::relayed_endpoint(2),
        "198.51.100.1:49160".parse().unwrap(),
    ] {
        let mut device = status();
        device.peers[0].endpoint = Some(endpoint);
        let text = render(&device, counters(), Some(gate()), now());
        let series = format!(
            "meshtun_peer_path{{interface=\"wg0\",public_key=\"{}\",node_id=\"node-b\",path=\"relayed\",via=\"198.51.100.1:3478\"}}",
            gated_key().to_base64()
        );
        expect(&text, &series, 1.0);
    }
}
