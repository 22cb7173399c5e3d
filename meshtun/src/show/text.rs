//! `meshtun show` as text, in the layout of `wg show`, with meshtun's lines added.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use meshtun_proto::time::unix_ms_of;

use super::paint::{handshake_tone, membership_tone, path_tone, Painter, Tone};
use super::Report;
use crate::gate::MembershipState;
use crate::probe::Reachability;
use crate::wgcfg::{DeviceGate, PeerStatus};

/// `wg show`-style text for one interface, as of `now`.
pub fn render_text(report: &Report, now: SystemTime) -> String {
    render_styled(report, now, false)
}

/// [`render_text`], with the states in colour (ANSI escape codes) if `colour`: a peer's key
/// and latest handshake green while the handshake is fresh, yellow once stale, red without
/// one; the membership green when allowed, yellow while pending, red when denied or lost;
/// a gated peer's path green when direct, cyan when relayed, yellow while trying, red with
/// none; a probe's answer green or red.
pub fn render_styled(report: &Report, now: SystemTime, colour: bool) -> String {
    let paint = Painter::new(colour);
    let s = &report.status;
    let mut out = String::new();
    let _ = writeln!(out, "interface: {}", s.name);
    if let Some(key) = &s.private_key {
        let _ = writeln!(out, "  public key: {}", key.public_key());
        let _ = writeln!(out, "  private key: (hidden)");
    }
    let _ = writeln!(out, "  listening port: {}", s.listen_port);
    if s.fwmark != 0 {
        let _ = writeln!(out, "  fwmark: {:#x}", s.fwmark);
    }
    if let Some(gate) = &s.gate {
        render_gate(&mut out, gate, unix_ms_of(now), paint);
    }
    for (index, p) in s.peers.iter().enumerate() {
        out.push('\n');
        let relay = s
            .gate
            .as_ref()
            .and_then(|g| g.relay.as_ref())
            .map(|r| r.server);
        render_peer(&mut out, p, relay, now, paint);
        if let Some(reachability) = report.peer_reachability(index) {
            let tone = match reachability {
                Reachability::Reachable { .. } => Tone::Good,
                Reachability::Unreachable { .. } => Tone::Bad,
                Reachability::Unknown { .. } => Tone::Warn,
            };
            let text = paint.paint(tone, &reachability_text(reachability));
            let _ = writeln!(out, "  reachable: {text}");
        }
    }
    out
}

fn render_gate(out: &mut String, gate: &DeviceGate, now_ms: u64, paint: Painter) {
    let _ = writeln!(out, "  node: {}", gate.node_id);
    let _ = writeln!(
        out,
        "  membership: {}",
        membership_text(gate, now_ms, paint)
    );
    let contact = match gate.controller_last_contact_ms {
        Some(at) => format!("last contact {} ago", short(now_ms.saturating_sub(at))),
        None => "not reached yet".to_owned(),
    };
    let _ = write!(out, "  controller: {}, {contact}", gate.controller_url);
    if let Some(error) = &gate.controller_error {
        let _ = write!(out, ", error: {error}");
    }
    out.push('\n');
    if !gate.controller_key.is_empty() {
        let _ = writeln!(out, "  controller key: {}", gate.controller_key);
    }
    let _ = writeln!(out, "  on controller loss: {}", gate.loss_policy);
    for r in &gate.nat.reflexive {
        let age = now_ms.saturating_sub(r.at_ms) / 1000;
        let _ = writeln!(
            out,
            "  reflexive address: {} (STUN {}, {age}s ago)",
            r.address, r.server
        );
    }
    if !gate.nat.reflexive.is_empty() {
        let _ = writeln!(out, "  nat: {}", gate.nat.kind.as_str().replace('_', "-"));
    }
    if gate.forward {
        let _ = writeln!(out, "  forwarding: on, between gated peers (hub)");
    }
    if gate.membership_refused > 0 {
        let _ = writeln!(
            out,
            "  refused peers: {} since start, without a valid membership signature (see the log)",
            gate.membership_refused
        );
    }
    if let Some(o) = &gate.observing {
        let _ = writeln!(
            out,
            "  observing: up to {} peers every {}s ({} sent, {} refused, {} failed)",
            o.peers, o.interval_s, o.sent, o.refused, o.failed
        );
    }
    if let Some(r) = &gate.relay {
        let relayed = r.relayed.map_or("none".to_owned(), |a| a.to_string());
        let left = r.expires_s.saturating_sub(now_ms / 1000);
        let _ = writeln!(
            out,
            "  relay: {} via {}, credentials expire in {left}s ({})",
            r.state, r.server, r.expires_s
        );
        let _ = writeln!(out, "  relayed address: {relayed}");
    }
}

/// `ALLOWED (epoch 42, ends in 7s)`, `DENIED: overall 0.40 below 0.70 (epoch 42)`, …
fn membership_text(gate: &DeviceGate, now_ms: u64, paint: Painter) -> String {
    let mut details = Vec::new();
    if let Some(epoch) = gate.epoch {
        details.push(format!("epoch {epoch}"));
    }
    if let Some(end) = gate.epoch_not_after_ms {
        details.push(match end.checked_sub(now_ms) {
            Some(left) => format!("ends in {}", short(left)),
            None => format!("ended {} ago", short(now_ms.saturating_sub(end))),
        });
    }
    if let Some(next) = gate.next_epoch {
        details.push(format!("epoch {next} next"));
    }
    if let MembershipState::Pending = gate.membership {
        details.push("no bundle yet".to_owned());
    }
    let details = if details.is_empty() {
        String::new()
    } else {
        format!(" ({})", details.join(", "))
    };
    let state = paint.paint(membership_tone(&gate.membership), gate.membership.as_str());
    match gate.membership.reason() {
        Some(reason) if !reason.is_empty() => format!("{state}: {reason}{details}"),
        _ => format!("{state}{details}"),
    }
}

fn reachability_text(reachability: &Reachability) -> String {
    match reachability {
        Reachability::Reachable { rtt, .. } => {
            let ms = rtt.as_secs_f64() * 1e3;
            if ms < 0.05 {
                "yes (<0.1 ms)".to_owned()
            } else {
                format!("yes ({ms:.1} ms)")
            }
        }
        Reachability::Unreachable { timeout, .. } => {
            format!("no (no reply in {} ms)", timeout.as_millis())
        }
        Reachability::Unknown { reason, .. } => format!("unknown ({reason})"),
    }
}

/// One peer; `relay` is the relay server a relayed endpoint goes through.
fn render_peer(
    out: &mut String,
    p: &PeerStatus,
    relay: Option<std::net::SocketAddr>,
    now: SystemTime,
    paint: Painter,
) {
    let via = relay.map_or_else(|| "the relay".to_owned(), |r| r.to_string());
    let handshake_age = p
        .last_handshake
        .map(|t| now.duration_since(t).unwrap_or(Duration::ZERO));
    let tone = handshake_tone(handshake_age);
    let key = paint.paint(tone, &p.public_key.to_string());
    let _ = writeln!(out, "peer: {key}");
    if let Some(gate) = &p.gate {
        let _ = writeln!(out, "  node: {}", gate.node_id);
    }
    if p.preshared_key.is_some() {
        let _ = writeln!(out, "  preshared key: (hidden)");
    }
    if let Some(gate) = &p.gate {
        let age = unix_ms_of(now).saturating_sub(gate.psk_since_ms);
        let epoch = gate
            .psk_epoch
            .map_or(String::new(), |e| format!(" (epoch {e})"));
        let _ = writeln!(out, "  psk age: {}{epoch}", short(age));
        if !gate.forwards_to.is_empty() {
            let paths: Vec<String> = gate
                .forwards_to
                .iter()
                .map(|n| format!("{n} via {}", gate.node_id))
                .collect();
            let _ = writeln!(out, "  reaches: {}", paths.join(", "));
        }
    }
    match p.endpoint {
        Some(e) if crate::wgcfg::relayed_slot(&e).is_some() => {
            let _ = writeln!(out, "  endpoint: relayed via {via}");
        }
        Some(e) => {
            let _ = writeln!(out, "  endpoint: {e}");
        }
        None => {}
    }
    if p.gate.is_some() {
        let path = p.path(now, relay);
        let since = p
            .endpoint_since
            .and_then(|t| now.duration_since(t).ok())
            .map_or(String::new(), |d| {
                let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                format!(", endpoint changed {} ago", short(ms))
            });
        let tone = path_tone(path);
        let path = match path {
            "relayed" => format!("{} via {via}", paint.paint(tone, "relayed")),
            other => paint.paint(tone, other),
        };
        let _ = writeln!(out, "  path: {path}{since}");
    }
    let ips: Vec<String> = p.allowed_ips.iter().map(|n| n.to_string()).collect();
    let ips = if ips.is_empty() {
        "(none)".to_owned()
    } else {
        ips.join(", ")
    };
    let _ = writeln!(out, "  allowed ips: {ips}");
    if let Some(ago) = handshake_age {
        let ago = paint.paint(tone, &ago_text(ago));
        let _ = writeln!(out, "  latest handshake: {ago}");
    }
    if p.rx_bytes > 0 || p.tx_bytes > 0 {
        let _ = writeln!(
            out,
            "  transfer: {} received, {} sent",
            bytes_text(p.rx_bytes),
            bytes_text(p.tx_bytes)
        );
    }
    if let Some(k) = p.persistent_keepalive {
        let _ = writeln!(
            out,
            "  persistent keepalive: every {}",
            plural(u64::from(k), "second")
        );
    }
}

/// A short duration: `7s`, `2m 5s`, `1h 4m`, `3d 2h` (the two largest units).
fn short(ms: u64) -> String {
    let secs = ms / 1000;
    let units = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];
    let Some(first) = units.iter().position(|(_, len)| secs >= *len) else {
        return "0s".to_owned();
    };
    units
        .iter()
        .skip(first)
        .take(2)
        .scan(secs, |rest, (unit, len)| {
            let n = *rest / len;
            *rest %= len;
            Some((n, unit))
        })
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn plural(n: u64, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// "1 minute, 5 seconds ago", as `wg` writes it.
fn ago_text(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "Now".to_owned();
    }
    let mut parts = Vec::new();
    for (unit, len) in [
        ("day", 86_400),
        ("hour", 3_600),
        ("minute", 60),
        ("second", 1),
    ] {
        if secs >= len {
            parts.push(plural(secs / len, unit));
            secs %= len;
        }
    }
    format!("{} ago", parts.join(", "))
}

/// "1.23 KiB", as `wg` writes it.
fn bytes_text(n: u64) -> String {
    const UNITS: [(&str, f64); 4] = [
        ("TiB", 1_099_511_627_776.0),
        ("GiB", 1_073_741_824.0),
        ("MiB", 1_048_576.0),
        ("KiB", 1_024.0),
    ];
    for (unit, size) in UNITS {
        if n as f64 >= size {
            return format!("{:.2} {unit}", n as f64 / size);
        }
    }
    format!("{n} B")
}

#[cfg(test)]
mod tests {
    use super::super::tests::{gated_status, probed, status, NOW_SECS};
    use super::*;
    use std::time::UNIX_EPOCH;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW_SECS)
    }

    fn text(report: &Report) -> String {
        render_text(report, now())
    }

    #[test]
    fn text_looks_like_wg_show_and_hides_secrets() {
        let report = probed(status());
        let s = &report.status;
        let text = text(&report);
        assert!(text.contains("interface: wg0"));
        assert!(text.contains("listening port: 51820"));
        assert!(text.contains("fwmark: 0xca6c"));
        assert!(text.contains("endpoint: 192.0.2.2:51820"));
        assert!(text.contains("latest handshake: 1 minute, 5 seconds ago"));
        assert!(text.contains("transfer: 2.00 KiB received, 100 B sent"));
        assert!(text.contains("persistent keepalive: every 25 seconds"));
        assert!(
            !text.contains("membership") && !text.contains("node:"),
            "{text}"
        );
        let private = s.private_key.as_ref().unwrap();
        assert!(!text.contains(&private.to_base64()));
        assert!(!text.contains(&s.peers[0].preshared_key.as_ref().unwrap().to_base64()));
    }

    #[test]
    fn reflexive_addresses_and_the_nat_kind_are_shown() {
        let mut status = gated_status(MembershipState::Allowed);
        if let Some(gate) = status.gate.as_mut() {
            gate.nat = super::super::json::tests::with_nat();
        }
        let text = text(&probed(status));
        let lines = [
            "  reflexive address: 203.0.113.7:40001 (STUN 192.0.2.1:3478, 3s ago)",
            "  reflexive address: 203.0.113.7:40002 (STUN 192.0.2.9:3478, 3s ago)",
            "  nat: endpoint-dependent",
            "",
        ]
        .join("\n");
        assert!(text.contains(&lines), "{text}");
    }

    #[test]
    fn the_relay_allocation_is_shown() {
        let mut status = gated_status(MembershipState::Allowed);
        if let Some(gate) = status.gate.as_mut() {
            gate.relay = Some(crate::wgcfg::RelayShown {
                server: "198.51.100.1:3478".parse().unwrap(),
                relayed: Some("198.51.100.1:49152".parse().unwrap()),
                expires_s: 4_000_000_000,
                state: "allocated".into(),
            });
        }
        let text = text(&probed(status));
        assert!(
            text.contains("  relay: allocated via 198.51.100.1:3478, credentials expire in ")
                && text.contains("  relayed address: 198.51.100.1:49152\n"),
            "{text}"
        );
    }

    #[test]
    fn gated_interface_shows_membership_controller_node_and_psk_age() {
        let report = probed(gated_status(MembershipState::Allowed));
        let text = text(&report);
        let device = [
            "  listening port: 51820",
            "  fwmark: 0xca6c",
            "  node: node-a",
            "  membership: ALLOWED (epoch 42, ends in 7s)",
            "  controller: http://192.0.2.1:8080, last contact 2s ago",
            "  controller key: AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=",
            "  on controller loss: fail_closed",
            "",
        ]
        .join("\n");
        assert!(text.contains(&device), "{text}");
        let peer = format!(
            "peer: {}\n  node: node-b\n  preshared key: (hidden)\n  psk age: 4s (epoch 42)\n",
            report.status.peers[1].public_key
        );
        assert!(text.contains(&peer), "{text}");
        assert_eq!(text.matches("psk age").count(), 1, "{text}");
    }

    #[test]
    fn refused_peers_are_counted_only_when_there_are_some() {
        let mut status = gated_status(MembershipState::Allowed);
        assert!(!text(&probed(status.clone())).contains("refused"));
        if let Some(gate) = status.gate.as_mut() {
            gate.membership_refused = 2;
        }
        let shown = text(&probed(status));
        assert!(
            shown.contains("  refused peers: 2 since start, without a valid membership signature"),
            "{shown}"
        );
    }

    #[test]
    fn observations_are_shown_only_when_on() {
        let mut status = gated_status(MembershipState::Allowed);
        assert!(!text(&probed(status.clone())).contains("observing"));
        if let Some(gate) = status.gate.as_mut() {
            gate.observing = Some(crate::wgcfg::ObservingShown {
                peers: 16,
                interval_s: 30,
                sent: 12,
                refused: 2,
                failed: 1,
            });
        }
        let shown = text(&probed(status));
        assert!(
            shown
                .contains("  observing: up to 16 peers every 30s (12 sent, 2 refused, 1 failed)\n"),
            "{shown}"
        );
    }

    #[test]
    fn a_hub_says_it_forwards_and_a_spoke_shows_paths_via_its_hub() {
        let mut status = gated_status(MembershipState::Allowed);
        if let Some(gate) = status.gate.as_mut() {
            gate.forward = true;
        }
        if let Some(gate) = status.peers[1].gate.as_mut() {
            gate.forwards_to = vec!["s2".into(), "s3".into()];
        }
        let text = text(&probed(status));
        assert!(
            text.contains("  forwarding: on, between gated peers (hub)\n"),
            "{text}"
        );
        assert!(
            text.contains("  psk age: 4s (epoch 42)\n  reaches: s2 via node-b, s3 via node-b\n"),
            "{text}"
        );
        let plain = self::text(&probed(gated_status(MembershipState::Allowed)));
        assert!(
            !plain.contains("forwarding") && !plain.contains("reaches"),
            "{plain}"
        );
    }

    #[test]
    fn membership_states_read_naturally() {
        let mut gate = gated_status(MembershipState::Denied {
            reason: "overall 0.40 below 0.70".into(),
        })
        .gate
        .unwrap();
        let now_ms = NOW_SECS * 1000;
        assert_eq!(
            membership_text(&gate, now_ms, Painter::new(false)),
            "DENIED: overall 0.40 below 0.70 (epoch 42, ends in 7s)"
        );
        gate.membership = MembershipState::Lost;
        gate.epoch_not_after_ms = Some(now_ms - 125_000);
        assert_eq!(
            membership_text(&gate, now_ms, Painter::new(false)),
            "LOST (epoch 42, ended 2m 5s ago)"
        );
        gate.membership = MembershipState::Allowed;
        gate.epoch_not_after_ms = Some(now_ms + 3_600_000 * 26);
        gate.next_epoch = Some(43);
        assert_eq!(
            membership_text(&gate, now_ms, Painter::new(false)),
            "ALLOWED (epoch 42, ends in 1d 2h, epoch 43 next)"
        );
        gate.membership = MembershipState::Pending;
        gate.epoch = None;
        gate.epoch_not_after_ms = None;
        gate.next_epoch = None;
        assert_eq!(
            membership_text(&gate, now_ms, Painter::new(false)),
            "PENDING (no bundle yet)"
        );
    }

    #[test]
    fn controller_errors_and_no_contact_are_shown() {
        let mut report = probed(gated_status(MembershipState::Lost));
        if let Some(gate) = report.status.gate.as_mut() {
            gate.controller_last_contact_ms = None;
            gate.controller_error = Some("connect: connection refused".into());
        }
        let text = text(&report);
        assert!(
            text.contains(
                "controller: http://192.0.2.1:8080, not reached yet, \
                 error: connect: connection refused\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn reachability_is_shown_per_peer_only_when_probed() {
        let report = probed(gated_status(MembershipState::Allowed));
        let text = text(&report);
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("reachable")).collect();
        assert_eq!(
            lines,
            [
                "  reachable: yes (0.6 ms)",
                "  reachable: no (no reply in 1000 ms)"
            ]
        );
        let unprobed = Report {
            reachability: None,
            ..report
        };
        assert!(!render_text(&unprobed, now()).contains("reachable"));
        let unknown = Reachability::Unknown {
            address: None,
            reason: "no address to probe: the peer has no allowed IPs".into(),
        };
        assert_eq!(
            reachability_text(&unknown),
            "unknown (no address to probe: the peer has no allowed IPs)"
        );
    }

    #[test]
    fn short_durations_use_the_two_largest_units() {
        for (ms, expected) in [
            (0, "0s"),
            (999, "0s"),
            (7_000, "7s"),
            (125_000, "2m 5s"),
            (120_000, "2m"),
            (3_720_000, "1h 2m"),
            (93_600_000, "1d 2h"),
            (86_400_000 + 59_000, "1d"),
        ] {
            assert_eq!(short(ms), expected, "{ms}");
        }
    }

    /// A gated peer's path: direct after a recent handshake, with when its endpoint last
    /// moved; trying while no handshake is recent; none without an endpoint. Static peers
    /// keep `wg`'s look.
    #[test]
    fn a_gated_peers_path_is_direct_trying_or_none() {
        let mut report = probed(gated_status(MembershipState::Allowed));
        let now = UNIX_EPOCH + Duration::from_secs(NOW_SECS);
        {
            let gated = &mut report.status.peers[1];
            gated.last_handshake = Some(now - Duration::from_secs(30));
            gated.endpoint_since = Some(now - Duration::from_secs(95));
        }
        let shown = text(&report);
        assert!(
            shown.contains("  path: direct, endpoint changed 1m 35s ago\n"),
            "{shown}"
        );
        assert_eq!(
            shown.matches("path:").count(),
            1,
            "only the gated peer: {shown}"
        );
        report.status.peers[1].last_handshake = Some(now - Duration::from_secs(600));
        assert!(text(&report).contains("  path: trying"));
        report.status.peers[1].endpoint = None;
        report.status.peers[1].endpoint_since = None;
        assert!(text(&report).contains("  path: none\n"));
    }

    /// A peer reached through the relay shows the relay server, never the relayed
    /// endpoint's internal address.
    #[test]
    fn a_relayed_peer_shows_the_relay_it_goes_through() {
        let mut report = probed(gated_status(MembershipState::Allowed));
        let now = UNIX_EPOCH + Duration::from_secs(NOW_SECS);
        report.status.gate.as_mut().unwrap().relay = Some(crate::wgcfg::RelayShown {
            server: "198.51.100.1:3478".parse().unwrap(),
            relayed: Some("198.51.100.1:49152".parse().unwrap()),
            expires_s: NOW_SECS + 30,
            state: "allocated".into(),
        });
        let gated = &mut report.status.peers[1];
        gated.last_handshake = Some(now - Duration::from_secs(30));
        gated.endpoint = Some(crate::wgcfg::relayed_endpoint(4));
        let shown = text(&report);
        assert!(
            shown.contains("  endpoint: relayed via 198.51.100.1:3478\n"),
            "{shown}"
        );
        assert!(
            shown.contains("  path: relayed via 198.51.100.1:3478"),
            "{shown}"
        );
        assert!(!shown.contains("100::"), "{shown}");
    }

    const GREEN: &str = "\u{1b}[32m";
    const CYAN: &str = "\u{1b}[36m";
    const YELLOW: &str = "\u{1b}[33m";
    const RED: &str = "\u{1b}[1m\u{1b}[31m";
    const RESET: &str = "\u{1b}[0m";

    fn painted(colour: &str, text: &str) -> String {
        format!("{colour}{text}{RESET}")
    }

    /// The plain text has no escape code; the coloured text is the plain text with codes
    /// around each state, and nothing else.
    #[test]
    fn colour_paints_each_state_and_adds_nothing_else() {
        let mut status = gated_status(MembershipState::Allowed);
        status.peers[0].last_handshake = Some(now() - Duration::from_secs(200));
        let relayed = status.peers[1].clone();
        status.peers[1].last_handshake = Some(now() - Duration::from_secs(5));
        let mut relayed = relayed;
        relayed.public_key = meshtun_proto::PrivateKey::generate().public_key();
        relayed.last_handshake = Some(now() - Duration::from_secs(5));
        relayed.endpoint = Some("198.51.100.1:40000".parse().unwrap());
        if let Some(gate) = status.gate.as_mut() {
            gate.relay = Some(crate::wgcfg::RelayShown {
                server: "198.51.100.1:3478".parse().unwrap(),
                relayed: None,
                expires_s: 4_000_000_000,
                state: "allocated".into(),
            });
        }
        status.peers.push(relayed);
        let report = probed(status);
        let plain = render_text(&report, now());
        assert!(!plain.contains('\u{1b}'), "{plain}");
        assert_eq!(render_styled(&report, now(), false), plain);
        let coloured = render_styled(&report, now(), true);
        assert_eq!(anstream::adapter::strip_str(&coloured).to_string(), plain);
        let peers = &report.status.peers;
        for expected in [
            format!("membership: {} (epoch 42", painted(GREEN, "ALLOWED")),
            // A handshake 200 s old is stale; 5 s is fresh.
            format!(
                "peer: {}\n",
                painted(YELLOW, &peers[0].public_key.to_string())
            ),
            format!(
                "latest handshake: {}\n",
                painted(YELLOW, "3 minutes, 20 seconds ago")
            ),
            format!(
                "peer: {}\n",
                painted(GREEN, &peers[1].public_key.to_string())
            ),
            format!("  path: {}\n", painted(GREEN, "direct")),
            format!(
                "  path: {} via 198.51.100.1:3478\n",
                painted(CYAN, "relayed")
            ),
            format!("reachable: {}\n", painted(GREEN, "yes (0.6 ms)")),
            format!("reachable: {}\n", painted(RED, "no (no reply in 1000 ms)")),
        ] {
            assert!(
                coloured.contains(&expected),
                "{expected:?} not in:\n{coloured}"
            );
        }
    }

    #[test]
    fn colour_marks_a_denied_node_and_a_peer_without_handshake_or_path() {
        let mut status = gated_status(MembershipState::Denied {
            reason: "overall 0.40 below 0.70".into(),
        });
        status.peers[1].endpoint = None;
        let coloured = render_styled(&probed(status.clone()), now(), true);
        for expected in [
            format!("membership: {}: overall 0.40", painted(RED, "DENIED")),
            format!(
                "peer: {}\n",
                painted(RED, &status.peers[1].public_key.to_string())
            ),
            format!("  path: {}\n", painted(RED, "none")),
        ] {
            assert!(
                coloured.contains(&expected),
                "{expected:?} not in:\n{coloured}"
            );
        }
        status.peers[1].endpoint = Some("192.0.2.3:51820".parse().unwrap());
        let trying = render_styled(&probed(status), now(), true);
        let expected = format!("  path: {}\n", painted(YELLOW, "trying"));
        assert!(trying.contains(&expected), "{trying}");
    }

    #[test]
    fn each_gated_peer_shows_the_epoch_of_its_preshared_key() {
        let mut status = gated_status(MembershipState::Allowed);
        let text = text(&probed(status.clone()));
        assert!(text.contains("  psk age: 4s (epoch 42)\n"), "{text}");
        if let Some(gate) = status.peers[1].gate.as_mut() {
            gate.psk_epoch = None;
        }
        let text = self::text(&probed(status));
        assert!(text.contains("  psk age: 4s\n"), "{text}");
    }
}
